//! Integration tests of health, retries and failover (SPEC §2 `[health]`,
//! `[routing]` lag / read-your-writes / read-only retry, §4.1, §4.2, §7)
//! against a real PostgreSQL cluster (a primary and two streaming replicas
//! built once for this test binary), with servers stopped, crashed, paused
//! and promoted under PgGate.
//!
//! Where a statement ran is read from `inet_server_port()` in its result.
//! Every test that stops a server or pauses replay on the shared cluster
//! holds [`Faults`]: one lock serialises such tests, and its drop puts the
//! cluster back (servers running, replay resumed, replicas streaming and
//! caught up) even when the test fails. The promotion test builds a
//! throwaway pair of its own.

#[allow(unused_imports)]
mod common;

use common::{
    try_read_port as read_port, try_rows as rows, try_value as value, Rows, FAST_HEALTH as HEALTH,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::faults::{Faults, Pair, PAIR_PRIMARY, PAIR_REPLICA};
use common::ops::{http_get, sample_value};
use common::{
    db_error, describe_error, free_port, log_lines, new_database, on_primary_in, random_hex, tail,
    Cluster, PgGate,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// A client through `gate` as `postgres` in `db`, or the error described.
fn try_connect(gate: &PgGate, db: &str) -> Result<postgres::Client, String> {
    let mut config = gate.config("postgres", db);
    config.connect_timeout(Duration::from_secs(5));
    config
        .connect(postgres::NoTls)
        .map_err(|e| format!("connect through pggate: {}", describe_error(&e)))
}

/// One read on a fresh connection through `gate`: where it ran.
fn fresh_read_port(gate: &PgGate, db: &str) -> Result<u16, String> {
    read_port(&mut try_connect(gate, db)?)
}

/// `n` reads, each on a fresh connection through `gate`: where those that
/// ran did, and what went wrong with the others.
fn fresh_reads(gate: &PgGate, n: usize) -> (Vec<u16>, Vec<String>) {
    let mut ports = Vec::new();
    let mut errors = Vec::new();
    for i in 0..n {
        match fresh_read_port(gate, "postgres") {
            Ok(port) => ports.push(port),
            Err(e) => errors.push(format!("read {i}: {e}")),
        }
    }
    (ports, errors)
}

/// Polls fresh-connection reads until one runs on `port`; the time it took.
fn wait_read_reaches(gate: &PgGate, port: u16, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    while started.elapsed() < limit {
        match fresh_read_port(gate, "postgres") {
            Ok(p) if p == port => return Ok(started.elapsed()),
            Ok(p) => *seen.entry(p).or_default() += 1,
            Err(e) => errors.push(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no read reached port {port} within {limit:?}; reads ran on {seen:?} (port: count); \
         {} errors, first: {:?}",
        errors.len(),
        errors.first()
    ))
}

/// Ends the test process if a test runs longer than `limit`: a client
/// waiting forever for an answer would otherwise hang the whole run. The
/// cluster's watchdog stops the servers and PgGate once the process is gone.
struct Deadline {
    _done: mpsc::Sender<()>,
}

impl Deadline {
    fn new(test: &'static str, limit: Duration) -> Deadline {
        let (done, finished) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                eprintln!(
                    "\n*** {test} did not finish within {limit:?}: a client is waiting forever \
                     (a statement PgGate never answers?); ending the test process ***\n"
                );
                std::process::exit(101);
            }
        });
        Deadline { _done: done }
    }
}

const TEST_LIMIT: Duration = Duration::from_secs(90);

#[test]
fn with_one_replica_stopped_reads_succeed_on_the_other_and_it_returns_after_restart() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "with_one_replica_stopped_reads_succeed_on_the_other_and_it_returns_after_restart",
        TEST_LIMIT,
    );
    let [_, replica1, replica2] = cluster.all_ports();
    let gate = PgGate::start(cluster, HEALTH);
    wait_read_reaches(&gate, replica1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("before any fault: {e}"));

    faults.stop("replica1");
    let (ports, errors) = fresh_reads(&gate, 40);
    assert!(
        errors.is_empty(),
        "reads with replica1 stopped failed ({} of 40):\n  {}\npggate log:\n{}",
        errors.len(),
        errors.join("\n  "),
        log_lines(&gate, &["replica1", "ERROR", "WARN"], 30)
    );
    let elsewhere: Vec<&str> = ports
        .iter()
        .filter(|p| **p != replica2)
        .map(|p| cluster.server_name(*p))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "with replica1 stopped every read should run on replica2; {} of 40 ran on {elsewhere:?}",
        elsewhere.len()
    );

    faults.start("replica1");
    let back = wait_read_reaches(&gate, replica1, Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!(
            "replica1 restarted but gets no reads: {e}\npggate log:\n{}",
            log_lines(&gate, &["replica1"], 30)
        )
    });
    eprintln!("reads reached replica1 again {back:?} after its restart");
}

