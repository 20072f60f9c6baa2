//! Integration tests of the core proxy against a real PostgreSQL cluster (a
//! primary and two streaming replicas built once for this test binary).
//!
//! Each test starts its own PgGate and is named after the promise it checks
//! (SPEC.md). Which server ran a statement is read from
//! `inet_server_port()` (or `SHOW port`). Statements go through the
//! simple query protocol (`simple_query`, `batch_execute`, psql, pgbench
//! `-M simple`). Tests that write use their own table or database, since
//! they run concurrently on the shared cluster.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{self, Ending, RawConn};
use common::tools::{self, run_with_timeout};
use common::{
    describe_error, pggate_bin, random_hex, server_port, simple_rows, simple_value, tail, Cluster,
    GateFiles, PgGate, CLEAR_USER, MD5_USER, SCRAM_USER,
};

/// Runs the PgGate binary with `args` (never a server: at most 10 s).
fn pggate(args: &[&str]) -> common::CmdOutput {
    let mut cmd = Command::new(pggate_bin());
    cmd.args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(10))
}

/// Number of connections to `db` as `user` that the server behind `monitor`
/// has right now.
fn sessions(monitor: &mut postgres::Client, db: &str, user: &str) -> i64 {
    simple_value(
        monitor,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = '{user}'"
        ),
    )
    .parse()
    .expect("count(*) is a number")
}

/// Waits until a statement containing `marker` is running on one of the
/// cluster's servers and returns that server's port.
fn wait_until_running(cluster: &Cluster, marker: &str) -> u16 {
    let mut monitors: Vec<(u16, postgres::Client)> = cluster
        .all_ports()
        .iter()
        .map(|&port| (port, cluster.connect_direct(port, "postgres", "postgres")))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (port, monitor) in monitors.iter_mut() {
            if simple_value(monitor, &sql) != "0" {
                return *port;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the statement marked {marker} never showed up as running on any server"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn harness_cluster_is_a_primary_and_two_streaming_replicas() {
    let cluster = Cluster::shared();
    for port in cluster.all_ports() {
        assert_eq!(cluster.psql(port, "postgres", "postgres", "SELECT 1"), "1");
    }
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            "SELECT pg_is_in_recovery()"
        ),
        "f"
    );
    for port in cluster.replica_ports {
        let mut replica = cluster.connect_direct(port, "postgres", "postgres");
        assert_eq!(
            simple_value(&mut replica, "SELECT pg_is_in_recovery()"),
            "t"
        );
        assert_eq!(server_port(&mut replica), port);
    }
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ),
        "2"
    );
    // A write on the primary is visible on both replicas once caught up.
    cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        "CREATE TABLE harness_check AS SELECT 42 AS answer",
    );
    cluster.wait_replicas_caught_up();
    for port in cluster.replica_ports {
        assert_eq!(
            cluster.psql(
                port,
                "postgres",
                "postgres",
                "SELECT answer FROM harness_check"
            ),
            "42"
        );
    }
    // The password users log in directly with their passwords.
    for (user, _) in [SCRAM_USER, MD5_USER, CLEAR_USER] {
        let mut client = cluster.connect_direct(cluster.primary_port, user, "postgres");
        assert_eq!(simple_value(&mut client, "SELECT current_user"), user);
    }
}

