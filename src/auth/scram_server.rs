//! SCRAM-SHA-256 server side (RFC 5802 / RFC 7677) as PostgreSQL's
//! `auth-scram.c` runs it, for `auth.mode = "query"`, where PgGate
//! authenticates clients itself against the secret stored in
//! `pg_authid.rolpassword`. A successful exchange also yields the client's
//! ClientKey (ClientProof XOR ClientSignature, checked against StoredKey),
//! which PgGate then uses with [`ScramCredential::Keys`](super::ScramCredential)
//! to log in to the backends as that user. Only `SCRAM-SHA-256` is offered:
//! channel binding cannot cross a proxy that terminates TLS, so a client that
//! demands it gets a clear error. A role that does not exist or has no SCRAM
//! secret gets a mock exchange, exactly as PostgreSQL runs it: a salt derived
//! from the user name and a per-process random key, 4096 iterations, and a
//! failure at the end identical to a wrong password. Also the random MD5
//! salt and mock key the caller needs. Pure code: no I/O beyond the OS random
//! source. Every check on client input returns an error, never panics.
//!
//! Differences from PostgreSQL, all on malformed input: an authorization
//! identity or a mandatory extension is refused with 08P01 (PostgreSQL uses
//! 0A000), an empty client nonce and a trailing comma after the proof are
//! refused. The user name in the client-first-message is ignored, as in
//! PostgreSQL, which takes the user from the startup packet; the client has
//! already applied SASLprep to the password, so the server never needs it.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::quote_for_log;
use super::sasl::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use super::scram::{ScramSecret, KEY_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Iteration count of a mock exchange: PostgreSQL's default.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Bytes in the per-process mock key (PostgreSQL's `mock_auth_nonce`).
pub const MOCK_KEY_LEN: usize = 32;
/// Bytes of a mock salt (PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`).
const MOCK_SALT_LEN: usize = 16;
/// Random bytes in the server's part of the nonce (`SCRAM_RAW_NONCE_LEN`).
const NONCE_BYTES: usize = 18;
/// `c=` value expected after a gs2 header of `n,,`.
const CBIND_NO_SUPPORT: &[u8] = b"biws";
/// `c=` value expected after a gs2 header of `y,,`.
const CBIND_NOT_OFFERED: &[u8] = b"eSws";
/// SQLSTATE invalid_password.
const SQLSTATE_INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE protocol_violation.
const SQLSTATE_PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE invalid_authorization_specification.
const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";

/// Why a SCRAM exchange with a client failed, and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramFailure {
    /// Wrong password or unknown user (indistinguishable by design): answer
    /// 28P01 with PostgreSQL's message, see [`message`](Self::message).
    AuthFailed,
    /// Malformed or out-of-order exchange: answer 08P01 with this message.
    Protocol(String),
    /// The client demands channel binding: answer 28000 with this message.
    ChannelBinding(String),
}

impl ScramFailure {
    /// The SQLSTATE of the ErrorResponse to send the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramFailure::AuthFailed => SQLSTATE_INVALID_PASSWORD,
            ScramFailure::Protocol(_) => SQLSTATE_PROTOCOL_VIOLATION,
            ScramFailure::ChannelBinding(_) => SQLSTATE_INVALID_AUTHORIZATION,
        }
    }

    /// The ErrorResponse message for a client that logged in as `user` (the
    /// startup-packet user): PostgreSQL's own text for a failed password.
    pub fn message(&self, user: &str) -> String {
        match self {
            ScramFailure::AuthFailed => {
                format!("password authentication failed for user \"{user}\"")
            }
            ScramFailure::Protocol(message) | ScramFailure::ChannelBinding(message) => {
                message.clone()
            }
        }
    }
}

impl fmt::Display for ScramFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramFailure::AuthFailed => f.write_str("password authentication failed"),
            ScramFailure::Protocol(message) | ScramFailure::ChannelBinding(message) => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for ScramFailure {}

/// One SCRAM-SHA-256 exchange with a client, against a stored secret.
/// Phases in order: [`client_first`](Self::client_first) →
/// [`client_final`](Self::client_final). Any error ends the exchange; later
/// calls return [`ScramFailure::Protocol`].
pub struct ScramServer {
    secret: ScramSecret,
    /// Mock exchange: fails at the end whatever the client sends.
    doomed: bool,
    phase: Phase,
}