#[test]
fn a_replica_that_refuses_a_connection_leaves_the_rotation_at_once() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "a_replica_that_refuses_a_connection_leaves_the_rotation_at_once",
        TEST_LIMIT,
    );
    let [_, replica1, replica2] = cluster.all_ports();
    // Probes a minute apart: only the failed connection itself can take the
    // replica out during the test.
    let gate = PgGate::start(cluster, "[health]\ninterval = \"60s\"\nfailures = 3\n");
    wait_read_reaches(&gate, replica1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("before any fault: {e}"));

    faults.stop("replica1");
    let (ports, errors) = fresh_reads(&gate, 40);
    let context = || log_lines(&gate, &["replica1"], 30);
    assert!(
        errors.is_empty(),
        "reads with replica1 stopped failed ({} of 40):\n  {}\npggate log:\n{}",
        errors.len(),
        errors.join("\n  "),
        context()
    );
    assert!(
        ports.iter().all(|p| *p == replica2),
        "every read should run on replica2, got ports {ports:?}"
    );
    // Reads pick either replica at random: without marking it down at the
    // first refused connection, about half of them would try replica1 first.
    let log = gate.log_contents();
    let attempts = log
        .lines()
        .filter(|l| l.contains("login to backend \"replica1\""))
        .count();
    let marked = log
        .lines()
        .filter(|l| l.contains("backend \"replica1\" marked down"))
        .count();
    assert!(
        (1..=2).contains(&attempts) && marked == 1,
        "expected one or two failed connections to replica1 and one `marked down` line, \
         got {attempts} and {marked}; pggate log:\n{}",
        context()
    );
}

