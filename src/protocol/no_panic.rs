//! Arbitrary bytes never make a protocol parser panic, and every answer keeps
//! its promises: the body parsers agree with a plain slice-based model of the
//! wire format, and `parse_header` only accepts lengths in `4..=max`.
//! Pure: no I/O here.

use super::startup::parse_options;
use super::*;

/// xorshift64*: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that reach the interesting branches, mixed with raw bytes.
const FRAGMENTS: &[&[u8]] = &[
    b"\0",
    b"\0\0",
    b"S",
    b"P",
    b"C",
    b"M",
    b"V",
    b"s1\0",
    b"select 1\0",
    b"ERROR\0",
    b"\xff",
    b"\xe9",
    "é".as_bytes(),
    b"\0\0\0\x08",
    b"\0\0\0\x04",
    b"\x7f\xff\xff\xff",
    b"\x04\xd2\x16\x2f", // SSLRequest
    b"\x04\xd2\x16\x30", // GSSENCRequest
    b"\x04\xd2\x16\x2e", // CancelRequest
    b"\0\x03\0\0",       // protocol 3.0
    b"user\0",
    b"options\0",
    b"-c ",
    b"--",
    b"-c",
    b"=",
    b"\\",
    b" ",
];

/// Words of a startup `options` value.
const OPTION_WORDS: &[&[u8]] = &[
    b"-c",
    b"-c ",
    b"--work-mem=4MB",
    b"-cgeqo=off",
    b"a=b",
    b"=x",
    b"\\",
    b"\\ ",
    b" ",
    b"-d",
];

/// A random word for a startup parameter name or value: mostly without NULs,
/// but a stray one now and then shifts the name/value pairing.
fn push_word(rng: &mut Rng, out: &mut Vec<u8>) {
    for _ in 0..rng.below(6) {
        match rng.below(3) {
            0 => out.extend_from_slice(OPTION_WORDS[rng.below(OPTION_WORDS.len())]),
            1 => out.extend(
                FRAGMENTS[rng.below(FRAGMENTS.len())]
                    .iter()
                    .filter(|&&b| b != 0),
            ),
            _ => out.push(rng.next() as u8),
        }
    }
}

fn random_input(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    match rng.below(8) {
        // Startup-shaped: a request code, then name/value pairs.
        0 => {
            let code = [PROTOCOL_3_0, PROTOCOL_3_0 + 2, SSL_REQUEST, CANCEL_REQUEST][rng.below(4)];
            out.extend_from_slice(&code.to_be_bytes());
            for _ in 0..rng.below(4) {
                push_word(rng, out);
                out.push(0);
            }
            if rng.below(4) != 0 {
                out.push(0);
            }
        }
        // Options-shaped text.
        1 => {
            for _ in 0..rng.below(6) {
                out.extend_from_slice(OPTION_WORDS[rng.below(OPTION_WORDS.len())]);
            }
        }
        _ => {
            let limit = if rng.below(16) == 0 { 400 } else { 40 };
            let target_len = rng.below(limit + 1);
            while out.len() < target_len {
                if rng.below(3) == 0 {
                    out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
                } else {
                    out.push(rng.next() as u8);
                }
            }
        }
    }
}

/// The wire format, stated as plainly as possible.
fn model_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

fn model_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        let Some((value, tail)) = model_cstr(tail).filter(|_| field != 0) else {
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

fn check_body_parsers(b: &[u8]) {
    assert_eq!(cstr(b), model_cstr(b));
    assert_eq!(parse_error_fields(b), model_error_fields(b));

    let two = model_cstr(b).and_then(|(first, rest)| Some((first, rest, model_cstr(rest)?.0)));
    let lossy = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    assert_eq!(
        parse_parameter_status(b),
        two.map(|(name, _, value)| (lossy(name), lossy(value)))
    );
    let utf8_two = two.and_then(|(n, r, t)| Some((n, r, std::str::from_utf8(t).ok()?)));
    assert_eq!(parse_parts(b), utf8_two);
    assert_eq!(parse_message_query(b), utf8_two.map(|(n, _, t)| (n, t)));
    assert_eq!(bind_statement(b), two.map(|(_, _, name)| name));
    assert_eq!(
        query_text(b),
        model_cstr(b).and_then(|(t, _)| std::str::from_utf8(t).ok())
    );

    let want_target = match b.split_first() {
        Some((&kind @ (b'S' | b'P'), rest)) => model_cstr(rest).map(|(name, _)| (kind, name)),
        _ => None,
    };
    assert_eq!(target(b), want_target);

    match parse_auth_request(b) {
        Some((code, rest)) => {
            assert!(b.len() >= 4);
            assert_eq!(code.to_be_bytes(), b[..4]);
            assert_eq!(rest, &b[4..]);
        }
        None => assert!(b.len() < 4),
    }
    match parse_backend_key_data(b) {
        Some((pid, secret)) => {
            assert_eq!(b.len(), 8);
            assert_eq!(pid.to_be_bytes(), b[..4]);
            assert_eq!(secret.to_be_bytes(), b[4..]);
        }
        None => assert_ne!(b.len(), 8),
    }
}

fn check_header(b: &[u8], max: usize) {
    match parse_header(b, max) {
        Ok(Some(h)) => {
            assert!(4 <= h.len && h.len as usize <= max, "{h:?} with max {max}");
            assert_eq!(h.tag, b[0]);
            assert_eq!(h.len.to_be_bytes(), b[1..5]);
        }
        Ok(None) => assert!(b.len() < Header::SIZE),
        Err(FrameError::TooShort(n)) => assert!(n < 4),
        Err(FrameError::TooLong(n)) => assert!(n as usize > max),
    }
}

fn check_startup(b: &[u8]) {
    match parse_startup(b) {
        Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => assert_eq!(b.len(), 4),
        Ok(StartupPacket::CancelRequest { .. }) => assert_eq!(b.len(), 12),
        Ok(StartupPacket::Startup { major, params, .. }) => {
            assert_eq!(major, 3);
            assert_eq!(b.last(), Some(&0));
            assert!(params.iter().all(|(name, _)| !name.is_empty()));
        }
        Err(_) => {}
    }
    if let Ok(settings) = parse_options(&String::from_utf8_lossy(b)) {
        assert!(settings.iter().all(|(name, _)| !name.is_empty()));
    }
}

#[test]
fn random_bytes_never_panic_and_keep_every_parser_promise() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::with_capacity(512);
    for _ in 0..200_000 {
        random_input(&mut rng, &mut buf);
        check_body_parsers(&buf);
        let max = match rng.below(4) {
            0 => rng.below(16),
            1 => MAX_STARTUP_PACKET,
            2 => usize::MAX,
            _ => rng.next() as u32 as usize,
        };
        check_header(&buf, max);
        check_startup(&buf);
    }
}

#[test]
fn every_prefix_of_well_formed_messages_is_handled() {
    let bodies: &[&[u8]] = &[
        b"SERROR\0VERROR\0C28P01\0Mpassword authentication failed\0\0",
        b"s1\0select $1\0\0\x01\0\0\0\x17",
        b"portal\0s1\0\0\x01\0\0\x01\0\0\0\x0512345\0\x01\0\0",
        b"Ss1\0",
        b"\0\0\0\x0aSCRAM-SHA-256\0\0",
        b"\0\x03\0\0user\0u\0database\0d\0options\0-c geqo=off\0\0",
        b"Q\0\0\0\x0dselect 1\0",
    ];
    for body in bodies {
        for end in 0..=body.len() {
            check_body_parsers(&body[..end]);
            check_header(&body[..end], 100);
            check_startup(&body[..end]);
        }
    }
}
