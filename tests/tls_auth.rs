//! Integration tests of authentication by PgGate itself (`auth.mode =
//! "query"`) and of TLS on both sides (clients to PgGate, PgGate to the
//! servers), against a real PostgreSQL cluster (a primary and two streaming
//! replicas built once for this test binary).
//!
//! Certificates come from a throwaway CA made with the `openssl` command
//! (tests/common/tls.rs). libpq (`psql`) is the TLS client: it checks the
//! chain and host name itself with `sslmode=verify-full`. The backend TLS
//! test turns `ssl = on` in this binary's own cluster; other tests here do
//! not depend on it either way (`host` lines in pg_hba.conf accept both).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{self, Ending, RawConn};
use common::tls::{enable_server_tls, test_certs, TlsConn};
use common::tools::{self, run_with_timeout};
use common::{
    describe_error, pggate_bin, random_hex, simple_rows, simple_value, Cluster, GateFiles, PgGate,
    MD5_USER, SCRAM_USER,
};

/// Runs the PgGate binary with `args` (never a server: at most 10 s).
fn pggate(args: &[&str]) -> common::CmdOutput {
    let mut cmd = Command::new(pggate_bin());
    cmd.args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(10))
}

/// A path as a TOML string.
fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// `[client_tls]` with `mode`, the test server certificate and `key`.
fn client_tls_toml(mode: &str, key: &Path) -> String {
    let certs = test_certs(Cluster::shared());
    format!(
        "[client_tls]\nmode = \"{mode}\"\ncert = {}\nkey = {}\n",
        toml_path(&certs.server_crt),
        toml_path(key)
    )
}

/// PgGate in query mode: `auth_user = "postgres"`, whose line is the only
/// one in the credentials file; `extra_toml` is merged as usual.
fn start_query_mode(cluster: &Cluster, extra_toml: &str) -> PgGate {
    let files = GateFiles::write(
        cluster,
        &format!("[auth]\nmode = \"query\"\nauth_user = \"postgres\"\n{extra_toml}"),
    );
    fs::write(&files.credentials_path, "127.0.0.1:*:*:postgres:x\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", files.credentials_path.display()));
    PgGate::start_with_files(files, &[])
}

/// `SELECT current_user, inet_server_port(), current_setting('work_mem')`.
fn who_where(client: &mut postgres::Client) -> (String, u16, String) {
    let rows = simple_rows(
        client,
        "SELECT current_user, inet_server_port(), current_setting('work_mem')",
    );
    let row = &rows[0];
    let text = |i: usize| row[i].clone().expect("non-NULL column");
    (
        text(0),
        text(1).parse().expect("inet_server_port() is a port"),
        text(2),
    )
}

/// The error of a login that must fail.
fn login_error(gate: &PgGate, user: &str, password: &str) -> postgres::Error {
    match gate.try_connect(user, Some(password), "postgres") {
        Ok(mut client) => {
            let port = simple_value(&mut client, "SELECT inet_server_port()");
            panic!("{user} logged in through PgGate with the wrong password (ran on port {port})")
        }
        Err(e) => e,
    }
}

fn assert_password_failure(e: &postgres::Error, user: &str) {
    let db = e.as_db_error().unwrap_or_else(|| {
        panic!(
            "a failed login of {user} should be an ErrorResponse, got {}",
            describe_error(e)
        )
    });
    assert_eq!(
        db.code().code(),
        "28P01",
        "SQLSTATE of a failed login of {user}: {}",
        describe_error(e)
    );
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{user}\""),
        "message of a failed login of {user}"
    );
}

/// `psql -X -A -t -d CONNINFO ARGS` as `user` (its test password in
/// PGPASSWORD); the conninfo wins over the harness's environment.
fn psql_conninfo(port: u16, user: &str, conninfo: &str, args: &[&str]) -> common::CmdOutput {
    let mut all = vec!["-d", conninfo];
    all.extend_from_slice(args);
    tools::psql(port, user, "postgres", &all)
}

/// A libpq conninfo for PgGate over TLS to `localhost`, checking the chain
/// against the test CA and the host name.
fn verify_full_conninfo(gate: &PgGate, user: &str, extra: &str) -> String {
    let certs = test_certs(Cluster::shared());
    format!(
        "host=localhost port={} sslmode=verify-full sslrootcert={} user={user} dbname=postgres {extra}",
        gate.port,
        certs.ca_crt.display()
    )
}

