//! TLS material for the tests: a throwaway certificate authority and a
//! server certificate for `localhost` / `127.0.0.1` made with the `openssl`
//! command once per test binary, plus a helper that turns TLS on in the
//! servers of the test cluster (each test binary has its own cluster), and
//! a hand-made TLS client connection for checking what PgGate negotiates.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::pgbin::{give_to_server_user, server_command};
use super::raw::{self, Message};
use super::tools::run_with_timeout;
use super::{simple_value, tail};

/// Paths of the generated certificates and keys.
pub struct TestCerts {
    pub dir: PathBuf,
    /// The CA that signed `server_crt` (`CN=PgGate Test CA`).
    pub ca_crt: PathBuf,
    /// Certificate for `localhost`, SAN `DNS:localhost,IP:127.0.0.1`.
    pub server_crt: PathBuf,
    /// The server key in traditional RSA form (`BEGIN RSA PRIVATE KEY`).
    pub server_key_rsa: PathBuf,
    /// The same key in PKCS#8 form (`BEGIN PRIVATE KEY`).
    pub server_key_pkcs8: PathBuf,
    /// A second CA that signed nothing the tests use.
    pub wrong_ca_crt: PathBuf,
}

/// The certificates of this test binary, generated on first use under the
/// cluster's temp dir (so they are removed with it).
pub fn test_certs(cluster: &Cluster) -> &'static TestCerts {
    static CERTS: OnceLock<TestCerts> = OnceLock::new();
    CERTS.get_or_init(|| generate(&cluster.dir.join("tls")))
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(60));
    assert!(
        out.success(),
        "openssl {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
}

fn generate(dir: &Path) -> TestCerts {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    let self_signed_ca = |name: &str, cn: &str| {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "3650",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        )
    };
    self_signed_ca("ca", "PgGate Test CA");
    self_signed_ca("wrong_ca", "PgGate Unrelated CA");

    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.pkcs8.key",
            "-out",
            "server.csr",
        ],
    );
    fs::write(
        dir.join("server.ext"),
        "basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost, IP:127.0.0.1\n",
    )
    .unwrap_or_else(|e| panic!("write server.ext: {e}"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha256",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    openssl(
        dir,
        &[
            "rsa",
            "-in",
            "server.pkcs8.key",
            "-traditional",
            "-out",
            "server.rsa.key",
        ],
    );

    let certs = TestCerts {
        dir: dir.to_path_buf(),
        ca_crt: dir.join("ca.crt"),
        server_crt: dir.join("server.crt"),
        server_key_rsa: dir.join("server.rsa.key"),
        server_key_pkcs8: dir.join("server.pkcs8.key"),
        wrong_ca_crt: dir.join("wrong_ca.crt"),
    };
    let head = |path: &Path| {
        fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        head(&certs.server_key_rsa),
        "-----BEGIN RSA PRIVATE KEY-----",
        "openssl rsa -traditional should write a traditional RSA key"
    );
    assert_eq!(
        head(&certs.server_key_pkcs8),
        "-----BEGIN PRIVATE KEY-----",
        "openssl req -newkey should write a PKCS#8 key"
    );
    certs
}

