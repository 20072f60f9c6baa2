//! SCRAM-SHA-256 as PostgreSQL speaks it (RFC 5802 / RFC 7677): the client
//! side PgGate uses to log in to backends, with either a password or the
//! ClientKey/ServerKey pair recovered from a client's login, and the parser
//! for the secrets PostgreSQL stores in `pg_authid.rolpassword`. No channel
//! binding (gs2 header `n,,`), and an empty `n=` because PostgreSQL takes the
//! user from the startup packet. Pure code: no I/O beyond the OS random
//! source for the nonce. Every check on server input returns an error, never
//! panics.
//!
//! Password preparation: PostgreSQL runs SASLprep on the password and uses the
//! raw bytes when SASLprep leaves it unchanged or rejects it. An ASCII
//! password is always used as-is by both sides, so it is exact here. A
//! non-ASCII password is sent as its raw UTF-8 bytes, which matches the
//! server only when SASLprep would not change it (already NFKC-normalised,
//! no non-ASCII spaces or mapped-to-nothing characters); other non-ASCII
//! passwords fail to log in.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{quote_for_log, AuthError};

type HmacSha256 = Hmac<Sha256>;

/// Length of every SCRAM-SHA-256 key and signature.
pub const KEY_LEN: usize = 32;
/// Largest iteration count PgGate accepts from a server: PostgreSQL's default
/// is 4096, and a hostile server must not make PgGate burn seconds of CPU.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Random bytes in a client nonce (PostgreSQL's own client uses 18).
const NONCE_BYTES: usize = 18;
/// gs2 header for "no channel binding, no authzid".
const GS2_HEADER: &str = "n,,";
/// base64 of [`GS2_HEADER`], the `c=` attribute of the client-final-message.
const GS2_HEADER_BASE64: &str = "biws";
/// Scheme tag of a stored SCRAM-SHA-256 secret.
const SECRET_SCHEME: &str = "SCRAM-SHA-256";

/// What PgGate proves knowledge of when it logs in with SCRAM-SHA-256.
#[derive(Clone)]
pub enum ScramCredential {
    /// The user's password (from the credentials file).
    Password(String),
    /// ClientKey recovered from a client's proof, with the ServerKey from the
    /// role's stored secret to check the server's signature. Valid only while
    /// the role's salt and iteration count are unchanged.
    Keys {
        client_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    },
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramCredential::Password(_) => f.write_str("Password(<redacted>)"),
            ScramCredential::Keys { .. } => f.write_str("Keys { <redacted> }"),
        }
    }
}

/// A role's SCRAM-SHA-256 secret as PostgreSQL stores it:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Parses a stored SCRAM-SHA-256 secret. `None` if `s` is anything else
/// (an MD5 secret, a plain password, a malformed or truncated secret).
pub fn parse_scram_secret(s: &str) -> Option<ScramSecret> {
    let (scheme, rest) = s.split_once('$')?;
    if scheme != SECRET_SCHEME {
        return None;
    }
    let (iterations_and_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iterations_and_salt.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    let iterations = parse_iterations(iterations).ok()?;
    let salt = BASE64.decode(salt).ok().filter(|salt| !salt.is_empty())?;
    Some(ScramSecret {
        iterations,
        salt,
        stored_key: decode_key(stored_key)?,
        server_key: decode_key(server_key)?,
    })
}

/// One SCRAM-SHA-256 login, client side. Phases in order:
/// [`client_first_message`](Self::client_first_message) →
/// [`handle_server_first`](Self::handle_server_first) →
/// [`verify_server_final`](Self::verify_server_final).
pub struct ScramClient {
    credential: ScramCredential,
    client_nonce: String,
    client_first_bare: String,
    phase: Phase,
}

enum Phase {
    AwaitingServerFirst,
    AwaitingServerFinal {
        server_key: [u8; KEY_LEN],
        auth_message: String,
    },
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::AwaitingServerFirst => "AwaitingServerFirst",
            Phase::AwaitingServerFinal { .. } => "AwaitingServerFinal",
        };
        f.debug_struct("ScramClient")
            .field("credential", &self.credential)
            .field("client_nonce", &self.client_nonce)
            .field("phase", &phase)
            .finish()
    }
}

