//! Integration tests of PgGate's operations side (SPEC.md §1, §2 reload,
//! §8, §9): `--version`, the metrics and health endpoints, SIGHUP reloads,
//! graceful shutdown on SIGTERM, the client and pool limits, and systemd
//! notifications.
//!
//! Each test starts its own PgGate in front of the shared cluster (a primary
//! and two streaming replicas) and is named after the promise it checks.
//! Which server ran a statement is read from `inet_server_port()`; tests
//! that write use a table of their own.

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::ops::{
    has_metric, http_get, metric_lines, monotonic_usec, sample_value, scrape, wait_metric, EnvGate,
};
use common::raw::{Ending, RawConn};
use common::tools::run_with_timeout;
use common::{
    describe_error, free_port, pggate_bin, random_hex, server_port, simple_value, tail, Cluster,
    GateFiles, PgGate,
};

/// Every metric SPEC.md §8 promises.
const SPEC_METRICS: [&str; 16] = [
    "pggate_clients_connected",
    "pggate_clients_accepted_total",
    "pggate_clients_rejected_total",
    "pggate_queries_total",
    "pggate_query_duration_seconds",
    "pggate_transactions_total",
    "pggate_sessions_pinned_total",
    "pggate_errors_total",
    "pggate_backend_up",
    "pggate_backend_connections",
    "pggate_backend_connect_failures_total",
    "pggate_backend_replication_lag_seconds",
    "pggate_pool_waiting_clients",
    "pggate_read_only_retries_total",
    "pggate_config_reloads_total",
    "pggate_build_info",
];

/// The per-backend metrics, which appear once the backends are known.
const BACKEND_METRICS: [&str; 4] = [
    "pggate_backend_up",
    "pggate_backend_connections",
    "pggate_backend_connect_failures_total",
    "pggate_backend_replication_lag_seconds",
];

/// Runs the PgGate binary with `args` (never a server: at most 10 s).
fn pggate(args: &[&str]) -> common::CmdOutput {
    let mut cmd = Command::new(pggate_bin());
    cmd.args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(10))
}

/// `[metrics] listen` on 127.0.0.1:`port`.
fn metrics_toml(port: u16) -> String {
    format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// `[[backends]]` for the named servers of the cluster ("primary",
/// "replica1", "replica2"), named like the harness names them.
fn backends_toml(cluster: &Cluster, names: &[&str]) -> String {
    let mut text = String::new();
    for name in names {
        let (port, role) = match *name {
            "primary" => (cluster.primary_port, "primary"),
            "replica1" => (cluster.replica_ports[0], "replica"),
            "replica2" => (cluster.replica_ports[1], "replica"),
            other => panic!("no server {other} in the test cluster"),
        };
        text.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"{role}\"\n"
        ));
    }
    text
}

/// A new table `(id int primary key)` made directly on the primary, and
/// already replayed by the replicas.
fn create_table(cluster: &Cluster, prefix: &str) -> String {
    let table = format!("{prefix}_{}", random_hex(8));
    cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        &format!("CREATE TABLE {table} (id int PRIMARY KEY)"),
    );
    cluster.wait_replicas_caught_up();
    table
}

/// The ids in `table`, read directly on the primary.
fn ids_on_primary(cluster: &Cluster, table: &str) -> BTreeSet<i32> {
    let out = cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        &format!("SELECT id FROM {table} ORDER BY id"),
    );
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().expect("id is a number"))
        .collect()
}

/// The server port a read runs on, through a fresh client connection.
fn fresh_read_port(gate: &PgGate) -> Result<u16, String> {
    let mut client = gate
        .config("postgres", "postgres")
        .connect(postgres::NoTls)
        .map_err(|e| format!("connect: {}", describe_error(&e)))?;
    let rows = client
        .simple_query("SELECT inet_server_port()")
        .map_err(|e| format!("read: {}", describe_error(&e)))?;
    rows.iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| "no row".to_string())?
        .parse()
        .map_err(|e| format!("port: {e}"))
}

