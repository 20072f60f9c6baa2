//! nom parsers for the bodies of the tagged messages PgGate must read: Query,
//! Parse, Bind, Describe and Close from clients; Authentication,
//! BackendKeyData, ParameterStatus and ErrorResponse/NoticeResponse from
//! backends. Each takes a body the framing has already bounded, borrows from
//! it, and answers `None` (or what it found, for error fields) on malformed
//! input instead of panicking. Pure: no I/O here.

use nom::bytes::complete::{tag, take_until};
use nom::bytes::streaming::take_till;
use nom::combinator::{all_consuming, complete, map_res, peek, verify};
use nom::multi::fold_many0;
use nom::number::complete::{be_i32, be_u32, u8 as byte};
use nom::sequence::{preceded, terminated};
use nom::{IResult, Parser};

const NUL: &[u8] = b"\0";

/// A NUL-terminated string: the bytes before the first NUL, which is consumed.
/// Names (statements, portals, parameters) are short, and for a few bytes a
/// plain scan beats setting up `memchr`. The scan is the streaming
/// `take_till`: without a NUL it stops with `Incomplete` at once, where the
/// complete one would take the whole input only to fail on the terminator.
/// Bodies arrive whole, so callers treat `Incomplete` as malformed.
pub(crate) fn cstring(input: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(take_till(|b| b == 0), byte).parse(input)
}

/// A NUL-terminated query text, which must be valid UTF-8. Texts run to
/// kilobytes, so the NUL is found with `memchr` (what `take_until` does on
/// bytes).
fn sql_text(input: &[u8]) -> IResult<&[u8], &str> {
    map_res(terminated(take_until(NUL), tag(NUL)), std::str::from_utf8).parse(input)
}

/// The kind byte of a Describe or Close: `S`tatement or `P`ortal.
fn statement_or_portal(input: &[u8]) -> IResult<&[u8], u8> {
    verify(byte, |kind: &u8| matches!(kind, b'S' | b'P')).parse(input)
}

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (rest, s) = cstring(buf).ok()?;
    Some((s, rest))
}

/// The fields of an ErrorResponse or NoticeResponse body that PgGate looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    /// Keeps a field PgGate looks at; a repeated field replaces the earlier one.
    fn with(mut self, (field, value): (u8, &[u8])) -> Self {
        let slot = match field {
            b'S' => &mut self.severity,
            b'C' => &mut self.code,
            b'M' => &mut self.message,
            _ => return self,
        };
        *slot = String::from_utf8_lossy(value).into_owned();
        self
    }
}

/// Parses an ErrorResponse/NoticeResponse body (after the header). Reading
/// stops at the terminating NUL; a truncated body yields the fields before
/// the cut, since a backend's error is worth reporting even when mangled.
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let field = complete((verify(byte, |field: &u8| *field != 0), cstring));
    match fold_many0(field, ErrorFields::default, ErrorFields::with).parse(body) {
        Ok((_, fields)) => fields,
        // Unreachable: every field consumes at least two bytes and
        // `complete` turns a cut into a plain error, so the fold only ever
        // stops cleanly.
        Err(_) => ErrorFields::default(),
    }
}

/// Parses a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (_, (name, value)) = (cstring, cstring).parse(body).ok()?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Parses an Authentication request body: the code and the rest of the body.
pub fn parse_auth_request(body: &[u8]) -> Option<(u32, &[u8])> {
    let (rest, code) = be_u32::<_, nom::error::Error<&[u8]>>(body).ok()?;
    Some((code, rest))
}

/// Parses a BackendKeyData body: (process id, secret key). Exactly 8 bytes.
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    let (_, key) = all_consuming((be_i32::<_, nom::error::Error<&[u8]>>, be_i32))
        .parse(body)
        .ok()?;
    Some(key)
}

/// The query text of a Query body (NUL-terminated).
pub fn query_text(body: &[u8]) -> Option<&str> {
    let (_, text) = sql_text(body).ok()?;
    Some(text)
}

/// The statement name and query text of a Parse body.
pub fn parse_message_query(body: &[u8]) -> Option<(&[u8], &str)> {
    let (_, parts) = (cstring, sql_text).parse(body).ok()?;
    Some(parts)
}

