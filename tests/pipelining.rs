//! Reads pipelined across clients (`pool.pipeline_window`) against a real
//! PostgreSQL cluster: with the pool full, or once `pool.pipeline_after`
//! connections are busy, a client's plain read is sent down a connection
//! behind another client's running read, and takes the connection over at
//! that read's ReadyForQuery.
//!
//! Most tests run PgGate with one connection per pool and a long window, so
//! that reads queue behind one another whenever two clients overlap; the
//! three about `pool.pipeline_after` and the window give the pool room, to
//! check when reads queue although connections are free; one sends reads to
//! a replica that refuses some of them as writes (25006), and one puts a
//! stand-in server in place of a replica, to end a read inside a transaction
//! (which no real server does). Each checks `pggate_pipelined_reads_total` to be sure that reads
//! queued. Reads come through the simple protocol and through the extended
//! one (a prepared statement run with Bind/Execute/Sync).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::fake::{self, Answer, FakeServer};
use common::ops::{sample_value, scrape};
use common::raw::{self, RawConn};
use common::{db_error, free_port, random_hex, simple_rows, tail, Cluster, PgGate};

/// PgGate with one worker (a read follows only connections of its own
/// worker), the `[pool]` settings `pool` (with a 10 s pipeline window unless
/// they set one), reads on the primary and metrics on `metrics_port`.
fn gate_with_pool(cluster: &Cluster, metrics_port: u16, pool: &str) -> PgGate {
    let window = if pool.contains("pipeline_window") {
        ""
    } else {
        "pipeline_window = \"10s\"\n"
    };
    PgGate::start(
        cluster,
        &format!(
            "[proxy]\nworkers = 1\n\
             [pool]\n{pool}\n{window}\
             [routing]\nreads = \"primary\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
        ),
    )
}

/// `gate_with_pool` with one connection per pool.
fn one_connection_gate(cluster: &Cluster, metrics_port: u16) -> PgGate {
    gate_with_pool(cluster, metrics_port, "size = 1")
}

/// PgGate with one worker, one connection per pool, a 10 s pipeline window,
/// metrics on `metrics_port` and two backends: the cluster's primary and the
/// replica (or stand-in) on `replica_port`, where reads go.
fn one_replica_gate(cluster: &Cluster, metrics_port: u16, replica_port: u16) -> PgGate {
    PgGate::start(
        cluster,
        &format!(
            "[proxy]\nworkers = 1\n[pool]\nsize = 1\npipeline_window = \"10s\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n\
             [[backends]]\nname = \"replica\"\nhost = \"127.0.0.1\"\nport = {replica_port}\nrole = \"replica\"\n",
            cluster.primary_port
        ),
    )
}

fn pipelined(metrics_port: u16) -> f64 {
    sample_value(&scrape(metrics_port), "pggate_pipelined_reads_total", &[]).unwrap_or(0.0)
}

/// Waits until at least `n` reads have been pipelined.
fn wait_pipelined(metrics_port: u16, n: f64, gate: &PgGate) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pipelined(metrics_port) < n {
        assert!(
            Instant::now() < deadline,
            "no read was queued behind another within 5 s\n{}",
            tail(&gate.log_contents(), 20)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The data rows of the replies in `messages`.
fn rows(messages: &[raw::Message]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.data_row())
        .collect()
}

fn one(s: &str) -> Vec<Vec<Option<String>>> {
    vec![vec![Some(s.to_string())]]
}

/// A connection logged in through the gate that has sent `sql` and not read
/// the reply yet.
fn sent(gate: &PgGate, sql: &str) -> RawConn {
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    conn.send(&raw::query_message(sql)).expect("send the query");
    conn
}

/// Client A of a one-connection gate, with `SELECT 'a' FROM pg_sleep(3)`
/// running (sent 100 ms ago), and the process id of the server running it.
fn running_read(gate: &PgGate) -> (RawConn, String) {
    let mut a = RawConn::connect(gate.port);
    a.login("postgres", "postgres");
    // One connection in the pool: A's next read runs on this server process.
    let pid = rows(&a.query("SELECT pg_backend_pid()"))
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .expect("the server's process id");
    a.send(&raw::query_message("SELECT 'a' FROM pg_sleep(3)"))
        .expect("send A's read");
    thread::sleep(Duration::from_millis(100));
    (a, pid)
}

fn terminate(cluster: &Cluster, pid: &str) {
    cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        &format!("SELECT pg_terminate_backend({pid})"),
    );
}

