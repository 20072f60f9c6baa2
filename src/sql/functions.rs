//! Function calls that decide a route: the built-in functions that write or
//! only make sense on the primary, `routing.write_functions`, the
//! session-level advisory locks that pin, and `set_config`'s `is_local`
//! argument. Pure: no I/O here, no allocation.
//!
//! Beyond the SPEC list, a few built-ins go to the primary because on a
//! replica they would answer differently without an error the read-only
//! retry could catch: `currval`/`lastval` (session sequence state),
//! `pg_is_in_recovery` and `pg_current_wal*_lsn` (a client checking that it
//! talks to the primary), and `pg_cancel_backend`/`pg_terminate_backend`/
//! `pg_reload_conf` (they act on the server they run on).

use super::cursor::Cursor;
use super::lexer::{Token, TokenKind};
use super::PinReason;

/// What calling a function means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallEffect {
    /// Nothing: may run anywhere.
    Neutral,
    /// Primary.
    Write,
    /// Primary, and the session is pinned.
    Pin(PinReason),
    /// `set_config`: primary; pins unless `is_local` is literally true.
    SetConfig,
}

/// Built-ins that must run on the primary (compared ASCII case-insensitively).
const PRIMARY_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "pg_notify",
    "txid_current",
    "pg_current_xact_id",
    "currval",
    "lastval",
    "pg_is_in_recovery",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
];

/// Advisory locks held until the session ends (the `_xact_` variants end
/// with the transaction and do not pin).
const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// The effect of calling the function `name` (the last part of a possibly
/// schema-qualified name). Names in `write_functions` may be written
/// schema-qualified or quoted; only their last part is compared, so a call
/// matches whether or not it is qualified.
pub(crate) fn call_effect(name: &str, write_functions: &[String]) -> CallEffect {
    if name.eq_ignore_ascii_case("set_config") {
        return CallEffect::SetConfig;
    }
    if starts_with_ignore_case(name, "pg_advisory")
        || starts_with_ignore_case(name, "pg_try_advisory")
    {
        if SESSION_ADVISORY_LOCKS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            return CallEffect::Pin(PinReason::AdvisoryLock);
        }
        if contains_ignore_case(name, "lock") {
            return CallEffect::Write;
        }
    }
    if starts_with_ignore_case(name, "lo_")
        || PRIMARY_FUNCTIONS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        || write_functions
            .iter()
            .any(|f| configured_name_matches(f, name))
    {
        return CallEffect::Write;
    }
    CallEffect::Neutral
}

/// Whether a configured name (`func`, `schema.func`, `"Func"`) names the
/// called function `name`: its last part equals `name`, ASCII
/// case-insensitively. No splitting or allocation: this runs for every call
/// in every query.
fn configured_name_matches(configured: &str, name: &str) -> bool {
    let c = configured.trim().as_bytes();
    let c = c.strip_suffix(b"\"").unwrap_or(c);
    let Some(split) = c.len().checked_sub(name.len()) else {
        return false;
    };
    let (Some(head), Some(last)) = (c.get(..split), c.get(split..)) else {
        return false;
    };
    last.eq_ignore_ascii_case(name.as_bytes()) && matches!(head.last(), None | Some(b'.' | b'"'))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn contains_ignore_case(s: &str, needle: &str) -> bool {
    s.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// How far past `set_config(` we look for its third argument. Bounded so a
/// pathological query (thousands of nested calls) stays linear; running out
/// means "pin", the safe answer.
const SET_CONFIG_LOOKAHEAD: usize = 64;

/// Given a cursor just past the `(` of a `set_config` call, whether its third
/// argument (`is_local`) is literally true, so the setting ends with the
/// transaction and the session need not be pinned. Anything else (false,
/// an expression, a parameter, a missing argument) answers `false`.
pub(crate) fn set_config_is_local(after_paren: &Cursor<'_>) -> bool {
    let mut ahead = *after_paren;
    let inner = ahead.depth;
    let mut arg = 0usize;
    let mut third: [Option<Token<'_>>; 3] = [None; 3];
    let mut len = 0usize;
    for _ in 0..SET_CONFIG_LOOKAHEAD {
        let Some(tok) = ahead.next() else {
            return false;
        };
        if ahead.depth < inner {
            return match (len, third) {
                (1, [Some(value), _, _]) => is_true_literal(&value),
                // Named notation: `is_local => true`.
                (3, [Some(_), Some(arrow), Some(value)])
                    if arrow.kind == TokenKind::Operator && arrow.text == "=>" =>
                {
                    is_true_literal(&value)
                }
                _ => false,
            };
        }
        if tok.kind == TokenKind::Punct(b',') && ahead.depth == inner {
            arg += 1;
            if arg > 2 {
                return false;
            }
            continue;
        }
        if arg == 2 {
            if let Some(slot) = third.get_mut(len) {
                *slot = Some(tok);
            }
            len += 1;
        }
    }
    false
}

/// `true`, or a plain string PostgreSQL reads as boolean true.
fn is_true_literal(tok: &Token<'_>) -> bool {
    match tok.kind {
        TokenKind::Ident => tok.text.eq_ignore_ascii_case("true"),
        TokenKind::String => {
            let Some(inner) = tok
                .text
                .strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
            else {
                return false;
            };
            let v = inner.trim_matches(|c: char| c.is_ascii_whitespace());
            ["t", "true", "y", "yes", "on", "1"]
                .iter()
                .any(|w| v.eq_ignore_ascii_case(w))
        }
        _ => false,
    }
}