#[test]
fn query_mode_scram_and_md5_users_log_in_read_on_replicas_and_pin_on_the_primary() {
    let cluster = Cluster::shared();
    let gate = start_query_mode(cluster, "");

    for (user, password) in [SCRAM_USER, MD5_USER] {
        let mut client = gate
            .try_connect(user, Some(password), "postgres")
            .unwrap_or_else(|e| {
                panic!(
                    "{user} should log in through PgGate in query mode: {}",
                    describe_error(&e)
                )
            });
        for _ in 0..4 {
            let (current, port, _) = who_where(&mut client);
            assert_eq!(current, user, "current_user through PgGate");
            assert!(
                cluster.is_replica_port(port),
                "a read of {user} should run on a replica, ran on {} (port {port})",
                cluster.server_name(port)
            );
        }
        client
            .batch_execute("SET work_mem = '5MB'")
            .unwrap_or_else(|e| panic!("SET work_mem as {user}: {}", describe_error(&e)));
        for _ in 0..4 {
            let (current, port, work_mem) = who_where(&mut client);
            assert_eq!(current, user, "current_user after SET");
            assert_eq!(
                port,
                cluster.primary_port,
                "after a SET the session of {user} should be pinned to the primary, a read ran \
                 on {}",
                cluster.server_name(port)
            );
            assert_eq!(work_mem, "5MB", "the pinned session keeps its SET");
        }
        drop(client);

        let e = login_error(&gate, user, "not-the-password");
        assert_password_failure(&e, user);
    }

    let e = login_error(&gate, "nosuch", "whatever");
    assert_password_failure(&e, "nosuch");
}

#[test]
fn query_mode_logins_reuse_the_pool() {
    let cluster = Cluster::shared();
    let db = format!("tls_auth_pool_{}", random_hex(8));
    cluster.create_database(&db, SCRAM_USER.0);
    let gate = start_query_mode(cluster, "[pool]\nsize = 3");

    for i in 0..100 {
        let mut client = gate
            .try_connect(SCRAM_USER.0, Some(SCRAM_USER.1), &db)
            .unwrap_or_else(|e| {
                panic!(
                    "login {} of scram_user through PgGate in query mode: {}",
                    i + 1,
                    describe_error(&e)
                )
            });
        assert_eq!(simple_value(&mut client, "SELECT 1"), "1");
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS logins (n int); INSERT INTO logins VALUES ({i})"
            ))
            .unwrap_or_else(|e| panic!("write of login {}: {}", i + 1, describe_error(&e)));
    }

    let mut primary = cluster.connect_direct(cluster.primary_port, "postgres", &db);
    assert_eq!(
        simple_value(&mut primary, "SELECT count(*) FROM logins"),
        "100"
    );

    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = 'scram_user'"
    );
    let mut monitors: Vec<(u16, postgres::Client)> = cluster
        .all_ports()
        .iter()
        .map(|&port| (port, cluster.connect_direct(port, "postgres", "postgres")))
        .collect();
    // Closed connections can linger in pg_stat_activity for a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let counts = loop {
        let counts: Vec<(u16, i64)> = monitors
            .iter_mut()
            .map(|(port, monitor)| {
                (
                    *port,
                    simple_value(monitor, &sql)
                        .parse()
                        .expect("count is a number"),
                )
            })
            .collect();
        if counts.iter().all(|(_, n)| *n <= 3) || Instant::now() > deadline {
            break counts;
        }
        thread::sleep(Duration::from_millis(200));
    };
    for (port, n) in &counts {
        assert!(
            *n <= 3,
            "after 100 logins with pool.size = 3, {} (port {port}) has {n} connections of \
             scram_user to {db} (all servers: {counts:?})",
            cluster.server_name(*port)
        );
    }
    assert!(
        counts[0].1 >= 1,
        "the pool should keep an idle connection to the primary: {counts:?}"
    );
}