/// A's read, whose server was terminated, is sent again (nothing of it
/// reached A) or fails cleanly; either way A's session goes on.
fn a_goes_on(a: &mut RawConn) {
    let a_reply = a.read_until_readies_within(1, Duration::from_secs(10));
    assert!(
        rows(&a_reply) == one("a") || a_reply.iter().any(|m| m.tag == b'E'),
        "A got {a_reply:?}"
    );
    assert_eq!(rows(&a.query("SELECT 41 + 1")), one("42"));
}

#[test]
fn queued_reads_of_both_protocols_get_their_own_answers_outside_other_transactions() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let table = format!("pipe_{}", random_hex(6));
    cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        &format!("CREATE TABLE {table} (n int)"),
    );
    let port = gate.port;
    let readers: Vec<_> = (0..6)
        .map(|r| {
            let config = gate.config("postgres", "postgres");
            thread::spawn(move || {
                let mut client = config.connect(postgres::NoTls).expect("reader connects");
                // Extended protocol: a named statement, Bind/Execute/Sync per run.
                let statement = client
                    .prepare(
                        "SELECT $1::text || '-' || $2::int, \
                         pg_catalog.pg_current_xact_id_if_assigned() IS NULL",
                    )
                    .expect("prepare");
                for i in 0..200 {
                    if i % 2 == 1 {
                        let row = client
                            .query_one(&statement, &[&r.to_string(), &i])
                            .unwrap_or_else(|e| panic!("reader {r}, query {i}: {e}"));
                        let (tag, outside): (String, bool) = (row.get(0), row.get(1));
                        assert_eq!(tag, format!("{r}-{i}"), "reader {r}, query {i}");
                        assert!(outside, "reader {r}, query {i} ran in a transaction");
                        continue;
                    }
                    if i % 10 == 8 {
                        // An error ends this client's read alone.
                        let e = client
                            .simple_query("SELECT 1 / 0")
                            .expect_err("division by zero fails");
                        let code = db_error(&e).map(|(code, _)| code);
                        assert_eq!(code.as_deref(), Some("22012"), "reader {r}, query {i}: {e}");
                        continue;
                    }
                    // A read run inside another client's transaction would see
                    // that transaction's id.
                    let got = simple_rows(
                        &mut client,
                        &format!(
                            "SELECT '{r}-{i}', pg_catalog.pg_current_xact_id_if_assigned() IS NULL"
                        ),
                    );
                    assert_eq!(
                        got,
                        vec![vec![Some(format!("{r}-{i}")), Some("t".to_string())]],
                        "reader {r}, query {i} (port {port})"
                    );
                }
            })
        })
        .collect();
    let writer = {
        let config = gate.config("postgres", "postgres");
        let table = table.clone();
        thread::spawn(move || {
            let mut client = config.connect(postgres::NoTls).expect("writer connects");
            for i in 0..30 {
                // One statement per message: the transaction holds the
                // connection across several batches.
                client.simple_query("BEGIN").expect("BEGIN");
                client
                    .simple_query(&format!("INSERT INTO {table} VALUES ({i})"))
                    .expect("INSERT");
                client
                    .simple_query("SELECT pg_sleep(0.002)")
                    .expect("sleep");
                client.simple_query("COMMIT").expect("COMMIT");
            }
        })
    };
    for (r, reader) in readers.into_iter().enumerate() {
        if reader.join().is_err() {
            panic!("reader {r} failed\n{}", tail(&gate.log_contents(), 20));
        }
    }
    writer.join().expect("writer");
    let count = cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        &format!("SELECT count(*) FROM {table}"),
    );
    assert_eq!(count.trim(), "30");
    let n = pipelined(metrics_port);
    assert!(n > 100.0, "only {n} reads were queued behind another");
    cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        &format!("DROP TABLE {table}"),
    );
}

