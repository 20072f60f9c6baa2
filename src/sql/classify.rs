//! The routing verdict for one statement (SPEC §4's table and §3's pinning
//! list): its leading keywords pick the statement kind, then one pass over
//! the rest finds what can turn a read into a write (data-modifying CTEs,
//! `SELECT ... INTO`, locking clauses, write-function calls) and what pins
//! the session. Pure: no I/O here, no allocation, no recursion.
//!
//! Everything this module cannot recognise is `Kind::Unknown`, which routes
//! to the primary. Where a cheap rule could be wrong, it errs towards the
//! primary: a column spelled `update` makes a query a write, a
//! `pg_temp.x` anywhere in a `CREATE` pins the session.

use super::cursor::Cursor;
use super::functions::{call_effect, set_config_is_local, CallEffect};
use super::lexer::{Token, TokenKind};
use super::{Hint, Kind, PinReason};

/// The verdict on one non-empty statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) kind: Kind,
    pub(crate) pin: Option<PinReason>,
    pub(crate) hint: Option<Hint>,
}

/// How the rest of a statement is read once its leading keywords are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// A query: data-modifying keywords, `INTO`, locking clauses and calls.
    Query,
    /// `COPY`: as a query, plus which of `TO`/`FROM` comes first outside
    /// parentheses.
    Copy,
    /// `DECLARE`: `WITH HOLD` before the `FOR`, then a query.
    Declare,
    /// `CREATE`: calls, and objects created in the `pg_temp` schema.
    Create,
    /// Any other statement: calls only.
    Calls,
    /// Not executed or already fully read: nothing more to learn.
    Skip,
}

/// What the leading keywords said.
#[derive(Debug, Clone, Copy)]
struct Lead {
    kind: Kind,
    pin: Option<PinReason>,
    body: Body,
}

impl Lead {
    fn new(kind: Kind, pin: Option<PinReason>, body: Body) -> Self {
        Lead { kind, pin, body }
    }
}

/// Statements whose first keyword alone makes them writes (DML, DDL,
/// maintenance, and commands that act on the server).
const WRITE_STATEMENTS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "merge",
    "alter",
    "drop",
    "truncate",
    "comment",
    "security",
    "import",
    "reassign",
    "grant",
    "revoke",
    "vacuum",
    "analyze",
    "analyse",
    "cluster",
    "reindex",
    "refresh",
    "lock",
    "call",
    "do",
    "notify",
    "checkpoint",
    "discard",
    "unlisten",
    "deallocate",
];

/// `SHOW` of settings that differ on a hot standby: a client asking them
/// wants to know whether it talks to the primary.
const PRIMARY_ONLY_SETTINGS: &[&str] = &[
    "transaction_read_only",
    "default_transaction_read_only",
    "in_hot_standby",
    "all",
];

/// Reads one statement from `c` (to its end) and classifies it; `None` if
/// it holds no significant token.
pub(crate) fn classify_statement(
    c: &mut Cursor<'_>,
    write_functions: &[String],
) -> Option<Statement> {
    let lead = lead(c);
    let Some(lead) = lead else {
        c.drain();
        return None;
    };
    let mut effects = Effects {
        write: false,
        pin: lead.pin,
        copy: None,
    };
    scan_body(c, lead.body, write_functions, &mut effects);
    c.drain();
    let base = match (lead.body, effects.copy) {
        (Body::Copy, Some(CopyDirection::To)) => Kind::Read,
        (Body::Copy, Some(CopyDirection::From)) => Kind::Write,
        (Body::Copy, None) => Kind::Unknown,
        _ => lead.kind,
    };
    let kind = match base {
        Kind::Begin { .. } => base,
        _ if effects.write || effects.pin.is_some() => Kind::Write,
        _ => base,
    };
    Some(Statement {
        kind,
        pin: effects.pin,
        hint: c.hint,
    })
}

/// The first significant token, past any opening parentheses.
fn first_word<'a>(c: &mut Cursor<'a>) -> Option<Token<'a>> {
    loop {
        let tok = c.next()?;
        if tok.kind != TokenKind::Punct(b'(') {
            return Some(tok);
        }
    }
}