/// The statement name a Bind body refers to (after the portal name).
pub fn bind_statement(body: &[u8]) -> Option<&[u8]> {
    let (_, name) = preceded(cstring, cstring).parse(body).ok()?;
    Some(name)
}

/// The target of a Describe or Close body: (b'S' or b'P', name).
pub fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (_, target) = (statement_or_portal, cstring).parse(body).ok()?;
    Some(target)
}

/// The name, the rest after the name (text, parameter types) and the query
/// text of a Parse body.
pub fn parse_parts(body: &[u8]) -> Option<(&[u8], &[u8], &str)> {
    let (rest, (name, text)) = (cstring, peek(sql_text)).parse(body).ok()?;
    Some((name, rest, text))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    // cstr

    #[test]
    fn cstr_splits_at_the_first_nul() {
        assert_eq!(cstr(b"ab\0cd\0"), Some((&b"ab"[..], &b"cd\0"[..])));
        assert_eq!(cstr(b"\0"), Some((&b""[..], &b""[..])));
        assert_eq!(cstr(b"\0\0"), Some((&b""[..], &b"\0"[..])));
    }

    #[test]
    fn cstr_without_a_nul_is_none() {
        assert_eq!(cstr(b""), None);
        assert_eq!(cstr(b"abc"), None);
    }

    #[test]
    fn cstr_does_not_care_about_utf8() {
        assert_eq!(cstr(b"\xff\xfe\0x"), Some((&b"\xff\xfe"[..], &b"x"[..])));
    }

    // ErrorResponse / NoticeResponse

    #[test]
    fn error_fields_stop_at_the_terminating_nul() {
        let f = parse_error_fields(b"SERROR\0\0C28P01\0Mlate\0\0");
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.code, "");
        assert_eq!(f.message, "");
    }

    #[test]
    fn truncated_error_fields_keep_what_came_before_the_cut() {
        let f = parse_error_fields(b"SFATAL\0C57P01\0Mterminating conn");
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "57P01");
        assert_eq!(f.message, "");
        // Cut right after a field's code byte, and without the final NUL.
        let f = parse_error_fields(b"C08006\0M");
        assert_eq!(f.code, "08006");
        let f = parse_error_fields(b"C08006\0");
        assert_eq!(f.code, "08006");
    }

    #[test]
    fn error_fields_ignore_unknown_fields_and_keep_the_last_repeat() {
        let f = parse_error_fields(b"VERROR\0Dsome detail\0C1\0C2\0\0");
        assert_eq!(f.severity, "");
        assert_eq!(f.code, "2");
    }

    #[test]
    fn error_fields_with_invalid_utf8_are_replaced_not_dropped() {
        let f = parse_error_fields(b"Mcaf\xe9\0\0");
        assert_eq!(f.message, "caf\u{fffd}");
    }

    #[test]
    fn error_fields_ignore_trailing_bytes_after_the_terminator() {
        let f = parse_error_fields(b"C42601\0\0Mjunk\0");
        assert_eq!(f.code, "42601");
        assert_eq!(f.message, "");
    }

    // ParameterStatus

    #[test]
    fn parameter_status_needs_both_strings() {
        assert_eq!(parse_parameter_status(b""), None);
        assert_eq!(parse_parameter_status(b"TimeZone"), None);
        assert_eq!(parse_parameter_status(b"TimeZone\0"), None);
    }

    #[test]
    fn parameter_status_ignores_trailing_bytes() {
        assert_eq!(
            parse_parameter_status(b"a\0b\0junk"),
            Some(("a".into(), "b".into()))
        );
    }

    #[test]
    fn parameter_status_accepts_empty_values_and_invalid_utf8() {
        assert_eq!(
            parse_parameter_status(b"application_name\0\0"),
            Some(("application_name".into(), String::new()))
        );
        assert_eq!(
            parse_parameter_status(b"x\xff\0v\0"),
            Some(("x\u{fffd}".into(), "v".into()))
        );
    }

    // Authentication

    #[test]
    fn auth_request_reads_the_code_and_keeps_the_payload() {
        assert_eq!(parse_auth_request(&[0, 0, 0, 0]), Some((0, &b""[..])));
        assert_eq!(
            parse_auth_request(&[0, 0, 0, 5, 1, 2, 3, 4]),
            Some((5, &[1, 2, 3, 4][..]))
        );
        assert_eq!(
            parse_auth_request(b"\0\0\0\x0aSCRAM-SHA-256\0\0"),
            Some((10, &b"SCRAM-SHA-256\0\0"[..]))
        );
    }

    #[test]
    fn short_auth_request_is_none() {
        assert_eq!(parse_auth_request(b""), None);
        assert_eq!(parse_auth_request(&[0, 0, 0]), None);
    }

    // BackendKeyData

    #[test]
    fn backend_key_data_is_signed() {
        assert_eq!(
            parse_backend_key_data(&[0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0]),
            Some((-1, i32::MIN))
        );
    }

    #[test]
    fn backend_key_data_of_the_wrong_length_is_none() {
        assert_eq!(parse_backend_key_data(b""), None);
        assert_eq!(parse_backend_key_data(&[0; 7]), None);
        assert_eq!(parse_backend_key_data(&[0; 9]), None);
        assert_eq!(parse_backend_key_data(&[0; 16]), None);
    }

    // Query

    #[test]
    fn query_text_edge_cases() {
        assert_eq!(query_text(b""), None);
        assert_eq!(query_text(b"\0"), Some(""));
        assert_eq!(query_text(b"select 1\0junk"), Some("select 1"));
        assert_eq!(query_text(b"select '\xff'\0"), None);
        assert_eq!(query_text("select 'é'\0".as_bytes()), Some("select 'é'"));
    }

    // Parse

    #[test]
    fn parse_message_query_edge_cases() {
        assert_eq!(parse_message_query(b""), None);
        assert_eq!(parse_message_query(b"s1"), None);
        assert_eq!(parse_message_query(b"s1\0select 1"), None);
        assert_eq!(
            parse_message_query(b"\0select 1\0"),
            Some((&b""[..], "select 1"))
        );
        assert_eq!(parse_message_query(b"s1\0select '\xff'\0"), None);
        // The name need not be UTF-8; only the text is checked.
        assert_eq!(
            parse_message_query(b"\xff\0select 1\0"),
            Some((&b"\xff"[..], "select 1"))
        );
    }

    #[test]
    fn parse_parts_edge_cases() {
        assert_eq!(parse_parts(b""), None);
        assert_eq!(parse_parts(b"s1"), None);
        assert_eq!(parse_parts(b"s1\0select 1"), None);
        assert_eq!(parse_parts(b"s1\0select '\xff'\0\0\0"), None);
        assert_eq!(
            parse_parts(b"\0select 1\0"),
            Some((&b""[..], &b"select 1\0"[..], "select 1"))
        );
        let body = b"s1\0select $1\0\0\x01\0\0\0\x17";
        assert_eq!(
            parse_parts(body),
            Some((&b"s1"[..], &body[3..], "select $1"))
        );
    }

    // Bind

    #[test]
    fn bind_statement_is_the_second_string() {
        assert_eq!(
            bind_statement(b"portal\0s1\0\0\0\0\0\0\0"),
            Some(&b"s1"[..])
        );
        assert_eq!(bind_statement(b"\0\0\0\0\0\0\0\0"), Some(&b""[..]));
        assert_eq!(bind_statement(b"\0s\xff\0"), Some(&b"s\xff"[..]));
    }

    #[test]
    fn bind_statement_edge_cases() {
        assert_eq!(bind_statement(b""), None);
        assert_eq!(bind_statement(b"portal"), None);
        assert_eq!(bind_statement(b"portal\0"), None);
        assert_eq!(bind_statement(b"portal\0s1"), None);
    }

    // Describe / Close

    #[test]
    fn target_edge_cases() {
        assert_eq!(target(b""), None);
        assert_eq!(target(b"\0"), None);
        assert_eq!(target(b"s\0"), None);
        assert_eq!(target(b"p\0"), None);
        assert_eq!(target(b"Sname"), None);
        assert_eq!(target(b"Sname\0junk"), Some((b'S', &b"name"[..])));
        assert_eq!(target(b"P\xff\0"), Some((b'P', &b"\xff"[..])));
    }
}