#[test]
fn a_client_that_leaves_while_its_read_is_queued_disturbs_nobody() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let mut a = sent(&gate, "SELECT 'a' FROM pg_sleep(1.5)");
    thread::sleep(Duration::from_millis(100));
    let mut b = sent(&gate, "SELECT 'b'");
    wait_pipelined(metrics_port, 1.0, &gate);
    let c = sent(&gate, "SELECT 'c' FROM pg_sleep(0.2)");
    wait_pipelined(metrics_port, 2.0, &gate);
    // Three reads on the server's socket, in order: A's, B's and C's. C goes
    // and D queues behind it.
    c.vanish();
    let mut d = sent(&gate, "SELECT 'd'");
    wait_pipelined(metrics_port, 3.0, &gate);
    for (name, conn, want) in [("A", &mut a, "a"), ("B", &mut b, "b"), ("D", &mut d, "d")] {
        let reply = conn.read_until_readies_within(1, Duration::from_secs(10));
        assert_eq!(
            rows(&reply),
            one(want),
            "{name} got {reply:?}\n{}",
            tail(&gate.log_contents(), 20)
        );
    }
    // The connection is clean for whoever comes next.
    assert_eq!(rows(&a.query("SELECT 41 + 1")), one("42"));
}

#[test]
fn cancelling_a_queued_read_cancels_it_and_not_the_read_ahead_of_it() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let mut a = sent(&gate, "SELECT 'a' FROM pg_sleep(2)");
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut b = sent(&gate, "SELECT 'b' FROM pg_sleep(8)");
    wait_pipelined(metrics_port, 1.0, &gate);
    let (pid, key) = b.backend_key.expect("B's BackendKeyData");
    raw::send_cancel_request(gate.port, pid, key);
    // A's read was running when the cancel came: it must finish.
    let a_reply = a.read_until_readies_within(1, Duration::from_secs(10));
    assert_eq!(rows(&a_reply), one("a"), "A got {a_reply:?}");
    assert!(
        a_reply.iter().all(|m| m.tag != b'E'),
        "A's read was hit: {a_reply:?}"
    );
    let b_reply = b.read_until_readies_within(1, Duration::from_secs(10));
    let codes: Vec<_> = b_reply.iter().filter_map(|m| m.sqlstate()).collect();
    assert_eq!(codes, vec!["57014".to_string()], "B got {b_reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "B's read was not cancelled: it took {:?}",
        started.elapsed()
    );
    assert_eq!(rows(&b.query("SELECT 41 + 1")), one("42"));
}

#[test]
fn a_queued_read_whose_server_is_terminated_is_sent_again() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let (mut a, pid) = running_read(&gate);
    let mut b = sent(&gate, "SELECT 'b'");
    wait_pipelined(metrics_port, 1.0, &gate);
    terminate(cluster, &pid);
    let b_reply = b.read_until_readies_within(1, Duration::from_secs(10));
    assert_eq!(
        rows(&b_reply),
        one("b"),
        "B got {b_reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
    a_goes_on(&mut a);
}

#[test]
fn a_queued_extended_batch_that_names_a_statement_is_sent_again_whole() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let (mut a, pid) = running_read(&gate);
    let mut b = RawConn::connect(gate.port);
    b.login("postgres", "postgres");
    // Parse names a statement: were the name kept when the batch is sent
    // again, the second Parse would fail with 42P05.
    let mut batch = raw::parse_message("b_stmt", "SELECT 'b'", &[]);
    batch.extend(raw::bind_message("", "b_stmt", &[]));
    batch.extend(raw::execute_message("", 0));
    batch.extend(raw::sync_message());
    b.send(&batch).expect("send B's batch");
    wait_pipelined(metrics_port, 1.0, &gate);
    terminate(cluster, &pid);
    let b_reply = b.read_until_readies_within(1, Duration::from_secs(10));
    let tags: Vec<char> = b_reply.iter().map(|m| m.tag as char).collect();
    assert_eq!(
        tags,
        vec!['1', '2', 'D', 'C', 'Z'],
        "B got {b_reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
    assert_eq!(rows(&b_reply), one("b"));
    // The name is B's, once: running it again works.
    let mut again = raw::bind_message("", "b_stmt", &[]);
    again.extend(raw::execute_message("", 0));
    again.extend(raw::sync_message());
    let reply = b.exchange(&again, 1);
    assert_eq!(rows(&reply), one("b"), "B's statement again: {reply:?}");
    a_goes_on(&mut a);
}

