//! The PostgreSQL v3 wire protocol as PgGate needs it: message tags, framing
//! (header checks before anything is buffered), nom parsers for the few
//! messages PgGate must understand (`body`, `startup`), and writers for the
//! messages it sends itself (`write`). Pure: no I/O here.

mod body;
pub mod startup;
pub mod write;

#[cfg(test)]
mod no_panic;

pub use body::{
    bind_statement, cstr, parse_auth_request, parse_backend_key_data, parse_error_fields,
    parse_message_query, parse_parameter_status, parse_parts, query_text, target, ErrorFields,
};
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
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const NO_DATA: u8 = b'n';
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
    fn header_accepts_the_bounds_themselves() {
        assert_eq!(
            parse_header(b"S\0\0\0\x04", 4),
            Ok(Some(Header { tag: b'S', len: 4 }))
        );
        assert_eq!(parse_header(b"S\0\0\0\x05", 4), Err(FrameError::TooLong(5)));
        assert_eq!(
            parse_header(b"S\0\0\0\0", 100),
            Err(FrameError::TooShort(0))
        );
    }

    #[test]
    fn header_reads_only_the_first_five_bytes() {
        assert_eq!(
            parse_header(b"Z\0\0\0\x05IZ\0\0\0\x05I", 100),
            Ok(Some(Header { tag: b'Z', len: 5 }))
        );
        assert_eq!(parse_header(b"", 100), Ok(None));
    }
}