/// Classifies by the leading keywords; `None` for an empty statement.
fn lead(c: &mut Cursor<'_>) -> Option<Lead> {
    use Kind::{Read, Unknown, Write};
    // A loop, not recursion: `EXPLAIN ANALYZE stmt` is classified as `stmt`.
    loop {
        let Some(first) = first_word(c) else {
            return c.nonempty.then(|| Lead::new(Unknown, None, Body::Skip));
        };
        if first.kind != TokenKind::Ident {
            return Some(Lead::new(Unknown, None, Body::Calls));
        }
        let w = first.text;
        let is = |kw: &str| w.eq_ignore_ascii_case(kw);
        let lead = if is("select") || is("with") || is("values") || is("table") {
            Lead::new(Read, None, Body::Query)
        } else if is("explain") {
            if explain_analyzes(c) {
                continue;
            }
            // Only planned, never executed: a replica can do that.
            let kind = if c.peek().is_some() { Read } else { Unknown };
            Lead::new(kind, None, Body::Skip)
        } else if is("show") {
            let primary_only = c.peek().and_then(|t| t.ident_name()).is_some_and(|name| {
                PRIMARY_ONLY_SETTINGS
                    .iter()
                    .any(|s| name.eq_ignore_ascii_case(s))
            });
            Lead::new(if primary_only { Write } else { Read }, None, Body::Skip)
        } else if is("copy") {
            Lead::new(Unknown, None, Body::Copy)
        } else if is("create") {
            create(c)
        } else if WRITE_STATEMENTS.iter().any(|s| is(s)) {
            Lead::new(Write, None, Body::Calls)
        } else if is("set") {
            let scoped = c.peek().is_some_and(|t| {
                t.is_keyword("local") || t.is_keyword("transaction") || t.is_keyword("constraints")
            });
            Lead::new(Write, (!scoped).then_some(PinReason::Set), Body::Calls)
        } else if is("reset") {
            Lead::new(Write, Some(PinReason::Reset), Body::Calls)
        } else if is("begin") {
            Lead::new(
                Kind::Begin {
                    read_only: transaction_modes(c),
                },
                None,
                Body::Skip,
            )
        } else if is("start") {
            if c.eat_keyword("transaction") {
                Lead::new(
                    Kind::Begin {
                        read_only: transaction_modes(c),
                    },
                    None,
                    Body::Skip,
                )
            } else {
                Lead::new(Unknown, None, Body::Calls)
            }
        } else if is("prepare") {
            prepare(c)
        } else if is("declare") {
            Lead::new(Unknown, None, Body::Declare)
        } else if is("listen") {
            Lead::new(Write, Some(PinReason::Listen), Body::Calls)
        } else if is("load") {
            Lead::new(Write, Some(PinReason::Load), Body::Calls)
        } else {
            // COMMIT, ROLLBACK, SAVEPOINT, EXECUTE, FETCH, ... and anything
            // unrecognised: the primary.
            Lead::new(Unknown, None, Body::Calls)
        };
        return Some(lead);
    }
}

/// `CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} ...` pins.
fn create(c: &mut Cursor<'_>) -> Lead {
    if c.eat_keyword("or") {
        c.eat_keyword("replace");
    }
    let _ = c.eat_keyword("global") || c.eat_keyword("local");
    let temp = c.eat_keyword("temp") || c.eat_keyword("temporary");
    if c.peek()
        .is_some_and(|t| t.is_keyword("function") || t.is_keyword("procedure"))
    {
        c.routine = true;
    }
    Lead::new(
        Kind::Write,
        temp.then_some(PinReason::TempObject),
        Body::Create,
    )
}

/// SQL `PREPARE name AS ...` pins; `PREPARE TRANSACTION 'gid'` is
/// transaction control. The prepared body is not executed here.
fn prepare(c: &mut Cursor<'_>) -> Lead {
    let mut ahead = *c;
    let two_phase = ahead.next().is_some_and(|t| t.is_keyword("transaction"))
        && ahead.next().is_some_and(|t| t.kind == TokenKind::String);
    if two_phase {
        Lead::new(Kind::Unknown, None, Body::Skip)
    } else {
        Lead::new(Kind::Write, Some(PinReason::Prepare), Body::Skip)
    }
}

