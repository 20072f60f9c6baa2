//! The files a configuration names (TLS certificate, key and CA bundle, the
//! credentials file), checked for `--check` and before a reload is applied:
//! each must be readable, and PEM files must hold a block of the right kind.
//! Files are only read, never parsed beyond their PEM headers; relative paths
//! are relative to the working directory.

use std::path::Path;

use super::{BackendTlsMode, ClientTlsMode, Config, ConfigError};

/// What a file must contain.
#[derive(Clone, Copy)]
enum Expect {
    /// A `-----BEGIN ...CERTIFICATE-----` block.
    Certificate,
    /// A `-----BEGIN ...PRIVATE KEY-----` block.
    PrivateKey,
    /// Anything readable.
    Readable,
}

pub(super) fn check_files(config: &Config, origin: &str) -> Vec<ConfigError> {
    let mut wanted: Vec<(&str, &str, Expect)> = Vec::new();
    if config.client_tls.mode != ClientTlsMode::Disable {
        wanted.push((
            "client_tls.cert",
            &config.client_tls.cert,
            Expect::Certificate,
        ));
        wanted.push(("client_tls.key", &config.client_tls.key, Expect::PrivateKey));
    }
    if config.backend_tls.mode == BackendTlsMode::VerifyFull {
        wanted.push((
            "backend_tls.ca",
            &config.backend_tls.ca,
            Expect::Certificate,
        ));
    }
    if !config.auth.credentials_file.is_empty() {
        wanted.push((
            "auth.credentials_file",
            &config.auth.credentials_file,
            Expect::Readable,
        ));
    }
    wanted
        .into_iter()
        .filter_map(|(key, path, expect)| {
            check_file(path, expect).map(|reason| ConfigError::new(origin, key, reason))
        })
        .collect()
}

/// The problem with one file, if any.
fn check_file(path: &str, expect: Expect) -> Option<String> {
    if path.is_empty() {
        return Some("no file given".to_string());
    }
    let contents = match std::fs::read(Path::new(path)) {
        Ok(contents) => contents,
        Err(err) => return Some(format!("cannot read {path:?}: {err}")),
    };
    let labels = pem_labels(&contents);
    let (found, what) = match expect {
        Expect::Readable => return None,
        Expect::Certificate => (
            labels.iter().any(|label| label.ends_with("CERTIFICATE")),
            "a PEM certificate (-----BEGIN CERTIFICATE-----)",
        ),
        Expect::PrivateKey => (
            labels.iter().any(|label| label.ends_with("PRIVATE KEY")),
            "a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
        ),
    };
    if found {
        None
    } else if labels.is_empty() {
        Some(format!("{path:?} holds no PEM block; expected {what}"))
    } else {
        Some(format!(
            "{path:?} holds {} but no {what}",
            labels
                .iter()
                .map(|label| format!("-----BEGIN {label}-----"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The labels of every `-----BEGIN LABEL-----` line in `contents`.
fn pem_labels(contents: &[u8]) -> Vec<String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let mut labels = Vec::new();
    for line in contents.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(label) = line
            .strip_prefix(BEGIN)
            .and_then(|rest| rest.strip_suffix(DASHES))
        {
            labels.push(String::from_utf8_lossy(label).into_owned());
        }
    }
    labels
}