#[test]
fn with_both_replicas_stopped_reads_succeed_on_the_primary() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "with_both_replicas_stopped_reads_succeed_on_the_primary",
        TEST_LIMIT,
    );
    let gate = PgGate::start(cluster, HEALTH);
    // A session opened before the fault, and fresh ones after it.
    let mut session = gate.connect("postgres", "postgres");
    let before = read_port(&mut session).expect("a read before the fault");
    assert!(cluster.is_replica_port(before), "read ran on {before}");

    faults.stop("replica1");
    faults.stop("replica2");
    let mut problems = Vec::new();
    for i in 0..20 {
        match read_port(&mut session) {
            Ok(port) if port == cluster.primary_port => {}
            Ok(port) => problems.push(format!(
                "session read {i} ran on {}",
                cluster.server_name(port)
            )),
            Err(e) => problems.push(format!("session read {i} failed: {e}")),
        }
        match fresh_read_port(&gate, "postgres") {
            Ok(port) if port == cluster.primary_port => {}
            Ok(port) => problems.push(format!(
                "fresh read {i} ran on {}",
                cluster.server_name(port)
            )),
            Err(e) => problems.push(format!("fresh read {i} failed: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "with both replicas stopped every read should succeed on the primary; {} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["replica", "ERROR", "WARN"], 30)
    );
}

#[test]
fn with_the_primary_stopped_reads_go_on_and_writes_fail_clearly_then_recover() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "with_the_primary_stopped_reads_go_on_and_writes_fail_clearly_then_recover",
        TEST_LIMIT,
    );
    let db = new_database(cluster, "fo_primary");
    on_primary_in(cluster, &db, "CREATE TABLE t (n int)");
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, HEALTH);
    // Logins are relayed to the primary, so the session opens first.
    let mut session = gate.connect("postgres", &db);
    rows(&mut session, "INSERT INTO t VALUES (0)").expect("a write before the fault");
    // The test cluster commits asynchronously (synchronous_commit = off): make
    // the acknowledged row durable before the crash, or the server may lose it.
    on_primary_in(cluster, &db, "CHECKPOINT");

    faults.stop("primary");
    let mut problems = Vec::new();
    for i in 0..10 {
        match read_port(&mut session) {
            Ok(port) if cluster.is_replica_port(port) => {}
            Ok(port) => problems.push(format!("read {i} ran on {}", cluster.server_name(port))),
            Err(e) => problems.push(format!("read {i} failed: {e}")),
        }
    }
    for attempt in 1..=2 {
        let started = Instant::now();
        let result = session.simple_query("INSERT INTO t VALUES (1)");
        let took = started.elapsed();
        match result {
            Ok(_) => problems.push(format!(
                "write {attempt} with the primary stopped succeeded"
            )),
            Err(e) => match db_error(&e) {
                Some((code, message))
                    if ["08001", "08006"].contains(&code.as_str())
                        && message.starts_with("pggate:") =>
                {
                    eprintln!("write {attempt} failed in {took:?}: [{code}] {message}")
                }
                _ => problems.push(format!(
                    "write {attempt} failed with {}; expected SQLSTATE 08001 or 08006 \
                     and a message starting \"pggate:\"",
                    describe_error(&e)
                )),
            },
        }
        if took >= Duration::from_secs(10) {
            problems.push(format!(
                "write {attempt} took {took:?} to fail (limit 10 s)"
            ));
        }
    }
    match read_port(&mut session) {
        Ok(port) if cluster.is_replica_port(port) => {}
        Ok(port) => problems.push(format!(
            "read after the failed writes ran on {}",
            cluster.server_name(port)
        )),
        Err(e) => problems.push(format!("read after the failed writes failed: {e}")),
    }
    assert!(
        problems.is_empty(),
        "with the primary stopped: {} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["primary", "ERROR", "WARN"], 30)
    );

    faults.start("primary");
    faults.wait_streaming(Duration::from_secs(60));
    let started = Instant::now();
    let limit = Duration::from_secs(10);
    let mut session_ok = false;
    let mut fresh_ok = false;
    let mut failures = Vec::new();
    while !(session_ok && fresh_ok) && started.elapsed() < limit {
        if !session_ok {
            match rows(&mut session, "INSERT INTO t VALUES (2)") {
                Ok(_) => session_ok = true,
                Err(e) => failures.push(format!("old session: {e}")),
            }
        }
        if !fresh_ok {
            match try_connect(&gate, &db)
                .and_then(|mut client| rows(&mut client, "INSERT INTO t VALUES (3)"))
            {
                Ok(_) => fresh_ok = true,
                Err(e) => failures.push(format!("new session: {e}")),
            }
        }
        if !(session_ok && fresh_ok) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        session_ok && fresh_ok,
        "writes still fail {limit:?} after the primary is back and streaming \
         (old session ok: {session_ok}, new session ok: {fresh_ok}); failures:\n  {}\npggate log:\n{}",
        failures.join("\n  "),
        log_lines(&gate, &["primary", "ERROR", "WARN"], 30)
    );
    eprintln!(
        "writes succeeded again {:?} after the primary was back ({} failed attempts first: {:?})",
        started.elapsed(),
        failures.len(),
        failures
    );
    assert_eq!(
        on_primary_in(cluster, &db, "SELECT n FROM t ORDER BY n"),
        vec![
            vec![Some("0".to_string())],
            vec![Some("2".to_string())],
            vec![Some("3".to_string())]
        ],
        "rows on the primary: the failed write must not have happened"
    );
    drop(faults);
}