#[test]
fn check_accepts_valid_file_and_rejects_unknown_key_naming_it() {
    let cluster = Cluster::shared();

    let good = GateFiles::write(cluster, "[pool]\nsize = 3");
    let config = good.config_path.to_str().expect("UTF-8 path");
    let out = pggate(&["--check", "--config", config]);
    assert_eq!(out.code(), Some(0), "--check on a valid file: {out:?}");
    assert!(
        out.stdout.contains("configuration ok"),
        "--check on a valid file should print `configuration ok`: {out:?}"
    );

    let typo = GateFiles::write(cluster, "[pool]\nsise = 3");
    let config = typo.config_path.to_str().expect("UTF-8 path");
    let out = pggate(&["--check", "--config", config]);
    assert_eq!(out.code(), Some(1), "--check on an unknown key: {out:?}");
    assert!(
        out.combined().contains("sise"),
        "--check should name the unknown key `sise`: {out:?}"
    );
    assert!(
        out.combined().contains(config),
        "--check should name the file: {out:?}"
    );
    assert!(
        !out.stdout.contains("configuration ok"),
        "a bad file is not ok: {out:?}"
    );

    // Every problem is reported, not just the first.
    let two = GateFiles::write(cluster, "[pool]\nsise = 3\n[proxy]\nworkerz = 2");
    let config = two.config_path.to_str().expect("UTF-8 path");
    let out = pggate(&["--check", "--config", config]);
    assert_eq!(out.code(), Some(1), "--check with two problems: {out:?}");
    assert!(
        out.combined().contains("sise") && out.combined().contains("workerz"),
        "--check should name both unknown keys: {out:?}"
    );

    let out = pggate(&["--version"]);
    assert_eq!(out.code(), Some(0), "--version: {out:?}");
    let has_version = out.stdout.split_whitespace().any(|word| {
        let word = word.trim_start_matches('v');
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() >= 2
            && parts
                .iter()
                .take(2)
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    assert!(has_version, "--version should print a version: {out:?}");

    // --check reports a missing file as a problem found (exit 1) ...
    let out = pggate(&["--check", "--config", "/nonexistent/pggate.toml"]);
    assert_eq!(out.code(), Some(1), "--check of a missing file: {out:?}");
    assert!(
        out.combined().contains("/nonexistent/pggate.toml"),
        "--check should name the missing file: {out:?}"
    );
    // ... and starting with it is a configuration error (exit 2).
    let out = pggate(&["--config", "/nonexistent/pggate.toml"]);
    assert_eq!(
        out.code(),
        Some(2),
        "starting with a missing explicit config file: {out:?}"
    );
    let out = pggate(&["--no-such-option"]);
    assert_eq!(out.code(), Some(2), "bad usage: {out:?}");
}

#[test]
fn reads_go_to_replicas_spread_over_both() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut ports = Vec::new();
    for _ in 0..20 {
        let mut client = gate.connect("postgres", "postgres");
        ports.push(server_port(&mut client));
    }
    let mut client = gate.connect("postgres", "postgres");
    for _ in 0..20 {
        ports.push(server_port(&mut client));
    }
    assert!(
        ports.iter().all(|p| cluster.is_replica_port(*p)),
        "every read should run on a replica {:?}; ran on {ports:?}",
        cluster.replica_ports
    );
    for replica in cluster.replica_ports {
        assert!(
            ports.contains(&replica),
            "replica {replica} served none of 40 reads: {ports:?}"
        );
    }
    // Other read forms go to replicas too.
    for sql in ["SHOW port", "VALUES (inet_server_port())"] {
        let port: u16 = simple_value(&mut client, sql).parse().expect("a port");
        assert!(cluster.is_replica_port(port), "{sql} ran on {port}");
    }
}

#[test]
fn writes_and_ddl_go_to_primary() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let primary = cluster.primary_port.to_string();
    let mut client = gate.connect("postgres", "postgres");
    client
        .batch_execute("CREATE TABLE route_writes (id int, port int)")
        .unwrap_or_else(|e| panic!("CREATE TABLE: {}", describe_error(&e)));
    let cases = [
        "INSERT INTO route_writes VALUES (1, inet_server_port()) RETURNING inet_server_port()",
        "UPDATE route_writes SET id = 2 RETURNING inet_server_port()",
        "WITH moved AS (UPDATE route_writes SET id = 3 RETURNING 1) SELECT inet_server_port()",
        "SELECT inet_server_port() FROM route_writes FOR UPDATE",
        "DELETE FROM route_writes RETURNING inet_server_port()",
    ];
    for sql in cases {
        assert_eq!(simple_value(&mut client, sql), primary, "{sql}");
    }
    client
        .batch_execute("CREATE TABLE route_ctas AS SELECT inet_server_port() AS port")
        .unwrap_or_else(|e| panic!("CREATE TABLE AS: {}", describe_error(&e)));
    let direct = cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        "SELECT port FROM route_ctas",
    );
    assert_eq!(direct, primary, "CREATE TABLE AS ran on the primary");
    // The DDL happened on the primary (replicas cannot run it at all).
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname IN ('route_writes', 'route_ctas')"
        ),
        "2"
    );
}

#[test]
fn transaction_runs_wholly_on_primary() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    for _ in 0..3 {
        client.batch_execute("BEGIN").expect("BEGIN");
        let first = server_port(&mut client);
        let second = server_port(&mut client);
        client.batch_execute("COMMIT").expect("COMMIT");
        assert_eq!(
            (first, second),
            (cluster.primary_port, cluster.primary_port),
            "both reads inside BEGIN...COMMIT run on the primary"
        );
    }
    // START TRANSACTION, and a transaction in one multi-statement Query.
    client.batch_execute("START TRANSACTION").expect("START");
    assert_eq!(server_port(&mut client), cluster.primary_port);
    client.batch_execute("ROLLBACK").expect("ROLLBACK");
    let rows = simple_rows(
        &mut client,
        "BEGIN; SELECT inet_server_port(); SELECT inet_server_port(); COMMIT",
    );
    let primary = Some(cluster.primary_port.to_string());
    assert!(
        rows.iter().all(|row| row[0] == primary) && rows.len() == 2,
        "{rows:?}"
    );
    // After the transaction, reads go back to replicas.
    assert!(cluster.is_replica_port(server_port(&mut client)));
}

#[test]
fn begin_read_only_runs_on_a_replica() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    for begin in ["BEGIN READ ONLY", "START TRANSACTION READ ONLY"] {
        client.batch_execute(begin).expect(begin);
        let first = server_port(&mut client);
        let second = server_port(&mut client);
        assert_eq!(
            simple_value(&mut client, "SELECT pg_is_in_recovery()"),
            "t",
            "{begin}"
        );
        client.batch_execute("COMMIT").expect("COMMIT");
        assert!(
            cluster.is_replica_port(first),
            "{begin}: ran on {first}, not a replica"
        );
        assert_eq!(
            first, second,
            "{begin}: one transaction stays on one replica"
        );
    }
}