enum Phase {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// `c=` value the client-final-message must carry.
        channel_binding: &'static [u8],
        /// Client nonce followed by the server nonce.
        nonce: String,
        client_first_bare: Vec<u8>,
        server_first: String,
    },
    Finished,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::AwaitingClientFirst => "AwaitingClientFirst",
            Phase::AwaitingClientFinal { .. } => "AwaitingClientFinal",
            Phase::Finished => "Finished",
        };
        f.debug_struct("ScramServer")
            .field("secret", &self.secret)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// `secret`: the role's stored SCRAM secret, or `None` for a role that
    /// does not exist or has no SCRAM secret. Then a mock exchange is run,
    /// as PostgreSQL does: salt = the first 16 bytes of
    /// SHA-256(`user` ‖ `mock_key`), 4096 iterations, and the exchange fails
    /// at the end exactly like a wrong password. The salt is the same on
    /// every attempt for the same user (as long as `mock_key` is kept for the
    /// life of the process), so a client cannot tell a missing user from a
    /// wrong password.
    pub fn new(user: &str, secret: Option<ScramSecret>, mock_key: &[u8; MOCK_KEY_LEN]) -> Self {
        let (secret, doomed) = match secret {
            Some(secret) => (secret, false),
            None => (mock_secret(user, mock_key), true),
        };
        ScramServer {
            secret,
            doomed,
            phase: Phase::AwaitingClientFirst,
        }
    }

    /// The AuthenticationSASL payload PgGate offers (after the Int32 `10`):
    /// only `SCRAM-SHA-256`, never `-PLUS`.
    pub fn mechanisms() -> Vec<u8> {
        let mut payload = Vec::with_capacity(SCRAM_SHA_256.len() + 2);
        payload.extend_from_slice(SCRAM_SHA_256.as_bytes());
        payload.extend_from_slice(b"\0\0");
        payload
    }

    /// Takes the SASLInitialResponse: the selected `mechanism` and the
    /// client-first-message in `data` (see [`parse_initial_response`]).
    /// Returns the server-first-message, the AuthenticationSASLContinue
    /// payload.
    ///
    /// # Panics
    ///
    /// If the operating system's random source is unavailable.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramFailure> {
        if !matches!(self.phase, Phase::AwaitingClientFirst) {
            self.phase = Phase::Finished;
            return Err(protocol("SCRAM client-first-message received out of order"));
        }
        self.phase = Phase::Finished;
        let mut raw = [0u8; NONCE_BYTES];
        fill_random(&mut raw);
        let server_nonce = BASE64.encode(raw);
        self.client_first_with_nonce(mechanism, data, &server_nonce)
    }

    /// [`client_first`](Self::client_first) with a given server nonce, which
    /// must be printable ASCII without `,`.
    fn client_first_with_nonce(
        &mut self,
        mechanism: &str,
        data: &[u8],
        server_nonce: &str,
    ) -> Result<Vec<u8>, ScramFailure> {
        check_mechanism(mechanism)?;
        let first = ClientFirst::parse(data)?;
        let server_first = format!(
            "r={}{server_nonce},s={},i={}",
            first.nonce,
            BASE64.encode(&self.secret.salt),
            self.secret.iterations
        );
        self.phase = Phase::AwaitingClientFinal {
            channel_binding: first.channel_binding,
            nonce: format!("{}{server_nonce}", first.nonce),
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
        };
        Ok(server_first.into_bytes())
    }

    /// Takes the client-final-message (the whole SASLResponse body). On
    /// success returns the server-final-message (the AuthenticationSASLFinal
    /// payload) and the client's ClientKey, recovered as ClientProof XOR
    /// ClientSignature and verified: SHA-256(ClientKey) = StoredKey.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, [u8; KEY_LEN]), ScramFailure> {
        let Phase::AwaitingClientFinal {
            channel_binding,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.phase, Phase::Finished)
        else {
            return Err(protocol("SCRAM client-final-message received out of order"));
        };
        let last = ClientFinal::parse(data)?;
        if last.channel_binding != channel_binding {
            return Err(protocol(
                "unexpected SCRAM channel-binding attribute in client-final-message",
            ));
        }
        if last.nonce != nonce.as_bytes() {
            return Err(protocol("invalid SCRAM response: nonce does not match"));
        }

        let auth_message: [&[u8]; 5] = [
            &client_first_bare,
            b",",
            server_first.as_bytes(),
            b",",
            last.without_proof,
        ];
        let client_signature =
            hmac_sha256(&self.secret.stored_key, &auth_message).ok_or(ScramFailure::AuthFailed)?;
        let mut client_key = last.proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let computed: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        // The proof is checked even in a mock exchange, so that both take the
        // same time.
        if !constant_time_eq(&computed, &self.secret.stored_key) || self.doomed {
            return Err(ScramFailure::AuthFailed);
        }
        let server_signature =
            hmac_sha256(&self.secret.server_key, &auth_message).ok_or(ScramFailure::AuthFailed)?;
        let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        Ok((server_final, client_key))
    }
}

/// The mechanism name and data of a SASLInitialResponse message body (after
/// the type byte and length): the NUL-terminated mechanism name, an Int32
/// data length and exactly that many bytes. `None` if the body is malformed,
/// the name is not UTF-8, or the length is -1 (no initial response: every
/// SCRAM client sends its client-first-message here). A SASLResponse body
/// needs no parsing: all of it is the data for
/// [`ScramServer::client_final`].
pub fn parse_initial_response(body: &[u8]) -> Option<(&str, &[u8])> {
    let nul = body.iter().position(|&b| b == 0)?;
    let mechanism = std::str::from_utf8(body.get(..nul)?).ok()?;
    let rest = body.get(nul + 1..)?;
    let length: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let length = usize::try_from(i32::from_be_bytes(length)).ok()?;
    let data = rest.get(4..)?;
    (data.len() == length).then_some((mechanism, data))
}

/// A random salt for AuthenticationMD5Password; check the answer with
/// [`super::md5::verify_response`].
///
/// # Panics
///
/// If the operating system's random source is unavailable.
pub fn md5_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    fill_random(&mut salt);
    salt
}

/// A random key for mock exchanges. Generate it once per process and pass
/// it to every [`ScramServer::new`], so that the mock salt of a user does
/// not change between attempts.
///
/// # Panics
///
/// If the operating system's random source is unavailable.
pub fn mock_key() -> [u8; MOCK_KEY_LEN] {
    let mut key = [0u8; MOCK_KEY_LEN];
    fill_random(&mut key);
    key
}

