//! PostgreSQL's MD5 password scheme (AuthenticationMD5Password): the stored
//! form `"md5" + hex(md5(password + user))` and the salted response
//! `"md5" + hex(md5(hex(md5(password + user)) + salt))`. Pure functions; no
//! I/O. Digests come from the `md-5` crate.

use ::md5::{Digest, Md5};

/// Prefix of every MD5 secret and response, as PostgreSQL writes them.
const MD5_PREFIX: &str = "md5";
/// Hex digits in an MD5 digest.
const MD5_HEX_LEN: usize = 32;

/// The response to AuthenticationMD5Password for `user` with `password` and
/// the server's 4-byte `salt`, ready to send in a PasswordMessage.
pub fn password_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = md5_hex(&[password.as_bytes(), user.as_bytes()]);
    salted_response(&inner, salt)
}

/// The secret PostgreSQL stores in `pg_authid.rolpassword` for an MD5 role.
pub fn stored_hash(user: &str, password: &str) -> String {
    format!(
        "{MD5_PREFIX}{}",
        md5_hex(&[password.as_bytes(), user.as_bytes()])
    )
}

/// The response to AuthenticationMD5Password computed from a stored
/// `"md5…"` secret instead of the password (the stored hash is all the
/// server checks). `None` if `stored_md5` is not `"md5"` followed by 32 hex
/// digits. Upper-case hex is accepted and treated as the lower-case form
/// PostgreSQL itself stores.
pub fn response_from_stored(stored_md5: &str, salt: [u8; 4]) -> Option<String> {
    let inner = stored_digest_hex(stored_md5)?;
    Some(salted_response(&inner, salt))
}

/// Whether a client's PasswordMessage `response` answers `salt` for the
/// stored `"md5…"` secret. Compares in constant time; a malformed stored
/// secret never verifies.
pub fn verify_response(stored_md5: &str, salt: [u8; 4], response: &str) -> bool {
    match response_from_stored(stored_md5, salt) {
        Some(expected) => constant_time_eq(expected.as_bytes(), response.as_bytes()),
        None => false,
    }
}

fn stored_digest_hex(stored_md5: &str) -> Option<String> {
    let hex = stored_md5.strip_prefix(MD5_PREFIX)?;
    if hex.len() != MD5_HEX_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(hex.to_ascii_lowercase())
}

fn salted_response(inner_hex: &str, salt: [u8; 4]) -> String {
    format!(
        "{MD5_PREFIX}{}",
        md5_hex(&[inner_hex.as_bytes(), salt.as_slice()])
    )
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    to_lower_hex(&hasher.finalize())
}

fn to_lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

/// Equality whose running time depends only on the lengths, so a client
/// cannot learn a correct prefix from response timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 4] = [0x01, 0x02, 0x03, 0x04];

    /// The salted response computed step by step with the digest crate
    /// directly, independent of this module's helpers.
    fn independent_response(user: &str, password: &str, salt: [u8; 4]) -> String {
        let inner = ::md5::Md5::digest(format!("{password}{user}").as_bytes());
        let inner_hex: String = inner.iter().map(|b| format!("{b:02x}")).collect();
        let mut outer_input = inner_hex.into_bytes();
        outer_input.extend_from_slice(&salt);
        let outer = ::md5::Md5::digest(&outer_input);
        let outer_hex: String = outer.iter().map(|b| format!("{b:02x}")).collect();
        format!("md5{outer_hex}")
    }

    #[test]
    fn stored_hash_matches_postgresql_for_postgres_postgres() {
        assert_eq!(
            stored_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
    }

    #[test]
    fn password_response_is_md5_of_stored_hex_and_salt() {
        let response = password_response("postgres", "postgres", SALT);
        assert_eq!(response, independent_response("postgres", "postgres", SALT));
        assert_eq!(response.len(), MD5_PREFIX.len() + MD5_HEX_LEN);
        assert!(response.starts_with("md5"));
    }

    #[test]
    fn response_depends_on_the_salt() {
        assert_ne!(
            password_response("alice", "secret", [0, 0, 0, 0]),
            password_response("alice", "secret", [0, 0, 0, 1])
        );
    }

    #[test]
    fn response_from_stored_equals_response_from_password() {
        let stored = stored_hash("alice", "s3cret:with:colons");
        assert_eq!(
            response_from_stored(&stored, SALT),
            Some(password_response("alice", "s3cret:with:colons", SALT))
        );
        let upper = format!("md5{}", stored["md5".len()..].to_ascii_uppercase());
        assert_eq!(
            response_from_stored(&upper, SALT),
            Some(password_response("alice", "s3cret:with:colons", SALT))
        );
    }

    #[test]
    fn response_from_stored_rejects_malformed_secrets() {
        for bad in [
            "",
            "md5",
            "3175bce1d3201d16594cebf9d7eb3f9d",
            "md53175bce1d3201d16594cebf9d7eb3f9",
            "md53175bce1d3201d16594cebf9d7eb3f9d0",
            "md53175bce1d3201d16594cebf9d7eb3f9g",
            "SCRAM-SHA-256$4096:c2FsdA==$a:b",
            "md5é175bce1d3201d16594cebf9d7eb3f9",
        ] {
            assert_eq!(response_from_stored(bad, SALT), None, "{bad:?}");
        }
    }

    #[test]
    fn verify_response_accepts_only_the_right_answer() {
        let stored = stored_hash("bob", "hunter2");
        let good = password_response("bob", "hunter2", SALT);
        assert!(verify_response(&stored, SALT, &good));
        assert!(!verify_response(&stored, [9, 9, 9, 9], &good));
        assert!(!verify_response(
            &stored,
            SALT,
            &password_response("bob", "hunter3", SALT)
        ));
        assert!(!verify_response(&stored, SALT, ""));
        assert!(!verify_response("not-a-secret", SALT, &good));
    }
}
