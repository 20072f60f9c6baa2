//! The statement cursor: walks the significant tokens of one statement of a
//! simple-query string, and owns the rules that say where a statement ends
//! and which comments are routing hints. Pure: no I/O here, no allocation.
//!
//! A `;` ends the statement only outside parentheses and outside the
//! `BEGIN ATOMIC ... END` body of `CREATE [OR REPLACE] FUNCTION|PROCEDURE`
//! (the same rule as psql's). A `/* pggate:primary */` or
//! `/* pggate:replica */` comment counts as a hint until the statement's
//! first keyword has been read.

use super::lexer::{Lexer, Token, TokenKind};
use super::Hint;

/// Significant tokens (no comments) of one statement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    lex: Lexer<'a>,
    /// Parenthesis depth after the last token returned.
    pub(crate) depth: u32,
    /// Set once the statement is known to be `CREATE [OR REPLACE]
    /// FUNCTION|PROCEDURE`: `BEGIN`/`CASE`/`END` then nest.
    pub(crate) routine: bool,
    begin_depth: u32,
    seen_keyword: bool,
    /// A significant token has been returned.
    pub(crate) nonempty: bool,
    /// The statement has ended (at a `;` or at the end of input).
    done: bool,
    pub(crate) hint: Option<Hint>,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(lex: Lexer<'a>) -> Self {
        Cursor {
            lex,
            depth: 0,
            routine: false,
            begin_depth: 0,
            seen_keyword: false,
            nonempty: false,
            done: false,
            hint: None,
        }
    }

    /// The lexer, positioned after this statement once [`Cursor::next`]
    /// has returned `None`.
    pub(crate) fn lexer(&self) -> Lexer<'a> {
        self.lex
    }

    /// The next significant token of the statement, or `None` at its end.
    pub(crate) fn next(&mut self) -> Option<Token<'a>> {
        self.next_inline()
    }

    /// [`Cursor::next`], inlined into the one loop that reads most tokens
    /// (the body scan): the call per token is measurable on the hot path.
    #[inline(always)]
    pub(crate) fn next_inline(&mut self) -> Option<Token<'a>> {
        if self.done {
            return None;
        }
        loop {
            let Some(tok) = self.lex.next_token_inline() else {
                self.done = true;
                return None;
            };
            match tok.kind {
                TokenKind::LineComment => continue,
                TokenKind::BlockComment => {
                    if !self.seen_keyword {
                        self.note_hint(tok.text);
                    }
                    continue;
                }
                TokenKind::Semicolon if self.depth == 0 && self.begin_depth == 0 => {
                    self.done = true;
                    return None;
                }
                TokenKind::Punct(b'(') => self.depth = self.depth.saturating_add(1),
                TokenKind::Punct(b')') => self.depth = self.depth.saturating_sub(1),
                TokenKind::Ident => {
                    self.seen_keyword = true;
                    if self.routine && self.depth == 0 {
                        self.track_atomic_body(tok.text);
                    }
                }
                _ => {}
            }
            self.nonempty = true;
            return Some(tok);
        }
    }

    /// The next significant token without consuming it.
    pub(crate) fn peek(&self) -> Option<Token<'a>> {
        let mut ahead = *self;
        ahead.next()
    }

    /// Consumes the next token if it is the keyword `kw`.
    pub(crate) fn eat_keyword(&mut self, kw: &str) -> bool {
        let mut ahead = *self;
        match ahead.next() {
            Some(t) if t.is_keyword(kw) => {
                *self = ahead;
                true
            }
            _ => false,
        }
    }

    /// Reads the rest of the statement.
    pub(crate) fn drain(&mut self) {
        while self.next().is_some() {}
    }

    fn track_atomic_body(&mut self, word: &str) {
        if word.eq_ignore_ascii_case("begin") {
            self.begin_depth += 1;
        } else if word.eq_ignore_ascii_case("case") {
            // CASE also ends with END; it only matters inside a body.
            if self.begin_depth > 0 {
                self.begin_depth += 1;
            }
        } else if word.eq_ignore_ascii_case("end") {
            self.begin_depth = self.begin_depth.saturating_sub(1);
        }
    }

    /// A primary hint wins over a replica hint in the same statement.
    fn note_hint(&mut self, comment: &str) {
        match parse_hint(comment) {
            Some(Hint::Primary) => self.hint = Some(Hint::Primary),
            Some(Hint::Replica) if self.hint.is_none() => self.hint = Some(Hint::Replica),
            _ => {}
        }
    }
}

/// `/* pggate:primary */` or `/* pggate:replica */`, ASCII case-insensitive,
/// with any whitespace around the words and the colon.
pub(crate) fn parse_hint(comment: &str) -> Option<Hint> {
    let body = comment.strip_prefix("/*")?;
    let body = body.strip_suffix("*/").unwrap_or(body);
    let rest = strip_prefix_ignore_case(body.trim_ascii_compat(), "pggate")?;
    let rest = rest.trim_ascii_compat().strip_prefix(':')?;
    let word = rest.trim_ascii_compat();
    if word.eq_ignore_ascii_case("primary") {
        Some(Hint::Primary)
    } else if word.eq_ignore_ascii_case("replica") {
        Some(Hint::Replica)
    } else {
        None
    }
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `str::trim_ascii` is newer than the crate's minimum Rust version.
trait TrimAscii {
    fn trim_ascii_compat(&self) -> &str;
}

impl TrimAscii for str {
    fn trim_ascii_compat(&self) -> &str {
        self.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b')
    }
}