/// Sends `SELECT '<name>:' || pg_backend_pid() FROM pg_sleep(<secs>)` on
/// `conn` without reading the reply.
fn send_read(conn: &mut RawConn, name: &str, secs: f64) {
    conn.send(&raw::query_message(&format!(
        "SELECT '{name}:' || pg_backend_pid() FROM pg_sleep({secs})"
    )))
    .expect("send the read");
}

/// `send_read` through a new client of `gate`.
fn sent_read(gate: &PgGate, name: &str, secs: f64) -> RawConn {
    let mut conn = RawConn::connect(gate.port);
    conn.login("postgres", "postgres");
    send_read(&mut conn, name, secs);
    conn
}

/// The server process id in the reply of a `sent_read` called `name`.
fn server_of(conn: &mut RawConn, name: &str, gate: &PgGate) -> String {
    let reply = conn.read_until_readies_within(1, Duration::from_secs(10));
    let got = rows(&reply);
    let text = got
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_else(|| panic!("{name} got {reply:?}\n{}", tail(&gate.log_contents(), 20)));
    text.strip_prefix(&format!("{name}:"))
        .unwrap_or_else(|| panic!("{name} got another client's answer: {text}"))
        .to_string()
}

#[test]
fn reads_take_idle_connections_until_pipeline_after_are_busy_then_queue_behind_them() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    // Four connections per pool and the default pool.pipeline_after (2).
    let gate = gate_with_pool(cluster, metrics_port, "size = 4");
    let mut a = sent_read(&gate, "a", 1.5);
    thread::sleep(Duration::from_millis(100));
    // One connection busy: B's read takes another.
    let mut b = sent_read(&gate, "b", 1.5);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(pipelined(metrics_port), 0.0, "B queued behind A");
    // Two busy: C's read queues behind one of them though two are free.
    let mut c = sent_read(&gate, "c", 0.0);
    wait_pipelined(metrics_port, 1.0, &gate);
    let a_pid = server_of(&mut a, "a", &gate);
    let b_pid = server_of(&mut b, "b", &gate);
    let c_pid = server_of(&mut c, "c", &gate);
    assert_ne!(a_pid, b_pid, "A and B shared a server process");
    assert!(
        c_pid == a_pid || c_pid == b_pid,
        "C ran on {c_pid}, neither A's ({a_pid}) nor B's ({b_pid})"
    );
    // The connection went back clean.
    assert_eq!(rows(&c.query("SELECT 41 + 1")), one("42"));
}

#[test]
fn with_pipeline_after_one_a_read_queues_behind_the_one_running_read() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = gate_with_pool(cluster, metrics_port, "size = 4\npipeline_after = 1");
    let mut a = sent_read(&gate, "a", 1.0);
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut b = sent_read(&gate, "b", 0.0);
    wait_pipelined(metrics_port, 1.0, &gate);
    let a_pid = server_of(&mut a, "a", &gate);
    let b_pid = server_of(&mut b, "b", &gate);
    assert_eq!(a_pid, b_pid, "B did not run behind A");
    assert!(
        started.elapsed() > Duration::from_millis(600),
        "B was answered before A's read ended"
    );
}

#[test]
fn a_read_that_would_wait_longer_than_the_window_takes_a_free_connection_instead() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = gate_with_pool(cluster, metrics_port, "size = 4\npipeline_window = \"1s\"");
    let mut a = RawConn::connect(gate.port);
    a.login("postgres", "postgres");
    let mut b = RawConn::connect(gate.port);
    b.login("postgres", "postgres");
    // Two connections learn that reads on them take 2 s.
    send_read(&mut a, "a", 2.0);
    thread::sleep(Duration::from_millis(50));
    send_read(&mut b, "b", 2.0);
    server_of(&mut a, "a", &gate);
    server_of(&mut b, "b", &gate);
    // Both busy again with such reads: C's read, 100 ms later, would wait
    // about 1.9 s behind either, longer than the window, so it takes a
    // connection of its own.
    send_read(&mut a, "a", 2.0);
    thread::sleep(Duration::from_millis(50));
    send_read(&mut b, "b", 2.0);
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let mut c = sent_read(&gate, "c", 0.0);
    let c_pid = server_of(&mut c, "c", &gate);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "C waited {:?}",
        started.elapsed()
    );
    assert_eq!(pipelined(metrics_port), 0.0, "C queued behind a slow read");
    let a_pid = server_of(&mut a, "a", &gate);
    let b_pid = server_of(&mut b, "b", &gate);
    assert!(c_pid != a_pid && c_pid != b_pid, "C ran on {c_pid}");
}