#[test]
fn set_pins_session_to_primary_and_keeps_setting() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    // Not pinned yet: a read goes to a replica.
    assert!(cluster.is_replica_port(server_port(&mut client)));
    client
        .batch_execute("SET work_mem = '7MB'")
        .expect("SET work_mem");
    let primary = cluster.primary_port.to_string();
    for i in 0..10 {
        let rows = simple_rows(
            &mut client,
            "SELECT inet_server_port(), current_setting('work_mem')",
        );
        assert_eq!(
            rows,
            vec![vec![Some(primary.clone()), Some("7MB".to_string())]],
            "statement {i} after SET"
        );
    }
    // Another client is not affected by the pinned one.
    let mut other = gate.connect("postgres", "postgres");
    let rows = simple_rows(
        &mut other,
        "SELECT inet_server_port(), current_setting('work_mem')",
    );
    let port: u16 = rows[0][0].as_deref().unwrap_or("0").parse().expect("port");
    assert!(cluster.is_replica_port(port), "{rows:?}");
    assert_ne!(
        rows[0][1].as_deref(),
        Some("7MB"),
        "a SET leaked to another client"
    );
}

#[test]
fn pool_size_caps_backend_connections_per_backend_database_user() {
    let cluster = Cluster::shared();
    let db = "pool_cap";
    cluster.create_database(db, "postgres");
    let gate = PgGate::start(cluster, "[pool]\nsize = 4");
    let clients: Vec<postgres::Client> = (0..30).map(|_| gate.connect("postgres", db)).collect();
    // Login relay connections beyond the pool are closed after login; let
    // them go before counting.
    thread::sleep(Duration::from_millis(300));

    let mut monitors: Vec<postgres::Client> = cluster
        .all_ports()
        .iter()
        .map(|&port| cluster.connect_direct(port, "postgres", "postgres"))
        .collect();
    let mut max_seen = [0i64; 3];
    let failures: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                s.spawn(move || -> Result<usize, String> {
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let mut done = 0;
                    while Instant::now() < deadline {
                        let result = if done % 2 == 0 {
                            client.batch_execute("SELECT pg_sleep(0.05)")
                        } else {
                            client
                                .batch_execute("BEGIN")
                                .and_then(|()| client.batch_execute("SELECT pg_sleep(0.02)"))
                                .and_then(|()| client.batch_execute("COMMIT"))
                        };
                        result.map_err(|e| describe_error(&e))?;
                        done += 1;
                    }
                    Ok(done)
                })
            })
            .collect();
        while workers.iter().any(|w| !w.is_finished()) {
            for (i, monitor) in monitors.iter_mut().enumerate() {
                max_seen[i] = max_seen[i].max(sessions(monitor, db, "postgres"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        workers
            .into_iter()
            .filter_map(|w| match w.join() {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("client thread panicked".to_string()),
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 30 clients failed: {failures:?}",
        failures.len()
    );
    for (i, port) in cluster.all_ports().iter().enumerate() {
        assert!(
            max_seen[i] <= 4,
            "{} had {} connections for ({db}, postgres) with pool.size = 4",
            cluster.server_name(*port),
            max_seen[i]
        );
        assert!(
            max_seen[i] >= 1,
            "{} served none of the load",
            cluster.server_name(*port)
        );
    }
}

#[test]
fn idle_clients_hold_no_more_than_the_pool() {
    let cluster = Cluster::shared();
    let db = "pool_idle";
    cluster.create_database(db, "postgres");
    let gate = PgGate::start(cluster, "[pool]\nsize = 4");
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = gate.connect("postgres", db);
        assert_eq!(simple_value(&mut client, "SELECT 1"), "1");
        clients.push(client);
    }
    thread::sleep(Duration::from_millis(500));
    for port in cluster.all_ports() {
        let mut monitor = cluster.connect_direct(port, "postgres", "postgres");
        let count = sessions(&mut monitor, db, "postgres");
        assert!(
            count <= 4,
            "{} holds {count} connections for 20 idle clients with pool.size = 4",
            cluster.server_name(port)
        );
    }
    // The idle clients are still usable.
    for client in clients.iter_mut() {
        assert_eq!(simple_value(client, "SELECT 2"), "2");
    }
}

#[test]
fn client_vanishing_in_transaction_leaves_no_idle_in_transaction_and_rolls_back() {
    let cluster = Cluster::shared();
    let db = "vanish";
    cluster.create_database(db, "postgres");
    // One connection per pool: the next client gets the very same backend.
    let gate = PgGate::start(cluster, "[pool]\nsize = 1");
    cluster.psql(
        cluster.primary_port,
        "postgres",
        db,
        "CREATE TABLE marks (marker text)",
    );
    let marker = format!("vanished-{}", random_hex(12));

    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", db);
    let begin = conn.query("BEGIN");
    assert!(raw::errors(&begin).is_empty(), "{begin:?}");
    let insert = conn.query(&format!(
        "INSERT INTO marks VALUES ('{marker}'); SELECT pg_backend_pid()"
    ));
    assert!(raw::errors(&insert).is_empty(), "{insert:?}");
    assert_eq!(
        insert.last().map(|m| m.ready_status()),
        Some(b'T'),
        "inside a transaction: {insert:?}"
    );
    let backend_pid = raw::rows(&insert)[0][0].clone().expect("pg_backend_pid()");

    let mut primary = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
    let state_of_backend = format!("SELECT state FROM pg_stat_activity WHERE pid = {backend_pid}");
    assert_eq!(
        simple_value(&mut primary, &state_of_backend),
        "idle in transaction",
        "the raw client's transaction is open on the primary before it vanishes"
    );

    conn.vanish();

    let idle_in_transaction = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND state LIKE 'idle in transaction%'"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if simple_value(&mut primary, &idle_in_transaction) == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "5 s after the client vanished, the primary still has a backend idle in \
             transaction for {db}:\n{:?}",
            simple_rows(
                &mut primary,
                "SELECT pid, state, query FROM pg_stat_activity WHERE datname = 'vanish'"
            )
        );
        thread::sleep(Duration::from_millis(50));
    }

    // The next client of that pool must not inherit the transaction: its
    // COMMIT would commit the marker if it did.
    let mut next = gate.connect("postgres", db);
    next.batch_execute("INSERT INTO marks VALUES ('next')")
        .expect("INSERT by the next client");
    let _ = next.batch_execute("COMMIT");
    let marker_rows = cluster.psql(
        cluster.primary_port,
        "postgres",
        db,
        &format!("SELECT count(*) FROM marks WHERE marker = '{marker}'"),
    );
    assert_eq!(
        marker_rows, "0",
        "the vanished client's insert was committed"
    );
    let next_rows = cluster.psql(
        cluster.primary_port,
        "postgres",
        db,
        "SELECT count(*) FROM marks WHERE marker = 'next'",
    );
    assert_eq!(next_rows, "1", "the next client's own insert autocommits");
}

#[test]
fn passthrough_auth_scram_md5_cleartext() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    for (user, password) in [SCRAM_USER, MD5_USER, CLEAR_USER] {
        let mut client = gate
            .try_connect(user, Some(password), "postgres")
            .unwrap_or_else(|e| panic!("{user} with the right password: {}", describe_error(&e)));
        for _ in 0..4 {
            let rows = simple_rows(&mut client, "SELECT inet_server_port(), current_user");
            let port: u16 = rows[0][0].as_deref().unwrap_or("0").parse().expect("port");
            assert!(
                cluster.is_replica_port(port),
                "{user}: a read should log in to a replica with credentials_file, ran on {port}"
            );
            assert_eq!(rows[0][1].as_deref(), Some(user));
        }
        client.batch_execute("BEGIN").expect("BEGIN");
        let rows = simple_rows(&mut client, "SELECT inet_server_port(), current_user");
        client.batch_execute("COMMIT").expect("COMMIT");
        assert_eq!(
            rows,
            vec![vec![
                Some(cluster.primary_port.to_string()),
                Some(user.to_string())
            ]]
        );

        let through_gate = gate
            .try_connect(user, Some("wrong password"), "postgres")
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        let through_gate = through_gate
            .as_db_error()
            .unwrap_or_else(|| panic!("{user}: not a server error: {through_gate:?}"));
        assert_eq!(through_gate.code().code(), "28P01", "{user}");
        assert_eq!(
            through_gate.message(),
            format!("password authentication failed for user \"{user}\"")
        );
        // The same words PostgreSQL itself uses.
        let direct = common::cluster::direct_config(cluster.primary_port, user, "postgres")
            .password("wrong password")
            .connect(postgres::NoTls)
            .err()
            .expect("direct login with a wrong password fails");
        assert_eq!(
            direct.as_db_error().map(|d| d.message()),
            Some(through_gate.message())
        );
    }
    // No password at all where one is needed: refused, not let through.
    let refused = gate.try_connect(SCRAM_USER.0, None, "postgres");
    assert!(refused.is_err(), "scram_user logged in without a password");
}