#[test]
fn a_lagging_replica_stops_getting_reads() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new("a_lagging_replica_stops_getting_reads", TEST_LIMIT);
    let [primary, replica1, replica2] = cluster.all_ports();
    let db = new_database(cluster, "fo_lag");
    on_primary_in(cluster, &db, "CREATE TABLE lag_t (n int)");
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(
        cluster,
        &format!("{HEALTH}[routing]\nmax_replica_lag = \"1s\"\n"),
    );
    wait_read_reaches(&gate, replica1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("before the pause: {e}"));

    faults.pause_replay("replica1");
    let mut writer = cluster.connect_direct(primary, "postgres", &db);
    let writing = Instant::now();
    let mut n = 0;
    while writing.elapsed() < Duration::from_secs(3) {
        n += 1;
        rows(&mut writer, &format!("INSERT INTO lag_t VALUES ({n})"))
            .unwrap_or_else(|e| panic!("write on the primary: {e}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let lag = value(
        &mut cluster.connect_direct(replica1, "postgres", &db),
        "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())",
    )
    .expect("replica1's replay age");
    eprintln!("replica1 replay timestamp age after {n} writes: {lag} s");

    let mut ports = Vec::new();
    let mut errors = Vec::new();
    for i in 0..30 {
        match fresh_read_port(&gate, "postgres") {
            Ok(port) => ports.push(port),
            Err(e) => errors.push(format!("read {i}: {e}")),
        }
    }
    assert!(
        errors.is_empty(),
        "reads failed with replica1 lagging: {errors:?}"
    );
    let on_replica1 = ports.iter().filter(|p| **p == replica1).count();
    assert_eq!(
        on_replica1,
        0,
        "replica1 lags ({lag} s > max_replica_lag 1s) yet got {on_replica1} of 30 reads; \
         reads ran on {:?}\npggate log:\n{}",
        ports
            .iter()
            .map(|p| cluster.server_name(*p))
            .collect::<Vec<_>>(),
        log_lines(&gate, &["replica1", "lag"], 20)
    );
    let not_replica2: Vec<&str> = ports
        .iter()
        .filter(|p| **p != replica2)
        .map(|p| cluster.server_name(*p))
        .collect();
    assert!(
        not_replica2.is_empty(),
        "replica2 keeps up, so it should get every read; others ran on {not_replica2:?}"
    );

    faults.resume_replay("replica1");
    let back = wait_read_reaches(&gate, replica1, Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!(
            "replay resumed but replica1 gets no reads: {e}\npggate log:\n{}",
            log_lines(&gate, &["replica1", "lag"], 20)
        )
    });
    eprintln!("reads reached replica1 again {back:?} after replay resumed");
    drop(faults);
}