/// The fields of a client-first-message the server uses.
struct ClientFirst<'a> {
    channel_binding: &'static [u8],
    bare: &'a [u8],
    nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    /// `gs2-cbind-flag "," [authzid] "," [m=…,] n=<user>,r=<nonce>[,ext…]`.
    fn parse(data: &'a [u8]) -> Result<ClientFirst<'a>, ScramFailure> {
        check_message(data)?;
        let (channel_binding, rest) = match data.split_first() {
            Some((b'n', rest)) => (CBIND_NO_SUPPORT, rest),
            Some((b'y', rest)) => (CBIND_NOT_OFFERED, rest),
            Some((b'p', rest)) => return Err(channel_binding_required(rest)),
            Some((&other, _)) => {
                return Err(malformed(format!(
                    "unexpected channel-binding flag {}",
                    sanitize_char(other)
                )))
            }
            None => return Err(malformed("the message is empty")),
        };
        let rest = expect_comma(rest)?;
        if rest.first() == Some(&b'a') {
            return Err(protocol(
                "client uses authorization identity, but it is not supported",
            ));
        }
        let bare = match rest.split_first() {
            Some((b',', bare)) => bare,
            Some((&other, _)) => {
                return Err(malformed(format!(
                    "unexpected attribute {} in client-first-message",
                    sanitize_char(other)
                )))
            }
            None => return Err(malformed("client-first-message ends after the gs2 header")),
        };
        if bare.first() == Some(&b'm') {
            return Err(protocol("client requires an unsupported SCRAM extension"));
        }
        let (_username, rest) = read_attribute(bare, Some(b'n'))?;
        let rest = rest.ok_or_else(|| malformed("client-first-message has no nonce"))?;
        let (nonce, mut rest) = read_attribute(rest, Some(b'r'))?;
        if nonce.is_empty() {
            return Err(malformed("empty nonce in client-first-message"));
        }
        if !nonce.iter().all(|&b| is_printable(b)) {
            return Err(protocol("non-printable characters in SCRAM nonce"));
        }
        let nonce = std::str::from_utf8(nonce)
            .map_err(|_| protocol("non-printable characters in SCRAM nonce"))?;
        // Optional extensions are ignored (RFC 5802 section 5.1).
        while let Some(extension) = rest.filter(|r| !r.is_empty()) {
            rest = read_attribute(extension, None)?.1;
        }
        Ok(ClientFirst {
            channel_binding,
            bare,
            nonce,
        })
    }
}

/// The fields of a client-final-message.
struct ClientFinal<'a> {
    channel_binding: &'a [u8],
    nonce: &'a [u8],
    without_proof: &'a [u8],
    proof: [u8; KEY_LEN],
}

impl<'a> ClientFinal<'a> {
    /// `c=<base64 gs2 header>,r=<nonce>[,ext…],p=<base64 proof>`.
    fn parse(data: &'a [u8]) -> Result<ClientFinal<'a>, ScramFailure> {
        check_message(data)?;
        let (channel_binding, rest) = read_attribute(data, Some(b'c'))?;
        let rest = rest.ok_or_else(|| malformed("client-final-message has no nonce"))?;
        let (nonce, mut rest) = read_attribute(rest, Some(b'r'))?;
        // Optional extensions are skipped up to the proof, which comes last.
        let (without_proof, proof) = loop {
            let attribute = rest.ok_or_else(|| malformed("client-final-message has no proof"))?;
            let start = data.len().saturating_sub(attribute.len());
            let (value, after) = read_attribute(attribute, None)?;
            if attribute.first() == Some(&b'p') {
                if after.is_some() {
                    return Err(malformed(
                        "garbage found at the end of client-final-message",
                    ));
                }
                let without_proof = data
                    .get(..start.saturating_sub(1))
                    .ok_or_else(|| malformed("client-final-message has no proof"))?;
                break (without_proof, value);
            }
            rest = after;
        };
        let proof = BASE64
            .decode(proof)
            .ok()
            .and_then(|proof| <[u8; KEY_LEN]>::try_from(proof).ok())
            .ok_or_else(|| malformed("malformed proof in client-final-message"))?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            without_proof,
            proof,
        })
    }
}

/// Reads `<attr>=<value>` from the start of `input`: the value and what
/// follows its terminating `,` (`None` if the value runs to the end).
/// `expected`: the attribute that must come here; `None` accepts any
/// letter.
fn read_attribute(
    input: &[u8],
    expected: Option<u8>,
) -> Result<(&[u8], Option<&[u8]>), ScramFailure> {
    let Some((&attribute, rest)) = input.split_first() else {
        return Err(match expected {
            Some(expected) => malformed(format!(
                "expected attribute \"{}\" but found the end of the message",
                char::from(expected)
            )),
            None => malformed("attribute expected, but found the end of the message"),
        });
    };
    match expected {
        Some(expected) if attribute != expected => {
            return Err(malformed(format!(
                "expected attribute \"{}\" but found {}",
                char::from(expected),
                sanitize_char(attribute)
            )))
        }
        None if !attribute.is_ascii_alphabetic() => {
            return Err(malformed(format!(
                "attribute expected, but found invalid character {}",
                sanitize_char(attribute)
            )))
        }
        _ => {}
    }
    let Some((b'=', value)) = rest.split_first() else {
        return Err(malformed(format!(
            "expected character \"=\" for attribute {}",
            sanitize_char(attribute)
        )));
    };
    Ok(match value.iter().position(|&b| b == b',') {
        Some(comma) => (
            value.get(..comma).unwrap_or_default(),
            value.get(comma + 1..),
        ),
        None => (value, None),
    })
}

fn expect_comma(input: &[u8]) -> Result<&[u8], ScramFailure> {
    match input.split_first() {
        Some((b',', rest)) => Ok(rest),
        Some((&other, _)) => Err(malformed(format!(
            "comma expected, but found character {}",
            sanitize_char(other)
        ))),
        None => Err(malformed(
            "comma expected, but found the end of the message",
        )),
    }
}

/// A SCRAM message must be non-empty and, as PostgreSQL reads it as a C
/// string, free of NUL bytes.
fn check_message(data: &[u8]) -> Result<(), ScramFailure> {
    if data.is_empty() {
        return Err(malformed("the message is empty"));
    }
    if data.contains(&0) {
        return Err(malformed("message length does not match input length"));
    }
    Ok(())
}

fn check_mechanism(mechanism: &str) -> Result<(), ScramFailure> {
    if mechanism == SCRAM_SHA_256 {
        Ok(())
    } else if mechanism == SCRAM_SHA_256_PLUS {
        Err(ScramFailure::ChannelBinding(format!(
            "channel binding is not supported through PgGate: the client selected \
             {SCRAM_SHA_256_PLUS}, which was not offered; connect with \
             channel_binding=prefer or channel_binding=disable"
        )))
    } else {
        Err(protocol(format!(
            "client selected an invalid SASL authentication mechanism \"{}\"",
            quote_for_log(mechanism)
        )))
    }
}