#[test]
fn client_tls_require_verify_full_works_plain_is_refused_and_channel_binding_require_is_refused() {
    let cluster = Cluster::shared();
    let certs = test_certs(cluster);
    let gate = PgGate::start(cluster, &client_tls_toml("require", &certs.server_key_rsa));

    // libpq over TLS, checking the chain and the name `localhost`.
    let out = psql_conninfo(
        gate.port,
        "postgres",
        &verify_full_conninfo(&gate, "postgres", ""),
        &["-c", "SELECT inet_server_port()"],
    );
    out.assert_success("psql sslmode=verify-full through PgGate (client_tls require, RSA key)");
    let port: u16 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("inet_server_port() printed {:?}: {e}", out.stdout));
    assert!(
        cluster.is_replica_port(port),
        "a read over TLS should run on a replica, ran on {}",
        cluster.server_name(port)
    );

    // Without TLS: refused.
    let out = psql_conninfo(
        gate.port,
        "postgres",
        &format!("host=127.0.0.1 port={} sslmode=disable", gate.port),
        &["-c", "SELECT 1"],
    );
    assert!(
        !out.success() && out.stderr.contains("TLS is required"),
        "psql sslmode=disable against client_tls require should fail with \"TLS is required\": \
         {out:?}"
    );
    let mut plain = RawConn::connect(gate.port);
    plain
        .send(&raw::startup_message(&[
            ("user", "postgres"),
            ("database", "postgres"),
        ]))
        .expect("send StartupMessage");
    match plain.error_or_close_within(Duration::from_secs(5)) {
        Ending::Error(m) => {
            assert_eq!(m.sqlstate().as_deref(), Some("28000"), "{m:?}");
            assert!(
                m.text()
                    .is_some_and(|t| t.starts_with("pggate: TLS is required")),
                "message of the refusal: {m:?}"
            );
        }
        Ending::Closed => panic!("a plain startup should get a 28000 ErrorResponse, not a close"),
    }

    // PgGate never offers SCRAM-SHA-256-PLUS, so channel_binding=require
    // fails in libpq; prefer (libpq's default) logs in.
    let user = SCRAM_USER.0;
    let out = psql_conninfo(
        gate.port,
        user,
        &verify_full_conninfo(&gate, user, "channel_binding=require"),
        &["-c", "SELECT current_user"],
    );
    assert!(
        !out.success() && out.stderr.contains("channel binding"),
        "scram_user with channel_binding=require should be refused with a message about \
         channel binding: {out:?}"
    );
    let out = psql_conninfo(
        gate.port,
        user,
        &verify_full_conninfo(&gate, user, "channel_binding=prefer"),
        &["-c", "SELECT current_user, inet_server_port()"],
    );
    out.assert_success("psql as scram_user with channel_binding=prefer over TLS");
    let line = out.stdout.trim();
    let (current, port) = line
        .split_once('|')
        .unwrap_or_else(|| panic!("unexpected psql output {line:?}"));
    assert_eq!(current, user);
    let port: u16 = port.parse().expect("inet_server_port() is a port");
    assert!(
        cluster.is_replica_port(port),
        "scram_user's read should run on a replica, ran on {}",
        cluster.server_name(port)
    );
}

#[test]
fn client_tls_allow_serves_tls_and_plain_clients() {
    let cluster = Cluster::shared();
    let certs = test_certs(cluster);
    let gate = PgGate::start(cluster, &client_tls_toml("allow", &certs.server_key_pkcs8));

    for conninfo in [
        format!("host=127.0.0.1 port={} sslmode=require", gate.port),
        verify_full_conninfo(&gate, "postgres", ""),
    ] {
        let out = psql_conninfo(
            gate.port,
            "postgres",
            &conninfo,
            &["-c", "\\conninfo", "-c", "SELECT 'answer=' || 6 * 7"],
        );
        out.assert_success(&format!("psql {conninfo:?} (client_tls allow)"));
        assert!(
            out.stdout.contains("SSL connection"),
            "psql with {conninfo:?} should be on TLS (\\conninfo): {out:?}"
        );
        assert!(out.stdout.contains("answer=42"), "{out:?}");
    }

    let plain = format!("host=127.0.0.1 port={} sslmode=disable", gate.port);
    let out = psql_conninfo(
        gate.port,
        "postgres",
        &plain,
        &["-c", "\\conninfo", "-c", "SELECT 'answer=' || 6 * 7"],
    );
    out.assert_success("psql sslmode=disable (client_tls allow)");
    assert!(
        !out.stdout.contains("SSL connection") && out.stdout.contains("answer=42"),
        "a plain client should be served without TLS: {out:?}"
    );

    // By hand: SSLRequest answered 'S', then a handshake checked against
    // the test CA, then a login and a query inside TLS.
    let raw = RawConn::connect(gate.port);
    let mut tls = TlsConn::negotiate(raw.stream, &certs.ca_crt, "localhost");
    tls.login("postgres", "postgres");
    let port: u16 = raw::first_column(&tls.query("SELECT inet_server_port()"))[0]
        .clone()
        .expect("a port")
        .parse()
        .expect("inet_server_port() is a port");
    assert!(
        cluster.is_replica_port(port),
        "a read over TLS should run on a replica, ran on {}",
        cluster.server_name(port)
    );
}