impl ScramClient {
    /// Starts a login with a fresh random nonce. Fails only if the operating
    /// system's random source is unavailable.
    pub fn new(cred: ScramCredential) -> Result<ScramClient, AuthError> {
        let mut raw = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut raw)
            .map_err(|e| AuthError::new(format!("SCRAM: cannot generate a client nonce: {e}")))?;
        Ok(ScramClient::with_nonce(cred, &BASE64.encode(raw)))
    }

    /// Starts a login with a caller-chosen nonce, for reproducible exchanges
    /// in tests. The nonce must be printable ASCII without `,`.
    pub fn with_nonce(cred: ScramCredential, nonce: &str) -> ScramClient {
        ScramClient::for_username(cred, nonce, "")
    }

    /// RFC 5802 names the user in the client-first-message; PostgreSQL leaves
    /// it empty. Kept private so only the RFC test vectors use a name.
    fn for_username(cred: ScramCredential, nonce: &str, username: &str) -> ScramClient {
        let client_first_bare = format!("n={},r={nonce}", sasl_name(username));
        ScramClient {
            credential: cred,
            client_nonce: nonce.to_owned(),
            client_first_bare,
            phase: Phase::AwaitingServerFirst,
        }
    }

    /// The client-first-message, sent as the SASLInitialResponse data:
    /// `n,,n=,r=<nonce>`.
    pub fn client_first_message(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server-first-message (AuthenticationSASLContinue payload);
    /// returns client-final-message.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.phase, Phase::AwaitingServerFirst) {
            return Err(AuthError::new(
                "SCRAM: server-first-message arrived after the exchange had moved on",
            ));
        }
        let server_first = std::str::from_utf8(msg)
            .map_err(|_| AuthError::new("SCRAM server-first-message: not valid UTF-8"))?;
        let parsed = ServerFirst::parse(server_first, &self.client_nonce)?;

        let (client_key, server_key) = match &self.credential {
            ScramCredential::Password(password) => {
                let salted = salted_password(password, &parsed.salt, parsed.iterations);
                (
                    hmac_sha256(&salted, b"Client Key")?,
                    hmac_sha256(&salted, b"Server Key")?,
                )
            }
            ScramCredential::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };

        let without_proof = format!("c={GS2_HEADER_BASE64},r={}", parsed.nonce);
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes())?;
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(client_signature) {
            *p ^= s;
        }

        self.phase = Phase::AwaitingServerFinal {
            server_key,
            auth_message,
        };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Takes server-final-message (AuthenticationSASLFinal payload); checks
    /// the server signature, which proves the server knew the secret.
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), AuthError> {
        let Phase::AwaitingServerFinal {
            server_key,
            auth_message,
        } = &self.phase
        else {
            return Err(AuthError::new(
                "SCRAM: server-final-message arrived before the server-first-message",
            ));
        };
        let server_final = std::str::from_utf8(msg)
            .map_err(|_| AuthError::new("SCRAM server-final-message: not valid UTF-8"))?;
        let mut attributes = server_final.split(',');
        let first = attributes.next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(server_error("server-final-message", error));
        }
        let signature = first.strip_prefix("v=").ok_or_else(|| {
            AuthError::new("SCRAM server-final-message: missing server signature (v=)")
        })?;
        let signature = BASE64.decode(signature).map_err(|_| {
            AuthError::new("SCRAM server-final-message: server signature is not valid base64")
        })?;
        let mut mac = HmacSha256::new_from_slice(server_key)
            .map_err(|_| AuthError::new("SCRAM: invalid ServerKey length"))?;
        mac.update(auth_message.as_bytes());
        mac.verify_slice(&signature).map_err(|_| {
            AuthError::new(
                "SCRAM server-final-message: server signature does not match; \
                 the server does not know this user's secret",
            )
        })
    }
}

/// The fields of a server-first-message PgGate uses.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