/// The error for a gs2 header of `p=<type>`; `rest` follows the `p`.
fn channel_binding_required(rest: &[u8]) -> ScramFailure {
    let kind = rest
        .strip_prefix(b"=")
        .map(|kind| kind.split(|&b| b == b',').next().unwrap_or_default())
        .unwrap_or_default();
    ScramFailure::ChannelBinding(format!(
        "channel binding is not supported through PgGate: the client requires SCRAM \
         channel binding (\"{}\"), which cannot cross a proxy that terminates TLS; \
         connect with channel_binding=prefer or channel_binding=disable",
        quote_for_log(&String::from_utf8_lossy(kind))
    ))
}

/// PostgreSQL's mock secret: salt from SHA-256(user ‖ mock key), default
/// iterations, all-zero keys (never matched: the exchange is doomed).
fn mock_secret(user: &str, mock_key: &[u8; MOCK_KEY_LEN]) -> ScramSecret {
    let digest = Sha256::new()
        .chain_update(user.as_bytes())
        .chain_update(mock_key)
        .finalize();
    ScramSecret {
        iterations: DEFAULT_ITERATIONS,
        salt: digest.get(..MOCK_SALT_LEN).unwrap_or_default().to_vec(),
        stored_key: [0; KEY_LEN],
        server_key: [0; KEY_LEN],
    }
}

/// RFC 5802 `printable`: ASCII 0x21–0x7E except `,`.
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// A byte of client input as PostgreSQL shows it in an error message.
fn sanitize_char(b: u8) -> String {
    if (0x21..=0x7e).contains(&b) {
        format!("'{}'", char::from(b))
    } else {
        format!("0x{b:02x}")
    }
}

fn protocol(message: impl Into<String>) -> ScramFailure {
    ScramFailure::Protocol(message.into())
}