#[test]
fn a_writing_function_in_no_list_is_retried_on_the_primary_and_writes_once() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "a_writing_function_in_no_list_is_retried_on_the_primary_and_writes_once",
        TEST_LIMIT,
    );
    let db = new_database(cluster, "fo_func");
    on_primary_in(
        cluster,
        &db,
        "CREATE TABLE f_log (n int); \
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ INSERT INTO f_log VALUES (1) RETURNING n $$",
    );
    cluster.wait_replicas_caught_up();
    let metrics_port = free_port();
    let gate = PgGate::start(
        cluster,
        &format!("{HEALTH}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let run = random_hex(8);
    let mut client = gate.connect("postgres", &db);
    let mut problems = Vec::new();
    let mut markers = Vec::new();
    for i in 1..=5 {
        let marker = format!("fo-func-{run}-{i}");
        let sql = format!("SELECT f() /* {marker} */");
        match rows(&mut client, &sql) {
            Ok(rows) if rows == vec![vec![Some("1".to_string())]] => {}
            Ok(rows) => problems.push(format!("call {i} returned {rows:?}, expected [[\"1\"]]")),
            Err(e) => problems.push(format!("call {i} failed: {e}")),
        }
        markers.push(marker);
    }
    let logged = on_primary_in(cluster, &db, "SELECT count(*) FROM f_log");
    if logged != vec![vec![Some("5".to_string())]] {
        problems.push(format!(
            "f_log on the primary holds {logged:?} rows after 5 calls; expected exactly 5 \
             (one write per call)"
        ));
    }
    // The calls went to a replica first (read-class), which refused them.
    let replica_logs: String = cluster
        .replica_ports
        .iter()
        .map(|p| cluster.server_log(*p))
        .collect();
    let primary_log = cluster.server_log(cluster.primary_port);
    for marker in &markers {
        if !replica_logs.contains(marker.as_str()) {
            problems.push(format!(
                "{marker}: no replica ran the call, so the 25006 retry was not exercised"
            ));
        }
        let on_primary = primary_log
            .lines()
            .filter(|line| line.contains(marker.as_str()) && line.contains("statement:"))
            .count();
        if on_primary != 1 {
            problems.push(format!(
                "{marker}: the primary ran the call {on_primary} times, expected once"
            ));
        }
    }
    match http_get(metrics_port, "/metrics", Duration::from_secs(3)) {
        Ok((200, body)) => match sample_value(&body, "pggate_read_only_retries_total", &[]) {
            Some(count) if count >= 5.0 => {}
            Some(count) => problems.push(format!(
                "pggate_read_only_retries_total is {count} after 5 retried calls; expected >= 5"
            )),
            None => problems.push(format!(
                "GET /metrics has no pggate_read_only_retries_total sample; body starts:\n{}",
                body.chars().take(1500).collect::<String>()
            )),
        },
        Ok((status, body)) => problems.push(format!(
            "GET /metrics on metrics.listen 127.0.0.1:{metrics_port} answered {status}: {body:?}"
        )),
        Err(e) => problems.push(format!(
            "the metrics endpoint (metrics.listen = 127.0.0.1:{metrics_port}) did not answer \
             GET /metrics: {e}"
        )),
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(
            &gate,
            &["25006", "read-only", "read only", "retry", "metrics"],
            30
        )
    );
    drop(faults);
}

#[test]
fn read_your_writes_sees_every_insert_even_with_a_paused_replica() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "read_your_writes_sees_every_insert_even_with_a_paused_replica",
        TEST_LIMIT,
    );
    let replica1 = cluster.replica_ports[0];
    let db = new_database(cluster, "fo_ryw");
    on_primary_in(cluster, &db, "CREATE TABLE ryw (v text PRIMARY KEY)");
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(
        cluster,
        &format!("{HEALTH}[routing]\nread_your_writes = \"lsn\"\n"),
    );

    faults.pause_replay("replica1");
    let run = random_hex(8);
    let mut session = gate.connect("postgres", &db);
    let mut problems = Vec::new();
    let mut served: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..100 {
        let v = format!("{run}-{i}");
        if let Err(e) = rows(&mut session, &format!("INSERT INTO ryw VALUES ('{v}')")) {
            problems.push(format!("insert {i} failed: {e}"));
            continue;
        }
        match rows(
            &mut session,
            &format!("SELECT count(*), inet_server_port() FROM ryw WHERE v = '{v}'"),
        ) {
            Ok(rows) if rows.len() == 1 => {
                let port: u16 = rows[0][1].as_deref().unwrap_or("0").parse().unwrap_or(0);
                let server = if cluster.all_ports().contains(&port) {
                    cluster.server_name(port)
                } else {
                    "?"
                };
                *served.entry(server).or_default() += 1;
                if rows[0][0].as_deref() != Some("1") {
                    problems.push(format!(
                        "select {i} right after its insert found {:?} rows on {server}",
                        rows[0][0]
                    ));
                } else if port == replica1 {
                    problems.push(format!(
                        "select {i} ran on replica1, whose replay is paused before the write"
                    ));
                }
            }
            Ok(rows) => problems.push(format!("select {i} returned {rows:?}")),
            Err(e) => problems.push(format!("select {i} failed: {e}")),
        }
    }
    eprintln!("read-your-writes selects ran on {served:?}");
    assert!(
        problems.is_empty(),
        "read_your_writes = lsn with replica1 paused: {} problems (selects ran on {served:?}):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );

    faults.resume_replay("replica1");
    faults.wait_streaming(Duration::from_secs(30));
    std::thread::sleep(3 * PROBE_INTERVAL);
    let mut reader = gate.connect("postgres", &db);
    let mut ports = Vec::new();
    for i in 0..20 {
        match read_port(&mut reader) {
            Ok(port) => ports.push(port),
            Err(e) => panic!("read {i} of a session without writes failed: {e}"),
        }
    }
    let on_primary = ports.iter().filter(|p| **p == cluster.primary_port).count();
    assert_eq!(
        on_primary, 0,
        "a session that made no writes should read from replicas; {on_primary} of 20 reads ran \
         on the primary ({ports:?})"
    );
    drop(faults);
}

