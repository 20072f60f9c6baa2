//! Fuzz target: the login-phase packets both ways. Untagged startup packets
//! (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), the startup
//! `options` parameter and SASLInitialResponse are parsed from arbitrary
//! bytes and written back with PgGate's own writers, and written from
//! arbitrary values and parsed back: what a parser accepts must be exactly
//! what the writer produces for its answer, and the reverse. The first byte
//! picks the mode, the rest is the input. Pure: no I/O here.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pggate::auth::scram_server::parse_initial_response;
use pggate::protocol::startup::{parse_options, StartupError};
use pggate::protocol::{
    frontend, parse_header, parse_startup, write, StartupPacket, GSSENC_REQUEST, SSL_REQUEST,
};

/// A startup packet body (after the length word), parsed and written back.
fn startup_body(body: &[u8]) {
    match parse_startup(body) {
        Ok(StartupPacket::SslRequest) => assert_eq!(body, SSL_REQUEST.to_be_bytes()),
        Ok(StartupPacket::GssEncRequest) => assert_eq!(body, GSSENC_REQUEST.to_be_bytes()),
        Ok(StartupPacket::CancelRequest { pid, secret }) => {
            let packet = write::cancel_request(pid, secret);
            assert_eq!(&packet[4..], body);
        }
        Ok(StartupPacket::Startup {
            major,
            minor,
            params,
        }) => {
            assert_eq!(major, 3);
            assert_eq!(
                u32::from_be_bytes(body[..4].try_into().unwrap()),
                (3 << 16) | u32::from(minor)
            );
            let mut packet = Vec::new();
            write::startup_message(
                &mut packet,
                params.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            );
            assert_eq!(
                u32::from_be_bytes(packet[..4].try_into().unwrap()) as usize,
                packet.len()
            );
            // Values are read lossily: only valid UTF-8 comes back byte for byte.
            if std::str::from_utf8(body).is_ok() {
                assert_eq!(&packet[8..], &body[4..]);
            }
            for (name, value) in &params {
                assert!(!name.is_empty() && !name.contains('\0') && !value.contains('\0'));
                if name == "options" {
                    options(value);
                }
            }
        }
        Err(StartupError::UnsupportedProtocol(code)) => {
            assert_eq!(code.to_be_bytes(), body[..4]);
            assert_ne!(code >> 16, 3);
        }
        Err(StartupError::Malformed) => {}
    }
}

/// An `options` value: the settings it yields, written back as `-c` switches,
/// must yield the same settings.
fn options(text: &str) {
    let Ok(settings) = parse_options(text) else {
        return;
    };
    for (name, _) in &settings {
        assert!(!name.is_empty() && !name.contains('-'), "{name:?}");
    }
    let written: Vec<String> = settings
        .iter()
        .map(|(name, value)| format!("-c {}", escape(&format!("{name}={value}"))))
        .collect();
    let again = parse_options(&written.join(" "));
    assert_eq!(again.as_ref(), Ok(&settings), "{written:?}");
}

/// A word of an `options` value: `\` before whitespace and `\`.
fn escape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A StartupMessage written from NUL-separated names and values, read back.
fn written_startup(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let fields: Vec<&str> = text.split('\0').collect();
    let params: Vec<(&str, &str)> = fields
        .chunks(2)
        .map(|pair| (pair[0], pair.get(1).copied().unwrap_or_default()))
        .collect();
    let mut packet = Vec::new();
    write::startup_message(&mut packet, params.iter().copied());
    let len = u32::from_be_bytes(packet[..4].try_into().unwrap()) as usize;
    assert_eq!(len, packet.len());
    let parsed = parse_startup(&packet[4..]);
    if params.iter().all(|(name, _)| !name.is_empty()) {
        let expected: Vec<(String, String)> = params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            parsed,
            Ok(StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: expected
            })
        );
    } else {
        // An empty name ends the list: what follows makes the packet malformed.
        assert_eq!(parsed, Err(StartupError::Malformed));
    }
}

/// A SASLInitialResponse written from a mechanism and data, read back.
fn written_initial_response(input: &[u8]) {
    let (mechanism, data) = match input.iter().position(|&b| b == 0) {
        Some(nul) => (String::from_utf8_lossy(&input[..nul]), &input[nul + 1..]),
        None => (String::from_utf8_lossy(input), &[][..]),
    };
    let mut message = Vec::new();
    write::sasl_initial_response(&mut message, &mechanism, data);
    let header = parse_header(&message, usize::MAX)
        .expect("valid header")
        .expect("whole header");
    assert_eq!(header.tag, frontend::PASSWORD);
    assert_eq!(header.frame_len(), message.len());
    assert_eq!(
        parse_initial_response(&message[5..]),
        Some((&*mechanism, data))
    );
}

/// A CancelRequest written from a pid and secret, read back.
fn written_cancel(input: &[u8]) {
    let mut raw = [0u8; 8];
    for (slot, b) in raw.iter_mut().zip(input) {
        *slot = *b;
    }
    let pid = i32::from_be_bytes(raw[..4].try_into().unwrap());
    let secret = i32::from_be_bytes(raw[4..].try_into().unwrap());
    let packet = write::cancel_request(pid, secret);
    assert_eq!(u32::from_be_bytes(packet[..4].try_into().unwrap()), 16);
    assert_eq!(
        parse_startup(&packet[4..]),
        Ok(StartupPacket::CancelRequest { pid, secret })
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => startup_body(input),
        1 => options(&String::from_utf8_lossy(input)),
        2 => written_startup(input),
        3 => written_initial_response(input),
        _ => written_cancel(input),
    }
});
