//! Writers for the messages PgGate composes itself. Each appends one whole
//! message to a buffer: reserve the length, write the body, patch the length.
//! Pure: no I/O here.

use super::{backend, frontend, PROTOCOL_3_0};

/// Starts a tagged message; returns the offset of its length field.
fn begin(buf: &mut Vec<u8>, tag: u8) -> usize {
    buf.push(tag);
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    at
}

/// Patches the length written at `at` to cover everything after it.
fn finish(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(s);
    buf.push(0);
}

/// ErrorResponse with severity, SQLSTATE and message. Messages PgGate writes
/// itself start with `pggate: `.
pub fn error_response(buf: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    error_response_as(buf, severity, code, &format!("pggate: {message}"));
}

/// ErrorResponse with the message exactly as given: for the few answers that
/// must read as PostgreSQL's own (a failed password check in query mode).
pub fn error_response_as(buf: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    let at = begin(buf, backend::ERROR_RESPONSE);
    buf.push(b'S');
    put_cstr(buf, severity.as_bytes());
    buf.push(b'V');
    put_cstr(buf, severity.as_bytes());
    buf.push(b'C');
    put_cstr(buf, code.as_bytes());
    buf.push(b'M');
    put_cstr(buf, message.as_bytes());
    buf.push(0);
    finish(buf, at);
}

pub fn parameter_status(buf: &mut Vec<u8>, name: &str, value: &str) {
    let at = begin(buf, backend::PARAMETER_STATUS);
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut Vec<u8>, status: u8) {
    buf.extend_from_slice(&[backend::READY_FOR_QUERY, 0, 0, 0, 5, status]);
}

pub fn backend_key_data(buf: &mut Vec<u8>, pid: i32, secret: i32) {
    let at = begin(buf, backend::BACKEND_KEY_DATA);
    buf.extend_from_slice(&pid.to_be_bytes());
    buf.extend_from_slice(&secret.to_be_bytes());
    finish(buf, at);
}

/// NegotiateProtocolVersion: the newest minor version PgGate speaks (3.0) and
/// the `_pq_.` options it does not recognise.
pub fn negotiate_protocol_version(buf: &mut Vec<u8>, minor: u32, unrecognised: &[String]) {
    let at = begin(buf, backend::NEGOTIATE_PROTOCOL_VERSION);
    buf.extend_from_slice(&minor.to_be_bytes());
    buf.extend_from_slice(&(unrecognised.len() as u32).to_be_bytes());
    for o in unrecognised {
        put_cstr(buf, o.as_bytes());
    }
    finish(buf, at);
}

/// An Authentication message with an arbitrary body (used to relay SASL
/// mechanism lists after removing what PgGate must not offer).
pub fn authentication(buf: &mut Vec<u8>, code: u32, payload: &[u8]) {
    let at = begin(buf, backend::AUTHENTICATION);
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(payload);
    finish(buf, at);
}

/// StartupMessage for protocol 3.0 with the given parameters.
pub fn startup_message<'a>(
    buf: &mut Vec<u8>,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.push(0);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// CancelRequest (untagged, 16 bytes).
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&16u32.to_be_bytes());
    b[4..8].copy_from_slice(&super::CANCEL_REQUEST.to_be_bytes());
    b[8..12].copy_from_slice(&pid.to_be_bytes());
    b[12..16].copy_from_slice(&secret.to_be_bytes());
    b
}

/// PasswordMessage with a NUL-terminated password (cleartext or MD5 response).
pub fn password_message(buf: &mut Vec<u8>, password: &str) {
    let at = begin(buf, frontend::PASSWORD);
    put_cstr(buf, password.as_bytes());
    finish(buf, at);
}

/// SASLInitialResponse: mechanism name and the client-first-message.
pub fn sasl_initial_response(buf: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    let at = begin(buf, frontend::PASSWORD);
    put_cstr(buf, mechanism.as_bytes());
    buf.extend_from_slice(&(data.len() as i32).to_be_bytes());
    buf.extend_from_slice(data);
    finish(buf, at);
}

/// SASLResponse: raw data.
pub fn sasl_response(buf: &mut Vec<u8>, data: &[u8]) {
    let at = begin(buf, frontend::PASSWORD);
    buf.extend_from_slice(data);
    finish(buf, at);
}

/// A simple Query.
pub fn query(buf: &mut Vec<u8>, sql: &str) {
    let at = begin(buf, frontend::QUERY);
    put_cstr(buf, sql.as_bytes());
    finish(buf, at);
}

pub fn terminate(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[frontend::TERMINATE, 0, 0, 0, 4]);
}

/// Quotes a string as an SQL literal (standard_conforming_strings on, which
/// PostgreSQL has defaulted to since 9.1; backslashes use the E'' form).
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier.
pub fn quote_ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_error_fields, parse_header};

    #[test]
    fn error_response_round_trips() {
        let mut b = Vec::new();
        error_response(&mut b, "FATAL", "08P01", "bad");
        let h = parse_header(&b, 1000).unwrap().unwrap();
        assert_eq!(h.tag, b'E');
        assert_eq!(h.frame_len(), b.len());
        let f = parse_error_fields(&b[5..]);
        assert_eq!(f.code, "08P01");
        assert_eq!(f.message, "pggate: bad");
    }

    #[test]
    fn startup_message_length_covers_itself() {
        let mut b = Vec::new();
        startup_message(&mut b, [("user", "u"), ("database", "d")]);
        assert_eq!(
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        assert!(matches!(
            crate::protocol::parse_startup(&b[4..]),
            Ok(crate::protocol::StartupPacket::Startup { .. })
        ));
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
