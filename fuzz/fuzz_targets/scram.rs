//! Fuzz target: SCRAM-SHA-256 both ways with attacker-controlled messages,
//! and the SASL helpers around it. The first byte picks a mode, the rest is
//! the input; where a mode takes two messages they are separated by a NUL
//! byte (no SCRAM message may contain one).
//!
//! Promises checked, besides "never panics":
//! - `ScramServer` never authenticates a client-final-message it did not get
//!   from a client that knows the password, against a real secret or a mock;
//!   an honest client always logs in, gets the true ClientKey back and
//!   accepts the server's signature; any change to the honest
//!   client-final-message is refused. Failures are safe to log (no control
//!   characters) and map to the right SQLSTATE.
//! - `ScramClient` answers an accepted server-first-message with exactly the
//!   proof RFC 5802 defines (computed independently here), and accepts a
//!   server-final-message if and only if it carries the right signature.
//! - `parse_initial_response`, `mechanisms`, `without_plus`,
//!   `client_channel_binding` and `parse_scram_secret` return only what their
//!   input actually says (checked by rebuilding the input).
//!
//! Pure apart from the OS random source used for nonces.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use pggate::auth::sasl::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use pggate::auth::scram::KEY_LEN;
use pggate::auth::scram_server::{parse_initial_response, MOCK_KEY_LEN};
use pggate::auth::{
    client_channel_binding, mechanisms, parse_scram_secret, without_plus, ClientChannelBinding,
    ScramClient, ScramCredential, ScramFailure, ScramSecret, ScramServer,
};
use sha2::{Digest, Sha256};

/// The role's password; its secret is built from it below.
const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"pggate-fuzz-salt";
/// Few iterations, so that an honest exchange stays cheap.
const ITERATIONS: u32 = 4;
/// PostgreSQL's default, used by mock exchanges.
const MOCK_ITERATIONS: u32 = 4096;
const USER: &str = "fuzz";
const MOCK_KEY: [u8; MOCK_KEY_LEN] = [0x5a; MOCK_KEY_LEN];
/// The client nonce of the attacked client (RFC 5802's example).
const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
/// In an attacker's client-final-message, replaced by the combined nonce
/// the server announced, so that the checks past the nonce are reachable.
const NONCE_MARK: &[u8] = b"@@";
/// Base64 characters of the server's 18 random nonce bytes.
const SERVER_NONCE_CHARS: usize = 24;
/// Iteration counts up to this are cheap enough to also run the password
/// client against an attacker's server-first-message.
const CHEAP_ITERATIONS: u32 = 64;

type HmacSha256 = Hmac<Sha256>;

struct Role {
    client_key: [u8; KEY_LEN],
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
    secret: ScramSecret,
}

/// The role's keys and the secret PostgreSQL would store for it, from
/// their definitions (RFC 5802 section 3), read back with
/// `parse_scram_secret`.
fn role() -> &'static Role {
    static ROLE: OnceLock<Role> = OnceLock::new();
    ROLE.get_or_init(|| {
        let salted = salted_password(PASSWORD, SALT, ITERATIONS);
        let client_key = hmac(&salted, b"Client Key");
        let server_key = hmac(&salted, b"Server Key");
        let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let text = format!(
            "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
            BASE64.encode(SALT),
            BASE64.encode(stored_key),
            BASE64.encode(server_key)
        );
        let secret = parse_scram_secret(&text).expect("a well-formed secret parses");
        assert_eq!(secret.iterations, ITERATIONS);
        assert_eq!(secret.salt, SALT);
        assert_eq!(secret.stored_key, stored_key);
        assert_eq!(secret.server_key, server_key);
        Role {
            client_key,
            stored_key,
            server_key,
            secret,
        }
    })
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    salted
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// ClientProof := ClientKey XOR HMAC(StoredKey, AuthMessage).
fn proof(client_key: &[u8; KEY_LEN], auth_message: &str) -> [u8; KEY_LEN] {
    let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
    let mut proof = *client_key;
    for (p, s) in proof
        .iter_mut()
        .zip(hmac(&stored_key, auth_message.as_bytes()))
    {
        *p ^= s;
    }
    proof
}