/// The first column of the first row in `messages`, if any.
fn first_value(messages: &[raw::Message]) -> Option<String> {
    rows(messages)
        .first()
        .and_then(|r| r.first().cloned().flatten())
}

#[test]
fn reads_a_replica_refuses_as_writes_go_to_the_primary_and_the_reads_queued_behind_get_their_own_answers(
) {
    let cluster = Cluster::shared();
    let db = common::new_database(cluster, "pipe_ro");
    // A function the router cannot know writes: a replica answers 25006.
    common::on_primary_in(
        cluster,
        &db,
        "CREATE TABLE w_log (tag text); \
         CREATE FUNCTION w(tag text, secs float8) RETURNS text LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(secs); INSERT INTO w_log VALUES (tag); RETURN tag; END $$",
    );
    cluster.wait_replicas_caught_up();
    let metrics_port = free_port();
    // Reads go to the one replica, over one connection.
    let gate = one_replica_gate(cluster, metrics_port, cluster.replica_ports[0]);
    let client = |sql: &str| {
        let mut conn = RawConn::connect(gate.port);
        conn.login("postgres", &db);
        conn.send(&raw::query_message(sql)).expect("send the read");
        conn
    };
    // A's call runs on the replica for a second before it is refused; B's
    // plain read, C's call (refused at once) and D's plain read queue behind
    // it in turn, so reads are queued behind both refused calls.
    let mut a = client("SELECT w('a', 1)");
    thread::sleep(Duration::from_millis(150));
    let mut b = client("SELECT 'b' || (inet_server_port() = inet_server_port())::text");
    wait_pipelined(metrics_port, 1.0, &gate);
    let mut c = client("SELECT w('c', 0)");
    wait_pipelined(metrics_port, 2.0, &gate);
    let mut d = client("SELECT 'd'");
    wait_pipelined(metrics_port, 3.0, &gate);
    for (name, conn, want) in [
        ("A", &mut a, "a"),
        ("B", &mut b, "btrue"),
        ("C", &mut c, "c"),
        ("D", &mut d, "d"),
    ] {
        let reply = conn.read_until_readies_within(1, Duration::from_secs(10));
        assert!(
            reply.iter().all(|m| m.tag != b'E'),
            "{name} got an error: {reply:?}\n{}",
            tail(&gate.log_contents(), 20)
        );
        assert_eq!(
            first_value(&reply).as_deref(),
            Some(want),
            "{name} got {reply:?}\n{}",
            tail(&gate.log_contents(), 20)
        );
    }
    // Each call wrote once, on the primary.
    let logged = common::on_primary_in(cluster, &db, "SELECT tag FROM w_log ORDER BY tag");
    assert_eq!(
        logged,
        vec![vec![Some("a".to_string())], vec![Some("c".to_string())]]
    );
    let retries =
        sample_value(&scrape(metrics_port), "pggate_read_only_retries_total", &[]).unwrap_or(0.0);
    assert!(
        retries >= 2.0,
        "{retries} reads were sent to the primary after 25006"
    );
    // The replica connection went back clean: a plain read on it works.
    assert_eq!(rows(&b.query("SELECT 41 + 1")), one("42"));
    assert_eq!(rows(&a.query("SELECT 41 + 1")), one("42"));
}