/// Reads the transaction modes of `BEGIN`/`START TRANSACTION`; whether the
/// last of `READ ONLY` / `READ WRITE` is `READ ONLY`.
fn transaction_modes(c: &mut Cursor<'_>) -> bool {
    let mut read_only = false;
    let mut prev: Option<Token<'_>> = None;
    while let Some(tok) = c.next() {
        if prev.is_some_and(|p| p.is_keyword("read")) {
            if tok.is_keyword("only") {
                read_only = true;
            } else if tok.is_keyword("write") {
                read_only = false;
            }
        }
        prev = Some(tok);
    }
    read_only
}

/// Reads `EXPLAIN`'s options; whether the explained statement is executed
/// (`ANALYZE`, `ANALYZE true`, `(ANALYZE)`, `(ANALYZE on)`, ...).
fn explain_analyzes(c: &mut Cursor<'_>) -> bool {
    let mut analyze = false;
    if c.peek().is_some_and(|t| t.kind == TokenKind::Punct(b'(')) {
        let _ = c.next();
        analyze = explain_option_list(c);
    }
    loop {
        if c.eat_keyword("analyze") || c.eat_keyword("analyse") {
            analyze = true;
        } else if !c.eat_keyword("verbose") {
            return analyze;
        }
    }
}

/// `(name [value], ...)` just past the `(`: the last `ANALYZE` option's value.
fn explain_option_list(c: &mut Cursor<'_>) -> bool {
    let list = c.depth;
    let mut analyze = false;
    let mut name: Option<Token<'_>> = None;
    let mut value: Option<Token<'_>> = None;
    while let Some(tok) = c.next() {
        let closed = c.depth < list;
        if closed || (tok.kind == TokenKind::Punct(b',') && c.depth == list) {
            if name.is_some_and(|n| n.is_keyword("analyze") || n.is_keyword("analyse")) {
                analyze = !value.is_some_and(|v| is_false_literal(&v));
            }
            if closed {
                break;
            }
            name = None;
            value = None;
        } else if name.is_none() {
            name = Some(tok);
        } else if value.is_none() {
            value = Some(tok);
        }
    }
    analyze
}

/// A boolean option value meaning false (`false`, `off`, `no`, `0`, quoted
/// or not).
fn is_false_literal(tok: &Token<'_>) -> bool {
    let text = match tok.kind {
        TokenKind::Ident | TokenKind::Number => tok.text,
        TokenKind::String => {
            let t = tok.text;
            t.strip_prefix('\'')
                .map(|t| t.strip_suffix('\'').unwrap_or(t))
                .unwrap_or(t)
        }
        _ => return false,
    };
    ["false", "f", "off", "no", "n", "0"]
        .iter()
        .any(|w| text.eq_ignore_ascii_case(w))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyDirection {
    To,
    From,
}

/// What the body scan found.
#[derive(Debug)]
struct Effects {
    write: bool,
    pin: Option<PinReason>,
    copy: Option<CopyDirection>,
}

impl Effects {
    /// The first pin reason found is the one reported.
    fn pin(&mut self, reason: PinReason) {
        self.write = true;
        if self.pin.is_none() {
            self.pin = Some(reason);
        }
    }
}

/// The few words the body scan cares about, recognised once per token so
/// the rules below compare bytes, not strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// Not an unquoted identifier.
    None,
    /// Any other unquoted identifier.
    Other,
    /// INSERT, UPDATE, DELETE, MERGE.
    Dml,
    Into,
    For,
    Key,
    Share,
    Temp,
    LocalOrGlobal,
    With,
    Hold,
    To,
    From,
    Program,
}