/// `SELECT ssl, inet_server_port()` of the session's own backend.
fn backend_ssl(client: &mut postgres::Client, hint: &str) -> (String, u16) {
    let rows = simple_rows(
        client,
        &format!(
            "{hint}SELECT ssl, inet_server_port() FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
    );
    assert_eq!(rows.len(), 1, "pg_stat_ssl of the own backend: {rows:?}");
    (
        rows[0][0].clone().expect("ssl column"),
        rows[0][1]
            .clone()
            .expect("port column")
            .parse()
            .expect("a port"),
    )
}

/// Through `gate` (backend TLS on): a write, a read of it on a replica, and
/// pg_stat_ssl saying `t` on a replica and on the primary, as `user`.
fn check_backend_tls(cluster: &Cluster, gate: &PgGate, user: &str, what: &str) {
    let mut client = gate.connect(user, "postgres");
    let table = format!("tls_backend_{}", random_hex(8));
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (42)"
        ))
        .unwrap_or_else(|e| panic!("{what}: write as {user}: {}", describe_error(&e)));
    cluster.wait_replicas_caught_up();
    let rows = simple_rows(
        &mut client,
        &format!("SELECT n, inet_server_port() FROM {table}"),
    );
    assert_eq!(rows[0][0].as_deref(), Some("42"), "{what}: read back");
    let port: u16 = rows[0][1].clone().expect("port").parse().expect("a port");
    assert!(
        cluster.is_replica_port(port),
        "{what}: a read should run on a replica, ran on {}",
        cluster.server_name(port)
    );

    for _ in 0..3 {
        let (ssl, port) = backend_ssl(&mut client, "");
        assert!(
            cluster.is_replica_port(port),
            "{what}: a read should run on a replica, ran on {}",
            cluster.server_name(port)
        );
        assert_eq!(
            ssl,
            "t",
            "{what}: PgGate's connection to {} should use TLS",
            cluster.server_name(port)
        );
    }
    let (ssl, port) = backend_ssl(&mut client, "/* pggate:primary */ ");
    assert_eq!(port, cluster.primary_port, "{what}: the primary hint");
    assert_eq!(
        ssl, "t",
        "{what}: PgGate's connection to the primary should use TLS"
    );
    let mut tx = client.transaction().expect("BEGIN");
    let rows = tx
        .simple_query(
            "SELECT ssl, inet_server_port() FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .unwrap_or_else(|e| {
            panic!(
                "{what}: pg_stat_ssl in a transaction: {}",
                describe_error(&e)
            )
        });
    let row = rows
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .expect("a row of pg_stat_ssl");
    assert_eq!(
        row.get(1),
        Some(cluster.primary_port.to_string().as_str()),
        "{what}: a transaction runs on the primary"
    );
    assert_eq!(
        row.get(0),
        Some("t"),
        "{what}: the primary connection in a transaction uses TLS"
    );
    tx.commit().expect("COMMIT");
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .unwrap_or_else(|e| panic!("{what}: DROP TABLE: {}", describe_error(&e)));
}

