//! TLS set-up built from the configuration: the acceptor for clients
//! (`client_tls`) and the connector for backends (`backend_tls`). A value that
//! is rebuilt and swapped as a whole, so a reload with bad files keeps the old
//! one. Reads files; no sockets here.

use std::sync::Arc;

use native_tls::{Certificate, Identity, Protocol, TlsAcceptor, TlsConnector};
use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::config::{BackendTlsMode, ClientTlsMode, Config};

pub struct TlsSetup {
    pub client_mode: ClientTlsMode,
    pub acceptor: Option<TlsAcceptor>,
    pub backend_mode: BackendTlsMode,
    pub connector: Option<TlsConnector>,
}

impl TlsSetup {
    /// Builds both sides from the configuration; every problem is named.
    pub fn build(config: &Config) -> Result<Arc<TlsSetup>, String> {
        let acceptor = match config.client_tls.mode {
            ClientTlsMode::Disable => None,
            _ => Some(acceptor(&config.client_tls.cert, &config.client_tls.key)?),
        };
        let connector = match config.backend_tls.mode {
            BackendTlsMode::Disable => None,
            mode => Some(connector(mode, &config.backend_tls.ca)?),
        };
        Ok(Arc::new(TlsSetup {
            client_mode: config.client_tls.mode,
            acceptor,
            backend_mode: config.backend_tls.mode,
            connector,
        }))
    }
}

fn read(path: &str, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {path}: {e}"))
}

/// The client-facing acceptor from a PEM certificate chain and a PEM key
/// (PKCS#8, or the traditional RSA/EC forms, converted here).
fn acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, String> {
    let chain = read(cert_path, "client_tls.cert")?;
    let key = read(key_path, "client_tls.key")?;
    let pkey = PKey::private_key_from_pem(&key)
        .map_err(|e| format!("client_tls.key: {key_path} is not a usable PEM private key: {e}"))?;
    let pkcs8 = pkey
        .private_key_to_pem_pkcs8()
        .map_err(|e| format!("client_tls.key: {key_path}: {e}"))?;
    let identity = Identity::from_pkcs8(&chain, &pkcs8)
        .map_err(|e| format!("client_tls.cert: {cert_path} does not go with the key: {e}"))?;
    TlsAcceptor::builder(identity)
        .min_protocol_version(Some(Protocol::Tlsv12))
        .build()
        .map_err(|e| format!("client_tls: {e}"))
}

/// The backend connector: `verify-full` checks the chain against `ca` and
/// the host name; `prefer` and `require` encrypt without verifying, as libpq's
/// sslmode of the same names do.
fn connector(mode: BackendTlsMode, ca_path: &str) -> Result<TlsConnector, String> {
    let mut b = TlsConnector::builder();
    b.min_protocol_version(Some(Protocol::Tlsv12));
    if mode == BackendTlsMode::VerifyFull {
        let pem = read(ca_path, "backend_tls.ca")?;
        let certs =
            X509::stack_from_pem(&pem).map_err(|e| format!("backend_tls.ca: {ca_path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("backend_tls.ca: {ca_path} holds no certificate"));
        }
        b.disable_built_in_roots(true);
        for c in certs {
            let der = c.to_der().map_err(|e| format!("backend_tls.ca: {e}"))?;
            let cert = Certificate::from_der(&der).map_err(|e| format!("backend_tls.ca: {e}"))?;
            b.add_root_certificate(cert);
        }
    } else {
        b.danger_accept_invalid_certs(true);
        b.danger_accept_invalid_hostnames(true);
    }
    b.build().map_err(|e| format!("backend_tls: {e}"))
}
