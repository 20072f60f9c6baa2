//! Recognises the SQL statements that drop prepared statements
//! (`DEALLOCATE [PREPARE] name|ALL`, `DISCARD ALL`), which PgGate answers
//! itself because it owns each client's statement names. Pure: no I/O here.

use super::cursor::Cursor;
use super::lexer::{Lexer, Token, TokenKind};
use super::Deallocate;

/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// If `sql` is exactly one `DEALLOCATE [PREPARE] name|ALL` or `DISCARD ALL`
/// statement (comments and empty statements around it allowed), what it drops.
pub fn deallocate_target(sql: &str) -> Option<Deallocate> {
    // Every query is asked this: answer the common case from its first byte.
    // Only `DEALLOCATE`/`DISCARD`, or a comment before them, can start one.
    let first = sql
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c));
    if !matches!(first, Some(b'd' | b'D' | b'/' | b'-')) {
        return None;
    }
    let mut c = Cursor::new(Lexer::new(sql));
    let target = statement(&mut c)?;
    if c.next().is_some() {
        return None;
    }
    // Nothing but empty statements may follow.
    let mut lex = c.lexer();
    while lex.offset() < sql.len() {
        let mut rest = Cursor::new(lex);
        if rest.next().is_some() {
            return None;
        }
        lex = rest.lexer();
    }
    Some(target)
}

fn statement(c: &mut Cursor<'_>) -> Option<Deallocate> {
    let first = c.next()?;
    if first.is_keyword("discard") {
        return c.next()?.is_keyword("all").then_some(Deallocate::All);
    }
    if !first.is_keyword("deallocate") {
        return None;
    }
    let mut target = c.next()?;
    if target.is_keyword("prepare") {
        match c.peek() {
            // `DEALLOCATE prepare`: a statement named "prepare".
            None => return Some(Deallocate::Name("prepare".to_owned())),
            Some(_) => target = c.next()?,
        }
    }
    if target.is_keyword("all") {
        return Some(Deallocate::All);
    }
    statement_name(&target).map(Deallocate::Name)
}

/// The name PostgreSQL would look up: unquoted names fold to lower case
/// (ASCII only, as for UTF-8 databases), quoted names keep their case with
/// `""` read as `"`; both are truncated to 63 bytes.
fn statement_name(tok: &Token<'_>) -> Option<String> {
    let mut name = match tok.kind {
        TokenKind::Ident => tok.text.to_ascii_lowercase(),
        TokenKind::QuotedIdent => tok.ident_name()?.replace("\"\"", "\""),
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    Some(name)
}