#[test]
fn users_never_see_each_others_connections() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "[pool]\nsize = 2");
    let seen: Vec<BTreeSet<(String, String)>> = thread::scope(|s| {
        let gate = &gate;
        let threads: Vec<_> = [SCRAM_USER.0, MD5_USER.0]
            .into_iter()
            .map(|user| {
                s.spawn(move || {
                    let mut clients: Vec<postgres::Client> =
                        (0..3).map(|_| gate.connect(user, "postgres")).collect();
                    let mut seen = BTreeSet::new();
                    for i in 0..30 {
                        let client = &mut clients[i % 3];
                        let in_transaction = i % 4 == 3;
                        if in_transaction {
                            client.batch_execute("BEGIN").expect("BEGIN");
                        }
                        let rows = simple_rows(
                            client,
                            "SELECT current_user, pg_backend_pid(), inet_server_port()",
                        );
                        if in_transaction {
                            client.batch_execute("COMMIT").expect("COMMIT");
                        }
                        let row = &rows[0];
                        assert_eq!(row[0].as_deref(), Some(user), "query {i} of {user}");
                        seen.insert((row[2].clone().expect("port"), row[1].clone().expect("pid")));
                    }
                    seen
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect()
    });
    let shared: Vec<_> = seen[0].intersection(&seen[1]).collect();
    assert!(
        shared.is_empty(),
        "backend connections (port, pid) used by both users: {shared:?}"
    );
    assert!(!seen[0].is_empty() && !seen[1].is_empty());
}

#[test]
fn cancel_stops_pg_sleep_within_a_second() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");

    // (a) psql's own cancel (SIGINT -> PQcancel through PgGate).
    let marker = format!("cancel_a_{}", random_hex(8));
    let mut cmd = tools::client_command("psql", gate.port, "postgres", "postgres");
    cmd.args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        &format!("SELECT pg_sleep(5) /* {marker} */"),
    ]);
    let psql = tools::spawn_captured(&mut cmd, None);
    wait_until_running(cluster, &marker);
    psql.signal(libc::SIGINT);
    let signalled = Instant::now();
    let out = psql.wait(Duration::from_secs(10));
    let after_signal = signalled.elapsed();
    assert!(
        out.stderr
            .contains("canceling statement due to user request"),
        "psql was not cancelled: {out:?}"
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        after_signal < Duration::from_secs(1),
        "psql ended {after_signal:?} after SIGINT"
    );

    // (b) the postgres crate's cancel token, from another thread.
    let marker = format!("cancel_b_{}", random_hex(8));
    let mut client = gate.connect("postgres", "postgres");
    let token = client.cancel_token();
    let sql = format!("SELECT pg_sleep(5) /* {marker} */");
    let (result, after_cancel) = thread::scope(|s| {
        let sleeper = s.spawn(|| {
            let result = client.simple_query(&sql).map(|_| ());
            (result, Instant::now())
        });
        wait_until_running(cluster, &marker);
        let cancelled = Instant::now();
        token
            .cancel_query(postgres::NoTls)
            .unwrap_or_else(|e| panic!("send the cancel request: {e}"));
        let (result, ended) = sleeper.join().expect("query thread");
        (result, ended.saturating_duration_since(cancelled))
    });
    let error = result.expect_err("the cancelled query fails");
    assert_eq!(
        error.as_db_error().map(|d| d.code().code()),
        Some("57014"),
        "{}",
        describe_error(&error)
    );
    assert!(
        after_cancel < Duration::from_secs(1),
        "query ended {after_cancel:?} after the cancel"
    );
    assert_eq!(
        simple_value(&mut client, "SELECT 1"),
        "1",
        "the session stays usable"
    );

    // (c) a CancelRequest with a wrong key changes nothing ...
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    let (pid, key) = conn.backend_key.expect("PgGate sends BackendKeyData");
    let marker = format!("cancel_c_{}", random_hex(8));
    conn.send_query(&format!("SELECT pg_sleep(1), 'done' /* {marker} */"));
    wait_until_running(cluster, &marker);
    raw::send_cancel_request(gate.port, pid, key.wrapping_add(1));
    raw::send_cancel_request(gate.port, pid ^ 0x5a5a, key);
    let answer = conn.read_until_ready();
    assert!(
        raw::errors(&answer).is_empty(),
        "a wrong key cancelled the query: {answer:?}"
    );
    assert_eq!(
        raw::rows(&answer),
        vec![vec![Some(String::new()), Some("done".to_string())]]
    );
    // ... while the right key from the same raw client does cancel.
    let marker = format!("cancel_c2_{}", random_hex(8));
    conn.send_query(&format!("SELECT pg_sleep(5) /* {marker} */"));
    wait_until_running(cluster, &marker);
    raw::send_cancel_request(gate.port, pid, key);
    let answer = conn.read_until_ready();
    let errors = raw::errors(&answer);
    assert_eq!(
        errors.first().and_then(|e| e.sqlstate()).as_deref(),
        Some("57014"),
        "{answer:?}"
    );
}

