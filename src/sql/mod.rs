//! SQL routing: reads query text and says where it may run (SPEC §4) and
//! whether it pins the session to the primary (SPEC §3). Pure: no I/O here.
//! It runs for every query on the hot path, so the common path allocates
//! nothing, never recurses, and is linear in the length of the query.
//!
//! - [`lexer`]: tokens, with comments, every string form and quoted
//!   identifiers understood, so words inside them never count.
//! - [`classify()`]: the verdict for a simple-query string (one or more
//!   statements).
//! - [`deallocate_target()`]: the `DEALLOCATE`/`DISCARD ALL` statements
//!   PgGate answers itself.
//!
//! Combining several statements of one simple Query: the kind is the
//! strongest of them, in the order Read < Begin{read_only: true} <
//! Begin{read_only: false} < Unknown < Write (so a query that writes is a
//! Write even if some other part is unrecognised), the pin is the first pin
//! reason found, and the hint is the first statement's, except that a
//! primary hint on any statement wins.
//!
//! Limits, all erring towards the primary or left to SPEC §4.1's read-only
//! retry: plain `'...'` strings are read as with `standard_conforming_strings
//! = on` (the default since PostgreSQL 9.1); functions are recognised by name
//! only, so a user-defined function that writes is a read unless it is in
//! `routing.write_functions` (the replica's 25006 then sends it to the
//! primary); a column or alias spelled like `update` or `insert` makes a
//! query a write.

mod classify;
mod cursor;
mod deallocate;
mod functions;
pub mod lexer;

#[cfg(test)]
mod tests;

pub use deallocate::deallocate_target;
pub use lexer::{Lexer, Token, TokenKind};

use classify::classify_statement;
use cursor::Cursor;

/// What a query does, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// May run on a replica.
    Read,
    /// Primary: writes, DDL, locking reads, write-function calls, session
    /// state, and the few reads a hot standby answers differently
    /// (`SHOW transaction_read_only`, `pg_is_in_recovery()`, `currval()`).
    Write,
    /// `BEGIN` / `START TRANSACTION`; `read_only` when `READ ONLY` is the
    /// last access mode given.
    Begin { read_only: bool },
    /// Empty, invalid, unrecognised, or transaction control (`COMMIT`,
    /// `ROLLBACK`, ...): primary.
    Unknown,
}

impl Kind {
    /// Order used to combine the statements of one query.
    fn strength(self) -> u8 {
        match self {
            Kind::Read => 0,
            Kind::Begin { read_only: true } => 1,
            Kind::Begin { read_only: false } => 2,
            Kind::Unknown => 3,
            Kind::Write => 4,
        }
    }
}

/// Why a statement pins its session to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    Set,
    Reset,
    SetConfig,
    Prepare,
    Listen,
    DeclareWithHold,
    TempObject,
    AdvisoryLock,
    Load,
}

impl PinReason {
    /// The `reason` label of `pggate_sessions_pinned_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Set => "set",
            PinReason::Reset => "reset",
            PinReason::SetConfig => "set_config",
            PinReason::Prepare => "prepare",
            PinReason::Listen => "listen",
            PinReason::DeclareWithHold => "declare_with_hold",
            PinReason::TempObject => "temp_object",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::Load => "load",
        }
    }
}

/// A `/* pggate:primary */` or `/* pggate:replica */` comment before the
/// first keyword of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// The routing verdict for one simple-query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub kind: Kind,
    /// The statement changes session state: the session is pinned to the primary.
    pub pin: Option<PinReason>,
    pub hint: Option<Hint>,
    /// Number of non-empty statements seen.
    pub statements: usize,
}

impl Classification {
    /// Whether this query may go to a replica. `reads_to_primary` is
    /// `routing.reads = "primary"`.
    ///
    /// A Read or a `BEGIN READ ONLY` goes to a replica unless
    /// `reads_to_primary` (which a replica hint overrides) or a primary hint
    /// says otherwise. A replica hint never sends anything else (a write, an
    /// unknown statement, a pinning statement, a read-write `BEGIN`) to a
    /// replica.
    pub fn wants_replica(&self, reads_to_primary: bool) -> bool {
        if self.pin.is_some() {
            return false;
        }
        match self.kind {
            Kind::Read | Kind::Begin { read_only: true } => match self.hint {
                Some(Hint::Primary) => false,
                Some(Hint::Replica) => true,
                None => !reads_to_primary,
            },
            Kind::Write | Kind::Unknown | Kind::Begin { read_only: false } => false,
        }
    }
}

/// Classifies a simple-query string (possibly several statements).
/// `write_functions` is `routing.write_functions`: names compared ASCII
/// case-insensitively, matching calls whether or not they are
/// schema-qualified (a configured `schema.func` matches any `func(`).
pub fn classify(sql: &str, write_functions: &[String]) -> Classification {
    let mut out = Classification {
        kind: Kind::Unknown,
        pin: None,
        hint: None,
        statements: 0,
    };
    let mut primary_hint = false;
    let mut lex = Lexer::new(sql);
    loop {
        let mut cursor = Cursor::new(lex);
        let statement = classify_statement(&mut cursor, write_functions);
        lex = cursor.lexer();
        if let Some(s) = statement {
            if out.statements == 0 {
                out.kind = s.kind;
                out.hint = s.hint;
            } else if s.kind.strength() > out.kind.strength() {
                out.kind = s.kind;
            }
            out.pin = out.pin.or(s.pin);
            primary_hint |= s.hint == Some(Hint::Primary);
            out.statements += 1;
        }
        // Each statement ends at a `;` it consumed or at the end of input,
        // so this loop always advances.
        if lex.offset() >= sql.len() {
            break;
        }
    }
    if primary_hint {
        out.hint = Some(Hint::Primary);
    }
    out
}

/// A `DEALLOCATE` target: every prepared statement, or one by name (as
/// PostgreSQL would look it up: folded and truncated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    All,
    Name(String),
}
