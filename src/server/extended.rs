//! Extended-protocol bookkeeping: the statements a client prepared under its
//! own names, the server-side names PgGate gives them, and the queue of
//! replies a backend connection owes (which to forward, which to swallow,
//! which PgGate answers itself, and what to undo when an error makes the
//! server skip to Sync). Pure data and message building: no I/O here.

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use crate::protocol::{bind_statement, parse_parts, target};
use crate::protocol::{cstr, frontend};
use crate::sql::Classification;

/// Identity of a statement: a hash of its Parse body (text and parameter
/// types). Identical texts share one server-side statement per connection; a
/// cryptographic hash, so no client can make its statement stand in for
/// another client's.
pub type StatementId = [u8; 16];

/// A statement a client prepared under its own name.
pub struct Statement {
    pub id: StatementId,
    /// `pggate_` and the id in hex: what the server knows it as.
    pub server_name: String,
    /// The Parse body after the name: query text, NUL, parameter count and types.
    pub body: Vec<u8>,
    pub class: Classification,
}

impl Statement {
    pub fn new(body: &[u8], class: Classification) -> Statement {
        let id = statement_id(body);
        Statement {
            id,
            server_name: server_name(&id),
            body: body.to_vec(),
            class,
        }
    }
}

pub fn statement_id(body: &[u8]) -> StatementId {
    let digest = Sha256::digest(body);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

pub fn server_name(id: &StatementId) -> String {
    let mut s = String::with_capacity(7 + 32);
    s.push_str("pggate_");
    for b in id {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// A client's named statements.
pub type Registry = foldhash::HashMap<Vec<u8>, Arc<Statement>>;

/// What to put right if a message's reply never comes (the server failed it
/// or skipped it after an earlier error).
#[derive(Default)]
pub struct Undo {
    /// The client's Parse registered this name: remove it again.
    pub unregister: Option<(Vec<u8>, Arc<Statement>)>,
    /// The client's Close removed this name: put it back.
    pub reregister: Option<(Vec<u8>, Arc<Statement>)>,
    /// PgGate sent a Parse of this statement: the server does not have it.
    pub unprepared: Option<StatementId>,
    /// PgGate cannot know the server's state any more: never reuse the connection.
    pub uncertain: bool,
}

impl Undo {
    pub fn is_empty(&self) -> bool {
        self.unregister.is_none()
            && self.reregister.is_none()
            && self.unprepared.is_none()
            && !self.uncertain
    }
}

/// Message types that end the reply to one client message.
pub const ENDS_PARSE: &[u8] = b"1";
pub const ENDS_BIND: &[u8] = b"2";
pub const ENDS_CLOSE: &[u8] = b"3";
pub const ENDS_DESCRIBE: &[u8] = b"Tn";
pub const ENDS_EXECUTE: &[u8] = b"CIs";

/// One reply a backend connection owes, in the order the server sends them.
pub enum Reply {
    /// The reply to a client's message: forwarded.
    Forward {
        ends: &'static [u8],
        undo: Option<Box<Undo>>,
    },
    /// The reply to a message PgGate injected: swallowed. Its error, if any,
    /// reaches the client in place of the reply to the message that needed it.
    Swallow {
        ends: &'static [u8],
        undo: Option<Box<Undo>>,
    },
    /// PgGate's own reply, sent to the client when its turn comes.
    Local {
        bytes: Vec<u8>,
        undo: Option<Box<Undo>>,
    },
    /// A reply ending in ReadyForQuery (Sync, simple Query, FunctionCall),
    /// with the time the batch was sent (for the query duration metric).
    Ready(std::time::Instant),
    /// The client ended a COPY (CopyDone or CopyFail): no reply of its own,
    /// but Syncs sent before it during a COPY FROM STDIN are ignored by the
    /// server, and this marks where that stops.
    CopyEnd,
    /// PgGate's own `SELECT pg_current_wal_lsn()` (read your writes): its
    /// replies are swallowed and the position noted for the session.
    CaptureLsn,
    /// PgGate answers a simple Query itself: CommandComplete with this tag,
    /// then ReadyForQuery with the connection's transaction status.
    LocalReady { tag: &'static str },
}

impl Reply {
    pub fn forward(ends: &'static [u8]) -> Reply {
        Reply::Forward { ends, undo: None }
    }

    /// The statement whose Parse (sent by PgGate) this reply answers.
    pub fn parsed_statement(&self) -> Option<StatementId> {
        match self {
            Reply::Forward { undo, .. } | Reply::Swallow { undo, .. } => {
                undo.as_ref().and_then(|u| u.unprepared)
            }
            _ => None,
        }
    }

    pub fn take_undo(&mut self) -> Option<Box<Undo>> {
        match self {
            Reply::Forward { undo, .. }
            | Reply::Swallow { undo, .. }
            | Reply::Local { undo, .. } => undo.take(),
            Reply::Ready(_) | Reply::LocalReady { .. } | Reply::CaptureLsn | Reply::CopyEnd => None,
        }
    }
}

/// Appends a Parse message.
pub fn write_parse(out: &mut Vec<u8>, name: &str, body: &[u8]) {
    out.push(frontend::PARSE);
    let len = 4 + name.len() + 1 + body.len();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(body);
}

/// Appends a Close or Describe of a statement.
pub fn write_statement_message(out: &mut Vec<u8>, tag: u8, name: &str) {
    out.push(tag);
    let len = 4 + 1 + name.len() + 1;
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(b'S');
    out.extend_from_slice(name.as_bytes());
    out.push(0);
}

/// Appends a Bind whose statement name is replaced; `body` is the client's
/// Bind body. None if the body is malformed.
pub fn write_bind_renamed(out: &mut Vec<u8>, body: &[u8], statement: &str) -> Option<()> {
    let (portal, rest) = cstr(body)?;
    let (_, rest) = cstr(rest)?;
    out.push(frontend::BIND);
    let len = 4 + portal.len() + 1 + statement.len() + 1 + rest.len();
    out.extend_from_slice(&(u32::try_from(len).ok()?).to_be_bytes());
    out.extend_from_slice(portal);
    out.push(0);
    out.extend_from_slice(statement.as_bytes());
    out.push(0);
    out.extend_from_slice(rest);
    Some(())
}

/// ParseComplete / BindComplete / CloseComplete as PgGate sends them itself.
pub const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];
pub const CLOSE_COMPLETE: &[u8] = &[b'3', 0, 0, 0, 4];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_bodies_share_a_server_name() {
        let a = statement_id(b"select $1\0\0\x01\0\0\0\x17");
        let b = statement_id(b"select $1\0\0\x01\0\0\0\x17");
        let c = statement_id(b"select $1\0\0\x01\0\0\0\x14");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let name = server_name(&a);
        assert!(name.starts_with("pggate_"));
        assert_eq!(name.len(), 39);
        assert!(name.len() < 64, "fits NAMEDATALEN");
    }

    #[test]
    fn bind_is_renamed_keeping_the_rest() {
        let body = b"portal\0s1\0\0\0\0\x01\0\0\0\x011\0\0";
        let mut out = Vec::new();
        write_bind_renamed(&mut out, body, "pggate_x").unwrap();
        assert_eq!(out[0], b'B');
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        assert_eq!(
            crate::protocol::bind_statement(&out[5..]),
            Some(&b"pggate_x"[..])
        );
        assert!(out.ends_with(b"\0\0\0\0\x01\0\0\0\x011\0\0"));
        assert!(write_bind_renamed(&mut out, b"portal", "x").is_none());
    }

    #[test]
    fn written_messages_have_right_lengths() {
        let mut out = Vec::new();
        write_parse(&mut out, "pggate_a", b"select 1\0\0\0");
        write_statement_message(&mut out, b'C', "pggate_a");
        let first = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize + 1;
        assert_eq!(&out[first..first + 1], b"C");
        let second = u32::from_be_bytes([
            out[first + 1],
            out[first + 2],
            out[first + 3],
            out[first + 4],
        ]);
        assert_eq!(second as usize + 1 + first, out.len());
    }
}