#[test]
fn startup_parameters_hold_on_replica_reads() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    for _ in 0..3 {
        let mut config = gate.config("postgres", "postgres");
        config
            .options("-c search_path=myschema,public")
            .application_name("gate_test");
        let mut client = config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect with options: {}", describe_error(&e)));
        for i in 0..5 {
            let search_path = simple_value(&mut client, "SHOW search_path");
            assert_eq!(
                search_path.replace(' ', ""),
                "myschema,public",
                "SHOW search_path, statement {i}"
            );
            let rows = simple_rows(
                &mut client,
                "SELECT current_setting('application_name'), inet_server_port()",
            );
            assert_eq!(
                rows[0][0].as_deref(),
                Some("gate_test"),
                "application_name, statement {i}"
            );
            let port: u16 = rows[0][1].as_deref().unwrap_or("0").parse().expect("port");
            assert!(
                cluster.is_replica_port(port),
                "statement {i} is a read and should run on a replica, ran on {port}"
            );
        }
    }
}

#[test]
fn copy_in_and_out() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    client
        .batch_execute("CREATE TABLE copy_rows (id int PRIMARY KEY, v text)")
        .unwrap_or_else(|e| panic!("CREATE TABLE: {}", describe_error(&e)));
    let data: String = (1..=1000).map(|i| format!("{i}\tvalue {i}\n")).collect();

    let out = tools::psql_with_stdin(
        gate.port,
        "postgres",
        "postgres",
        &["-q", "-c", "COPY copy_rows FROM STDIN"],
        Some(data.as_bytes()),
    );
    out.assert_success("COPY FROM STDIN through pggate");
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            "SELECT count(*), sum(id) FROM copy_rows"
        ),
        "1000|500500"
    );

    cluster.wait_replicas_caught_up();
    let out = tools::psql(
        gate.port,
        "postgres",
        "postgres",
        &[
            "-q",
            "-c",
            "COPY (SELECT id, v FROM copy_rows ORDER BY id) TO STDOUT",
        ],
    );
    out.assert_success("COPY TO STDOUT through pggate");
    assert!(out.stdout == data, "COPY TO STDOUT returned other rows");

    let out = tools::psql(
        gate.port,
        "postgres",
        "postgres",
        &["-q", "-c", "COPY (SELECT inet_server_port()) TO STDOUT"],
    );
    out.assert_success("COPY TO STDOUT of the server port");
    let port: u16 = out.stdout.trim().parse().expect("a port number");
    assert!(
        cluster.is_replica_port(port),
        "COPY TO ran on {port}, not a replica"
    );
    // The session is still usable after COPY.
    assert_eq!(
        simple_value(&mut client, "SELECT count(*) FROM copy_rows"),
        "1000"
    );
}

