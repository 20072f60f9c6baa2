//! Authentication building blocks: PostgreSQL's MD5 password scheme, the
//! SCRAM-SHA-256 client PgGate uses for its own backend logins, SASL mechanism
//! lists as relayed to clients, and libpq `.pgpass` credential files. Pure
//! code: nothing here touches a socket, and the only I/O is
//! [`pgpass::PgPass::load`] reading one file. Nothing here depends on the rest
//! of the crate.

pub mod md5;
pub mod pgpass;
pub mod sasl;
pub mod scram;
pub mod scram_server;

use std::fmt;

pub use pgpass::PgPass;
pub use sasl::{client_channel_binding, mechanisms, without_plus, ClientChannelBinding};
pub use scram::{parse_scram_secret, ScramClient, ScramCredential, ScramSecret};
pub use scram_server::{ScramFailure, ScramServer};

/// Why an authentication step failed. The message names the step and the
/// reason, never a password or key, and is safe to log as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl AuthError {
    pub(crate) fn new(message: impl Into<String>) -> AuthError {
        AuthError(message.into())
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// Longest peer-supplied text copied into an error message.
const MAX_QUOTED_CHARS: usize = 200;

/// Peer-supplied text made safe for a log line: control characters escaped,
/// length capped, so a hostile server cannot forge or flood log lines.
pub(crate) fn quote_for_log(text: &str) -> String {
    let mut quoted: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_QUOTED_CHARS).is_some() {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_error_displays_its_message() {
        let err = AuthError::new("SCRAM: server nonce does not extend the client nonce");
        assert_eq!(
            err.to_string(),
            "SCRAM: server nonce does not extend the client nonce"
        );
        let as_dyn: &dyn std::error::Error = &err;
        assert!(as_dyn.source().is_none());
    }

    #[test]
    fn quoted_peer_text_cannot_break_a_log_line() {
        assert_eq!(quote_for_log("bad\nline\u{7}"), "bad\\nline\\u{7}");
        let long = "x".repeat(MAX_QUOTED_CHARS + 5);
        let quoted = quote_for_log(&long);
        assert_eq!(quoted.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(quoted.ends_with('…'));
        assert_eq!(quote_for_log("short"), "short");
    }
}
