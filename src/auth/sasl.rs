//! SASL negotiation as PgGate relays it: the mechanism list of an
//! AuthenticationSASL message (read, and rebuilt without channel-binding
//! `-PLUS` mechanisms, which cannot cross a proxy that terminates TLS), and
//! the channel-binding flag a client puts in its SCRAM client-first-message.
//! Pure parsing; no I/O.

use super::{quote_for_log, AuthError};

/// The SCRAM mechanism PostgreSQL offers and PgGate speaks.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The channel-binding variant PgGate must never offer to a client.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Suffix RFC 5802 gives every channel-binding mechanism name.
const CHANNEL_BINDING_SUFFIX: &str = "-PLUS";

/// The mechanism names in an AuthenticationSASL `payload`: the bytes after
/// the Int32 `10`, a sequence of NUL-terminated names closed by an empty
/// name. Errors if a name is not UTF-8, a terminator is missing, or bytes
/// follow the closing empty name.
pub fn mechanisms(payload: &[u8]) -> Result<Vec<String>, AuthError> {
    raw_mechanisms(payload)?
        .into_iter()
        .map(|name| {
            std::str::from_utf8(name)
                .map(str::to_owned)
                .map_err(|_| AuthError::new("AuthenticationSASL: mechanism name is not UTF-8"))
        })
        .collect()
}

/// `payload` rebuilt without any channel-binding (`-PLUS`) mechanism, such
/// as `SCRAM-SHA-256-PLUS`, in the same wire format. `None` if the payload is
/// malformed or no mechanism remains, in which case PgGate has nothing it may
/// offer the client.
pub fn without_plus(payload: &[u8]) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = raw_mechanisms(payload)
        .ok()?
        .into_iter()
        .filter(|name| !name.ends_with(CHANNEL_BINDING_SUFFIX.as_bytes()))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut rebuilt = Vec::with_capacity(payload.len());
    for name in kept {
        rebuilt.extend_from_slice(name);
        rebuilt.push(0);
    }
    rebuilt.push(0);
    Some(rebuilt)
}

/// What a client's gs2 header says about channel binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientChannelBinding {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports channel binding but believes the server does
    /// not. A PostgreSQL server that itself runs TLS on that connection
    /// rejects this, so it must reach the server over a non-TLS connection.
    SupportedButNotOffered,
    /// `p=<type>`: the client requires channel binding of this type, which
    /// PgGate cannot provide.
    Required(String),
}

/// The channel-binding flag in a client's SCRAM client-first-message (the
/// data of its SASLInitialResponse). Errors on anything but a well-formed
/// gs2 header.
pub fn client_channel_binding(client_first: &[u8]) -> Result<ClientChannelBinding, AuthError> {
    let header_end = client_first
        .iter()
        .position(|&b| b == b',')
        .ok_or_else(|| AuthError::new("SCRAM client-first-message: missing gs2 header"))?;
    let flag = &client_first[..header_end];
    match flag {
        b"n" => Ok(ClientChannelBinding::NotSupported),
        b"y" => Ok(ClientChannelBinding::SupportedButNotOffered),
        _ => match flag.strip_prefix(b"p=") {
            Some(kind) if !kind.is_empty() => std::str::from_utf8(kind)
                .map(|kind| ClientChannelBinding::Required(kind.to_owned()))
                .map_err(|_| {
                    AuthError::new("SCRAM client-first-message: channel binding type is not UTF-8")
                }),
            _ => Err(AuthError::new(format!(
                "SCRAM client-first-message: invalid channel binding flag \"{}\"",
                quote_for_log(&String::from_utf8_lossy(flag))
            ))),
        },
    }
}

fn raw_mechanisms(payload: &[u8]) -> Result<Vec<&[u8]>, AuthError> {
    let mut names = Vec::new();
    let mut rest = payload;
    loop {
        let end = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            AuthError::new("AuthenticationSASL: mechanism list is not NUL-terminated")
        })?;
        let name = &rest[..end];
        rest = &rest[end + 1..];
        if name.is_empty() {
            break;
        }
        names.push(name);
    }
    if !rest.is_empty() {
        return Err(AuthError::new(
            "AuthenticationSASL: bytes after the end of the mechanism list",
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[u8] = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";

    #[test]
    fn mechanisms_lists_names_in_server_order() {
        assert_eq!(
            mechanisms(BOTH),
            Ok(vec![
                SCRAM_SHA_256_PLUS.to_owned(),
                SCRAM_SHA_256.to_owned()
            ])
        );
        assert_eq!(mechanisms(b"\0"), Ok(vec![]));
    }

    #[test]
    fn mechanisms_rejects_malformed_lists() {
        for bad in [
            &b""[..],
            b"SCRAM-SHA-256",
            b"SCRAM-SHA-256\0",
            b"SCRAM-SHA-256\0\0extra",
            b"\xff\xfe\0\0",
        ] {
            assert!(mechanisms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn without_plus_never_offers_channel_binding() {
        assert_eq!(without_plus(BOTH), Some(b"SCRAM-SHA-256\0\0".to_vec()));
        assert_eq!(
            without_plus(b"SCRAM-SHA-256\0SCRAM-SHA-512-PLUS\0\0"),
            Some(b"SCRAM-SHA-256\0\0".to_vec())
        );
    }

    #[test]
    fn without_plus_keeps_a_list_that_has_no_plus() {
        let plain = b"SCRAM-SHA-256\0\0";
        assert_eq!(without_plus(plain), Some(plain.to_vec()));
    }

    #[test]
    fn without_plus_is_none_when_nothing_usable_remains() {
        assert_eq!(without_plus(b"SCRAM-SHA-256-PLUS\0\0"), None);
        assert_eq!(without_plus(b"\0"), None);
        assert_eq!(without_plus(b"SCRAM-SHA-256"), None);
        assert_eq!(without_plus(b""), None);
    }

    #[test]
    fn client_channel_binding_reads_the_gs2_flag() {
        assert_eq!(
            client_channel_binding(b"n,,n=,r=abc"),
            Ok(ClientChannelBinding::NotSupported)
        );
        assert_eq!(
            client_channel_binding(b"y,,n=,r=abc"),
            Ok(ClientChannelBinding::SupportedButNotOffered)
        );
        assert_eq!(
            client_channel_binding(b"p=tls-server-end-point,,n=,r=abc"),
            Ok(ClientChannelBinding::Required(
                "tls-server-end-point".to_owned()
            ))
        );
    }

    #[test]
    fn client_channel_binding_rejects_malformed_headers() {
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=,r=abc",
            b"p=,,n=,r=abc",
            b"p\xff,,",
            b"p=\xff,,",
        ] {
            assert!(client_channel_binding(bad).is_err(), "{bad:?}");
        }
    }
}