fn two_messages(input: &[u8]) -> (&[u8], &[u8]) {
    let mut parts = input.splitn(2, |&b| b == 0);
    let first = parts.next().unwrap_or_default();
    (first, parts.next().unwrap_or_default())
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// What every failure promises: safe to log, and the right SQLSTATE.
fn check_failure(failure: &ScramFailure) {
    let shown = failure.to_string();
    assert!(!shown.is_empty());
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    let message = failure.message(USER);
    assert!(!message.chars().any(char::is_control), "{message:?}");
    let expected = match failure {
        ScramFailure::AuthFailed => {
            assert!(message.contains(USER));
            "28P01"
        }
        ScramFailure::Protocol(_) => "08P01",
        ScramFailure::ChannelBinding(_) => "28000",
    };
    assert_eq!(failure.sqlstate(), expected);
}

/// Checks a server-first-message answering `client_first`; returns the
/// combined nonce.
fn check_server_first(
    client_first: &[u8],
    server_first: &[u8],
    salt_and_iterations: (&[u8], u32),
) -> String {
    let text = std::str::from_utf8(server_first).expect("server-first is UTF-8");
    let mut attributes = text.split(',');
    let mut next = |name: &str| {
        attributes
            .next()
            .and_then(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("server-first without {name}: {text:?}"))
            .to_owned()
    };
    let (nonce, salt, iterations) = (next("r="), next("s="), next("i="));
    assert!(attributes.next().is_none(), "{text:?}");

    assert!(
        nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b','),
        "{text:?}"
    );
    assert!(nonce.len() > SERVER_NONCE_CHARS, "{text:?}");
    let client_nonce = &nonce[..nonce.len() - SERVER_NONCE_CHARS];
    // The client's nonce is the r= attribute of its message, whole.
    let needle = format!(",r={client_nonce}");
    let at = client_first
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{client_nonce:?} is not the client's nonce"));
    assert!(matches!(
        client_first.get(at + needle.len()),
        None | Some(b',')
    ));

    let (expected_salt, expected_iterations) = salt_and_iterations;
    assert_eq!(BASE64.decode(&salt).expect("salt is base64"), expected_salt);
    assert_eq!(iterations, expected_iterations.to_string());
    nonce
}

/// Salt and iterations the server must announce: the role's, or for a
/// mock exchange PostgreSQL's: SHA-256(user ‖ mock key), first 16 bytes,
/// and 4096 iterations, the same on every attempt.
fn announced(real: bool) -> (Vec<u8>, u32) {
    if real {
        (SALT.to_vec(), ITERATIONS)
    } else {
        let digest = Sha256::new()
            .chain_update(USER.as_bytes())
            .chain_update(MOCK_KEY)
            .finalize();
        (digest[..16].to_vec(), MOCK_ITERATIONS)
    }
}