#[test]
fn pgbench_init_and_select_only_with_no_failures() {
    let cluster = Cluster::shared();
    let db = "bench";
    cluster.create_database(db, "postgres");
    let gate = PgGate::start(cluster, "");

    tools::pgbench_init_through(cluster, gate.port, db);

    let out = tools::pgbench(
        gate.port,
        "postgres",
        db,
        &["-S", "-M", "simple", "-c", "20", "-j", "2", "-T", "5"],
        Duration::from_secs(60),
    );
    out.assert_success("pgbench -S -M simple through pggate");
    assert!(
        out.stdout.contains("number of failed transactions: 0"),
        "pgbench reported failures:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let processed: u64 = out
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no processed count in pgbench output:\n{}", out.stdout));
    assert!(processed > 0, "pgbench processed nothing:\n{}", out.stdout);
}

/// Sends `bytes` on a fresh connection and requires an ErrorResponse or a
/// close within 5 s. Returns the error, if one came.
fn expect_error_or_close(port: u16, bytes: &[u8], what: &str) -> Option<raw::Message> {
    let mut conn = RawConn::connect(port);
    // PgGate may close before reading everything: a failed write is fine.
    let _ = conn.send(bytes);
    match conn.error_or_close_within(Duration::from_secs(5)) {
        Ending::Error(e) => {
            assert!(
                e.sqlstate().is_some(),
                "{what}: error without SQLSTATE {e:?}"
            );
            Some(e)
        }
        Ending::Closed => None,
    }
}

/// PgGate's own protocol errors are 08P01 and say they come from PgGate.
fn assert_own_protocol_error(error: Option<raw::Message>, codes: &[&str], what: &str) {
    if let Some(e) = error {
        let code = e.sqlstate().unwrap_or_default();
        assert!(codes.contains(&code.as_str()), "{what}: {e:?}");
        let text = e.text().unwrap_or_default();
        assert!(text.starts_with("pggate: "), "{what}: {e:?}");
    }
}

#[test]
fn garbage_gets_an_error_or_a_close_and_others_are_served() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut bystander = gate.connect("postgres", "postgres");
    let still_serving = |client: &mut postgres::Client, after: &str| {
        let rows = client
            .simple_query("SELECT 1")
            .unwrap_or_else(|e| panic!("after {after}: {}", describe_error(&e)));
        let values: Vec<Option<&str>> = rows
            .iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(row.get(0)),
                _ => None,
            })
            .collect();
        assert_eq!(values, vec![Some("1")], "after {after}");
    };

    // (a) a startup length of 2.
    let e = expect_error_or_close(gate.port, &[0, 0, 0, 2], "length 2");
    assert_own_protocol_error(e, &["08P01"], "length 2");
    still_serving(&mut bystander, "length 2");

    // (b) an HTTP request.
    let e = expect_error_or_close(gate.port, b"GET / HTTP/1.1\r\n\r\n", "HTTP");
    assert_own_protocol_error(e, &["08P01"], "HTTP");
    still_serving(&mut bystander, "HTTP");

    // (c) an unknown protocol code 1234/9999.
    let code = (1234 << 16) | 9999;
    let e = expect_error_or_close(gate.port, &raw::request_message(code), "1234/9999");
    assert_own_protocol_error(e, &["08P01", "0A000"], "1234/9999");
    still_serving(&mut bystander, "1234/9999");

    // (d) a huge declared length: rejected, not waited for.
    let mut huge = 0x7fff_ffffi32.to_be_bytes().to_vec();
    huge.extend_from_slice(&raw::PROTOCOL_3_0.to_be_bytes());
    let e = expect_error_or_close(gate.port, &huge, "0x7fffffff");
    assert_own_protocol_error(e, &["08P01"], "0x7fffffff");
    still_serving(&mut bystander, "0x7fffffff");

    // (e) after a proper login: an unknown message type, then a length of 2.
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    let _ = conn.send(&[b'q', 0, 0, 0, 4]);
    if let Ending::Error(e) = conn.error_or_close_within(Duration::from_secs(5)) {
        assert_eq!(e.sqlstate().as_deref(), Some("08P01"), "type 'q': {e:?}");
    }
    still_serving(&mut bystander, "type 'q'");
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    let _ = conn.send(&[b'Q', 0, 0, 0, 2]);
    if let Ending::Error(e) = conn.error_or_close_within(Duration::from_secs(5)) {
        assert_eq!(
            e.sqlstate().as_deref(),
            Some("08P01"),
            "Query length 2: {e:?}"
        );
    }
    still_serving(&mut bystander, "Query length 2");

    // (f) a megabyte of random bytes.
    let noise = common::random_bytes(1 << 20);
    let e = expect_error_or_close(gate.port, &noise, "1 MB of noise");
    assert_own_protocol_error(e, &["08P01", "0A000"], "1 MB of noise");
    still_serving(&mut bystander, "1 MB of noise");

    // SSLRequest and GSSENCRequest are declined with 'N'; the startup that
    // follows on the same connection works.
    let mut conn = RawConn::connect(gate.port);
    conn.send(&raw::request_message(raw::SSL_REQUEST_CODE))
        .expect("send SSLRequest");
    assert_eq!(conn.read_byte().expect("answer to SSLRequest"), Some(b'N'));
    conn.login("postgres", "postgres");
    assert_eq!(
        raw::rows(&conn.query("SELECT 1")),
        vec![vec![Some("1".into())]]
    );

    let mut conn = RawConn::connect(gate.port);
    conn.send(&raw::request_message(raw::GSSENC_REQUEST_CODE))
        .expect("send GSSENCRequest");
    assert_eq!(
        conn.read_byte().expect("answer to GSSENCRequest"),
        Some(b'N')
    );
    conn.send(&raw::request_message(raw::SSL_REQUEST_CODE))
        .expect("send SSLRequest after GSSENCRequest");
    assert_eq!(conn.read_byte().expect("answer to SSLRequest"), Some(b'N'));
    conn.login("postgres", "postgres");
    assert_eq!(
        raw::rows(&conn.query("SELECT 1")),
        vec![vec![Some("1".into())]]
    );

    // Replication connections are refused with an error.
    let mut conn = RawConn::connect(gate.port);
    conn.send(&raw::startup_message(&[
        ("user", "postgres"),
        ("database", "postgres"),
        ("replication", "true"),
    ]))
    .expect("send replication startup");
    match conn.error_or_close_within(Duration::from_secs(5)) {
        Ending::Error(e) => {
            assert_eq!(e.sqlstate().as_deref(), Some("28000"), "{e:?}");
            assert!(
                e.text().unwrap_or_default().starts_with("pggate: "),
                "{e:?}"
            );
        }
        Ending::Closed => panic!("a replication startup got no ErrorResponse"),
    }

    still_serving(&mut bystander, "everything");
    let mut fresh = gate.connect("postgres", "postgres");
    still_serving(&mut fresh, "everything, new client");
}