fn malformed(detail: impl fmt::Display) -> ScramFailure {
    ScramFailure::Protocol(format!("malformed SCRAM message: {detail}"))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; KEY_LEN]> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// Equality whose running time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::getrandom(buf) {
        panic!("the operating system's random source is unavailable: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::md5;
    use crate::auth::{parse_scram_secret, ScramClient, ScramCredential};

    const PASSWORD: &str = "pencil";
    /// Salt of the RFC 7677 test vector.
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    /// The secret PostgreSQL stores for "pencil" with the RFC 7677 salt.
    const RFC_SECRET: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    /// What PostgreSQL 15 stored for `CREATE ROLE u PASSWORD 'pencil'` with
    /// `password_encryption = 'scram-sha-256'`.
    const POSTGRESQL_SECRET: &str = "SCRAM-SHA-256$4096:SDJKQZtd7VC3tkinlv4Cag==$IT/OZU7oU4NFcexbV5ny1KZ/H7W3Yqqk06RVzK55KXU=:wLpeYUy1hf+jtcMtXcXK6KOXqGSFPmuTQxx9RyYxkLY=";
    const MOCK_KEY: [u8; MOCK_KEY_LEN] = [0x5a; MOCK_KEY_LEN];

    /// The keys PostgreSQL derives from a password.
    struct Keys {
        client_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    }

    fn derive_keys(password: &str, salt: &[u8], iterations: u32) -> Keys {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        Keys {
            client_key: hmac_sha256(&salted, &[b"Client Key"]).expect("hmac"),
            server_key: hmac_sha256(&salted, &[b"Server Key"]).expect("hmac"),
        }
    }

    /// The `rolpassword` PostgreSQL would store, built from its definition.
    fn secret_string(password: &str, salt: &[u8], iterations: u32) -> String {
        let keys = derive_keys(password, salt, iterations);
        let stored_key = Sha256::digest(keys.client_key);
        format!(
            "SCRAM-SHA-256${iterations}:{}${}:{}",
            BASE64.encode(salt),
            BASE64.encode(stored_key),
            BASE64.encode(keys.server_key)
        )
    }

    fn secret(text: &str) -> ScramSecret {
        parse_scram_secret(text).expect("test secret is valid")
    }

    fn password_client(password: &str) -> ScramClient {
        ScramClient::new(ScramCredential::Password(password.to_owned())).expect("OS random")
    }

    /// Runs a whole exchange; on success also checks the server-final with
    /// the client and returns the recovered ClientKey.
    fn login(
        client: &mut ScramClient,
        server: &mut ScramServer,
    ) -> Result<[u8; KEY_LEN], ScramFailure> {
        let server_first = server.client_first(SCRAM_SHA_256, &client.client_first_message())?;
        let client_final = client
            .handle_server_first(&server_first)
            .expect("the client accepts the server-first-message");
        let (server_final, client_key) = server.client_final(&client_final)?;
        assert_eq!(client.verify_server_final(&server_final), Ok(()));
        Ok(client_key)
    }

    fn protocol_error<T: fmt::Debug>(result: Result<T, ScramFailure>, what: &str) {
        assert!(
            matches!(result, Err(ScramFailure::Protocol(_))),
            "{what}: {result:?}"
        );
    }

    /// Server state after a client-first-message with a known nonce.
    fn server_after_first(secret_text: &str, client_first: &[u8]) -> (ScramServer, String) {
        let mut server = ScramServer::new("u", Some(secret(secret_text)), &MOCK_KEY);
        let server_first = server
            .client_first(SCRAM_SHA_256, client_first)
            .expect("valid client-first");
        let server_first = String::from_utf8(server_first).expect("ASCII");
        (server, server_first)
    }

    fn combined_nonce(server_first: &str) -> &str {
        server_first
            .strip_prefix("r=")
            .and_then(|rest| rest.split(',').next())
            .expect("server-first starts with r=")
    }

    /// A correct client-final-message for "pencil", built by hand so that
    /// tests can vary its parts.
    fn client_final_for(
        client_first_bare: &str,
        server_first: &str,
        without_proof: &str,
        salt: &[u8],
    ) -> String {
        let keys = derive_keys(PASSWORD, salt, 4096);
        let stored_key: [u8; KEY_LEN] = Sha256::digest(keys.client_key).into();
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&stored_key, &[auth_message.as_bytes()]).expect("hmac");
        let mut proof = keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    fn salt_of(server_first: &[u8]) -> String {
        let text = std::str::from_utf8(server_first).expect("ASCII");
        text.split(',')
            .find_map(|a| a.strip_prefix("s="))
            .expect("salt attribute")
            .to_owned()
    }

    #[test]
    fn mechanisms_offers_only_scram_sha_256() {
        assert_eq!(ScramServer::mechanisms(), b"SCRAM-SHA-256\0\0".to_vec());
        assert_eq!(
            crate::auth::mechanisms(&ScramServer::mechanisms()),
            Ok(vec![SCRAM_SHA_256.to_owned()])
        );
    }

    #[test]
    fn rfc7677_test_vector() {
        let mut server = ScramServer::new("user", Some(secret(RFC_SECRET)), &MOCK_KEY);
        let server_first = server
            .client_first_with_nonce(
                SCRAM_SHA_256,
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            )
            .expect("RFC client-first is valid");
        assert_eq!(
            String::from_utf8_lossy(&server_first),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (server_final, client_key) = server
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("RFC proof is valid");
        assert_eq!(
            String::from_utf8_lossy(&server_final),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let salt = BASE64.decode(RFC_SALT).expect("constant");
        assert_eq!(client_key, derive_keys(PASSWORD, &salt, 4096).client_key);
    }

    #[test]
    fn password_client_round_trip_recovers_the_client_key() {
        let salt = b"pggate-test-salt";
        let text = secret_string(PASSWORD, salt, 4096);
        let keys = derive_keys(PASSWORD, salt, 4096);
        let mut server = ScramServer::new("alice", Some(secret(&text)), &MOCK_KEY);
        let client_key =
            login(&mut password_client(PASSWORD), &mut server).expect("the right password logs in");
        assert_eq!(client_key, keys.client_key);

        // The recovered key logs in again, as PgGate does towards backends.
        let mut by_keys = ScramClient::new(ScramCredential::Keys {
            client_key,
            server_key: secret(&text).server_key,
        })
        .expect("OS random");
        let mut server = ScramServer::new("alice", Some(secret(&text)), &MOCK_KEY);
        assert_eq!(login(&mut by_keys, &mut server), Ok(keys.client_key));
    }

    #[test]
    fn secret_built_here_matches_the_postgresql_definition() {
        let salt = BASE64.decode(RFC_SALT).expect("constant");
        assert_eq!(secret_string(PASSWORD, &salt, 4096), RFC_SECRET);
    }

    #[test]
    fn secret_stored_by_a_real_postgresql_server() {
        let stored = secret(POSTGRESQL_SECRET);
        let keys = derive_keys(PASSWORD, &stored.salt, stored.iterations);
        let mut server = ScramServer::new("u", Some(stored.clone()), &MOCK_KEY);
        assert_eq!(
            login(&mut password_client(PASSWORD), &mut server),
            Ok(keys.client_key)
        );
        let mut by_keys = ScramClient::new(ScramCredential::Keys {
            client_key: keys.client_key,
            server_key: stored.server_key,
        })
        .expect("OS random");
        let mut server = ScramServer::new("u", Some(stored), &MOCK_KEY);
        assert_eq!(login(&mut by_keys, &mut server), Ok(keys.client_key));
    }

    #[test]
    fn wrong_password_fails_like_postgresql() {
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let mut client = password_client("pencil2");
        let server_first = server
            .client_first(SCRAM_SHA_256, &client.client_first_message())
            .expect("valid client-first");
        let client_final = client.handle_server_first(&server_first).expect("valid");
        let failure = server
            .client_final(&client_final)
            .expect_err("wrong password");
        assert_eq!(failure, ScramFailure::AuthFailed);
        assert_eq!(failure.sqlstate(), "28P01");
        assert_eq!(
            failure.message("u"),
            "password authentication failed for user \"u\""
        );
    }

    #[test]
    fn a_client_key_for_another_secret_is_refused() {
        let keys = derive_keys(PASSWORD, b"some-other-salt!", 4096);
        let mut client = ScramClient::new(ScramCredential::Keys {
            client_key: keys.client_key,
            server_key: keys.server_key,
        })
        .expect("OS random");
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let server_first = server
            .client_first(SCRAM_SHA_256, &client.client_first_message())
            .expect("valid");
        let client_final = client.handle_server_first(&server_first).expect("valid");
        assert_eq!(
            server.client_final(&client_final),
            Err(ScramFailure::AuthFailed)
        );
    }

    #[test]
    fn unknown_user_gets_a_mock_exchange_that_fails_at_the_end() {
        let mut server = ScramServer::new("ghost", None, &MOCK_KEY);
        let mut client = password_client(PASSWORD);
        let server_first = server
            .client_first(SCRAM_SHA_256, &client.client_first_message())
            .expect("the mock exchange proceeds");
        let text = String::from_utf8(server_first.clone()).expect("ASCII");
        assert!(text.ends_with(",i=4096"), "{text}");
        let salt = BASE64.decode(salt_of(&server_first)).expect("base64 salt");
        assert_eq!(salt.len(), MOCK_SALT_LEN);
        let client_final = client.handle_server_first(&server_first).expect("valid");
        assert_eq!(
            server.client_final(&client_final),
            Err(ScramFailure::AuthFailed)
        );
    }

    #[test]
    fn mock_salt_is_stable_per_user_and_differs_between_users() {
        let salt = |user: &str, key: &[u8; MOCK_KEY_LEN]| {
            let mut server = ScramServer::new(user, None, key);
            let first = server
                .client_first(SCRAM_SHA_256, b"n,,n=,r=abcdef")
                .expect("valid");
            salt_of(&first)
        };
        assert_eq!(salt("ghost", &MOCK_KEY), salt("ghost", &MOCK_KEY));
        assert_ne!(salt("ghost", &MOCK_KEY), salt("phantom", &MOCK_KEY));
        assert_ne!(
            salt("ghost", &MOCK_KEY),
            salt("ghost", &[0x33; MOCK_KEY_LEN])
        );
        // PostgreSQL's derivation: the first 16 bytes of SHA-256(user ‖ key).
        let digest = Sha256::new()
            .chain_update(b"ghost")
            .chain_update(MOCK_KEY)
            .finalize();
        assert_eq!(salt("ghost", &MOCK_KEY), BASE64.encode(&digest[..16]));
    }

    #[test]
    fn mock_exchange_looks_like_a_real_one() {
        // Same message shape for a real user with a 16-byte salt (as
        // PostgreSQL generates) and for an unknown one.
        let real = secret(POSTGRESQL_SECRET);
        let shape = |secret: Option<ScramSecret>| {
            let mut server = ScramServer::new("u", secret, &MOCK_KEY);
            let first = server
                .client_first(SCRAM_SHA_256, b"n,,n=,r=abcdef")
                .expect("valid");
            let text = String::from_utf8(first).expect("ASCII");
            text.split(',')
                .map(|attribute| (attribute.get(..2).map(str::to_owned), attribute.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(Some(real)), shape(None));
    }

    #[test]
    fn mock_exchange_rejects_malformed_messages_like_a_real_one() {
        let mut server = ScramServer::new("ghost", None, &MOCK_KEY);
        let server_first = server
            .client_first(SCRAM_SHA_256, b"n,,n=,r=abcdef")
            .expect("valid");
        let nonce = combined_nonce(std::str::from_utf8(&server_first).expect("ASCII"));
        protocol_error(
            server.client_final(format!("c=biws,r={nonce},p=AAAA").as_bytes()),
            "short proof",
        );
    }

    #[test]
    fn server_nonce_extends_the_client_nonce_and_is_fresh() {
        let nonce = || {
            let (_, first) = server_after_first(POSTGRESQL_SECRET, b"n,,n=,r=clientNONCE");
            combined_nonce(&first).to_owned()
        };
        let a = nonce();
        let b = nonce();
        assert_ne!(a, b);
        let server_part = a.strip_prefix("clientNONCE").expect("extends client nonce");
        assert_eq!(server_part.len(), 24);
        assert!(server_part.bytes().all(is_printable));
    }

    #[test]
    fn channel_binding_demands_are_refused_clearly() {
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let failure = server
            .client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abcdef")
            .expect_err("channel binding is not available");
        let ScramFailure::ChannelBinding(message) = &failure else {
            panic!("expected ChannelBinding, got {failure:?}");
        };
        assert!(
            message.contains("not supported through PgGate"),
            "{message}"
        );
        assert!(message.contains("tls-server-end-point"), "{message}");
        assert_eq!(failure.sqlstate(), "28000");
        assert_eq!(failure.message("u"), *message);

        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        assert!(matches!(
            server.client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramFailure::ChannelBinding(_))
        ));
    }

    #[test]
    fn other_mechanisms_are_protocol_errors() {
        for mechanism in ["SCRAM-SHA-1", "", "scram-sha-256", "PLAIN\n"] {
            let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
            let result = server.client_first(mechanism, b"n,,n=,r=abcdef");
            assert_eq!(
                result.as_ref().map_err(ScramFailure::sqlstate),
                Err("08P01")
            );
            protocol_error(result, mechanism);
        }
    }

    #[test]
    fn gs2_flag_y_is_accepted_and_must_be_echoed() {
        let salt = BASE64.decode("SDJKQZtd7VC3tkinlv4Cag==").expect("constant");
        let login_with = |cbind: &str| {
            let (mut server, server_first) = server_after_first(POSTGRESQL_SECRET, b"y,,n=,r=abc");
            let nonce = combined_nonce(&server_first).to_owned();
            let without_proof = format!("c={cbind},r={nonce}");
            let last = client_final_for("n=,r=abc", &server_first, &without_proof, &salt);
            server.client_final(last.as_bytes())
        };
        let (server_final, client_key) = login_with("eSws").expect("y,, logs in");
        assert!(server_final.starts_with(b"v="));
        assert_eq!(client_key, derive_keys(PASSWORD, &salt, 4096).client_key);
        protocol_error(login_with("biws"), "c=biws after y,,");
    }

    #[test]
    fn optional_extensions_are_ignored() {
        let salt = BASE64.decode("SDJKQZtd7VC3tkinlv4Cag==").expect("constant");
        let bare = "n=someone,r=abc,x=ext1,y=ext2";
        let (mut server, server_first) =
            server_after_first(POSTGRESQL_SECRET, format!("n,,{bare}").as_bytes());
        let nonce = combined_nonce(&server_first).to_owned();
        let without_proof = format!("c=biws,r={nonce},z=final-ext");
        let last = client_final_for(bare, &server_first, &without_proof, &salt);
        assert!(server.client_final(last.as_bytes()).is_ok());
    }

    #[test]
    fn bad_client_first_messages_are_protocol_errors() {
        let cases: &[(&str, &[u8])] = &[
            ("empty", b""),
            ("NUL byte", b"n,,n=,r=abc\0def"),
            ("bad flag", b"x,,n=,r=abc"),
            ("flag only", b"n"),
            ("no comma after flag", b"nn,n=,r=abc"),
            ("authzid", b"n,a=admin,n=,r=abc"),
            ("garbage authzid", b"n,x,n=,r=abc"),
            ("header only", b"n,,"),
            ("header without second comma", b"n,"),
            ("mandatory extension", b"n,,m=ext,n=,r=abc"),
            ("missing username", b"n,,r=abc"),
            ("username without =", b"n,,n,r=abc"),
            ("missing nonce", b"n,,n="),
            ("nonce is another attribute", b"n,,n=,s=abc"),
            ("empty nonce", b"n,,n=,r="),
            ("non-printable nonce", b"n,,n=,r=ab\x01c"),
            ("non-ASCII nonce", b"n,,n=,r=ab\xc3\xa9c"),
            ("space in nonce", b"n,,n=,r=ab c"),
            ("bad extension name", b"n,,n=,r=abc,1=x"),
            ("extension without =", b"n,,n=,r=abc,x"),
        ];
        for (what, data) in cases {
            let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
            protocol_error(server.client_first(SCRAM_SHA_256, data), what);
            // The exchange is over.
            protocol_error(server.client_final(b"c=biws,r=abc,p=AAAA"), what);
        }
    }

    #[test]
    fn non_utf8_username_and_trailing_comma_are_accepted_like_postgresql() {
        for data in [&b"n,,n=\xff\xfe,r=abc"[..], b"n,,n=,r=abc,"] {
            let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
            assert!(server.client_first(SCRAM_SHA_256, data).is_ok(), "{data:?}");
        }
    }

    #[test]
    fn bad_client_final_messages_are_protocol_errors() {
        let salt = BASE64.decode("SDJKQZtd7VC3tkinlv4Cag==").expect("constant");
        let (_, first) = server_after_first(POSTGRESQL_SECRET, b"n,,n=,r=abc");
        let nonce = combined_nonce(&first).to_owned();
        let good = client_final_for("n=,r=abc", &first, &format!("c=biws,r={nonce}"), &salt);
        let (good_without_proof, good_proof) = good.rsplit_once(",p=").expect("proof");
        let short_proof = BASE64.encode([7u8; 31]);
        let long_proof = BASE64.encode([7u8; 33]);
        let cases: Vec<(&str, String)> = vec![
            (
                "tampered nonce",
                good.replacen(&nonce, &format!("{nonce}x"), 1),
            ),
            ("client nonce only", format!("c=biws,r=abc,p={good_proof}")),
            (
                "nonce with another server part",
                format!("c=biws,r=abcAAAAAAAAAAAAAAAAAAAAAAAA,p={good_proof}"),
            ),
            ("bad base64 proof", format!("{good_without_proof},p=***")),
            (
                "short proof",
                format!("{good_without_proof},p={short_proof}"),
            ),
            ("long proof", format!("{good_without_proof},p={long_proof}")),
            ("empty proof", format!("{good_without_proof},p=")),
            ("wrong c=", good.replacen("c=biws", "c=eSws", 1)),
            (
                "c= not base64 of a header",
                good.replacen("c=biws", "c=xxxx", 1),
            ),
            (
                "channel binding data",
                good.replacen("c=biws", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws", 1),
            ),
            ("missing proof", good_without_proof.to_owned()),
            ("trailing comma", format!("{good},")),
            ("garbage after proof", format!("{good},x=1")),
            ("missing c=", good.replacen("c=biws,", "", 1)),
            (
                "attributes swapped",
                format!("r={nonce},c=biws,p={good_proof}"),
            ),
            ("empty", String::new()),
            ("NUL byte", format!("{good}\0")),
            (
                "bad extension",
                format!("c=biws,r={nonce},1=x,p={good_proof}"),
            ),
        ];
        for (what, data) in &cases {
            let (mut server, _) = server_after_first(POSTGRESQL_SECRET, b"n,,n=,r=abc");
            protocol_error(server.client_final(data.as_bytes()), what);
        }
    }

    #[test]
    fn the_hand_built_client_final_is_accepted() {
        // Guards the test helper used by the malformed-message cases above.
        let salt = BASE64.decode("SDJKQZtd7VC3tkinlv4Cag==").expect("constant");
        let (mut server, first) = server_after_first(POSTGRESQL_SECRET, b"n,,n=,r=abc");
        let nonce = combined_nonce(&first).to_owned();
        let good = client_final_for("n=,r=abc", &first, &format!("c=biws,r={nonce}"), &salt);
        assert!(server.client_final(good.as_bytes()).is_ok());
    }

    #[test]
    fn messages_out_of_order_are_protocol_errors() {
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        protocol_error(server.client_final(b"c=biws,r=abc,p=AAAA"), "final first");
        protocol_error(
            server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc"),
            "first after a failure",
        );

        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let mut client = password_client(PASSWORD);
        let first = client.client_first_message();
        assert!(server.client_first(SCRAM_SHA_256, &first).is_ok());
        protocol_error(server.client_first(SCRAM_SHA_256, &first), "first twice");

        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let server_first = server
            .client_first(SCRAM_SHA_256, &client.client_first_message())
            .expect("valid");
        let client_final = client.handle_server_first(&server_first).expect("valid");
        assert!(server.client_final(&client_final).is_ok());
        protocol_error(server.client_final(&client_final), "final replayed");
    }

    #[test]
    fn parse_initial_response_reads_the_message_body() {
        let body = b"SCRAM-SHA-256\0\0\0\0\x0en,,n=,r=abcdef";
        assert_eq!(
            parse_initial_response(body),
            Some((SCRAM_SHA_256, &b"n,,n=,r=abcdef"[..]))
        );
        assert_eq!(
            parse_initial_response(b"SCRAM-SHA-256\0\0\0\0\0"),
            Some((SCRAM_SHA_256, &b""[..]))
        );
        for bad in [
            &b""[..],
            b"SCRAM-SHA-256",
            b"SCRAM-SHA-256\0",
            b"SCRAM-SHA-256\0\0\0",
            b"SCRAM-SHA-256\0\xff\xff\xff\xff",
            b"SCRAM-SHA-256\0\xff\xff\xff\xfe",
            b"SCRAM-SHA-256\0\0\0\0\x0fn,,n=,r=abcdef",
            b"SCRAM-SHA-256\0\0\0\0\x0dn,,n=,r=abcdef",
            b"SCRAM-SHA-256\0\x7f\xff\xff\xffn,,",
            b"\xff\xfe\0\0\0\0\0",
        ] {
            assert_eq!(parse_initial_response(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn md5_salts_are_random_and_verify_with_the_md5_module() {
        let salts: Vec<[u8; 4]> = (0..8).map(|_| md5_salt()).collect();
        assert!(salts.iter().any(|s| *s != salts[0]), "{salts:?}");
        let salt = md5_salt();
        let stored = md5::stored_hash("u", "secret");
        let response = md5::password_response("u", "secret", salt);
        assert!(md5::verify_response(&stored, salt, &response));
        let wrong = md5::password_response("u", "wrong", salt);
        assert!(!md5::verify_response(&stored, salt, &wrong));
    }

    #[test]
    fn mock_keys_are_random() {
        assert_ne!(mock_key(), mock_key());
    }

    #[test]
    fn failures_map_to_postgresql_sqlstates() {
        assert_eq!(ScramFailure::AuthFailed.sqlstate(), "28P01");
        assert_eq!(protocol("x").sqlstate(), "08P01");
        assert_eq!(
            ScramFailure::ChannelBinding("x".to_owned()).sqlstate(),
            "28000"
        );
        assert_eq!(protocol("bad").message("u"), "bad");
        assert_eq!(protocol("bad").to_string(), "bad");
        assert_eq!(
            ScramFailure::AuthFailed.to_string(),
            "password authentication failed"
        );
    }

    #[test]
    fn peer_text_in_errors_is_quoted_safely() {
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let failure = server
            .client_first(SCRAM_SHA_256, b"p=evil\nFAKE LOG LINE,,n=,r=abc")
            .expect_err("channel binding");
        assert!(!failure.to_string().contains('\n'), "{failure}");
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let failure = server
            .client_first("X\nFAKE", b"n,,n=,r=abc")
            .expect_err("bad mechanism");
        assert!(!failure.to_string().contains('\n'), "{failure}");
        let mut server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let failure = server
            .client_first(SCRAM_SHA_256, b"\n,,n=,r=abc")
            .expect_err("bad flag");
        assert!(failure.to_string().contains("0x0a"), "{failure}");
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let server = ScramServer::new("u", Some(secret(POSTGRESQL_SECRET)), &MOCK_KEY);
        let rendered = format!("{server:?}");
        assert!(rendered.contains("AwaitingClientFirst"), "{rendered}");
        assert!(!rendered.contains('['), "{rendered}");
        assert!(!rendered.contains("IT/OZU7"), "{rendered}");
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    /// xorshift64: deterministic pseudo-random input for the robustness test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }

        /// Random bytes, a mutated valid message, or a splice of SCRAM
        /// tokens, so that both shallow and deep checks are exercised.
        fn input(&mut self, valid: &[u8]) -> Vec<u8> {
            const TOKENS: &[&[u8]] = &[
                b",", b"=", b"n", b"y", b"p", b"a", b"m", b"c", b"r", b"x", b"biws", b"eSws",
                b"n,,", b"y,,", b"p=", b"r=", b"c=", b"\0", b"\xff", b"AAAA", b"====",
            ];
            match self.below(3) {
                0 => (0..self.below(64))
                    .map(|_| self.next().to_le_bytes()[0])
                    .collect(),
                1 => {
                    let mut data = valid.to_vec();
                    for _ in 0..=self.below(4) {
                        if data.is_empty() {
                            break;
                        }
                        let at = self.below(data.len());
                        match self.below(3) {
                            0 => data[at] = self.next().to_le_bytes()[0],
                            1 => data.truncate(at),
                            _ => {
                                data.remove(at);
                            }
                        }
                    }
                    data
                }
                _ => (0..self.below(12))
                    .flat_map(|_| TOKENS[self.below(TOKENS.len())].to_vec())
                    .collect(),
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let salt = BASE64.decode("SDJKQZtd7VC3tkinlv4Cag==").expect("constant");
        let stored = secret(POSTGRESQL_SECRET);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut template = ScramServer::new("u", Some(stored.clone()), &MOCK_KEY);
        let server_first = template
            .client_first_with_nonce(SCRAM_SHA_256, b"n,,n=,r=abc", "SERVERNONCE")
            .expect("valid");
        let server_first = String::from_utf8(server_first).expect("ASCII");
        let valid_final =
            client_final_for("n=,r=abc", &server_first, "c=biws,r=abcSERVERNONCE", &salt);
        let body = b"SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc";
        // Counts of outcomes, to show the inputs reach the deep checks too.
        let (mut first_ok, mut final_auth_failed, mut final_protocol) = (0, 0, 0);
        for round in 0..100_000 {
            let secret = (round % 2 == 0).then(|| stored.clone());
            let mut server = ScramServer::new("u", secret, &MOCK_KEY);
            if server
                .client_first(SCRAM_SHA_256, &rng.input(b"n,,n=,r=abc"))
                .is_ok()
            {
                first_ok += 1;
            }
            let mut server = ScramServer::new("u", Some(stored.clone()), &MOCK_KEY);
            server
                .client_first_with_nonce(SCRAM_SHA_256, b"n,,n=,r=abc", "SERVERNONCE")
                .expect("valid");
            match server.client_final(&rng.input(valid_final.as_bytes())) {
                Err(ScramFailure::AuthFailed) => final_auth_failed += 1,
                Err(ScramFailure::Protocol(_)) => final_protocol += 1,
                Err(ScramFailure::ChannelBinding(m)) => panic!("not in client-final: {m}"),
                Ok(_) => {}
            }
            let _ = parse_initial_response(&rng.input(body));
        }
        assert!(first_ok > 0);
        assert!(final_auth_failed > 0);
        assert!(final_protocol > 0);
    }
}