#[test]
fn terminating_idle_backends_leaves_sessions_working_and_a_terminated_transaction_errors_only_its_client(
) {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new("terminating_idle_backends_leaves_sessions_working_and_a_terminated_transaction_errors_only_its_client", TEST_LIMIT);
    let db = new_database(cluster, "fo_term");
    on_primary_in(cluster, &db, "CREATE TABLE t (n int)");
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, HEALTH);

    let mut session = gate.connect("postgres", &db);
    read_port(&mut session).expect("a read before the terminations");
    rows(&mut session, "INSERT INTO t VALUES (1)").expect("a write before the terminations");
    for _ in 0..4 {
        read_port(&mut session).expect("a read before the terminations");
    }

    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'postgres' AND application_name <> 'monitor' \
         AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = '{db}'"
    );
    let mut terminated = BTreeMap::new();
    for port in cluster.all_ports() {
        let mut direct = cluster.connect_direct(port, "postgres", "postgres");
        let killed = rows(&mut direct, &terminate)
            .unwrap_or_else(|e| panic!("terminate on {}: {e}", cluster.server_name(port)));
        terminated.insert(cluster.server_name(port), killed.len());
    }
    eprintln!("backends terminated: {terminated:?}");
    assert!(
        terminated.values().sum::<usize>() > 0,
        "no PgGate backend connection was found to terminate in {db}"
    );
    std::thread::sleep(Duration::from_millis(300));

    let mut problems = Vec::new();
    match read_port(&mut session) {
        Ok(_) => {}
        Err(e) => problems.push(format!("the next read failed: {e}")),
    }
    match rows(&mut session, "INSERT INTO t VALUES (2)") {
        Ok(_) => {}
        Err(e) => problems.push(format!("the next write failed: {e}")),
    }
    assert!(
        problems.is_empty(),
        "after pg_terminate_backend of PgGate's idle backend connections ({terminated:?}) the \
         session should keep working:\n  {}\npggate log:\n{}",
        problems.join("\n  "),
        log_lines(&gate, &["57P01", "08006", "terminat", "ERROR", "WARN"], 30)
    );

    // A client inside a transaction whose backend is terminated.
    let mut other = gate.connect("postgres", &db);
    read_port(&mut other).expect("the other client reads");
    let mut victim = gate.connect("postgres", &db);
    rows(&mut victim, "BEGIN").expect("BEGIN");
    rows(&mut victim, "INSERT INTO t VALUES (3)").expect("INSERT in the transaction");
    let pid = value(&mut victim, "SELECT pg_backend_pid()").expect("backend pid");
    let killed = value(
        &mut cluster.connect_direct(cluster.primary_port, "postgres", "postgres"),
        &format!("SELECT pg_terminate_backend({pid})"),
    )
    .expect("terminate the transaction's backend");
    assert_eq!(killed, "t", "pg_terminate_backend({pid}) on the primary");
    std::thread::sleep(Duration::from_millis(300));

    let mut problems = Vec::new();
    match victim.simple_query("INSERT INTO t VALUES (4)") {
        Ok(_) => problems.push(
            "the next statement of the terminated transaction succeeded; expected 08006 or 57P01"
                .to_string(),
        ),
        Err(e) => match db_error(&e) {
            Some((code, _)) if code == "08006" || code == "57P01" => {}
            _ => problems.push(format!(
                "the next statement of the terminated transaction failed with {}; \
                 expected SQLSTATE 08006 or 57P01",
                describe_error(&e)
            )),
        },
    }
    if !victim.is_closed() {
        match victim.simple_query("SELECT 1") {
            Ok(_) => problems.push(
                "the client whose transaction was lost can still run queries; its connection \
                 should be closed"
                    .to_string(),
            ),
            Err(e) if e.as_db_error().is_some() => problems.push(format!(
                "the client whose transaction was lost got {} instead of a closed connection",
                describe_error(&e)
            )),
            Err(_) => {}
        }
    }
    match read_port(&mut other) {
        Ok(_) => {}
        Err(e) => problems.push(format!("the other client's read failed: {e}")),
    }
    match rows(&mut other, "INSERT INTO t VALUES (5)") {
        Ok(_) => {}
        Err(e) => problems.push(format!("the other client's write failed: {e}")),
    }
    match try_connect(&gate, &db).and_then(|mut c| rows(&mut c, "INSERT INTO t VALUES (6)")) {
        Ok(_) => {}
        Err(e) => problems.push(format!("a new client's write failed: {e}")),
    }
    let committed = on_primary_in(cluster, &db, "SELECT n FROM t ORDER BY n");
    let expected: Rows = [1, 2, 5, 6]
        .iter()
        .map(|n| vec![Some(n.to_string())])
        .collect();
    if committed != expected {
        problems.push(format!(
            "rows on the primary {committed:?}, expected {expected:?} (the terminated \
             transaction's rows must be gone)"
        ));
    }
    assert!(
        problems.is_empty(),
        "after terminating a transaction's backend: {} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["57P01", "08006", "terminat", "ERROR", "WARN"], 30)
    );
    drop(faults);
}