/// PgGate with one pooled connection to the primary, which every query
/// here then runs on (`pool_extra`: more `[pool]` keys).
fn one_connection_gate(cluster: &Cluster, pool_extra: &str) -> PgGate {
    PgGate::start(
        cluster,
        &format!("[pool]\nsize = 1\n{pool_extra}\n[routing]\nreads = \"primary\"\n"),
    )
}

/// A client connection whose socket has a 4 KiB receive buffer, set before
/// connecting so that the TCP window stays small: PgGate's writes to it back
/// up almost at once, as they would to a slow client far away.
fn small_window_conn(port: u16) -> RawConn {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket calls on a descriptor made here; it is owned by
    // the `OwnedFd` as soon as it exists, so every path closes it.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let size: libc::c_int = 4096;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the option value and the address are live locals of the
    // sizes passed.
    unsafe {
        let r = libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of_val(&size) as libc::socklen_t,
        );
        assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let r = libc::connect(
            raw,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of_val(&addr) as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    }
    let stream = std::net::TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set read timeout");
    RawConn {
        stream,
        backend_key: None,
        parameters: Vec::new(),
    }
}

/// `SELECT 41 + 1` on `conn` answers 42 within 10 s (`when` names the moment).
fn answers_42(conn: &mut RawConn, gate: &PgGate, when: &str) {
    conn.send(&raw::query_message("SELECT 41 + 1"))
        .expect("send the small query");
    let reply = conn.read_until_readies_within(1, Duration::from_secs(10));
    let rows: Vec<_> = reply.iter().filter(|m| m.tag == b'D').collect();
    assert!(
        rows.len() == 1 && rows[0].data_row() == vec![Some("42".to_string())],
        "{when}: SELECT 41 + 1 got {reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
}

/// Reads raw bytes from `conn` until the stream ends in a ReadyForQuery
/// (without parsing the result: a 12 MB DataRow arrives 8 KiB at a time
/// through a small window); returns how many bytes came.
fn read_bytes_until_ready(conn: &mut RawConn, limit: Duration) -> usize {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let mut tail: Vec<u8> = Vec::new();
    let mut total = 0;
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "no ReadyForQuery within {limit:?} ({total} bytes read)"
        );
        let n = conn.stream.read(&mut buf).expect("read the big result");
        assert!(n > 0, "PgGate closed the connection after {total} bytes");
        total += n;
        tail.extend_from_slice(&buf[..n]);
        let keep = tail.len().saturating_sub(6);
        tail.drain(..keep);
        if tail == b"Z\0\0\0\x05I" {
            return total;
        }
    }
}

#[test]
fn a_connection_released_while_its_client_lagged_behind_serves_the_next_query() {
    let cluster = Cluster::shared();
    // One connection, so every query here runs on the same one.
    let gate = one_connection_gate(cluster, "");
    let mut conn = small_window_conn(gate.port);
    conn.login("postgres", "postgres");
    for round in 1..=3 {
        // PgGate stops reading the server while more than its high-water
        // mark waits for this client, and the result's end (with
        // ReadyForQuery) arrives while it is still queued: the connection
        // goes back to the pool then, and must not stay paused.
        conn.send(&raw::query_message("SELECT repeat('x', 12000000)"))
            .expect("send the big query");
        // Not reading for a while lets PgGate's output to this client back up.
        thread::sleep(Duration::from_millis(200));
        let total = read_bytes_until_ready(&mut conn, Duration::from_secs(30));
        assert!(total > 12_000_000, "round {round}: only {total} bytes");
        // Every write PgGate had queued for this client is done: no later
        // "writable" event can resume the connection by chance.
        thread::sleep(Duration::from_millis(100));
        answers_42(
            &mut conn,
            &gate,
            &format!("round {round}, after a big result"),
        );
    }
}