impl Word {
    fn of(tok: &Token<'_>) -> Word {
        if tok.kind != TokenKind::Ident {
            return Word::None;
        }
        let w = tok.text;
        let is = |kw: &str| w.eq_ignore_ascii_case(kw);
        match w.len() {
            2 if is("to") => Word::To,
            3 if is("for") => Word::For,
            3 if is("key") => Word::Key,
            4 if is("into") => Word::Into,
            4 if is("temp") => Word::Temp,
            4 if is("from") => Word::From,
            4 if is("with") => Word::With,
            4 if is("hold") => Word::Hold,
            5 if is("share") => Word::Share,
            5 if is("merge") => Word::Dml,
            5 if is("local") => Word::LocalOrGlobal,
            6 if is("insert") || is("update") || is("delete") => Word::Dml,
            6 if is("global") => Word::LocalOrGlobal,
            7 if is("program") => Word::Program,
            9 if is("temporary") => Word::Temp,
            _ => Word::Other,
        }
    }
}

fn scan_body(c: &mut Cursor<'_>, body: Body, write_functions: &[String], fx: &mut Effects) {
    if body == Body::Skip {
        return;
    }
    let query_rules = matches!(body, Body::Query | Body::Copy | Body::Declare);
    // DECLARE: `WITH HOLD` counts only before the cursor's `FOR query`.
    let mut in_declare_options = body == Body::Declare;
    // The previous two tokens' words, and the previous token's name if it
    // was an identifier (a `(` after it makes a call).
    let mut prev = Word::None;
    let mut prev2 = Word::None;
    let mut prev_name: Option<&str> = None;
    while let Some(tok) = c.next_inline() {
        let word = Word::of(&tok);
        match tok.kind {
            TokenKind::Ident => {
                if in_declare_options {
                    if word == Word::For && c.depth == 0 {
                        in_declare_options = false;
                    } else if word == Word::Hold && prev == Word::With {
                        fx.pin(PinReason::DeclareWithHold);
                    }
                } else if query_rules {
                    query_word(word, prev, prev2, fx);
                }
                if body == Body::Copy && c.depth == 0 {
                    copy_word(word, prev, fx);
                }
            }
            TokenKind::Punct(b'(') => {
                if let Some(name) = prev_name {
                    match call_effect(name, write_functions) {
                        CallEffect::Neutral => {}
                        CallEffect::Write => fx.write = true,
                        CallEffect::Pin(reason) => fx.pin(reason),
                        CallEffect::SetConfig => {
                            fx.write = true;
                            // Only the first pin is reported: no need to look
                            // ahead once the session is pinned.
                            if fx.pin.is_none() && !set_config_is_local(c) {
                                fx.pin(PinReason::SetConfig);
                            }
                        }
                    }
                }
            }
            TokenKind::Punct(b'.')
                if body == Body::Create
                    && prev_name.is_some_and(|n| n.eq_ignore_ascii_case("pg_temp")) =>
            {
                fx.pin(PinReason::TempObject);
            }
            _ => {}
        }
        prev_name = tok.ident_name();
        prev2 = prev;
        prev = word;
    }
}

/// One unquoted word inside a query.
fn query_word(word: Word, prev: Word, prev2: Word, fx: &mut Effects) {
    match word {
        // A data-modifying statement can only sit in a CTE or after the
        // WITH list, so any of these words makes the query a write (this
        // also covers FOR [NO KEY] UPDATE).
        Word::Dml => fx.write = true,
        // INTO is reserved: in a query it only means SELECT ... INTO.
        Word::Into => fx.write = true,
        // FOR SHARE, FOR KEY SHARE.
        Word::Share if prev == Word::For || (prev == Word::Key && prev2 == Word::For) => {
            fx.write = true
        }
        // SELECT ... INTO [LOCAL|GLOBAL] TEMP[ORARY] [TABLE] t.
        Word::Temp
            if prev == Word::Into || (prev == Word::LocalOrGlobal && prev2 == Word::Into) =>
        {
            fx.pin(PinReason::TempObject)
        }
        _ => {}
    }
}

/// `COPY`: the first `TO`/`FROM` outside parentheses gives the direction;
/// `TO PROGRAM` runs a command on the server host, so it stays on the primary.
fn copy_word(word: Word, prev: Word, fx: &mut Effects) {
    match (fx.copy, word) {
        (None, Word::To) => fx.copy = Some(CopyDirection::To),
        (None, Word::From) => fx.copy = Some(CopyDirection::From),
        (Some(CopyDirection::To), Word::Program) if prev == Word::To => fx.write = true,
        _ => {}
    }
}