#[test]
fn a_read_queued_behind_one_whose_client_is_slow_to_take_its_rows_runs_once_that_client_catches_up()
{
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let (row_count, row_len) = (30_000, 1000);
    // A's read sleeps, then returns about 30 MB that A does not read yet.
    let mut a = sent(
        &gate,
        &format!(
            "SELECT repeat('x', {row_len}) FROM pg_sleep(0.5), generate_series(1, {row_count})"
        ),
    );
    thread::sleep(Duration::from_millis(100));
    let mut b = sent(&gate, "SELECT 'b'");
    wait_pipelined(metrics_port, 1.0, &gate);
    // PgGate stops reading A's rows once A's output backs up: the server
    // then waits to write them.
    let mut direct = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = simple_rows(
            &mut direct,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE 'SELECT repeat(%' AND wait_event = 'ClientWrite'",
        );
        if waiting == one("1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server of A's read never waited to write its rows\n{}",
            tail(&gate.log_contents(), 20)
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    // Nothing of A's rows reaches B meanwhile.
    let early = b.read_until_readies_within(1, Duration::from_millis(300));
    assert!(
        rows(&early).iter().all(|r| *r == one("b")[0]),
        "B got {} rows that are not its own",
        rows(&early).len()
    );
    // A catches up: all its rows, then B's read runs and B gets its answer.
    let a_reply = a.read_until_readies_within(1, Duration::from_secs(60));
    let a_rows = rows(&a_reply);
    assert_eq!(a_rows.len(), row_count, "A got {} rows", a_rows.len());
    assert!(
        a_rows.iter().all(|r| r
            .first()
            .cloned()
            .flatten()
            .is_some_and(|v| v.len() == row_len)),
        "A got a row that is not its own"
    );
    assert_eq!(a_reply.last().map(|m| m.tag), Some(b'Z'));
    let b_reply = if early.iter().any(|m| m.tag == b'Z') {
        early
    } else {
        let mut all = early;
        all.extend(b.read_until_readies_within(1, Duration::from_secs(10)));
        all
    };
    assert_eq!(
        rows(&b_reply),
        one("b"),
        "B got {b_reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
    // The connection is clean for both.
    assert_eq!(rows(&a.query("SELECT 41 + 1")), one("42"));
    assert_eq!(rows(&b.query("SELECT 40 + 2")), one("42"));
}

#[test]
fn read_your_writes_holds_for_reads_queued_behind_other_clients_reads() {
    let cluster = Cluster::shared();
    let db = common::new_database(cluster, "pipe_ryw");
    common::on_primary_in(cluster, &db, "CREATE TABLE ryw (w int, i int)");
    cluster.wait_replicas_caught_up();
    let metrics_port = free_port();
    // One connection per backend: reads queue behind one another on each.
    let gate = PgGate::start(
        cluster,
        &format!(
            "{}[proxy]\nworkers = 1\n[pool]\nsize = 1\npipeline_window = \"10s\"\n\
             [routing]\nread_your_writes = \"lsn\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            common::FAST_HEALTH
        ),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background: Vec<_> = (0..4)
        .map(|_| {
            let config = gate.config("postgres", &db);
            let stop = stop.clone();
            thread::spawn(move || {
                let mut client = config.connect(postgres::NoTls).expect("reader connects");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client
                        .simple_query("SELECT pg_sleep(0.005)")
                        .expect("a background read");
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let config = gate.config("postgres", &db);
            let replicas = cluster.replica_ports;
            thread::spawn(move || {
                let mut client = config.connect(postgres::NoTls).expect("writer connects");
                let mut on_replicas = 0;
                for i in 0..30 {
                    client
                        .simple_query(&format!("INSERT INTO ryw VALUES ({w}, {i})"))
                        .unwrap_or_else(|e| panic!("writer {w}, insert {i}: {e}"));
                    if i % 3 == 0 {
                        // Long enough for a probe to see a replica past the write.
                        thread::sleep(Duration::from_millis(300));
                    }
                    let got = simple_rows(
                        &mut client,
                        &format!(
                            "SELECT count(*), inet_server_port() FROM ryw WHERE w = {w} AND i = {i}"
                        ),
                    );
                    assert_eq!(
                        got.first()
                            .and_then(|r| r.first().cloned().flatten())
                            .as_deref(),
                        Some("1"),
                        "writer {w}: the read after insert {i} did not see it: {got:?}"
                    );
                    let port = got[0][1].as_deref().and_then(|p| p.parse::<u16>().ok());
                    if port.is_some_and(|p| replicas.contains(&p)) {
                        on_replicas += 1;
                    }
                }
                on_replicas
            })
        })
        .collect();
    let mut on_replicas = 0;
    for (w, writer) in writers.into_iter().enumerate() {
        match writer.join() {
            Ok(n) => on_replicas += n,
            Err(_) => panic!("writer {w} failed\n{}", tail(&gate.log_contents(), 20)),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in background {
        reader.join().expect("a background reader");
    }
    assert!(
        on_replicas > 0,
        "every read after a write ran on the primary: the replicas were not exercised"
    );
    let n = pipelined(metrics_port);
    assert!(n > 20.0, "only {n} reads were queued behind another");
}

#[test]
fn reads_queued_behind_a_read_that_leaves_its_server_in_a_transaction_are_sent_again() {
    let cluster = Cluster::shared();
    // A stand-in replica (no real server ends a plain read inside a
    // transaction): A's read answers after 500 ms with ReadyForQuery 'T';
    // any other read answers at once, outside a transaction.
    let fake = FakeServer::start(|sql| {
        let (value, status, delay) = if sql.contains("'a'") {
            ("a", b'T', Duration::from_millis(500))
        } else if sql.contains("'b'") {
            ("b", b'I', Duration::ZERO)
        } else {
            ("?", b'I', Duration::ZERO)
        };
        let mut bytes = fake::one_row(&[Some(value)]);
        bytes.extend(fake::ready(status));
        Answer {
            delay,
            bytes,
            close: false,
        }
    });
    let metrics_port = free_port();
    let gate = one_replica_gate(cluster, metrics_port, fake.port);
    let mut a = sent(&gate, "SELECT 'a'");
    thread::sleep(Duration::from_millis(100));
    let mut b = sent(&gate, "SELECT 'b'");
    wait_pipelined(metrics_port, 1.0, &gate);
    // B's read never runs in A's transaction: the connection is closed and
    // B's read sent again, to a connection of its own.
    let b_reply = b.read_until_readies_within(1, Duration::from_secs(10));
    let tags: Vec<char> = b_reply.iter().map(|m| m.tag as char).collect();
    assert_eq!(
        (tags, rows(&b_reply)),
        (vec!['T', 'D', 'C', 'Z'], one("b")),
        "B got {b_reply:?}\n{}",
        tail(&gate.log_contents(), 20)
    );
    // A got its own row and nothing else, then learns that its transaction
    // is gone and is closed.
    let mut a_got = Vec::new();
    while let Ok(Some(m)) = a.read_message() {
        a_got.push(m);
    }
    assert_eq!(rows(&a_got), one("a"), "A got {a_got:?}");
    let codes: Vec<_> = a_got.iter().filter_map(|m| m.sqlstate()).collect();
    assert_eq!(codes, vec!["08006".to_string()], "A got {a_got:?}");
    assert!(
        fake.was_sent("'b'"),
        "B's read never reached the stand-in replica"
    );
    // B's session goes on.
    assert_eq!(rows(&b.query("SELECT 'b'")), one("b"));
}

/// Polls PgGate's metrics until `name` reads `want` (the workers count once a
/// second); panics after `limit`.
fn wait_gauge(metrics_port: u16, name: &str, want: f64, limit: Duration, gate: &PgGate) {
    let deadline = Instant::now() + limit;
    loop {
        let got = sample_value(&scrape(metrics_port), name, &[]);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {got:?}, not {want}, after {limit:?}\n{}",
            tail(&gate.log_contents(), 20)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_queued_read_counts_in_pggate_pipelined_reads_queued_until_it_runs() {
    let cluster = Cluster::shared();
    let metrics_port = free_port();
    let gate = one_connection_gate(cluster, metrics_port);
    let (mut a, _) = running_read(&gate);
    let mut b = sent(&gate, "SELECT 'b'");
    wait_pipelined(metrics_port, 1.0, &gate);
    // A's read runs for about 2.8 s more: long enough for a tick to count B.
    let queued = "pggate_pipelined_reads_queued";
    wait_gauge(
        metrics_port,
        queued,
        1.0,
        Duration::from_millis(2500),
        &gate,
    );
    let waiting = sample_value(&scrape(metrics_port), "pggate_pool_waiting_clients", &[]);
    assert_eq!(waiting, Some(0.0), "B counted as waiting for a connection");
    let a_reply = a.read_until_readies_within(1, Duration::from_secs(10));
    assert_eq!(rows(&a_reply), one("a"), "A got {a_reply:?}");
    let b_reply = b.read_until_readies_within(1, Duration::from_secs(10));
    assert_eq!(rows(&b_reply), one("b"), "B got {b_reply:?}");
    wait_gauge(metrics_port, queued, 0.0, Duration::from_secs(3), &gate);
}