/// Server against an attacker's client-first and client-final messages:
/// they must never authenticate, against a real secret or a mock.
fn server_attacked(input: &[u8], real: bool) {
    let secret = real.then(|| role().secret.clone());
    let mut server = ScramServer::new(USER, secret, &MOCK_KEY);
    let (first, last) = two_messages(input);

    let (salt, iterations) = announced(real);
    let nonce = match server.client_first(SCRAM_SHA_256, first) {
        Ok(server_first) => Some(check_server_first(
            first,
            &server_first,
            (&salt, iterations),
        )),
        Err(failure) => {
            check_failure(&failure);
            match failure {
                ScramFailure::AuthFailed => panic!("AuthFailed at client-first"),
                ScramFailure::ChannelBinding(_) => assert_eq!(first.first(), Some(&b'p')),
                ScramFailure::Protocol(_) => {}
            }
            None
        }
    };
    let last = match &nonce {
        Some(nonce) => replace_all(last, NONCE_MARK, nonce.as_bytes()),
        None => last.to_vec(),
    };
    match server.client_final(&last) {
        Ok(_) => panic!(
            "an attacker's client-final-message authenticated (real secret: {real}): {:?}",
            String::from_utf8_lossy(&last)
        ),
        Err(failure) => {
            check_failure(&failure);
            assert!(
                !matches!(failure, ScramFailure::ChannelBinding(_)),
                "{failure:?}"
            );
            if nonce.is_none() {
                assert!(matches!(failure, ScramFailure::Protocol(_)), "{failure:?}");
            }
        }
    }
    // Any error ends the exchange.
    assert!(matches!(
        server.client_final(&last),
        Err(ScramFailure::Protocol(_))
    ));
    assert!(matches!(
        server.client_first(SCRAM_SHA_256, first),
        Err(ScramFailure::Protocol(_))
    ));
}

/// A SASLInitialResponse body, then its client-first-message to a server.
fn initial_response(input: &[u8]) {
    let Some((mechanism, data)) = parse_initial_response(input) else {
        return;
    };
    let mut rebuilt = mechanism.as_bytes().to_vec();
    rebuilt.push(0);
    rebuilt.extend_from_slice(&i32::try_from(data.len()).expect("short").to_be_bytes());
    rebuilt.extend_from_slice(data);
    assert_eq!(rebuilt, input);

    let mut server = ScramServer::new(USER, Some(role().secret.clone()), &MOCK_KEY);
    match server.client_first(mechanism, data) {
        Ok(server_first) => {
            assert_eq!(mechanism, SCRAM_SHA_256);
            check_server_first(data, &server_first, (SALT, ITERATIONS));
        }
        Err(failure) => {
            check_failure(&failure);
            if mechanism == SCRAM_SHA_256_PLUS {
                assert!(matches!(failure, ScramFailure::ChannelBinding(_)));
            } else if mechanism != SCRAM_SHA_256 {
                assert!(matches!(failure, ScramFailure::Protocol(_)));
            }
        }
    }
}

/// An honest client and server, the client nonce taken from the input;
/// then, as the input says, one byte of the client-final-message changed.
fn honest_exchange(input: &[u8]) {
    let role = role();
    let (tamper, nonce_bytes) = match input {
        [flag, hi, lo, xor, rest @ ..] => (
            (flag & 1 == 1 && *xor != 0)
                .then(|| (usize::from(u16::from_be_bytes([*hi, *lo])), *xor)),
            rest,
        ),
        _ => (None, input),
    };
    let mut nonce: String = nonce_bytes
        .iter()
        .filter(|&&b| (0x21..=0x7e).contains(&b) && b != b',')
        .map(|&b| char::from(b))
        .collect();
    if nonce.is_empty() {
        nonce.push('x');
    }

    let mut client = ScramClient::with_nonce(ScramCredential::Password(PASSWORD.into()), &nonce);
    let mut server = ScramServer::new(USER, Some(role.secret.clone()), &MOCK_KEY);
    let client_first = client.client_first_message();
    assert_eq!(client_first, format!("n,,n=,r={nonce}").into_bytes());
    let server_first = server
        .client_first(SCRAM_SHA_256, &client_first)
        .expect("the server accepts an honest client-first-message");
    let combined = check_server_first(&client_first, &server_first, (SALT, ITERATIONS));
    let client_final = client
        .handle_server_first(&server_first)
        .expect("the client accepts an honest server-first-message");
    let server_first = String::from_utf8(server_first).expect("ASCII");
    let without_proof = format!("c=biws,r={combined}");
    let auth_message = format!("n=,r={nonce},{server_first},{without_proof}");
    let expected = format!(
        "{without_proof},p={}",
        BASE64.encode(proof(&role.client_key, &auth_message))
    );
    assert_eq!(String::from_utf8_lossy(&client_final), expected);

    match tamper {
        Some((at, xor)) => {
            let mut changed = client_final.clone();
            let at = at % changed.len();
            changed[at] ^= xor;
            let result = server.client_final(&changed);
            assert!(
                result.is_err(),
                "a changed client-final-message authenticated: {:?}",
                String::from_utf8_lossy(&changed)
            );
        }
        None => {
            let (server_final, client_key) = server
                .client_final(&client_final)
                .expect("an honest client logs in");
            assert_eq!(client_key, role.client_key);
            assert_eq!(Sha256::digest(client_key)[..], role.stored_key);
            let signature = hmac(&role.server_key, auth_message.as_bytes());
            assert_eq!(
                server_final,
                format!("v={}", BASE64.encode(signature)).into_bytes()
            );
            assert_eq!(client.verify_server_final(&server_final), Ok(()));
            // A replay is refused.
            assert!(matches!(
                server.client_final(&client_final),
                Err(ScramFailure::Protocol(_))
            ));
            // Any change to the server's signature is refused by the client.
            for at in 0..server_final.len() {
                let mut changed = server_final.clone();
                changed[at] ^= 0x01;
                assert!(client.verify_server_final(&changed).is_err());
            }
        }
    }
}

