//! Fuzz target: arbitrary bytes through every protocol parser (framing, the
//! message-body parsers, startup packets and startup options). The first
//! byte picks one parser, or all of them in turn; the rest is the input.
//! They must never panic, and their answers must keep their promises.
//! Pure: no I/O here.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pggate::protocol::startup::parse_options;
use pggate::protocol::{
    bind_statement, cstr, parse_auth_request, parse_backend_key_data, parse_error_fields,
    parse_header, parse_message_query, parse_parameter_status, parse_parts, parse_startup,
    query_text, target, FrameError, Header, StartupPacket, MAX_STARTUP_PACKET,
};

/// Message-size limits worth trying, from nothing to no limit at all.
const LIMITS: [usize; 6] = [0, 4, 5, 8192, MAX_STARTUP_PACKET, usize::MAX];

/// A parser run on `b`, asserting what its answer promises.
type Check = fn(&[u8]);

const CHECKS: [Check; 14] = [
    |b| {
        if let Some((s, rest)) = cstr(b) {
            assert!(!s.contains(&0));
            assert_eq!(s.len() + 1 + rest.len(), b.len());
        }
    },
    |b| {
        let f = parse_error_fields(b);
        if !b.contains(&0) {
            assert_eq!(f, Default::default());
        }
    },
    |b| {
        if let Some((name, value)) = parse_parameter_status(b) {
            assert!(!name.contains('\0') && !value.contains('\0'));
        }
    },
    |b| match parse_auth_request(b) {
        Some((code, rest)) => {
            assert_eq!(code.to_be_bytes(), b[..4]);
            assert_eq!(rest, &b[4..]);
        }
        None => assert!(b.len() < 4),
    },
    |b| assert_eq!(parse_backend_key_data(b).is_some(), b.len() == 8),
    |b| {
        if let Some(text) = query_text(b) {
            assert!(b.starts_with(text.as_bytes()) && b[text.len()] == 0);
        }
    },
    |b| {
        if let Some((name, text)) = parse_message_query(b) {
            assert_eq!(parse_parts(b).map(|(n, _, t)| (n, t)), Some((name, text)));
        }
    },
    |b| {
        if let Some((name, rest, text)) = parse_parts(b) {
            assert_eq!(name.len() + 1 + rest.len(), b.len());
            assert_eq!(query_text(rest), Some(text));
        }
    },
    |b| {
        if let Some(name) = bind_statement(b) {
            assert!(!name.contains(&0));
        }
    },
    |b| {
        if let Some((kind, name)) = target(b) {
            assert!(matches!(kind, b'S' | b'P'));
            assert_eq!(cstr(&b[1..]).map(|(n, _)| n), Some(name));
        }
    },
    |b| match parse_startup(b) {
        Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => assert_eq!(b.len(), 4),
        Ok(StartupPacket::CancelRequest { .. }) => assert_eq!(b.len(), 12),
        Ok(StartupPacket::Startup { major, params, .. }) => {
            assert_eq!(major, 3);
            assert!(params.iter().all(|(name, _)| !name.is_empty()));
        }
        Err(_) => {}
    },
    |b| {
        if let Ok(settings) = parse_options(&String::from_utf8_lossy(b)) {
            assert!(settings.iter().all(|(name, _)| !name.is_empty()));
        }
    },
    |b| {
        for max in LIMITS {
            check_header(b, max);
        }
    },
    // A limit taken from the input itself, so every boundary gets tried.
    |b| {
        if let Some((limit, rest)) = b.split_first_chunk::<4>() {
            check_header(rest, u32::from_be_bytes(*limit) as usize);
        }
    },
];

fn check_header(b: &[u8], max: usize) {
    match parse_header(b, max) {
        Ok(Some(h)) => {
            assert!(4 <= h.len && h.len as usize <= max);
            assert_eq!(h.tag, b[0]);
        }
        Ok(None) => assert!(b.len() < Header::SIZE),
        Err(FrameError::TooShort(n)) => assert!(n < 4),
        Err(FrameError::TooLong(n)) => assert!(n as usize > max),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match CHECKS.get(usize::from(selector)) {
        Some(check) => check(input),
        None => CHECKS.iter().for_each(|check| check(input)),
    }
});