impl<'a> ServerFirst<'a> {
    /// `[m=…,]r=<nonce>,s=<salt>,i=<iterations>[,extensions]`, attributes in
    /// that order as RFC 5802 requires.
    fn parse(msg: &'a str, client_nonce: &str) -> Result<ServerFirst<'a>, AuthError> {
        if let Some(error) = msg.strip_prefix("e=") {
            return Err(server_error("server-first-message", error));
        }
        if msg.starts_with("m=") {
            return Err(AuthError::new(
                "SCRAM server-first-message: server requires an unsupported extension (m=)",
            ));
        }
        let mut attributes = msg.split(',');
        let nonce = expect_attribute(attributes.next(), 'r', "nonce")?;
        let salt = expect_attribute(attributes.next(), 's', "salt")?;
        let iterations = expect_attribute(attributes.next(), 'i', "iteration count")?;

        if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(AuthError::new(
                "SCRAM server-first-message: nonce contains non-printable characters",
            ));
        }
        if nonce.len() <= client_nonce.len() || !nonce.starts_with(client_nonce) {
            return Err(AuthError::new(
                "SCRAM server-first-message: server nonce does not extend the client nonce",
            ));
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| AuthError::new("SCRAM server-first-message: salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(AuthError::new("SCRAM server-first-message: salt is empty"));
        }
        let iterations = parse_iterations(iterations)
            .map_err(|reason| AuthError::new(format!("SCRAM server-first-message: {reason}")))?;
        if iterations > MAX_ITERATIONS {
            return Err(AuthError::new(format!(
                "SCRAM server-first-message: iteration count {iterations} exceeds the limit of {MAX_ITERATIONS}"
            )));
        }
        Ok(ServerFirst {
            nonce,
            salt,
            iterations,
        })
    }
}

fn expect_attribute<'a>(
    attribute: Option<&'a str>,
    name: char,
    what: &str,
) -> Result<&'a str, AuthError> {
    attribute
        .and_then(|a| a.strip_prefix(name))
        .and_then(|a| a.strip_prefix('='))
        .ok_or_else(|| {
            AuthError::new(format!(
                "SCRAM server-first-message: missing {what} ({name}=)"
            ))
        })
}

fn server_error(message: &str, error: &str) -> AuthError {
    AuthError::new(format!(
        "SCRAM {message}: server reported error \"{}\"",
        quote_for_log(error)
    ))
}

/// A positive decimal iteration count (no sign, no spaces).
fn parse_iterations(text: &str) -> Result<u32, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("iteration count is not a decimal number");
    }
    match text.parse::<u32>() {
        Ok(0) => Err("iteration count is zero"),
        Ok(n) => Ok(n),
        Err(_) => Err("iteration count is out of range"),
    }
}