/// A client against an attacker's server-first and server-final messages.
fn client_attacked(input: &[u8]) {
    let role = role();
    let (first, last) = two_messages(input);
    let keys = ScramCredential::Keys {
        client_key: role.client_key,
        server_key: role.server_key,
    };
    let mut client = ScramClient::with_nonce(keys, CLIENT_NONCE);
    assert!(
        client.verify_server_final(last).is_err(),
        "final before first"
    );

    let client_final = match client.handle_server_first(first) {
        Ok(client_final) => client_final,
        Err(error) => {
            assert!(!error.0.chars().any(char::is_control), "{error}");
            assert!(client.verify_server_final(last).is_err());
            return;
        }
    };
    let server_first = std::str::from_utf8(first).expect("accepted server-first is UTF-8");
    let attributes: Vec<&str> = server_first.split(',').collect();
    let nonce = attributes[0].strip_prefix("r=").expect("r= first");
    assert!(nonce.starts_with(CLIENT_NONCE) && nonce.len() > CLIENT_NONCE.len());
    assert!(nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("n=,r={CLIENT_NONCE},{server_first},{without_proof}");
    let expected = format!(
        "{without_proof},p={}",
        BASE64.encode(proof(&role.client_key, &auth_message))
    );
    assert_eq!(String::from_utf8_lossy(&client_final), expected);

    // The server-final-message is accepted if and only if it carries the
    // right signature.
    let right = format!(
        "v={}",
        BASE64.encode(hmac(&role.server_key, auth_message.as_bytes()))
    );
    let carries_right = std::str::from_utf8(last)
        .ok()
        .and_then(|text| text.split(',').next())
        == Some(right.as_str());
    assert_eq!(
        client.verify_server_final(last).is_ok(),
        carries_right,
        "{:?}",
        String::from_utf8_lossy(last)
    );
    assert_eq!(client.verify_server_final(right.as_bytes()), Ok(()));
    assert!(
        client.handle_server_first(first).is_err(),
        "second server-first"
    );

    // The same message with a password, when its iteration count is cheap.
    let salt = attributes[1].strip_prefix("s=").expect("s= second");
    let salt = BASE64.decode(salt).expect("accepted salt is base64");
    let iterations: u32 = attributes[2]
        .strip_prefix("i=")
        .and_then(|i| i.parse().ok())
        .expect("accepted iteration count");
    assert!(!salt.is_empty() && iterations >= 1);
    if iterations <= CHEAP_ITERATIONS {
        let password = ScramCredential::Password(PASSWORD.into());
        let mut client = ScramClient::with_nonce(password, CLIENT_NONCE);
        let client_final = client
            .handle_server_first(first)
            .expect("accepted with keys, accepted with a password");
        let salted = salted_password(PASSWORD, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let expected = format!(
            "{without_proof},p={}",
            BASE64.encode(proof(&client_key, &auth_message))
        );
        assert_eq!(String::from_utf8_lossy(&client_final), expected);
    }
}

/// Mechanism lists and the client's gs2 channel-binding flag.
fn sasl_lists(input: &[u8]) {
    let names = mechanisms(input);
    if let Ok(names) = &names {
        let mut rebuilt = Vec::new();
        for name in names {
            assert!(!name.is_empty() && !name.contains('\0'));
            rebuilt.extend_from_slice(name.as_bytes());
            rebuilt.push(0);
        }
        rebuilt.push(0);
        assert_eq!(rebuilt, input);
    }
    match without_plus(input) {
        Some(kept) => {
            assert!(kept.len() <= input.len());
            assert!(kept.ends_with(b"\0\0"));
            let kept_names: Vec<&[u8]> = kept[..kept.len() - 2].split(|&b| b == 0).collect();
            for name in &kept_names {
                assert!(!name.is_empty() && !name.ends_with(b"-PLUS"));
            }
            // Idempotent, and the same names in the same order.
            assert_eq!(without_plus(&kept).as_ref(), Some(&kept));
            if let Ok(names) = &names {
                let expected: Vec<&[u8]> = names
                    .iter()
                    .map(|n| n.as_bytes())
                    .filter(|n| !n.ends_with(b"-PLUS"))
                    .collect();
                assert_eq!(kept_names, expected);
            }
        }
        None => {
            if let Ok(names) = &names {
                assert!(names.iter().all(|n| n.ends_with("-PLUS")), "{names:?}");
            }
        }
    }
    match client_channel_binding(input) {
        Ok(ClientChannelBinding::NotSupported) => assert!(input.starts_with(b"n,")),
        Ok(ClientChannelBinding::SupportedButNotOffered) => assert!(input.starts_with(b"y,")),
        Ok(ClientChannelBinding::Required(kind)) => {
            assert!(!kind.is_empty());
            assert!(input.starts_with(format!("p={kind},").as_bytes()));
        }
        Err(error) => assert!(!error.0.chars().any(char::is_control), "{error}"),
    }
    assert_eq!(ScramServer::mechanisms(), b"SCRAM-SHA-256\0\0");
}

/// A stored secret as `pg_authid.rolpassword` holds it.
fn stored_secret(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let Some(secret) = parse_scram_secret(&text) else {
        return;
    };
    assert!(secret.iterations >= 1 && !secret.salt.is_empty());
    let stored = BASE64.encode(secret.stored_key);
    let server = BASE64.encode(secret.server_key);
    let canonical = format!(
        "SCRAM-SHA-256${}:{}${stored}:{server}",
        secret.iterations,
        BASE64.encode(&secret.salt)
    );
    assert_eq!(parse_scram_secret(&canonical).as_ref(), Some(&secret));
    let shown = format!("{secret:?}");
    assert!(!shown.contains(&stored) && !shown.contains(&server) && !shown.contains('['));

    // A wrong proof never logs in against it.
    let (salt, iterations) = (secret.salt.clone(), secret.iterations);
    let mut server = ScramServer::new(USER, Some(secret), &MOCK_KEY);
    let server_first = server
        .client_first(SCRAM_SHA_256, b"n,,n=,r=fuzz")
        .expect("valid client-first");
    let nonce = check_server_first(b"n,,n=,r=fuzz", &server_first, (&salt, iterations));
    let last = format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; KEY_LEN]));
    assert_eq!(
        server.client_final(last.as_bytes()).map(|_| ()),
        Err(ScramFailure::AuthFailed)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        0 => server_attacked(input, true),
        1 => server_attacked(input, false),
        2 => initial_response(input),
        3 => honest_exchange(input),
        4 => client_attacked(input),
        5 => sasl_lists(input),
        _ => stored_secret(input),
    }
});