#[test]
fn backend_tls_verify_full_uses_tls_and_refuses_a_wrong_ca() {
    let cluster = Cluster::shared();
    enable_server_tls(cluster);
    let certs = test_certs(cluster);

    let gate = PgGate::start(
        cluster,
        &format!(
            "[backend_tls]\nmode = \"verify-full\"\nca = {}",
            toml_path(&certs.ca_crt)
        ),
    );
    check_backend_tls(cluster, &gate, "postgres", "verify-full");
    check_backend_tls(cluster, &gate, SCRAM_USER.0, "verify-full as scram_user");
    drop(gate);

    let gate = PgGate::start(
        cluster,
        &format!(
            "[backend_tls]\nmode = \"verify-full\"\nca = {}",
            toml_path(&certs.wrong_ca_crt)
        ),
    );
    let error = match gate.try_connect("postgres", None, "postgres") {
        Err(e) => e,
        Ok(mut client) => match client.simple_query("SELECT inet_server_port()") {
            Err(e) => e,
            Ok(_) => panic!(
                "with backend_tls verify-full and a CA that signed nothing, a query through \
                 PgGate succeeded"
            ),
        },
    };
    let text = describe_error(&error);
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("the client should get an ErrorResponse, got {text}"));
    assert_eq!(db.code().code(), "08001", "SQLSTATE: {text}");
    let names_backend = ["primary", "replica1", "replica2"]
        .iter()
        .any(|name| text.contains(name))
        || cluster
            .all_ports()
            .iter()
            .any(|port| text.contains(&format!("127.0.0.1:{port}")));
    let lower = text.to_lowercase();
    assert!(
        names_backend
            && (lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl")),
        "the error should name the backend and say its certificate/TLS failed: {text}"
    );
    drop(gate);

    let gate = PgGate::start(cluster, "[backend_tls]\nmode = \"require\"");
    check_backend_tls(cluster, &gate, "postgres", "require");
}

#[test]
fn gssenc_request_is_answered_n() {
    let cluster = Cluster::shared();
    let certs = test_certs(cluster);
    for (what, extra) in [
        ("client_tls disable", String::new()),
        (
            "client_tls allow",
            client_tls_toml("allow", &certs.server_key_rsa),
        ),
    ] {
        let gate = PgGate::start(cluster, &extra);

        let mut conn = RawConn::connect(gate.port);
        conn.send(&raw::request_message(raw::GSSENC_REQUEST_CODE))
            .expect("send GSSENCRequest");
        assert_eq!(
            conn.read_byte().expect("read the answer").map(char::from),
            Some('N'),
            "{what}: GSSENCRequest should be answered 'N'"
        );
        conn.login("postgres", "postgres");
        let port = raw::first_column(&conn.query("SELECT inet_server_port()"))[0]
            .clone()
            .expect("a port");
        assert!(
            cluster.is_replica_port(port.parse().expect("a port")),
            "{what}: a read after GSSENCRequest should run on a replica, ran on port {port}"
        );

        if what == "client_tls allow" {
            // libpq's order: GSSENCRequest refused, then SSLRequest on the
            // same connection.
            let mut conn = RawConn::connect(gate.port);
            conn.send(&raw::request_message(raw::GSSENC_REQUEST_CODE))
                .expect("send GSSENCRequest");
            assert_eq!(
                conn.read_byte().expect("read the answer").map(char::from),
                Some('N'),
                "{what}: GSSENCRequest should be answered 'N'"
            );
            let mut tls = TlsConn::negotiate(conn.stream, &certs.ca_crt, "localhost");
            tls.login("postgres", "postgres");
            let rows = tls.query("SELECT 6 * 7");
            assert_eq!(raw::first_column(&rows), vec![Some("42".to_string())]);
        }
    }
}

#[test]
fn pggate_check_validates_tls_files() {
    let cluster = Cluster::shared();
    let certs = test_certs(cluster);
    let check = |extra: &str| {
        let files = GateFiles::write(cluster, extra);
        let config = files.config_path.to_str().expect("UTF-8 path").to_string();
        (pggate(&["--check", "--config", &config]), files)
    };

    let missing = certs.dir.join("no-such.key");
    let (out, _files) = check(&client_tls_toml("require", &missing));
    assert_eq!(
        out.code(),
        Some(1),
        "--check with a missing key file: {out:?}"
    );
    assert!(
        out.combined().contains("client_tls.key"),
        "--check with a missing key file should name client_tls.key: {out:?}"
    );

    let swapped = format!(
        "[client_tls]\nmode = \"require\"\ncert = {}\nkey = {}\n",
        toml_path(&certs.server_key_rsa),
        toml_path(&certs.server_crt)
    );
    let (out, _files) = check(&swapped);
    assert_eq!(
        out.code(),
        Some(1),
        "--check with cert and key swapped: {out:?}"
    );

    for key in [&certs.server_key_rsa, &certs.server_key_pkcs8] {
        let (out, _files) = check(&client_tls_toml("require", key));
        assert_eq!(
            out.code(),
            Some(0),
            "--check with valid TLS files (key {}): {out:?}",
            key.display()
        );
        assert!(
            out.stdout.contains("configuration ok"),
            "--check with valid TLS files should print `configuration ok`: {out:?}"
        );
    }
}