/// Fresh-connection reads until one runs on `port`, for at most `limit`.
/// Returns the ports seen on failure.
fn wait_read_reaches(gate: &PgGate, port: u16, limit: Duration) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        match fresh_read_port(gate) {
            Ok(p) if p == port => return Ok(()),
            Ok(p) => seen.push(p.to_string()),
            Err(e) => seen.push(e),
        }
        if Instant::now() > deadline {
            return Err(seen);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `pggate_config_reloads_total{result}` until it equals `want`.
fn wait_reloads(metrics_port: u16, result: &str, want: f64, gate: &PgGate) {
    if let Err((got, body)) = wait_metric(
        metrics_port,
        "pggate_config_reloads_total",
        &[("result", result)],
        Duration::from_secs(3),
        |v| v == Some(want),
    ) {
        panic!(
            "pggate_config_reloads_total{{result=\"{result}\"}} expected {want}, got {got:?} \
             after 3 s:\n{}\npggate log:\n{}",
            metric_lines(&body, "pggate_config_reloads_total"),
            tail(&gate.log_contents(), 30)
        );
    }
}

/// Asserts an ErrorResponse written by PgGate itself with `code`.
fn assert_own_error(message: &common::raw::Message, code: &str, what: &str) {
    assert_eq!(
        message.sqlstate().as_deref(),
        Some(code),
        "{what}: SQLSTATE of {message:?}"
    );
    let text = message.text().unwrap_or_default();
    assert!(
        text.starts_with("pggate: "),
        "{what}: PgGate's own message must start with `pggate: `, got {text:?}"
    );
}

/// Asserts a client-library error is a server error with `code` written by
/// PgGate (message starting `pggate: `).
fn assert_own_db_error(e: &postgres::Error, code: &str, what: &str) {
    let db = e.as_db_error().unwrap_or_else(|| {
        panic!(
            "{what}: expected SQLSTATE {code}, got {}",
            describe_error(e)
        )
    });
    assert_eq!(db.code().code(), code, "{what}: {}", describe_error(e));
    assert!(
        db.message().starts_with("pggate: "),
        "{what}: PgGate's own message must start with `pggate: `, got {:?}",
        db.message()
    );
}

#[test]
fn version_metrics_and_healthz() {
    let out = pggate(&["--version"]);
    out.assert_success("pggate --version");
    assert_eq!(
        out.stdout.trim(),
        format!("pggate {}", env!("CARGO_PKG_VERSION")),
        "pggate --version output"
    );

    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = PgGate::start(cluster, &metrics_toml(metrics_port));

    // Everything but the per-backend series is exported from the start.
    let first = scrape(metrics_port);
    let missing: Vec<&str> = SPEC_METRICS
        .iter()
        .filter(|name| !BACKEND_METRICS.contains(name))
        .filter(|name| !has_metric(&first, name))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "GET /metrics right after start lacks {missing:?}; body:\n{first}"
    );
    assert_eq!(
        sample_value(
            &first,
            "pggate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "pggate_build_info{{version}}:\n{}",
        metric_lines(&first, "pggate_build_info")
    );
    for result in ["success", "failure"] {
        assert_eq!(
            sample_value(&first, "pggate_config_reloads_total", &[("result", result)]),
            Some(0.0),
            "pggate_config_reloads_total{{result=\"{result}\"}} at start:\n{}",
            metric_lines(&first, "pggate_config_reloads_total")
        );
    }
    for route in ["primary", "replica"] {
        assert!(
            sample_value(&first, "pggate_queries_total", &[("route", route)]).is_some(),
            "pggate_queries_total{{route=\"{route}\"}} is exported from the start:\n{}",
            metric_lines(&first, "pggate_queries_total")
        );
    }

    // The per-backend series appear, and every backend is up.
    let deadline = Instant::now() + Duration::from_secs(3);
    let backends = [
        ("primary", "primary"),
        ("replica1", "replica"),
        ("replica2", "replica"),
    ];
    loop {
        let body = scrape(metrics_port);
        let missing: Vec<&str> = SPEC_METRICS
            .iter()
            .filter(|name| !has_metric(&body, name))
            .copied()
            .collect();
        let down: Vec<(&str, Option<f64>)> = backends
            .iter()
            .map(|(backend, role)| {
                (
                    *backend,
                    sample_value(
                        &body,
                        "pggate_backend_up",
                        &[("backend", backend), ("role", role)],
                    ),
                )
            })
            .filter(|(_, v)| *v != Some(1.0))
            .collect();
        if missing.is_empty() && down.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 s after start: metrics missing {missing:?}, pggate_backend_up not 1 for {down:?}:\n{}",
            metric_lines(&body, "pggate_backend")
        );
        thread::sleep(Duration::from_millis(100));
    }

    // Reads and writes move pggate_queries_total{route}.
    let table = create_table(cluster, "ops_metrics");
    let before = scrape(metrics_port);
    let queries = |body: &str, route: &str| {
        sample_value(body, "pggate_queries_total", &[("route", route)]).unwrap_or(0.0)
    };
    let (replica0, primary0) = (queries(&before, "replica"), queries(&before, "primary"));
    {
        let mut client = gate.connect("postgres", "postgres");
        for _ in 0..5 {
            let port = server_port(&mut client);
            assert!(
                cluster.is_replica_port(port),
                "a plain read ran on port {port}, not a replica"
            );
        }
        for id in 0..3 {
            client
                .batch_execute(&format!("INSERT INTO {table} VALUES ({id})"))
                .unwrap_or_else(|e| panic!("INSERT: {}", describe_error(&e)));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let body = scrape(metrics_port);
        let (replica, primary) = (
            queries(&body, "replica") - replica0,
            queries(&body, "primary") - primary0,
        );
        if replica >= 5.0 && primary >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 5 reads and 3 writes, pggate_queries_total moved by replica {replica}, \
             primary {primary} (expected >= 5 and >= 3):\n{}",
            metric_lines(&body, "pggate_queries_total")
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ids_on_primary(cluster, &table), BTreeSet::from([0, 1, 2]));

    // pggate_clients_connected follows open client connections.
    let connected = |want: f64, what: &str| {
        if let Err((got, body)) = wait_metric(
            metrics_port,
            "pggate_clients_connected",
            &[],
            Duration::from_secs(2),
            |v| v == Some(want),
        ) {
            panic!(
                "{what}: pggate_clients_connected expected {want}, got {got:?} after 2 s:\n{}",
                metric_lines(&body, "pggate_clients")
            );
        }
    };
    connected(0.0, "with every client closed");
    let accepted0 = sample_value(&scrape(metrics_port), "pggate_clients_accepted_total", &[])
        .expect("pggate_clients_accepted_total");
    let mut clients: Vec<postgres::Client> = (0..3)
        .map(|_| gate.connect("postgres", "postgres"))
        .collect();
    connected(3.0, "with 3 clients open");
    let accepted = sample_value(&scrape(metrics_port), "pggate_clients_accepted_total", &[])
        .expect("pggate_clients_accepted_total");
    assert!(
        accepted - accepted0 >= 3.0,
        "pggate_clients_accepted_total moved by {} for 3 new clients",
        accepted - accepted0
    );
    for client in &mut clients {
        simple_value(client, "SELECT 1");
    }
    drop(clients);
    connected(0.0, "after closing the 3 clients");

    match http_get(metrics_port, "/healthz", Duration::from_secs(3)) {
        Ok((status, body)) => {
            assert_eq!(status, 200, "GET /healthz with the primary up: {body:?}");
            assert_eq!(body.trim(), "ok", "GET /healthz body");
        }
        Err(e) => panic!("GET /healthz: {e}"),
    }
}

#[test]
fn a_sighup_that_adds_a_replica_keeps_sessions_and_reaches_it_and_a_broken_file_keeps_the_old_config(
) {
    let cluster = Cluster::shared();
    let [primary, replica1, replica2] = cluster.all_ports();
    let metrics_port = free_port();
    let metrics = metrics_toml(metrics_port);
    let gate = PgGate::start(
        cluster,
        &format!(
            "{metrics}{}",
            backends_toml(cluster, &["primary", "replica1"])
        ),
    );
    let table = create_table(cluster, "ops_reload");

    // Before the reload: reads reach replica1 and never replica2.
    wait_read_reaches(&gate, replica1, Duration::from_secs(5))
        .unwrap_or_else(|seen| panic!("reads never reached replica1 before the reload: {seen:?}"));
    for _ in 0..10 {
        let port = fresh_read_port(&gate).unwrap_or_else(|e| panic!("read: {e}"));
        assert_ne!(
            port, replica2,
            "a read reached replica2, which is not configured"
        );
    }

    let mut session = gate.connect("postgres", "postgres");
    session
        .batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
        .unwrap_or_else(|e| panic!("BEGIN; INSERT: {}", describe_error(&e)));

    // Reload with replica2 added (the harness default: all three servers).
    gate.files.rewrite_config(cluster, &metrics);
    gate.signal(libc::SIGHUP);
    wait_reloads(metrics_port, "success", 1.0, &gate);

    // The session's transaction carries on and commits.
    session
        .batch_execute(&format!("INSERT INTO {table} VALUES (2)"))
        .unwrap_or_else(|e| {
            panic!(
                "INSERT in the transaction after SIGHUP: {}",
                describe_error(&e)
            )
        });
    assert_eq!(
        server_port(&mut session),
        primary,
        "the open transaction still runs on the primary"
    );
    session
        .batch_execute("COMMIT")
        .unwrap_or_else(|e| panic!("COMMIT after SIGHUP: {}", describe_error(&e)));
    assert_eq!(ids_on_primary(cluster, &table), BTreeSet::from([1, 2]));

    // New reads reach the added replica.
    wait_read_reaches(&gate, replica2, Duration::from_secs(5)).unwrap_or_else(|seen| {
        panic!(
            "no fresh read reached replica2 (port {replica2}) within 5 s of a successful \
             reload adding it; read ports: {seen:?}\npggate log:\n{}",
            tail(&gate.log_contents(), 30)
        )
    });

    // A broken file: the running config stays, the failure is counted and
    // the log says what is wrong.
    gate.files
        .rewrite_config(cluster, &format!("{metrics}[pool]\nbogus_reload_key = 1\n"));
    gate.signal(libc::SIGHUP);
    wait_reloads(metrics_port, "failure", 1.0, &gate);
    assert_eq!(
        sample_value(
            &scrape(metrics_port),
            "pggate_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0),
        "a failed reload does not count as a success"
    );
    let log = gate.log_contents();
    assert!(
        log.contains("bogus_reload_key"),
        "the log does not name the unknown key of the broken file:\n{}",
        tail(&log, 30)
    );
    session
        .batch_execute(&format!("INSERT INTO {table} VALUES (3)"))
        .unwrap_or_else(|e| panic!("write after a failed reload: {}", describe_error(&e)));
    {
        let mut fresh = gate.connect("postgres", "postgres");
        fresh
            .batch_execute(&format!("INSERT INTO {table} VALUES (4)"))
            .unwrap_or_else(|e| {
                panic!("fresh write after a failed reload: {}", describe_error(&e))
            });
    }
    assert_eq!(
        ids_on_primary(cluster, &table),
        BTreeSet::from([1, 2, 3, 4])
    );
    wait_read_reaches(&gate, replica2, Duration::from_secs(5)).unwrap_or_else(|seen| {
        panic!("after a failed reload, reads no longer reach replica2: {seen:?}")
    });
    wait_read_reaches(&gate, replica1, Duration::from_secs(5)).unwrap_or_else(|seen| {
        panic!("after a failed reload, reads no longer reach replica1: {seen:?}")
    });

    // A reload that removes replica1: reads stop reaching it.
    gate.files.rewrite_config(
        cluster,
        &format!(
            "{metrics}{}",
            backends_toml(cluster, &["primary", "replica2"])
        ),
    );
    gate.signal(libc::SIGHUP);
    wait_reloads(metrics_port, "success", 2.0, &gate);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut clean_run = 0;
    let mut seen = Vec::new();
    while clean_run < 20 {
        let port = fresh_read_port(&gate).unwrap_or_else(|e| panic!("read after removal: {e}"));
        seen.push(port);
        if port == replica1 {
            clean_run = 0;
        } else {
            clean_run += 1;
        }
        assert!(
            Instant::now() < deadline,
            "reads still reach replica1 (port {replica1}) 5 s after a reload removed it; \
             last ports: {:?}",
            &seen[seen.len().saturating_sub(30)..]
        );
    }
    let last: Vec<u16> = seen[seen.len() - 20..].to_vec();
    assert!(
        last.contains(&replica2),
        "20 reads after removing replica1 never reached replica2: {last:?}"
    );
    // The session opened before all the reloads is still fine.
    session
        .batch_execute(&format!("INSERT INTO {table} VALUES (5)"))
        .unwrap_or_else(|e| panic!("write after the last reload: {}", describe_error(&e)));
    assert_eq!(
        ids_on_primary(cluster, &table),
        BTreeSet::from([1, 2, 3, 4, 5])
    );
}

/// How many sessions `server` has in `db`.
fn sessions_in(cluster: &Cluster, server: u16, db: &str) -> i64 {
    let mut monitor = cluster.connect_direct(server, "postgres", "postgres");
    monitor
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .unwrap_or_else(|e| panic!("pg_stat_activity on {server}: {}", describe_error(&e)))
        .get(0)
}

#[test]
fn a_reload_that_removes_a_replica_stops_its_health_checks() {
    let cluster = Cluster::shared();
    let [_, replica1, replica2] = cluster.all_ports();
    // The checks log in to a database of their own: only this PgGate's
    // control connections are counted.
    let db = format!("ops_probes_{}", random_hex(6));
    cluster.create_database(&db, "postgres");
    let metrics_port = free_port();
    let head = format!(
        "{}[health]\ninterval = \"100ms\"\ndatabase = \"{db}\"\n",
        metrics_toml(metrics_port)
    );
    let gate = PgGate::start(
        cluster,
        &format!(
            "{head}{}",
            backends_toml(cluster, &["primary", "replica1", "replica2"])
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions_in(cluster, replica1, &db) != 1 || sessions_in(cluster, replica2, &db) != 1 {
        assert!(
            Instant::now() < deadline,
            "no health check connection to each replica after 5 s: replica1 {}, replica2 {}",
            sessions_in(cluster, replica1, &db),
            sessions_in(cluster, replica2, &db)
        );
        thread::sleep(Duration::from_millis(50));
    }

    gate.files.rewrite_config(
        cluster,
        &format!("{head}{}", backends_toml(cluster, &["primary", "replica2"])),
    );
    gate.signal(libc::SIGHUP);
    wait_reloads(metrics_port, "success", 1.0, &gate);

    // The control connection to replica1 closes, and over ten more rounds
    // none is opened again; replica2 is still checked.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions_in(cluster, replica1, &db) != 0 {
        assert!(
            Instant::now() < deadline,
            "5 s after a reload removed replica1 it still has a health check connection"
        );
        thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            sessions_in(cluster, replica1, &db),
            0,
            "a removed replica was connected to again by the health checks"
        );
    }
    assert_eq!(
        sessions_in(cluster, replica2, &db),
        1,
        "after the reload, the kept replica has no health check connection"
    );
}

#[test]
fn sigterm_drains_open_transactions_and_exits_zero() {
    let cluster = Cluster::shared();
    let mut gate = PgGate::start(cluster, "");
    let table = create_table(cluster, "ops_drain");

    // The client in a transaction speaks the raw protocol, so that the
    // order of what PgGate sends around its COMMIT is what is checked.
    let mut in_tx = RawConn::connect(gate.port);
    in_tx.login("postgres", "postgres");
    for sql in [
        "BEGIN".to_string(),
        format!("INSERT INTO {table} VALUES (1)"),
    ] {
        let answer = in_tx.query(&sql);
        assert!(answer.iter().all(|m| m.tag != b'E'), "{sql}: {answer:?}");
    }
    let mut idle = gate.connect("postgres", "postgres");
    simple_value(&mut idle, "SELECT 1");
    let mut raw_idle = RawConn::connect(gate.port);
    raw_idle.login("postgres", "postgres");
    raw_idle.query("SELECT 1");

    gate.signal(libc::SIGTERM);
    let signalled = Instant::now();

    // An idle client is closed at once with 57P01.
    match raw_idle.error_or_close_within(Duration::from_secs(1)) {
        Ending::Error(m) => {
            assert_own_error(&m, "57P01", "idle client at SIGTERM");
            assert!(
                matches!(
                    raw_idle.error_or_close_within(Duration::from_secs(1)),
                    Ending::Closed
                ),
                "the connection is closed after the 57P01"
            );
        }
        Ending::Closed => panic!("the idle client was closed without the 57P01 FATAL"),
    }

    // New connections are refused.
    let mut refused = None;
    while refused.is_none() {
        let mut config = gate.config("postgres", "postgres");
        config.connect_timeout(Duration::from_secs(1));
        match config.connect(postgres::NoTls) {
            Err(e) => refused = Some(describe_error(&e)),
            Ok(client) => drop(client),
        }
        if refused.is_none() {
            assert!(
                signalled.elapsed() < Duration::from_secs(1),
                "new clients are still accepted {:?} after SIGTERM",
                signalled.elapsed()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    // The other idle client's next query fails.
    match idle.simple_query("SELECT 1") {
        Ok(_) => panic!("an idle client could still run a query after SIGTERM"),
        Err(e) => {
            if let Some(db) = e.as_db_error() {
                assert_eq!(db.code().code(), "57P01", "{}", describe_error(&e));
            }
        }
    }

    // The transaction can finish.
    assert!(
        gate.try_wait().is_none(),
        "pggate exited while a transaction was open"
    );
    let answer = in_tx.query(&format!("INSERT INTO {table} VALUES (2)"));
    assert!(
        answer.iter().all(|m| m.tag != b'E')
            && answer.last().map(|m| m.ready_status()) == Some(b'T'),
        "INSERT inside the open transaction after SIGTERM: {answer:?}"
    );
    // COMMIT answers CommandComplete and ReadyForQuery(idle) before
    // anything else; then the client is closed.
    in_tx.send_query("COMMIT");
    let answer = in_tx.read_count(2);
    assert!(
        answer[0].tag == b'C'
            && answer[0].command_tag() == "COMMIT"
            && answer[1].tag == b'Z'
            && answer[1].ready_status() == b'I',
        "COMMIT of the open transaction after SIGTERM: {answer:?} (ids on the primary: {:?})",
        ids_on_primary(cluster, &table)
    );
    match in_tx.error_or_close_within(Duration::from_secs(2)) {
        Ending::Error(m) => {
            assert_own_error(&m, "57P01", "drained client after its COMMIT");
            assert!(
                matches!(
                    in_tx.error_or_close_within(Duration::from_secs(1)),
                    Ending::Closed
                ),
                "the drained client is closed after the 57P01"
            );
        }
        Ending::Closed => {}
    }
    match gate.wait_exit(Duration::from_secs(2)) {
        Some(status) => assert_eq!(
            status.code(),
            Some(0),
            "exit status after the drain ({status})"
        ),
        None => panic!(
            "pggate still runs 2 s after the last transaction committed; log:\n{}",
            tail(&gate.log_contents(), 30)
        ),
    }
    assert_eq!(ids_on_primary(cluster, &table), BTreeSet::from([1, 2]));
}

#[test]
fn with_a_short_shutdown_timeout_an_open_transaction_is_cut_and_it_exits() {
    let cluster = Cluster::shared();
    let mut gate = PgGate::start(cluster, "[proxy]\nshutdown_timeout = \"1s\"\n");
    let table = create_table(cluster, "ops_cut");

    let mut client = RawConn::connect(gate.port);
    client.login("postgres", "postgres");
    for sql in [
        "BEGIN".to_string(),
        format!("INSERT INTO {table} VALUES (1)"),
    ] {
        let answer = client.query(&sql);
        assert!(answer.iter().all(|m| m.tag != b'E'), "{sql}: {answer:?}");
    }

    gate.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let ending = client.error_or_close_within(Duration::from_secs(3));
    let cut_after = signalled.elapsed();
    match ending {
        Ending::Error(m) => assert_own_error(&m, "57P01", "transaction cut at shutdown_timeout"),
        Ending::Closed => panic!(
            "the client in a transaction was closed after {cut_after:?} without the 57P01 FATAL"
        ),
    }
    assert!(
        cut_after >= Duration::from_millis(800),
        "the open transaction was cut {cut_after:?} after SIGTERM, before shutdown_timeout (1 s)"
    );
    match gate.wait_exit(Duration::from_secs(3).saturating_sub(signalled.elapsed())) {
        Some(status) => assert_eq!(status.code(), Some(0), "exit status ({status})"),
        None => panic!(
            "pggate still runs 3 s after SIGTERM with shutdown_timeout = 1s; log:\n{}",
            tail(&gate.log_contents(), 30)
        ),
    }
    assert!(
        matches!(
            client.error_or_close_within(Duration::from_secs(1)),
            Ending::Closed
        ),
        "the client's connection is closed"
    );

    // The transaction is gone from the primary (its lock is released) and
    // its row was never committed.
    let mut direct = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let locked = direct.batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '200ms'; \
             LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; COMMIT"
        ));
        match locked {
            Ok(()) => break,
            Err(e) => {
                let _ = direct.batch_execute("ROLLBACK");
                assert!(
                    Instant::now() < deadline,
                    "the cut transaction still holds its lock on the primary 3 s after \
                     pggate exited: {}",
                    describe_error(&e)
                );
            }
        }
    }
    assert_eq!(ids_on_primary(cluster, &table), BTreeSet::new());
}

#[test]
fn max_clients_and_checkout_timeout_give_53300() {
    let cluster = Cluster::shared();

    // max_clients
    let gate = PgGate::start(cluster, "[proxy]\nmax_clients = 5\n");
    let mut clients: Vec<postgres::Client> = (0..5)
        .map(|_| gate.connect("postgres", "postgres"))
        .collect();
    for client in &mut clients {
        simple_value(client, "SELECT 1");
    }
    match gate.try_connect("postgres", None, "postgres") {
        Ok(_) => panic!("a sixth client was accepted with max_clients = 5"),
        Err(e) => {
            assert_own_db_error(&e, "53300", "sixth client with max_clients = 5");
            let message = e.as_db_error().map(|db| db.message().to_string());
            assert_eq!(
                message.as_deref(),
                Some("pggate: sorry, too many clients already")
            );
        }
    }
    for client in &mut clients {
        simple_value(client, "SELECT 1");
    }
    // A freed slot can be used again.
    clients.pop();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match gate.try_connect("postgres", None, "postgres") {
            Ok(mut client) => {
                simple_value(&mut client, "SELECT 1");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "with one of 5 clients closed, a new one is still refused after 2 s: {}",
                describe_error(&e)
            ),
        }
        thread::sleep(Duration::from_millis(50));
    }
    drop(clients);
    drop(gate);

    // checkout_timeout
    let gate = PgGate::start(cluster, "[pool]\nsize = 1\ncheckout_timeout = \"500ms\"\n");
    let table = create_table(cluster, "ops_checkout");
    let mut a = gate.connect("postgres", "postgres");
    let mut b = gate.connect("postgres", "postgres");
    a.batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
        .unwrap_or_else(|e| panic!("A: BEGIN; INSERT: {}", describe_error(&e)));
    let started = Instant::now();
    let result = b.batch_execute(&format!("INSERT INTO {table} VALUES (2)"));
    let waited = started.elapsed();
    match result {
        Ok(()) => {
            panic!("B's write succeeded after {waited:?} while A held the only primary connection")
        }
        Err(e) => assert_own_db_error(&e, "53300", "B's write with the pool exhausted"),
    }
    assert!(
        waited >= Duration::from_millis(400) && waited <= Duration::from_secs(2),
        "B got 53300 after {waited:?}; checkout_timeout is 500ms"
    );
    a.batch_execute("COMMIT")
        .unwrap_or_else(|e| panic!("A: COMMIT: {}", describe_error(&e)));
    b.batch_execute(&format!("INSERT INTO {table} VALUES (3)"))
        .unwrap_or_else(|e| panic!("B's session after the 53300: {}", describe_error(&e)));
    simple_value(&mut b, "SELECT 1");
    assert_eq!(ids_on_primary(cluster, &table), BTreeSet::from([1, 3]));
}

/// `pg_backend_pid()` and `inet_server_port()` of one read.
fn read_pid_port(client: &mut postgres::Client) -> (i32, u16) {
    let rows = common::simple_rows(client, "SELECT pg_backend_pid(), inet_server_port()");
    let row = &rows[0];
    (
        row[0].as_deref().unwrap().parse().unwrap(),
        row[1].as_deref().unwrap().parse().unwrap(),
    )
}

/// Whether a backend with `pid` exists on the server at `port`.
fn pid_alive(monitor: &mut postgres::Client, pid: i32) -> bool {
    simple_value(
        monitor,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
    ) != "0"
}

#[test]
fn login_idle_and_lifetime_limits() {
    let cluster = Cluster::shared();
    let replica1 = cluster.replica_ports[0];

    // login_timeout and client_idle_timeout
    let gate = PgGate::start(
        cluster,
        "[proxy]\nlogin_timeout = \"1s\"\nclient_idle_timeout = \"1s\"\n",
    );
    let mut silent = RawConn::connect(gate.port);
    let connected = Instant::now();
    let ending = silent.error_or_close_within(Duration::from_secs(3));
    let after = connected.elapsed();
    if let Ending::Error(m) = &ending {
        assert_own_error(m, "08P01", "login timeout");
        assert!(
            m.text().unwrap_or_default().contains("login timeout"),
            "{m:?}"
        );
        assert!(
            matches!(
                silent.error_or_close_within(Duration::from_secs(1)),
                Ending::Closed
            ),
            "closed after the login timeout error"
        );
    }
    assert!(
        after >= Duration::from_millis(800),
        "a silent client was dropped after {after:?}, before login_timeout (1 s): {ending:?}"
    );

    let mut raw_idle = RawConn::connect(gate.port);
    raw_idle.login("postgres", "postgres");
    raw_idle.query("SELECT 1");
    let idle_since = Instant::now();
    let watcher = thread::spawn(move || {
        let ending = raw_idle.error_or_close_within(Duration::from_secs(4));
        (ending, idle_since.elapsed())
    });
    let mut idle = gate.connect("postgres", "postgres");
    simple_value(&mut idle, "SELECT 1");
    // A client that keeps working is not idle.
    let mut busy = gate.connect("postgres", "postgres");
    let busy_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < busy_until {
        busy.simple_query("SELECT 1").unwrap_or_else(|e| {
            panic!(
                "a client querying every 300 ms was dropped by client_idle_timeout = 1s: {}",
                describe_error(&e)
            )
        });
        thread::sleep(Duration::from_millis(300));
    }
    let (ending, after) = watcher.join().expect("idle watcher thread");
    if let Ending::Error(m) = &ending {
        assert_own_error(m, "57P05", "client_idle_timeout");
    }
    assert!(
        after >= Duration::from_millis(800) && after <= Duration::from_secs(3),
        "an idle client was dropped after {after:?} with client_idle_timeout = 1s: {ending:?}"
    );
    assert!(
        idle.simple_query("SELECT 1").is_err(),
        "a client idle for 2.5 s with client_idle_timeout = 1s can still run a query"
    );
    drop(gate);

    let one_replica = backends_toml(cluster, &["primary", "replica1"]);
    let mut monitor = cluster.connect_direct(replica1, "postgres", "postgres");

    // max_lifetime: an old connection is replaced.
    let gate = PgGate::start(
        cluster,
        &format!("{one_replica}[pool]\nmax_lifetime = \"1s\"\n"),
    );
    let mut client = gate.connect("postgres", "postgres");
    let (pid1, port1) = read_pid_port(&mut client);
    let (pid2, port2) = read_pid_port(&mut client);
    assert_eq!(
        (port1, port2),
        (replica1, replica1),
        "reads run on the only replica"
    );
    assert_eq!(
        pid1, pid2,
        "two back-to-back reads of one client reuse the pooled connection"
    );
    thread::sleep(Duration::from_secs(3));
    let (pid3, port3) = read_pid_port(&mut client);
    assert_eq!(port3, replica1);
    assert_ne!(
        pid3, pid1,
        "a replica connection older than max_lifetime = 1s was used again after 3 s"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while pid_alive(&mut monitor, pid1) {
        assert!(
            Instant::now() < deadline,
            "the recycled connection (pid {pid1}) is still open on replica1"
        );
        thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    drop(gate);

    // idle_timeout: an unused pooled connection is closed.
    let gate = PgGate::start(
        cluster,
        &format!("{one_replica}[pool]\nidle_timeout = \"1s\"\n"),
    );
    let mut client = gate.connect("postgres", "postgres");
    let (pid, port) = read_pid_port(&mut client);
    assert_eq!(port, replica1);
    assert!(
        pid_alive(&mut monitor, pid),
        "the pooled connection is open"
    );
    let idle_since = Instant::now();
    let deadline = idle_since + Duration::from_secs(4);
    while pid_alive(&mut monitor, pid) {
        assert!(
            Instant::now() < deadline,
            "a pooled replica connection (pid {pid}) idle for 4 s is still open with \
             idle_timeout = 1s"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        idle_since.elapsed() >= Duration::from_millis(800),
        "the pooled connection was closed after {:?}, before idle_timeout",
        idle_since.elapsed()
    );
    let (pid_again, port_again) = read_pid_port(&mut client);
    assert_eq!(port_again, replica1);
    assert_ne!(pid_again, pid);
}

/// Datagrams on `socket` until one satisfies `done` (all of them returned),
/// for at most `limit`.
fn notifications_until(
    socket: &UnixDatagram,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(seen);
        }
        socket.set_read_timeout(Some(left)).expect("set timeout");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let finished = done(&text);
                seen.push(text);
                if finished {
                    return Ok(seen);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(seen)
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
}

fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

#[test]
fn systemd_notify_ready_reloading_stopping() {
    let cluster = Cluster::shared();
    let files = GateFiles::write(cluster, "");
    let socket_path = files.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)
        .unwrap_or_else(|e| panic!("bind {}: {e}", socket_path.display()));
    let mut gate = EnvGate::spawn(cluster, files, &[("NOTIFY_SOCKET", &socket_path)]);

    let ready = notifications_until(&socket, Duration::from_secs(10), |d| has_line(d, "READY=1"));
    let ready = ready.unwrap_or_else(|seen| {
        panic!(
            "no READY=1 within 10 s of start (got {seen:?}); exited: {:?}; log:\n{}",
            gate.try_wait(),
            tail(&gate.log_contents(), 30)
        )
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gate.port)).is_ok(),
        "READY=1 ({ready:?}) came before PgGate listened on its port"
    );

    let before = monotonic_usec();
    gate.signal(libc::SIGHUP);
    let reload = notifications_until(&socket, Duration::from_secs(5), |d| has_line(d, "READY=1"))
        .unwrap_or_else(|seen| {
            panic!(
                "no READY=1 within 5 s of SIGHUP (got {seen:?}); pggate exited: {:?}; log:\n{}",
                gate.try_wait(),
                tail(&gate.log_contents(), 30)
            )
        });
    let after = monotonic_usec();
    let reloading = reload
        .iter()
        .position(|d| has_line(d, "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1 after SIGHUP: {reload:?}"));
    let datagram = &reload[reloading];
    let usec: u64 = datagram
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {datagram:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("MONOTONIC_USEC is not digits in {datagram:?}: {e}"));
    assert!(
        usec + 1_000 >= before && usec <= after + 1_000,
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC at the reload \
         (between {before} and {after})"
    );
    assert!(
        has_line(reload.last().unwrap(), "READY=1") && reloading < reload.len() - 1,
        "READY=1 must follow RELOADING=1: {reload:?}"
    );
    assert!(
        gate.try_wait().is_none(),
        "pggate exited on SIGHUP; log:\n{}",
        tail(&gate.log_contents(), 30)
    );

    gate.signal(libc::SIGTERM);
    let stopping = notifications_until(&socket, Duration::from_secs(3), |d| {
        has_line(d, "STOPPING=1")
    });
    if let Err(seen) = stopping {
        panic!(
            "no STOPPING=1 within 3 s of SIGTERM (got {seen:?}); log:\n{}",
            tail(&gate.log_contents(), 30)
        );
    }
    match gate.wait_exit(Duration::from_secs(5)) {
        Some(status) => assert_eq!(status.code(), Some(0), "exit status ({status})"),
        None => panic!("pggate did not exit within 5 s of SIGTERM with no clients"),
    }
}

#[test]
fn pool_min_idle_keeps_idle_connections_open() {
    let cluster = Cluster::shared();
    let db = "ops_min_idle";
    cluster.create_database(db, "postgres");
    let gate = PgGate::start(cluster, "[pool]\nmin_idle = 2\nsize = 4\n");
    // The pool exists once a session used it.
    let mut client = gate.connect("postgres", db);
    client.simple_query("SELECT 1").expect("a read");
    drop(client);
    let count = |port: u16| -> i64 {
        let mut monitor = cluster.connect_direct(port, "postgres", "postgres");
        let rows = monitor
            .query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .expect("count connections");
        rows[0].get(0)
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let counts: Vec<i64> = cluster.all_ports().iter().map(|&p| count(p)).collect();
        if counts.iter().all(|&n| n >= 2) {
            assert!(
                counts.iter().all(|&n| n <= 4),
                "min_idle opened more than pool.size: {counts:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "with min_idle = 2 every server should hold 2 idle connections of the pool: {counts:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn workers_zero_runs_one_worker_per_two_cores() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "[proxy]\nworkers = 0");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = (cores / 2).max(1);
    let mut client = gate.connect("postgres", "postgres");
    assert_eq!(simple_value(&mut client, "SELECT 1"), "1");
    let log = gate.log_contents();
    assert!(
        log.contains(&format!(" with {want} workers;")),
        "with workers = 0 on {cores} cores PgGate should run {want} workers; log:\n{}",
        tail(&log, 20)
    );
}

/// A new database with `marked()`, a function that returns the port of the
/// server that ran it and that no routing list names, on every server.
fn database_with_marked(cluster: &Cluster, prefix: &str) -> String {
    let db = common::new_database(cluster, prefix);
    common::on_primary_in(
        cluster,
        &db,
        "CREATE FUNCTION marked() RETURNS int LANGUAGE sql AS 'SELECT inet_server_port()'",
    );
    cluster.wait_replicas_caught_up();
    db
}

/// `SELECT marked()` as the unnamed statement: Parse, Bind, Execute, Sync
/// (what drivers send for a statement they do not prepare).
fn unnamed_marked_call() -> Vec<u8> {
    let mut batch = common::raw::parse_message("", "SELECT marked()", &[]);
    batch.extend(common::raw::bind_message("", "", &[]));
    batch.extend(common::raw::execute_message("", 0));
    batch.extend(common::raw::sync_message());
    batch
}

/// The port `marked()` returned in `reply`.
fn marked_port(reply: &[common::raw::Message], what: &str) -> u16 {
    reply
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| m.data_row().first().cloned().flatten())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{what}: got {reply:?}"))
}

#[test]
fn an_unnamed_statement_parsed_again_after_a_reload_is_routed_by_the_new_write_functions() {
    let cluster = Cluster::shared();
    let db = database_with_marked(cluster, "ops_unnamed");
    let metrics_port = free_port();
    let metrics = metrics_toml(metrics_port);
    let gate = PgGate::start(cluster, &format!("[proxy]\nworkers = 1\n{metrics}"));
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", &db);
    let mut run = |what: &str| marked_port(&conn.exchange(&unnamed_marked_call(), 1), what);
    for i in 0..3 {
        let port = run("before the reload");
        assert!(
            cluster.is_replica_port(port),
            "run {i}: a call of a function in no list ran on {port}, not a replica"
        );
    }
    gate.files.rewrite_config(
        cluster,
        &format!("[proxy]\nworkers = 1\n{metrics}[routing]\nwrite_functions = [\"marked\"]\n"),
    );
    gate.signal(libc::SIGHUP);
    wait_reloads(metrics_port, "success", 1.0, &gate);
    for i in 0..3 {
        let port = run("after the reload");
        assert_eq!(
            port, cluster.primary_port,
            "run {i}: once routing.write_functions lists it, the call must run on the primary"
        );
    }
}

#[test]
fn an_unnamed_statement_classified_before_a_reload_is_classified_again_when_parsed_again() {
    let cluster = Cluster::shared();
    let replica1 = cluster.replica_ports[0];
    let db = database_with_marked(cluster, "ops_unnamed_wait");
    let metrics_port = free_port();
    // One replica, one connection to it, no pipelining: a second read waits
    // for the connection while a read-only transaction holds it.
    let settings = format!(
        "[proxy]\nworkers = 1\n[pool]\nsize = 1\npipeline_window = \"0ms\"\n{}{}",
        metrics_toml(metrics_port),
        backends_toml(cluster, &["primary", "replica1"])
    );
    let gate = PgGate::start(cluster, &settings);
    let mut holder = gate.connect("postgres", &db);
    holder
        .batch_execute("BEGIN READ ONLY; SELECT 1")
        .unwrap_or_else(|e| panic!("BEGIN READ ONLY: {}", describe_error(&e)));
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", &db);
    // Classified as a read, it waits for the replica's one connection...
    conn.send(&unnamed_marked_call()).expect("send the batch");
    thread::sleep(Duration::from_millis(300));
    // ...while a reload lists the function as a write.
    gate.files.rewrite_config(
        cluster,
        &format!("{settings}[routing]\nwrite_functions = [\"marked\"]\n"),
    );
    gate.signal(libc::SIGHUP);
    wait_reloads(metrics_port, "success", 1.0, &gate);
    holder
        .batch_execute("COMMIT")
        .unwrap_or_else(|e| panic!("COMMIT: {}", describe_error(&e)));
    assert_eq!(
        marked_port(&conn.read_until_ready(), "the waiting run"),
        replica1,
        "the run routed before the reload"
    );
    // Parsed again, the same statement is judged by the new configuration.
    assert_eq!(
        marked_port(
            &conn.exchange(&unnamed_marked_call(), 1),
            "the run after the reload"
        ),
        cluster.primary_port,
        "the same unnamed statement, parsed after the reload, must run on the primary"
    );
}