/// Turns `ssl = on` in every server of `cluster` (with the test server
/// certificate) and waits until each reports it. Done once per test binary;
/// clients that do not ask for TLS are still accepted (`host` lines in
/// pg_hba.conf).
pub fn enable_server_tls(cluster: &'static Cluster) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let certs = test_certs(cluster);
        for name in ["primary", "replica1", "replica2"] {
            let data = cluster.dir.join(name);
            for (from, to) in [
                (&certs.server_crt, "server.crt"),
                (&certs.server_key_pkcs8, "server.key"),
            ] {
                let target = data.join(to);
                fs::copy(from, &target).unwrap_or_else(|e| {
                    panic!("copy {} to {}: {e}", from.display(), target.display())
                });
                fs::set_permissions(&target, fs::Permissions::from_mode(0o600))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", target.display()));
                give_to_server_user(&target);
            }
        }

        // The primary: ALTER SYSTEM (it cannot run on a standby).
        let mut primary = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
        // One statement per query: ALTER SYSTEM refuses a transaction block.
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
        ] {
            primary
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql} on the primary: {}", super::describe_error(&e)));
        }
        simple_value(&mut primary, "SELECT pg_reload_conf()");

        // The replicas: their own postgresql.conf, then pg_ctl reload.
        for name in ["replica1", "replica2"] {
            let data = cluster.dir.join(name);
            let conf = data.join("postgresql.conf");
            let mut text = fs::read_to_string(&conf)
                .unwrap_or_else(|e| panic!("read {}: {e}", conf.display()));
            text.push_str(
                "\n# ---- pggate TLS tests ----\n\
                 ssl = on\n\
                 ssl_cert_file = 'server.crt'\n\
                 ssl_key_file = 'server.key'\n",
            );
            fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
            let out = run_with_timeout(
                server_command("pg_ctl", &cluster.dir)
                    .arg("-D")
                    .arg(&data)
                    .arg("reload"),
                None,
                Duration::from_secs(30),
            );
            assert!(
                out.success(),
                "pg_ctl reload of {name} failed ({}):\n{}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }

        for port in cluster.all_ports() {
            let mut client = cluster.connect_direct(port, "postgres", "postgres");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if simple_value(&mut client, "SHOW ssl") == "on" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} (port {port}) still has ssl off 20 s after the reload; its log ends \
                     with:\n{}",
                    cluster.server_name(port),
                    tail(&cluster.server_log(port), 20)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
}

/// A TLS connection to PgGate made by hand, for what libpq does not show:
/// the answer to the SSLRequest and the peer certificate it was given.
pub struct TlsConn {
    pub stream: native_tls::TlsStream<TcpStream>,
}

impl TlsConn {
    /// Sends an SSLRequest on `stream` (which may already have had a
    /// GSSENCRequest refused), expects `S`, and completes a TLS handshake
    /// that trusts only `ca` and checks the name `domain`.
    pub fn negotiate(mut stream: TcpStream, ca: &Path, domain: &str) -> TlsConn {
        stream
            .write_all(&raw::request_message(raw::SSL_REQUEST_CODE))
            .expect("send SSLRequest");
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .expect("read the answer to SSLRequest");
        assert_eq!(
            answer[0] as char, 'S',
            "SSLRequest should be answered 'S' when client TLS is on"
        );
        let pem = fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
        let root = native_tls::Certificate::from_pem(&pem)
            .unwrap_or_else(|e| panic!("parse {}: {e}", ca.display()));
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(root)
            .disable_built_in_roots(true)
            .build()
            .expect("build a TLS connector");
        let stream = connector
            .connect(domain, stream)
            .unwrap_or_else(|e| panic!("TLS handshake with PgGate as {domain:?}: {e}"));
        TlsConn { stream }
    }

    /// Reads one backend message (panics on EOF or error).
    pub fn read_message(&mut self) -> Message {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .expect("read a message header over TLS");
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        assert!(
            (4..1 << 24).contains(&len),
            "message {:?} with length {len} over TLS",
            head[0] as char
        );
        let mut body = vec![0u8; len as usize - 4];
        self.stream
            .read_exact(&mut body)
            .expect("read a message body over TLS");
        Message { tag: head[0], body }
    }

    /// Reads up to and including ReadyForQuery; panics on an ErrorResponse.
    pub fn read_until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let m = self.read_message();
            assert_ne!(m.tag, b'E', "error over TLS: {m:?} (after {messages:?})");
            let done = m.tag == b'Z';
            messages.push(m);
            if done {
                return messages;
            }
        }
    }

    /// A trust login (use `postgres`).
    pub fn login(&mut self, user: &str, database: &str) -> Vec<Message> {
        self.stream
            .write_all(&raw::startup_message(&[
                ("user", user),
                ("database", database),
            ]))
            .expect("send StartupMessage over TLS");
        self.read_until_ready()
    }

    /// A simple Query and everything up to ReadyForQuery.
    pub fn query(&mut self, sql: &str) -> Vec<Message> {
        self.stream
            .write_all(&raw::query_message(sql))
            .expect("send Query over TLS");
        self.read_until_ready()
    }
}