/// `sessions` of `db` in the primary's pg_stat_database once it has stopped
/// changing (a backend reports its session when it exits or goes idle).
fn settled_sessions(monitor: &mut postgres::Client, db: &str) -> i64 {
    let sql = format!(
        "SELECT sessions FROM pg_stat_database WHERE datname = '{db}'; SELECT pg_stat_clear_snapshot()"
    );
    let read = |m: &mut postgres::Client| -> i64 {
        simple_rows(m, &sql)[0][0]
            .clone()
            .expect("sessions is not NULL")
            .parse()
            .expect("sessions is a number")
    };
    let mut last = read(monitor);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        thread::sleep(Duration::from_millis(600));
        let now = read(monitor);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn passthrough_logins_the_primary_trusts_skip_the_relay_password_logins_never_do() {
    let cluster = Cluster::shared();
    let trusted_db = format!("tls_auth_trust_{}", random_hex(8));
    let password_db = format!("tls_auth_pw_{}", random_hex(8));
    cluster.create_database(&trusted_db, "postgres");
    cluster.create_database(&password_db, common::CLEAR_USER.0);
    let gate = PgGate::start(
        cluster,
        "[proxy]\nworkers = 2\n[pool]\nsize = 2\n[health]\ninterval = \"30s\"",
    );
    let mut monitor = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");

    // postgres is `trust` in pg_hba.conf: after the first relayed login,
    // PgGate lets it in itself, so 40 logins cost no server sessions beyond
    // the pool's two connections.
    let before = settled_sessions(&mut monitor, &trusted_db);
    for i in 0..40 {
        let mut config = gate.config("postgres", &trusted_db);
        config.application_name(&format!("trusted-{i}"));
        let mut client = config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("trusted login {}: {}", i + 1, describe_error(&e)));
        assert_eq!(
            simple_value(&mut client, "SHOW application_name"),
            format!("trusted-{i}"),
            "the client's startup parameter reaches the pooled connection"
        );
        assert_eq!(simple_value(&mut client, "SELECT current_user"), "postgres");
    }
    let trusted_sessions = settled_sessions(&mut monitor, &trusted_db) - before;
    assert!(
        (1..=4).contains(&trusted_sessions),
        "40 trusted logins through a pool of 2 opened {trusted_sessions} server sessions"
    );

    // Startup settings the primary has not accepted yet are still relayed:
    // a bad one fails the login as it would directly, a good one works.
    for _ in 0..2 {
        let mut config = gate.config("postgres", &trusted_db);
        config.options("-c work_mem=bogus");
        match config.connect(postgres::NoTls) {
            Ok(_) => panic!("a login with work_mem=bogus succeeded through PgGate"),
            Err(e) => assert_eq!(
                e.as_db_error().map(|d| d.code().code()),
                Some("22023"),
                "a login with work_mem=bogus: {}",
                describe_error(&e)
            ),
        }
        let mut config = gate.config("postgres", &trusted_db);
        config.options("-c work_mem=7MB");
        let mut client = config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("login with work_mem=7MB: {}", describe_error(&e)));
        assert_eq!(simple_value(&mut client, "SHOW work_mem"), "7MB");
    }

    // clear_user needs a password: every login is relayed to the primary, and
    // a wrong password after good ones is still refused.
    let (user, password) = common::CLEAR_USER;
    let before = settled_sessions(&mut monitor, &password_db);
    for i in 0..10 {
        let mut client = gate
            .try_connect(user, Some(password), &password_db)
            .unwrap_or_else(|e| panic!("login {} of {user}: {}", i + 1, describe_error(&e)));
        assert_eq!(simple_value(&mut client, "SELECT current_user"), user);
    }
    let e = match gate.try_connect(user, Some("wrong"), &password_db) {
        Ok(_) => panic!("{user} logged in with a wrong password after good logins"),
        Err(e) => e,
    };
    assert_password_failure(&e, user);
    let relayed = settled_sessions(&mut monitor, &password_db) - before;
    assert!(
        relayed >= 10,
        "10 good logins of {user} should each be relayed to the primary: \
         {relayed} server sessions"
    );
}