#[test]
fn an_auto_pair_follows_a_promotion() {
    // PgGate's files live under the shared cluster's dir; its backends are
    // the pair only.
    let cluster = Cluster::shared();
    let _deadline = Deadline::new("an_auto_pair_follows_a_promotion", TEST_LIMIT);
    let mut pair = Pair::build();
    let backend = |name: &str, port: u16| {
        format!("[[backends]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"auto\"\n")
    };
    let gate = PgGate::start(
        cluster,
        &format!(
            "{HEALTH}{}{}",
            backend(PAIR_PRIMARY, pair.primary_port),
            backend(PAIR_REPLICA, pair.replica_port)
        ),
    );

    // The first probe classifies the nodes; allow it a moment.
    let started = Instant::now();
    let mut first_errors = Vec::new();
    loop {
        match try_connect(&gate, "postgres").and_then(|mut c| {
            rows(&mut c, "CREATE TABLE IF NOT EXISTS pair_t (n int)")?;
            value(
                &mut c,
                "INSERT INTO pair_t VALUES (1) RETURNING inet_server_port()",
            )
        }) {
            Ok(port) => {
                assert_eq!(
                    port,
                    pair.primary_port.to_string(),
                    "the first write ran on {port}, not on {PAIR_PRIMARY}"
                );
                break;
            }
            Err(e) => first_errors.push(e),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "writes through PgGate to the auto pair fail 3 s after start: {first_errors:?}\npggate log:\n{}",
            tail(&gate.log_contents(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The replica must have the table before the primary goes away.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut direct = common::cluster::direct_config(pair.replica_port, "postgres", "postgres")
            .connect(postgres::NoTls)
            .expect("direct connection to the pair's replica");
        if value(
            &mut direct,
            "SELECT count(*) FROM pg_class WHERE relname = 'pair_t'",
        )
        .as_deref()
            == Ok("1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never got pair_t");
        std::thread::sleep(Duration::from_millis(20));
    }

    pair.pg_ctl(PAIR_PRIMARY, &["stop", "-m", "immediate", "-w", "-t", "60"])
        .assert_success("stopping the pair's primary");
    pair.pg_ctl(PAIR_REPLICA, &["promote", "-w", "-t", "60"])
        .assert_success("promoting the pair's replica");
    let promoted = Instant::now();
    let limit = Duration::from_secs(5) + PROBE_INTERVAL;
    let mut errors = Vec::new();
    let took = loop {
        let attempt = try_connect(&gate, "postgres").and_then(|mut c| {
            value(
                &mut c,
                "INSERT INTO pair_t VALUES (2) RETURNING inet_server_port()",
            )
        });
        match attempt {
            Ok(port) => {
                assert_eq!(
                    port,
                    pair.replica_port.to_string(),
                    "the write after the promotion ran on {port}, not on the promoted {PAIR_REPLICA}"
                );
                break promoted.elapsed();
            }
            Err(e) => errors.push(format!("{:?}: {e}", promoted.elapsed())),
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(20),
            "writes through PgGate still fail 20 s after the promotion:\n  {}\npggate log:\n{}",
            tail(&errors.join("\n  "), 10),
            log_lines(&gate, &[PAIR_PRIMARY, PAIR_REPLICA, "primary"], 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "writes reached the promoted node {took:?} after pg_ctl promote returned ({} failed attempts)",
        errors.len()
    );
    assert!(
        took <= limit,
        "writes reached the promoted node only {took:?} after the promotion (limit {limit:?}); \
         failed attempts:\n  {}\npggate log:\n{}",
        tail(&errors.join("\n  "), 10),
        log_lines(&gate, &[PAIR_PRIMARY, PAIR_REPLICA, "primary"], 30)
    );
    drop(gate);
    pair.stop_all()
        .unwrap_or_else(|e| panic!("stopping the pair: {e}"));
}

#[test]
fn killing_a_replica_under_continuous_reads_causes_no_client_errors() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let _deadline = Deadline::new(
        "killing_a_replica_under_continuous_reads_causes_no_client_errors",
        TEST_LIMIT,
    );
    let replica2 = cluster.replica_ports[1];
    let gate = PgGate::start(cluster, HEALTH);

    const CLIENTS: usize = 12;
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let clients: Vec<postgres::Client> = (0..CLIENTS)
        .map(|_| gate.connect("postgres", "postgres"))
        .collect();
    // When each client's read in flight was sent, to name reads that never
    // get an answer.
    let in_flight: Arc<Mutex<Vec<Option<Duration>>>> = Arc::new(Mutex::new(vec![None; CLIENTS]));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, mut client)| {
            let stop = Arc::clone(&stop);
            let errors = Arc::clone(&errors);
            let in_flight = Arc::clone(&in_flight);
            let config = gate.config("postgres", "postgres");
            std::thread::spawn(move || {
                let mut served: Vec<(Duration, u16)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    in_flight.lock().unwrap()[id] = Some(started.elapsed());
                    let result = rows(&mut client, "SELECT inet_server_port(), pg_sleep(0.005)");
                    in_flight.lock().unwrap()[id] = None;
                    match result {
                        Ok(rows) => {
                            let port = rows
                                .first()
                                .and_then(|r| r[0].as_deref())
                                .and_then(|p| p.parse().ok())
                                .unwrap_or(0);
                            served.push((started.elapsed(), port));
                        }
                        Err(e) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("client {id} at {:?}: {e}", started.elapsed()));
                            if client.is_closed() {
                                match config.connect(postgres::NoTls) {
                                    Ok(c) => client = c,
                                    Err(e) => {
                                        errors.lock().unwrap().push(format!(
                                            "client {id} could not reconnect: {}",
                                            describe_error(&e)
                                        ));
                                        return served;
                                    }
                                }
                            }
                        }
                    }
                }
                served
            })
        })
        .collect();

    let sleep_until = |at: Duration| {
        if let Some(left) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    };
    sleep_until(Duration::from_millis(1500));
    let killed_at = started.elapsed();
    faults.stop("replica2");
    let down_from = started.elapsed();
    sleep_until(Duration::from_millis(3500));
    let down_until = started.elapsed();
    faults.start("replica2");
    let restarted_at = started.elapsed();
    sleep_until(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let stopped_at = started.elapsed();
    // A read takes milliseconds; one still unanswered 5 s after the load
    // ended never will be. Its thread is left behind (it ends when PgGate
    // is stopped and the socket closes).
    let grace = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|w| !w.is_finished()) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut served: Vec<(Duration, u16)> = Vec::new();
    let mut hung = Vec::new();
    for (id, worker) in workers.into_iter().enumerate() {
        if worker.is_finished() {
            served.extend(worker.join().expect("a reader thread panicked"));
        } else {
            let sent = in_flight.lock().unwrap()[id];
            hung.push(format!(
                "client {id}: read sent at {sent:?} still unanswered at {:?} (load stopped at \
                 {stopped_at:?})",
                started.elapsed()
            ));
        }
    }
    let errors = errors.lock().unwrap().clone();

    let during: Vec<u16> = served
        .iter()
        .filter(|(at, _)| *at > down_from && *at < down_until)
        .map(|(_, port)| *port)
        .collect();
    eprintln!(
        "{} reads; replica2 killed at {killed_at:?}, restarted at {restarted_at:?}; \
         {} reads while it was down",
        served.len(),
        during.len()
    );
    assert!(
        hung.is_empty(),
        "{} of {CLIENTS} clients got no answer to a read (replica2 killed at {killed_at:?}, \
         restarted at {restarted_at:?}):\n  {}\nclient-visible errors: {errors:?}\npggate log:\n{}",
        hung.len(),
        hung.join("\n  "),
        log_lines(&gate, &["replica2", "ERROR", "WARN"], 40)
    );
    assert!(
        errors.is_empty(),
        "{} client-visible errors while replica2 was killed and restarted (killed at {killed_at:?}, \
         restarted at {restarted_at:?}):\n  {}\npggate log:\n{}",
        errors.len(),
        errors.iter().take(20).cloned().collect::<Vec<_>>().join("\n  "),
        log_lines(&gate, &["replica2", "ERROR", "WARN"], 30)
    );
    assert!(
        !during.is_empty(),
        "no read completed while replica2 was down ({} reads in all)",
        served.len()
    );
    assert!(
        !during.contains(&replica2),
        "a read ran on replica2 while it was stopped?"
    );
    let back = wait_read_reaches(&gate, replica2, Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!(
            "replica2 restarted but gets no reads: {e}\npggate log:\n{}",
            log_lines(&gate, &["replica2"], 30)
        )
    });
    eprintln!("reads reached replica2 {back:?} after the load ended");
    drop(faults);
}