#[test]
fn a_client_that_left_mid_transaction_with_output_backed_up_frees_its_connection() {
    let cluster = Cluster::shared();
    // One connection, so the next client needs that very one back, after
    // PgGate has rolled back the transaction the first one left open.
    let gate = one_connection_gate(cluster, "checkout_timeout = \"3s\"\n");
    use std::io::Read;
    const RESULT: usize = 12_000_000;
    // Leave with this much of the result unread: somewhere in the sweep the
    // server's ReadyForQuery has reached PgGate while the rest of the result
    // is still queued for the client.
    for unread_kib in (256..=6144).step_by(512) {
        let mut conn = small_window_conn(gate.port);
        conn.login("postgres", "postgres");
        conn.send(&raw::query_message(&format!(
            "BEGIN; SELECT repeat('x', {RESULT})"
        )))
        .expect("send the big query");
        let stop_at = RESULT - unread_kib * 1024;
        let mut total = 0;
        let mut last: usize = 0;
        let mut buf = vec![0u8; 8 * 1024];
        while total < stop_at {
            // What stopped the stream, if it stops: the last bytes show an
            // error (53300 when no connection came free) or a bare stall.
            let n = conn.stream.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "round with {unread_kib} KiB to leave unread: {e} after {total} bytes; \
                     the last ones: {:?}",
                    String::from_utf8_lossy(&buf[last.saturating_sub(200)..last])
                )
            });
            assert!(n > 0, "PgGate closed the connection after {total} bytes");
            total += n;
            last = n;
        }
        thread::sleep(Duration::from_millis(50));
        drop(conn);
        let mut next = RawConn::connect(gate.port);
        next.login("postgres", "postgres");
        answers_42(
            &mut next,
            &gate,
            &format!("the next client, after one left with {unread_kib} KiB unread"),
        );
    }
}

/// The process id of the server `conn` is on now.
fn server_pid(conn: &mut RawConn) -> i32 {
    conn.query("SELECT pg_backend_pid()")
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| m.data_row().first().cloned().flatten())
        .and_then(|p| p.parse().ok())
        .expect("the server's process id")
}

/// Sends `signal` to a server process (the tests run as root).
fn signal_server(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) with a process id and a signal number; no memory is
    // shared.
    let r = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_server_that_dies_under_a_large_pipelined_batch_leaves_the_client_usable() {
    let cluster = Cluster::shared();
    // One connection, so the big query runs on the server process whose
    // id the first query reports.
    let gate = one_connection_gate(cluster, "");
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    let pid = server_pid(&mut conn);
    // A stopped server takes nothing: what PgGate forwards backs up, and it
    // stops reading this client for a while.
    signal_server(pid, libc::SIGSTOP);
    // Once it runs again it reads this, then ends its own session (57P01).
    let big = format!(
        "SELECT pg_terminate_backend(pg_backend_pid()), length('{}')",
        "x".repeat(8_000_000)
    );
    conn.send(&raw::query_message(&big))
        .expect("send the big query");
    thread::sleep(Duration::from_millis(300));
    // Pipelined behind it, on the same connection.
    conn.send(&raw::query_message("SELECT 1"))
        .expect("send the pipelined query");
    thread::sleep(Duration::from_millis(200));
    signal_server(pid, libc::SIGCONT);
    // Both batches end (each with its ReadyForQuery): the server's own
    // FATAL is passed on, and what it did not answer fails with 08006.
    let reply = conn.read_until_readies_within(2, Duration::from_secs(10));
    let readies = reply.iter().filter(|m| m.tag == b'Z').count();
    let lost = reply
        .iter()
        .filter(|m| m.tag == b'E' && m.sqlstate().as_deref() == Some("08006"))
        .count();
    assert!(
        readies == 2 && lost >= 1,
        "after the server died under a pipelined batch: {reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
    // The session goes on, on a new connection.
    answers_42(&mut conn, &gate, "after the server died");
}

#[test]
fn a_client_paused_behind_a_server_that_is_terminated_is_read_again() {
    let cluster = Cluster::shared();
    let gate = one_connection_gate(cluster, "");
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    let pid = server_pid(&mut conn);
    // The server sleeps and reads nothing, so the 8 MB query pipelined
    // behind the sleep backs up in PgGate, which stops reading this client:
    // the third query stays in the client's socket.
    conn.send(&raw::query_message("SELECT pg_sleep(30)"))
        .expect("send the sleep");
    let big = format!("SELECT length('{}')", "x".repeat(8_000_000));
    conn.send(&raw::query_message(&big))
        .expect("send the big query");
    thread::sleep(Duration::from_millis(300));
    conn.send(&raw::query_message("SELECT 41 + 1"))
        .expect("send the small query");
    thread::sleep(Duration::from_millis(200));
    let mut direct = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
    direct
        .simple_query(&format!("SELECT pg_terminate_backend({pid})"))
        .expect("terminate the sleeping server process");
    // The two batches on the lost server fail; the third is read and runs
    // on a new connection.
    let reply = conn.read_until_readies_within(3, Duration::from_secs(10));
    let readies = reply.iter().filter(|m| m.tag == b'Z').count();
    let answered = reply
        .iter()
        .any(|m| m.tag == b'D' && m.data_row() == vec![Some("42".to_string())]);
    assert!(
        readies == 3 && answered,
        "after the server was terminated under a paused client: {reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
}