fn decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// RFC 5802 `saslname`: `=` and `,` escaped as `=3D` and `=2C`.
fn sasl_name(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

/// SaltedPassword := Hi(password, salt, i), Hi being PBKDF2-HMAC-SHA-256.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    salted
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; KEY_LEN], AuthError> {
    let mut mac = HmacSha256::new_from_slice(key)
        .map_err(|_| AuthError::new("SCRAM: HMAC rejected its key"))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3 test vector.
    const RFC_PASSWORD: &str = "pencil";
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    /// The secret PostgreSQL would store for "pencil" with the RFC's salt.
    const PENCIL_SECRET: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn password(p: &str) -> ScramCredential {
        ScramCredential::Password(p.to_owned())
    }

    fn pencil_client() -> ScramClient {
        ScramClient::with_nonce(password(RFC_PASSWORD), RFC_CLIENT_NONCE)
    }

    /// A minimal PostgreSQL-style server side built from a stored secret:
    /// returns its server-final-message if the client's proof is valid.
    fn server_accepts(
        secret: &ScramSecret,
        client_first: &[u8],
        server_first: &str,
        client_final: &[u8],
    ) -> Option<String> {
        let client_first = std::str::from_utf8(client_first).ok()?;
        let client_first_bare = client_first.strip_prefix(GS2_HEADER)?;
        let client_final = std::str::from_utf8(client_final).ok()?;
        let (without_proof, proof) = client_final.rsplit_once(",p=")?;
        let proof = BASE64.decode(proof).ok()?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&secret.stored_key, auth_message.as_bytes()).ok()?;
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if Sha256::digest(&client_key).as_slice() != secret.stored_key {
            return None;
        }
        let server_signature = hmac_sha256(&secret.server_key, auth_message.as_bytes()).ok()?;
        Some(format!("v={}", BASE64.encode(server_signature)))
    }

    fn server_first_for(client_nonce: &str, secret: &ScramSecret) -> String {
        format!(
            "r={client_nonce}SERVERPART,s={},i={}",
            BASE64.encode(&secret.salt),
            secret.iterations
        )
    }

    fn pencil_secret() -> ScramSecret {
        parse_scram_secret(PENCIL_SECRET).expect("test constant is a valid secret")
    }

    #[test]
    fn gs2_header_base64_is_biws() {
        assert_eq!(BASE64.encode(GS2_HEADER), GS2_HEADER_BASE64);
    }

    #[test]
    fn client_first_message_has_empty_username_like_postgresql() {
        assert_eq!(
            pencil_client().client_first_message(),
            b"n,,n=,r=rOprNGfwEbeRWgbNEkqO".to_vec()
        );
    }

    #[test]
    fn rfc7677_test_vector_with_username() {
        let mut client =
            ScramClient::for_username(password(RFC_PASSWORD), RFC_CLIENT_NONCE, "user");
        assert_eq!(
            client.client_first_message(),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec()
        );
        let client_final = client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .expect("RFC server-first is valid");
        assert_eq!(String::from_utf8_lossy(&client_final), RFC_CLIENT_FINAL);
        assert_eq!(
            client.verify_server_final(RFC_SERVER_FINAL.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn postgresql_style_exchange_with_empty_username() {
        // Same vector with `n=`: the proof changes because the
        // client-first-message-bare is part of the AuthMessage.
        let mut client = pencil_client();
        let client_final = client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .expect("RFC server-first is valid");
        assert_eq!(
            String::from_utf8_lossy(&client_final),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
        );
        assert_eq!(
            client.verify_server_final(b"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="),
            Ok(())
        );
    }

    #[test]
    fn a_server_holding_the_stored_secret_accepts_the_proof() {
        let secret = pencil_secret();
        let mut client = ScramClient::new(password(RFC_PASSWORD)).expect("OS random source");
        let client_first = client.client_first_message();
        let server_first = server_first_for(&client.client_nonce, &secret);
        let client_final = client
            .handle_server_first(server_first.as_bytes())
            .expect("valid server-first");
        let server_final = server_accepts(&secret, &client_first, &server_first, &client_final)
            .expect("server accepts the proof");
        assert_eq!(client.verify_server_final(server_final.as_bytes()), Ok(()));
    }

    #[test]
    fn a_wrong_password_is_refused_by_the_server() {
        let secret = pencil_secret();
        let mut client = ScramClient::with_nonce(password("pencil2"), "abcdef");
        let client_first = client.client_first_message();
        let server_first = server_first_for("abcdef", &secret);
        let client_final = client
            .handle_server_first(server_first.as_bytes())
            .expect("valid server-first");
        assert_eq!(
            server_accepts(&secret, &client_first, &server_first, &client_final),
            None
        );
    }

    #[test]
    fn keys_credential_produces_the_same_proof_as_the_password() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("constant");
        let salted = salted_password(RFC_PASSWORD, &salt, 4096);
        let keys = ScramCredential::Keys {
            client_key: hmac_sha256(&salted, b"Client Key").expect("hmac"),
            server_key: hmac_sha256(&salted, b"Server Key").expect("hmac"),
        };
        let mut by_password = pencil_client();
        let mut by_keys = ScramClient::with_nonce(keys, RFC_CLIENT_NONCE);
        let from_password = by_password.handle_server_first(RFC_SERVER_FIRST.as_bytes());
        let from_keys = by_keys.handle_server_first(RFC_SERVER_FIRST.as_bytes());
        assert!(from_password.is_ok());
        assert_eq!(from_password, from_keys);
        let server_final = b"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";
        assert_eq!(by_keys.verify_server_final(server_final), Ok(()));
    }

    #[test]
    fn keys_credential_checks_the_server_signature_with_the_server_key() {
        let secret = pencil_secret();
        let keys = ScramCredential::Keys {
            client_key: [7; KEY_LEN],
            server_key: secret.server_key,
        };
        let mut client = ScramClient::with_nonce(keys, RFC_CLIENT_NONCE);
        assert!(client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .is_ok());
        assert_eq!(
            client.verify_server_final(b"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="),
            Ok(())
        );
    }

    #[test]
    fn new_clients_use_fresh_printable_nonces() {
        let a = ScramClient::new(password("x")).expect("OS random source");
        let b = ScramClient::new(password("x")).expect("OS random source");
        assert_ne!(a.client_nonce, b.client_nonce);
        assert_eq!(a.client_nonce.len(), 24);
        assert!(a
            .client_nonce
            .bytes()
            .all(|c| (0x21..=0x7e).contains(&c) && c != b','));
    }

    #[test]
    fn bad_server_first_messages_are_errors() {
        let cases: &[(&str, &[u8])] = &[
            (
                "wrong nonce",
                b"r=someoneElse123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
            (
                "nonce not extended",
                b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
            (
                "nonce prefix only",
                b"r=rOprNG,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
            (
                "non-printable nonce",
                b"r=rOprNGfwEbeRWgbNEkqO\x01x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
            (
                "bad base64 salt",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=not*base64!,i=4096",
            ),
            ("empty salt", b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096"),
            (
                "huge iteration count",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",
            ),
            (
                "overflowing iteration count",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999",
            ),
            (
                "zero iterations",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            ),
            (
                "negative iterations",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
            ),
            (
                "signed iterations",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096",
            ),
            (
                "empty iterations",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
            ),
            ("server error", b"e=other-error"),
            (
                "mandatory extension",
                b"m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
            ("missing salt", b"r=rOprNGfwEbeRWgbNEkqOxyz,i=4096"),
            (
                "missing iterations",
                b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            ),
            ("missing nonce", b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            (
                "attributes out of order",
                b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",
            ),
            (
                "attribute without =",
                b"rrOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
            ("empty", b""),
            (
                "non-UTF-8",
                b"r=rOprNGfwEbeRWgbNEkqO\xff\xfe,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ),
        ];
        for (what, msg) in cases {
            let mut client = pencil_client();
            assert!(client.handle_server_first(msg).is_err(), "{what}");
            // A failed message leaves the client waiting for a valid one.
            assert!(
                client
                    .verify_server_final(RFC_SERVER_FINAL.as_bytes())
                    .is_err(),
                "{what}"
            );
        }
    }

    #[test]
    fn trailing_extensions_in_server_first_are_ignored() {
        let mut client = pencil_client();
        let msg = format!("{RFC_SERVER_FIRST},x=future");
        assert!(client.handle_server_first(msg.as_bytes()).is_ok());
    }

    #[test]
    fn server_errors_are_quoted_safely_in_the_message() {
        let mut client = pencil_client();
        let err = client
            .handle_server_first(b"e=invalid-proof\nFAKE LOG LINE")
            .expect_err("e= is an error");
        assert!(err.0.contains("invalid-proof\\nFAKE LOG LINE"), "{err}");
    }

    #[test]
    fn bad_server_final_messages_are_errors() {
        let cases: &[(&str, &[u8])] = &[
            (
                "wrong signature",
                b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("short signature", b"v=6rriTRBi23WpRR/w"),
            ("bad base64", b"v=###"),
            ("server error", b"e=invalid-proof"),
            ("missing verifier", b"x=1"),
            ("empty", b""),
            ("non-UTF-8", b"v=\xff\xfe"),
        ];
        for (what, msg) in cases {
            let mut client = pencil_client();
            assert!(client
                .handle_server_first(RFC_SERVER_FIRST.as_bytes())
                .is_ok());
            assert!(client.verify_server_final(msg).is_err(), "{what}");
        }
    }

    #[test]
    fn messages_out_of_order_are_errors() {
        let mut client = pencil_client();
        assert!(client
            .verify_server_final(RFC_SERVER_FINAL.as_bytes())
            .is_err());
        assert!(client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .is_ok());
        assert!(client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .is_err());
    }

    #[test]
    fn parse_scram_secret_reads_postgresql_format() {
        let secret = pencil_secret();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(
            secret.salt,
            BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("constant")
        );
        let salted = salted_password(RFC_PASSWORD, &secret.salt, secret.iterations);
        let client_key = hmac_sha256(&salted, b"Client Key").expect("hmac");
        let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        assert_eq!(secret.stored_key, stored_key);
        assert_eq!(
            secret.server_key,
            hmac_sha256(&salted, b"Server Key").expect("hmac")
        );
    }

    #[test]
    fn parse_scram_secret_rejects_everything_else() {
        let key = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
        let short_key = "WG5d8oPm3OtcPnkdi4Uo7Bke";
        for bad in [
            String::new(),
            "md53175bce1d3201d16594cebf9d7eb3f9d".to_owned(),
            "plain password".to_owned(),
            format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$-1:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$x:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:***${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${short_key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{short_key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
            format!("SCRAM-SHA-256$4096c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}$extra"),
            "SCRAM-SHA-256$4096:c2FsdA==".to_owned(),
        ] {
            assert_eq!(parse_scram_secret(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let client = ScramClient::with_nonce(password("hunter2"), "nonce");
        let rendered = format!("{client:?} {:?}", password("hunter2"));
        assert!(!rendered.contains("hunter2"), "{rendered}");
        let secret = format!("{:?}", pencil_secret());
        assert!(!secret.contains('['), "{secret}");
        let keys = ScramCredential::Keys {
            client_key: [0xab; KEY_LEN],
            server_key: [0xcd; KEY_LEN],
        };
        let rendered = format!("{keys:?}");
        assert!(!rendered.contains('['), "{rendered}");
    }

    #[test]
    fn usernames_are_escaped_as_saslname() {
        assert_eq!(sasl_name("a=b,c"), "a=3Db=2Cc");
    }
}
