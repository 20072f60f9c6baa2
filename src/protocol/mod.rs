//! The PostgreSQL v3 wire protocol as PgGate needs it: message tags, framing
//! (header checks before anything is buffered), nom parsers for the few
//! messages PgGate must understand, and writers for the messages it sends
//! itself. Pure: no I/O here.

pub mod startup;
pub mod write;

pub use startup::{parse_startup, StartupPacket};

/// Frontend (client → server) message tags.
pub mod frontend {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse.
    pub const PASSWORD: u8 = b'p';
}

/// Backend (server → client) message tags.
pub mod backend {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
}

/// Authentication request codes inside an `R` message.
pub mod auth_code {
    pub const OK: u32 = 0;
    pub const CLEARTEXT: u32 = 3;
    pub const MD5: u32 = 5;
    pub const SASL: u32 = 10;
    pub const SASL_CONTINUE: u32 = 11;
    pub const SASL_FINAL: u32 = 12;
}

/// Request codes of the untagged startup-phase packets.
pub const PROTOCOL_3_0: u32 = 196_608;
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;

/// PostgreSQL refuses startup packets longer than this; so does PgGate.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A tagged message header: one type byte and a length that counts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length as sent: includes the four length bytes, not the tag.
    pub len: u32,
}

impl Header {
    pub const SIZE: usize = 5;

    /// Total bytes of the message on the wire (tag + length + body).
    pub fn frame_len(&self) -> usize {
        1 + self.len as usize
    }
}

/// Why a frame is refused before it is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Declared length below 4.
    TooShort(u32),
    /// Declared length above the configured maximum.
    TooLong(u32),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(f, "invalid message length {n}"),
            FrameError::TooLong(n) => write!(f, "message length {n} exceeds the limit"),
        }
    }
}

/// Reads a tagged header from the start of `buf`. `Ok(None)`: need more bytes.
/// Lengths below 4 or above `max_len` are refused before anything is buffered.
pub fn parse_header(buf: &[u8], max_len: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < Header::SIZE {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > max_len {
        return Err(FrameError::TooLong(len));
    }
    Ok(Some(Header { tag: buf[0], len }))
}

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// The fields of an ErrorResponse or NoticeResponse body that PgGate looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// Parses an ErrorResponse/NoticeResponse body (after the header).
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, tail)) = cstr(tail) else {
            break;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b'S' => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
        rest = tail;
    }
    out
}

/// Parses a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Parses an Authentication request body: the code and the rest of the body.
pub fn parse_auth_request(body: &[u8]) -> Option<(u32, &[u8])> {
    if body.len() < 4 {
        return None;
    }
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    Some((code, &body[4..]))
}

/// Parses a BackendKeyData body: (process id, secret key).
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    if body.len() != 8 {
        return None;
    }
    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    Some((pid, secret))
}

/// The query text of a Query body (NUL-terminated).
pub fn query_text(body: &[u8]) -> Option<&str> {
    let (text, _) = cstr(body)?;
    std::str::from_utf8(text).ok()
}

/// The statement name and query text of a Parse body.
pub fn parse_message_query(body: &[u8]) -> Option<(&[u8], &str)> {
    let (name, rest) = cstr(body)?;
    let (text, _) = cstr(rest)?;
    Some((name, std::str::from_utf8(text).ok()?))
}

/// The statement name a Bind body refers to.
pub fn bind_statement(body: &[u8]) -> Option<&[u8]> {
    let (_, rest) = cstr(body)?;
    let (name, _) = cstr(rest)?;
    Some(name)
}

/// The target of a Describe or Close body: (b'S' or b'P', name).
pub fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = cstr(rest)?;
    matches!(kind, b'S' | b'P').then_some((kind, name))
}

/// The name and the rest (text, types) of a Parse body.
pub fn parse_parts(body: &[u8]) -> Option<(&[u8], &[u8], &str)> {
    let (name, rest) = cstr(body)?;
    let (text, _) = cstr(rest)?;
    Some((name, rest, std::str::from_utf8(text).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(parse_header(b"Q\0\0\0", 100), Ok(None));
    }

    #[test]
    fn header_rejects_lengths_below_four() {
        assert_eq!(
            parse_header(b"Q\0\0\0\x03", 100),
            Err(FrameError::TooShort(3))
        );
    }

    #[test]
    fn header_rejects_lengths_above_the_limit() {
        assert_eq!(
            parse_header(b"Q\x7f\xff\xff\xff", 1 << 20),
            Err(FrameError::TooLong(0x7fff_ffff))
        );
    }

    #[test]
    fn header_accepts_a_query() {
        let h = parse_header(b"Q\0\0\0\x0dselect 1\0", 100).unwrap();
        assert_eq!(h, Some(Header { tag: b'Q', len: 13 }));
        assert_eq!(h.unwrap().frame_len(), 14);
    }

    #[test]
    fn error_fields_are_read() {
        let body = b"SERROR\0VERROR\0C28P01\0Mpassword authentication failed\0\0";
        let f = parse_error_fields(body);
        assert_eq!(f.code, "28P01");
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.message, "password authentication failed");
    }

    #[test]
    fn truncated_error_fields_do_not_panic() {
        let f = parse_error_fields(b"SERR");
        assert_eq!(f, ErrorFields::default());
        let _ = parse_error_fields(b"");
        let _ = parse_error_fields(b"\0");
    }

    #[test]
    fn parameter_status_and_key_data() {
        assert_eq!(
            parse_parameter_status(b"TimeZone\0UTC\0"),
            Some(("TimeZone".into(), "UTC".into()))
        );
        assert_eq!(parse_parameter_status(b"TimeZone\0UTC"), None);
        assert_eq!(
            parse_backend_key_data(&[0, 0, 0, 7, 0, 0, 0, 9]),
            Some((7, 9))
        );
        assert_eq!(parse_backend_key_data(&[0, 0, 0, 7]), None);
    }

    #[test]
    fn query_and_parse_bodies() {
        assert_eq!(query_text(b"select 1\0"), Some("select 1"));
        assert_eq!(query_text(b"select 1"), None);
        assert_eq!(
            parse_message_query(b"s1\0select $1\0\0\0"),
            Some((&b"s1"[..], "select $1"))
        );
    }
    #[test]
    fn targets_and_parse_parts() {
        assert_eq!(target(b"Sname\0"), Some((b'S', &b"name"[..])));
        assert_eq!(target(b"P\0"), Some((b'P', &b""[..])));
        assert_eq!(target(b"Xname\0"), None);
        assert_eq!(target(b"S"), None);
        let (name, rest, text) = parse_parts(b"s1\0select 1\0\0\0").unwrap();
        assert_eq!(name, b"s1");
        assert_eq!(rest, b"select 1\0\0\0");
        assert_eq!(text, "select 1");
    }
}
