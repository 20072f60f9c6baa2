//! Integration tests of the extended query protocol through PgGate (SPEC §3
//! Prepared statements and Pinning, §4 Routing; PITFALLS "Extended
//! protocol", "COPY", "Cancel") against a real PostgreSQL cluster (a primary
//! and two streaming replicas built once for this test binary).
//!
//! Drivers are exercised with the `postgres` crate (named statements `sN`
//! for `prepare` and for `query` with parameters, binary results, portals
//! with a row limit); exact message sequences and pipelines with the raw
//! client of `common::raw`, often compared with what the primary answers
//! to the same bytes directly. Which server ran a statement is read from
//! `inet_server_port()` or from the server logs (`log_statement = 'all'`
//! logs each Execute as `execute <name>: <query>`). Each test uses tables
//! or a database of its own, since tests run concurrently on one cluster.

#[allow(unused_imports)]
mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{
    self, bind_message, close_message, copy_data_message, copy_done_message, copy_fail_message,
    describe_message, execute_message, flush_message, parse_message, sync_message,
    unnamed_statement, Message, RawConn,
};
use common::{describe_error, random_bytes, random_hex, simple_value, tools, Cluster, PgGate};

/// Runs setup SQL directly on the primary (not through PgGate).
fn on_primary(cluster: &Cluster, sql: &str) {
    cluster
        .connect_direct(cluster.primary_port, "postgres", "postgres")
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("setup on the primary failed: {}", describe_error(&e)));
}

/// A raw protocol client logged in as `postgres` (trust) to `port`: PgGate's
/// or a cluster server's.
fn raw_client(port: u16) -> RawConn {
    let mut conn = RawConn::connect(port);
    conn.login("postgres", "postgres");
    conn
}

/// Sends the pipeline `bytes` (described by `what`), reads as many
/// ReadyForQuery as `expected` holds and requires exactly the reply types
/// `expected` (e.g. `"12DCZ"`). Returns the replies.
fn expect_replies(conn: &mut RawConn, what: &str, bytes: &[u8], expected: &str) -> Vec<Message> {
    let readies = expected.matches('Z').count();
    assert!(
        readies > 0,
        "expect_replies needs a ReadyForQuery to wait for"
    );
    let got = conn.exchange(bytes, readies);
    assert_eq!(
        raw::tags(&got),
        expected,
        "{what}: expected replies {expected:?}, got {got:?}"
    );
    got
}

/// SQLSTATEs of the ErrorResponses among `messages`.
fn sqlstates(messages: &[Message]) -> Vec<String> {
    raw::errors(messages)
        .iter()
        .map(|e| e.sqlstate().unwrap_or_default())
        .collect()
}

/// The SQLSTATE of a driver error, if the server sent one.
fn code_of(e: &postgres::Error) -> Option<String> {
    e.as_db_error().map(|db| db.code().code().to_string())
}

/// What a guarded piece of a test is doing now, for the message when it
/// stalls.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<String>>);

impl Progress {
    fn step(&self, what: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
    }

    fn current(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs `f` on a thread of its own and fails the test if it has not
/// finished within `limit`, naming the step it was at (the driver has no
/// timeouts of its own: a stalled proxy would hang the test instead of
/// failing it). A panic in `f` fails the test as usual.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce(&Progress) -> T + Send + 'static,
) -> T {
    let progress = Progress::default();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let handle = {
        let progress = progress.clone();
        thread::spawn(move || {
            let value = f(&progress);
            let _ = done_tx.send(());
            value
        })
    };
    match done_rx.recv_timeout(limit) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "{what}: stalled, no answer within {limit:?} at step: {}",
            progress.current()
        ),
        _ => match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    }
}

/// Statement texts of one test carry this marker, so that server-log lines
/// can be told apart from those of concurrent tests.
fn marker(what: &str) -> String {
    format!("ext-{what}-{}", random_hex(10))
}

/// Lines of the log of the server at `port` that record an Execute of a
/// statement carrying `marker`.
fn logged_executions(cluster: &Cluster, port: u16, marker: &str) -> usize {
    cluster
        .server_log(port)
        .lines()
        .filter(|line| line.contains(marker) && line.contains("execute "))
        .count()
}

/// Logged executions of `marker` on (primary, replica1 + replica2), polling
/// for up to 3 s until they add up to `total`.
fn executions_by_role(cluster: &Cluster, marker: &str, total: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let primary = logged_executions(cluster, cluster.primary_port, marker);
        let replicas: usize = cluster
            .replica_ports
            .iter()
            .map(|&port| logged_executions(cluster, port, marker))
            .sum();
        if primary + replicas >= total || Instant::now() > deadline {
            return (primary, replicas);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One client that keeps PgGate's small pool busy until `stop` is set: it
/// prepares `statements` statements (`SELECT $1::int + k AS ck`, the same
/// texts in every churn client) and runs them in turn, with a simple query
/// every fifth time and, every seventh, a statement prepared, run and closed
/// again. Every result is checked. Returns how many queries it ran.
fn churn_client(
    config: postgres::Config,
    id: usize,
    statements: usize,
    shared_text: Option<&str>,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|e| format!("churn client {id}: connect: {}", describe_error(&e)))?;
    let prepared: Vec<postgres::Statement> = (0..statements)
        .map(|k| {
            client
                .prepare(&format!("SELECT $1::int + {k} AS c{k}"))
                .map_err(|e| format!("churn client {id}: prepare {k}: {}", describe_error(&e)))
        })
        .collect::<Result<_, _>>()?;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = n as usize % statements;
        let value = (id * 100_000) as i32 + n as i32;
        let got: i32 = client
            .query_one(&prepared[k], &[&value])
            .map_err(|e| format!("churn client {id} query {n}: {}", describe_error(&e)))?
            .get(0);
        if got != value + k as i32 {
            return Err(format!(
                "churn client {id} query {n}: SELECT {value} + {k} returned {got}"
            ));
        }
        if n % 5 == 0 {
            let messages = client
                .simple_query(&format!("SELECT {value}"))
                .map_err(|e| format!("churn client {id} simple {n}: {}", describe_error(&e)))?;
            let echoed = messages.iter().find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            });
            if echoed != Some(value.to_string()) {
                return Err(format!(
                    "churn client {id} simple {n}: SELECT {value} returned {echoed:?}"
                ));
            }
        }
        if n % 7 == 0 {
            if let Some(text) = shared_text {
                // Another client's statement with the same text: prepared,
                // run and closed (a Close of a statement others may share).
                let statement = client.prepare(text).map_err(|e| {
                    format!("churn client {id} shared prepare: {}", describe_error(&e))
                })?;
                let got: i32 = client
                    .query_one(&statement, &[&value])
                    .map_err(|e| format!("churn client {id} shared: {}", describe_error(&e)))?
                    .get(0);
                if got != value * 7 {
                    return Err(format!(
                        "churn client {id}: shared statement of {value} returned {got}"
                    ));
                }
                drop(statement);
            }
        }
        n += 1;
    }
    Ok(n)
}

/// Collects the churn clients' results; fails the test on any error.
fn finish_churn(results: Vec<thread::ScopedJoinHandle<'_, Result<u64, String>>>) -> u64 {
    let mut total = 0;
    let mut errors = Vec::new();
    for handle in results {
        match handle.join().expect("churn thread") {
            Ok(n) => total += n,
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "churn clients failed:\n  {}",
        errors.join("\n  ")
    );
    total
}

#[test]
fn twelve_clients_with_prepared_statements_on_a_pool_of_two_get_correct_results() {
    let cluster = Cluster::shared();
    let kv = format!("ext_kv_{}", random_hex(8));
    let log = format!("ext_log_{}", random_hex(8));
    on_primary(
        cluster,
        &format!(
            "CREATE TABLE {kv} (k int PRIMARY KEY, v text NOT NULL);
             INSERT INTO {kv} SELECT g, 'value-' || g FROM generate_series(1, 1000) g;
             CREATE TABLE {log} (id bigserial PRIMARY KEY, client int NOT NULL,
                                 n int NOT NULL, note text NOT NULL);"
        ),
    );
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, "[pool]\nsize = 2");
    let config = gate.config("postgres", "postgres");
    const CLIENTS: usize = 12;
    const QUERIES: usize = 500;

    let (kv_name, log_name) = (kv.clone(), log.clone());
    let outcomes: Vec<(u64, Vec<String>)> =
        within(Duration::from_secs(60), "twelve clients", move |progress| {
            let (kv, log) = (&kv_name, &log_name);
            thread::scope(|s| {
                let handles: Vec<_> = (0..CLIENTS)
                    .map(|t| {
                        let config = config.clone();
                        s.spawn(move || {
                            let mut errors = Vec::new();
                            let mut writes = 0u64;
                            let mut client = match config.connect(postgres::NoTls) {
                                Ok(client) => client,
                                Err(e) => {
                                    return (
                                        0,
                                        vec![format!(
                                            "client {t}: connect: {}",
                                            describe_error(&e)
                                        )],
                                    )
                                }
                            };
                            // Prepared on first use, then reused.
                            let mut add: Option<postgres::Statement> = None;
                            let mut third: Option<postgres::Statement> = None;
                            let mut read: Option<postgres::Statement> = None;
                            let writer = t % 2 == 0;
                            for i in 0..QUERIES {
                                if i % 100 == 0 {
                                    progress.step(&format!("client {t} at query {i}"));
                                }
                                let t32 = t as i32;
                                let i32_ = i as i32;
                                let result: Result<(), String> = (|| {
                                    let fail = |e: postgres::Error| describe_error(&e);
                                    match i % 3 {
                                        0 => {
                                            if add.is_none() {
                                                add = Some(
                                                    client
                                                        .prepare("SELECT $1::int + $2::int")
                                                        .map_err(fail)?,
                                                );
                                            }
                                            let (a, b) = (t32 * 1000 + i32_, i32_);
                                            let got: i32 = client
                                                .query_one(add.as_ref().unwrap(), &[&a, &b])
                                                .map_err(fail)?
                                                .get(0);
                                            if got != a + b {
                                                return Err(format!("{a} + {b} returned {got}"));
                                            }
                                        }
                                        1 => {
                                            if read.is_none() {
                                                read = Some(
                                                    client
                                                        .prepare(&format!(
                                                            "SELECT v FROM {kv} WHERE k = $1"
                                                        ))
                                                        .map_err(fail)?,
                                                );
                                            }
                                            let key = ((t * 37 + i) % 1000 + 1) as i32;
                                            let got: String = client
                                                .query_one(read.as_ref().unwrap(), &[&key])
                                                .map_err(fail)?
                                                .get(0);
                                            if got != format!("value-{key}") {
                                                return Err(format!("key {key} read {got:?}"));
                                            }
                                        }
                                        _ if writer => {
                                            if third.is_none() {
                                                third = Some(
                                                    client
                                                        .prepare(&format!(
                                                            "INSERT INTO {log} (client, n, note) \
                                                     VALUES ($1, $2, $3) RETURNING client, n, note"
                                                        ))
                                                        .map_err(fail)?,
                                                );
                                            }
                                            let note = format!("note {t}/{i}");
                                            let row = client
                                                .query_one(
                                                    third.as_ref().unwrap(),
                                                    &[&t32, &i32_, &note],
                                                )
                                                .map_err(fail)?;
                                            let got: (i32, i32, String) =
                                                (row.get(0), row.get(1), row.get(2));
                                            if got != (t32, i32_, note.clone()) {
                                                return Err(format!(
                                                    "INSERT ({t}, {i}, {note:?}) returned {got:?}"
                                                ));
                                            }
                                            writes += 1;
                                        }
                                        _ => {
                                            if third.is_none() {
                                                third = Some(
                                                    client
                                                        .prepare("SELECT $1::text || 'x'")
                                                        .map_err(fail)?,
                                                );
                                            }
                                            let text = format!("c{t}-{i}");
                                            let got: String = client
                                                .query_one(third.as_ref().unwrap(), &[&text])
                                                .map_err(fail)?
                                                .get(0);
                                            if got != format!("{text}x") {
                                                return Err(format!(
                                                    "{text:?} || 'x' returned {got:?}"
                                                ));
                                            }
                                        }
                                    }
                                    if i % 25 == 24 {
                                        // A one-shot statement: prepared, run and closed.
                                        let got: i32 = client
                                            .query_one("SELECT $1::int * 3", &[&i32_])
                                            .map_err(fail)?
                                            .get(0);
                                        if got != i32_ * 3 {
                                            return Err(format!("{i} * 3 returned {got}"));
                                        }
                                    }
                                    Ok(())
                                })(
                                );
                                if let Err(e) = result {
                                    errors.push(format!("client {t} query {i}: {e}"));
                                }
                            }
                            (writes, errors)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("client thread"))
                    .collect()
            })
        });

    let writes: u64 = outcomes.iter().map(|(w, _)| w).sum();
    let errors: Vec<&String> = outcomes.iter().flat_map(|(_, e)| e).collect();
    assert!(
        errors.is_empty(),
        "{} of {} queries failed or returned wrong values; the first ones:\n  {}",
        errors.len(),
        CLIENTS * QUERIES,
        errors
            .iter()
            .take(20)
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            &format!("SELECT count(*), count(DISTINCT (client, n)) FROM {log}")
        ),
        format!("{writes}|{writes}"),
        "every INSERT ... RETURNING that answered happened exactly once on the primary"
    );
}

#[test]
fn extended_reads_run_on_replicas_and_writes_on_the_primary() {
    let cluster = Cluster::shared();
    let table = format!("ext_route_{}", random_hex(8));
    on_primary(
        cluster,
        &format!("CREATE TABLE {table} (id serial PRIMARY KEY, v int NOT NULL)"),
    );
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, "");
    let read_marker = marker("read");
    let write_marker = marker("write");
    let config = gate.config("postgres", "postgres");
    within(
        Duration::from_secs(60),
        "prepared reads and writes",
        move |progress| {
            progress.step("connect");
            let mut client = config
                .connect(postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect: {}", describe_error(&e)));
            let read = client
                .prepare(&format!(
                    "SELECT inet_server_port(), $1::int /* {read_marker} */"
                ))
                .unwrap_or_else(|e| panic!("prepare the read: {}", describe_error(&e)));
            let write = client
                .prepare(&format!(
            "INSERT INTO {table} (v) VALUES ($1) RETURNING inet_server_port() /* {write_marker} */"
        ))
                .unwrap_or_else(|e| panic!("prepare the write: {}", describe_error(&e)));

            let run_read = |client: &mut postgres::Client, i: i32| -> i32 {
                let row = client
                    .query_one(&read, &[&i])
                    .unwrap_or_else(|e| panic!("prepared read {i}: {}", describe_error(&e)));
                assert_eq!(
                    row.get::<_, i32>(1),
                    i,
                    "prepared read {i} echoes its parameter"
                );
                row.get(0)
            };

            // Outside a transaction: reads on replicas, writes on the primary.
            let mut ports = Vec::new();
            for i in 0..10 {
                ports.push(run_read(&mut client, i));
            }
            assert!(
                ports.iter().all(|&p| cluster.is_replica_port(p as u16)),
                "prepared reads should run on replicas {:?}; ran on {ports:?}",
                cluster.replica_ports
            );
            for i in 0..5 {
                let port: i32 = client
                    .query_one(&write, &[&i])
                    .unwrap_or_else(|e| panic!("prepared INSERT {i}: {}", describe_error(&e)))
                    .get(0);
                assert_eq!(
                    port as u16, cluster.primary_port,
                    "prepared INSERT {i} should run on the primary"
                );
            }

            // The read, prepared and run on replicas, runs on the primary inside
            // BEGIN ... COMMIT, with the transaction's write.
            let mut tx = client
                .transaction()
                .unwrap_or_else(|e| panic!("BEGIN: {}", describe_error(&e)));
            for i in 100..103 {
                let row = tx.query_one(&read, &[&i]).unwrap_or_else(|e| {
                    panic!("prepared read {i} in a transaction: {}", describe_error(&e))
                });
                assert_eq!(row.get::<_, i32>(1), i);
                assert_eq!(
                    row.get::<_, i32>(0) as u16,
                    cluster.primary_port,
                    "a prepared read inside BEGIN ... COMMIT runs on the primary"
                );
            }
            let port: i32 = tx
                .query_one(&write, &[&100i32])
                .unwrap_or_else(|e| {
                    panic!("prepared INSERT in a transaction: {}", describe_error(&e))
                })
                .get(0);
            assert_eq!(port as u16, cluster.primary_port);
            let seen: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .unwrap_or_else(|e| panic!("count in the transaction: {}", describe_error(&e)))
                .get(0);
            assert_eq!(seen, 6, "the transaction sees its own write");
            tx.commit()
                .unwrap_or_else(|e| panic!("COMMIT: {}", describe_error(&e)));

            // After COMMIT: back on replicas.
            let mut after = Vec::new();
            for i in 200..205 {
                after.push(run_read(&mut client, i));
            }
            assert!(
                after.iter().all(|&p| cluster.is_replica_port(p as u16)),
                "after COMMIT prepared reads should run on replicas again; ran on {after:?}"
            );

            // The server logs agree: 15 executions of the read on replicas and 3 on
            // the primary; all 6 of the write on the primary.
            let (primary, replicas) = executions_by_role(cluster, &read_marker, 18);
            assert_eq!(
                (primary, replicas),
                (3, 15),
                "logged executions of the prepared read (primary, replicas)"
            );
            let (primary, replicas) = executions_by_role(cluster, &write_marker, 6);
            assert_eq!(
                (primary, replicas),
                (6, 0),
                "logged executions of the prepared INSERT (primary, replicas)"
            );
            assert_eq!(
                cluster.psql(
                    cluster.primary_port,
                    "postgres",
                    "postgres",
                    &format!("SELECT count(*), sum(v) FROM {table}")
                ),
                "6|110"
            );
        },
    );
}

#[test]
fn a_client_whose_statement_cache_evicts_keeps_working() {
    let cluster = Cluster::shared();

    // (a) Ten statements round-robin on connections that keep three.
    {
        let gate = PgGate::start(cluster, "[pool]\nsize = 1\nmax_prepared_statements = 3");
        let config = gate.config("postgres", "postgres");
        within(
            Duration::from_secs(60),
            "ten statements on connections keeping three",
            move |progress| {
                let mut client = config
                    .connect(postgres::NoTls)
                    .unwrap_or_else(|e| panic!("connect: {}", describe_error(&e)));
                let statements: Vec<postgres::Statement> = (0..10)
                    .map(|k| {
                        client
                            .prepare(&format!("SELECT $1::int * 10 + {k} AS v{k}"))
                            .unwrap_or_else(|e| {
                                panic!("prepare statement {k}: {}", describe_error(&e))
                            })
                    })
                    .collect();
                for round in 0..100 {
                    progress.step(&format!("round {round}"));
                    for (k, statement) in statements.iter().enumerate() {
                        let got: i32 = client
                            .query_one(statement, &[&round])
                            .unwrap_or_else(|e| {
                                panic!(
                                    "round {round}, statement {k} (of 10, connections keep 3): {}",
                                    describe_error(&e)
                                )
                            })
                            .get(0);
                        assert_eq!(got, round * 10 + k as i32, "round {round}, statement {k}");
                    }
                }
                // No server connection holds more than three statements.
                for sql in [
                    "SELECT count(*) FROM pg_prepared_statements",
                    "SELECT count(*) FROM pg_prepared_statements",
                    "SELECT count(*) FROM pg_prepared_statements",
                    "SELECT count(*) FROM pg_prepared_statements",
                    "SELECT count(*) FROM pg_prepared_statements /* pggate:primary */",
                ] {
                    let held: i64 = simple_value(&mut client, sql).parse().expect("a count");
                    assert!(
                        held <= 3,
                        "a server connection holds {held} prepared statements with \
                 max_prepared_statements = 3 ({sql})"
                    );
                }
            },
        );
    }

    let gate = PgGate::start(cluster, "");

    // (b) Close (dropping a postgres::Statement) and prepare again.
    let config = gate.config("postgres", "postgres");
    within(
        Duration::from_secs(60),
        "Close and prepare again",
        move |progress| {
            let mut client = config
                .connect(postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect: {}", describe_error(&e)));
            let _ = progress;
            for i in 0..30 {
                let text = if i % 2 == 0 {
                    "SELECT $1::int + 100"
                } else {
                    "SELECT $1::int + 200"
                };
                let statement = client
                    .prepare(text)
                    .unwrap_or_else(|e| panic!("prepare #{i} {text:?}: {}", describe_error(&e)));
                let got: i32 = client
                    .query_one(&statement, &[&i])
                    .unwrap_or_else(|e| panic!("run #{i} {text:?}: {}", describe_error(&e)))
                    .get(0);
                assert_eq!(got, i + if i % 2 == 0 { 100 } else { 200 }, "#{i}");
                drop(statement);
            }
            let kept = client
                .prepare("SELECT $1::text || '-kept'")
                .expect("prepare");
            let closed = client
                .prepare("SELECT $1::text || '-kept'")
                .expect("prepare");
            drop(closed);
            let got: String = client
                .query_one(&kept, &[&"a"])
                .unwrap_or_else(|e| {
                    panic!(
                        "a statement whose twin (same text) was closed: {}",
                        describe_error(&e)
                    )
                })
                .get(0);
            assert_eq!(got, "a-kept");
        },
    );

    // Same names with the raw client: Close, then Parse again under the name.
    {
        let mut conn = raw_client(gate.port);
        expect_replies(
            &mut conn,
            "Parse s 'first' + Sync",
            &[
                parse_message("s", "SELECT 'first'::text", &[]),
                sync_message(),
            ]
            .concat(),
            "1Z",
        );
        expect_replies(
            &mut conn,
            "Parse s again (exists) + Sync",
            &[
                parse_message("s", "SELECT 'again'::text", &[]),
                sync_message(),
            ]
            .concat(),
            "EZ",
        )
        .iter()
        .for_each(|m| {
            if m.tag == b'E' {
                assert_eq!(m.sqlstate().as_deref(), Some("42P05"), "{m:?}");
            }
        });
        let got = expect_replies(
            &mut conn,
            "Bind s + Execute + Sync",
            &[
                bind_message("", "s", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "2DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some("first".to_string())]);
        expect_replies(
            &mut conn,
            "Close S s + Sync",
            &[close_message(b'S', "s"), sync_message()].concat(),
            "3Z",
        );
        let got = expect_replies(
            &mut conn,
            "Bind s (closed) + Execute + Sync",
            &[
                bind_message("", "s", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "EZ",
        );
        assert_eq!(sqlstates(&got), vec!["26000"], "{got:?}");
        let got = expect_replies(
            &mut conn,
            "Parse s 'second' + Bind s + Execute + Sync",
            &[
                parse_message("s", "SELECT 'second'::text", &[]),
                bind_message("", "s", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "12DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some("second".to_string())]);
        // In one batch: Close, Parse under the same name, run; twice.
        let got = expect_replies(
            &mut conn,
            "Close S s; Parse s 'third'; Bind; Execute; Close S s; Parse s 'fourth'; Bind; \
             Execute; Sync",
            &[
                close_message(b'S', "s"),
                parse_message("s", "SELECT 'third'::text", &[]),
                bind_message("", "s", &[]),
                execute_message("", 0),
                close_message(b'S', "s"),
                parse_message("s", "SELECT 'fourth'::text", &[]),
                bind_message("", "s", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "312DC312DCZ",
        );
        assert_eq!(
            raw::first_column(&got),
            vec![Some("third".to_string()), Some("fourth".to_string())]
        );
    }

    // (c) SQL DEALLOCATE <name>, DEALLOCATE ALL and DISCARD ALL, then the
    // same names again.
    {
        let mut conn = raw_client(gate.port);
        let run_stmt1 = |conn: &mut RawConn, what: &str, expected: &str| {
            let got = expect_replies(
                conn,
                what,
                &[
                    bind_message("", "stmt1", &[Some("21")]),
                    execute_message("", 0),
                    sync_message(),
                ]
                .concat(),
                if expected.is_empty() { "EZ" } else { "2DCZ" },
            );
            if expected.is_empty() {
                assert_eq!(sqlstates(&got), vec!["26000"], "{what}: {got:?}");
            } else {
                assert_eq!(
                    raw::first_column(&got),
                    vec![Some(expected.to_string())],
                    "{what}"
                );
            }
        };
        let parse_stmt1 = |conn: &mut RawConn, factor: i32, what: &str| {
            let got = expect_replies(
                conn,
                what,
                &[
                    parse_message("stmt1", &format!("SELECT $1::int * {factor}"), &[]),
                    bind_message("", "stmt1", &[Some("21")]),
                    execute_message("", 0),
                    sync_message(),
                ]
                .concat(),
                "12DCZ",
            );
            assert_eq!(
                raw::first_column(&got),
                vec![Some((21 * factor).to_string())],
                "{what}"
            );
        };
        parse_stmt1(&mut conn, 2, "Parse stmt1 + Bind + Execute + Sync");
        let got = expect_replies(
            &mut conn,
            "Query DEALLOCATE stmt1",
            &raw::query_message("DEALLOCATE stmt1"),
            "CZ",
        );
        assert_eq!(got[0].command_tag(), "DEALLOCATE");
        run_stmt1(&mut conn, "Bind stmt1 after DEALLOCATE stmt1", "");
        parse_stmt1(&mut conn, 3, "Parse stmt1 again after DEALLOCATE stmt1");
        run_stmt1(&mut conn, "Bind stmt1 (new text)", "63");
        expect_replies(
            &mut conn,
            "Parse stmt2 + Sync",
            &[
                parse_message("stmt2", "SELECT 'two'::text", &[]),
                sync_message(),
            ]
            .concat(),
            "1Z",
        );
        let got = expect_replies(
            &mut conn,
            "Query DEALLOCATE ALL",
            &raw::query_message("DEALLOCATE ALL"),
            "CZ",
        );
        assert_eq!(got[0].command_tag(), "DEALLOCATE ALL");
        run_stmt1(&mut conn, "Bind stmt1 after DEALLOCATE ALL", "");
        let got = expect_replies(
            &mut conn,
            "Bind stmt2 after DEALLOCATE ALL",
            &[
                bind_message("", "stmt2", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "EZ",
        );
        assert_eq!(sqlstates(&got), vec!["26000"], "{got:?}");
        parse_stmt1(&mut conn, 4, "Parse stmt1 again after DEALLOCATE ALL");
        let got = expect_replies(
            &mut conn,
            "Query DISCARD ALL",
            &raw::query_message("DISCARD ALL"),
            "CZ",
        );
        assert_eq!(got[0].command_tag(), "DISCARD ALL");
        run_stmt1(&mut conn, "Bind stmt1 after DISCARD ALL", "");
        parse_stmt1(&mut conn, 5, "Parse stmt1 again after DISCARD ALL");
        // A misspelt name is the server's business: 26000 as usual.
        let got = expect_replies(
            &mut conn,
            "Query DEALLOCATE nosuch",
            &raw::query_message("DEALLOCATE nosuch"),
            "EZ",
        );
        assert_eq!(sqlstates(&got), vec!["26000"], "{got:?}");

        // A pipelined DEALLOCATE ALL does not remove what the same pipeline
        // prepares after it.
        let got = expect_replies(
            &mut conn,
            "one write: Query DEALLOCATE ALL; Parse stmt2 + Sync; Bind stmt2 + Execute + Sync",
            &[
                raw::query_message("DEALLOCATE ALL"),
                parse_message("stmt2", "SELECT 'kept'::text", &[]),
                sync_message(),
                bind_message("", "stmt2", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "CZ1Z2DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some("kept".to_string())]);
        run_stmt1(
            &mut conn,
            "Bind stmt1 after the pipelined DEALLOCATE ALL",
            "",
        );
        // The same while an earlier batch of the pipeline is still running
        // on the primary.
        parse_stmt1(&mut conn, 6, "Parse stmt1 before the second pipeline");
        let got = expect_replies(
            &mut conn,
            "one write: P/B/E pg_sleep(0.2) on the primary + Sync; Query DEALLOCATE ALL; \
             Parse stmt3 + Bind stmt3 + Execute + Sync; Bind stmt3 + Execute + Sync",
            &[
                unnamed_statement("SELECT pg_sleep(0.2)::text /* pggate:primary */", &[]),
                sync_message(),
                raw::query_message("DEALLOCATE ALL"),
                parse_message("stmt3", "SELECT 'kept3'::text", &[]),
                bind_message("", "stmt3", &[]),
                execute_message("", 0),
                sync_message(),
                bind_message("", "stmt3", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "12DCZCZ12DCZ2DCZ",
        );
        assert_eq!(
            raw::first_column(&got),
            vec![
                Some(String::new()),
                Some("kept3".to_string()),
                Some("kept3".to_string())
            ]
        );
        run_stmt1(
            &mut conn,
            "Bind stmt1 after the second pipelined DEALLOCATE ALL",
            "",
        );
        let got = expect_replies(
            &mut conn,
            "Bind stmt2 after the second pipelined DEALLOCATE ALL",
            &[
                bind_message("", "stmt2", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "EZ",
        );
        assert_eq!(sqlstates(&got), vec!["26000"], "{got:?}");
    }

    // DEALLOCATE ALL sent with the extended protocol (as drivers that use it
    // for everything do), on a pool of one connection that already has the
    // statement text prepared: the server drops everything, and a statement
    // parsed after it in the same batch must still be there.
    {
        let gate = PgGate::start(cluster, "[pool]\nsize = 1\n[routing]\nreads = \"primary\"");
        let mut conn = raw_client(gate.port);
        expect_replies(
            &mut conn,
            "Parse pre 'two' + Sync",
            &[
                parse_message("pre", "SELECT 'two'::text", &[]),
                sync_message(),
            ]
            .concat(),
            "1Z",
        );
        let got = expect_replies(
            &mut conn,
            "Parse '' DEALLOCATE ALL; Bind; Execute; Parse stmt2 'two'; Bind stmt2; Execute; Sync",
            &[
                unnamed_statement("DEALLOCATE ALL", &[]),
                parse_message("stmt2", "SELECT 'two'::text", &[]),
                bind_message("", "stmt2", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "12C12DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some("two".to_string())]);
        let got = expect_replies(
            &mut conn,
            "Bind stmt2 + Execute + Sync after the extended DEALLOCATE ALL",
            &[
                bind_message("", "stmt2", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "2DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some("two".to_string())]);
        // As on PostgreSQL itself, the statement prepared before it is gone,
        // and the error names the client's statement.
        let got = expect_replies(
            &mut conn,
            "Bind pre + Execute + Sync after the extended DEALLOCATE ALL",
            &[
                bind_message("", "pre", &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "EZ",
        );
        assert_eq!(sqlstates(&got), vec!["26000"], "{got:?}");
        let text = got[0].text().unwrap_or_default();
        assert!(
            !text.contains("pggate_"),
            "the client sees a statement name PgGate invented: {text:?}"
        );
    }
}

#[test]
fn a_pipeline_with_an_error_in_the_middle_aborts_the_rest_and_the_connection_stays_usable() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let pipeline = [
        unnamed_statement("SELECT 1", &[]),
        unnamed_statement("SELECT 1/0", &[]),
        unnamed_statement("SELECT 3", &[]),
        sync_message(),
    ]
    .concat();
    let what = "one write: P/B/E 'SELECT 1'; P/B/E 'SELECT 1/0'; P/B/E 'SELECT 3'; Sync";
    let direct = raw_client(cluster.primary_port).exchange(&pipeline, 1);
    let mut conn = raw_client(gate.port);
    for round in 0..3 {
        let got = conn.exchange(&pipeline, 1);
        assert_eq!(
            raw::tags(&got),
            raw::tags(&direct),
            "{what} (round {round}): the primary answers {direct:?}, through PgGate {got:?}"
        );
        // SELECT 1 answered; the division fails (when the statement is
        // planned, at Bind); nothing at all for SELECT 3.
        assert_eq!(raw::tags(&got), "12DC1EZ", "{what}: {got:?}");
        assert_eq!(raw::first_column(&got), vec![Some("1".to_string())]);
        assert_eq!(sqlstates(&got), vec!["22012"], "{got:?}");
        assert_eq!(got.last().map(Message::ready_status), Some(b'I'));
        let got = expect_replies(
            &mut conn,
            "a new batch after the failed one: P/B/E 'SELECT 4' + Sync",
            &[unnamed_statement("SELECT 4", &[]), sync_message()].concat(),
            "12DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some("4".to_string())]);
    }

    // A named Parse skipped after the error does not exist afterwards.
    let got = expect_replies(
        &mut conn,
        "P/B/E 'SELECT 1/0'; Parse skipped 'SELECT 5'; Sync",
        &[
            unnamed_statement("SELECT 1/0", &[]),
            parse_message("skipped", "SELECT 5", &[]),
            sync_message(),
        ]
        .concat(),
        "1EZ",
    );
    assert_eq!(sqlstates(&got), vec!["22012"]);
    let got = expect_replies(
        &mut conn,
        "Bind skipped + Execute + Sync",
        &[
            bind_message("", "skipped", &[]),
            execute_message("", 0),
            sync_message(),
        ]
        .concat(),
        "EZ",
    );
    assert_eq!(sqlstates(&got), vec!["26000"], "{got:?}");
    let got = expect_replies(
        &mut conn,
        "Parse skipped 'SELECT 5' + Bind + Execute + Sync",
        &[
            parse_message("skipped", "SELECT 5", &[]),
            bind_message("", "skipped", &[]),
            execute_message("", 0),
            sync_message(),
        ]
        .concat(),
        "12DCZ",
    );
    assert_eq!(raw::first_column(&got), vec![Some("5".to_string())]);

    // Statements PgGate must prepare (or evict) on the connection, skipped
    // by the server after an error: later batches still find them. One
    // connection that keeps one statement.
    let gate = PgGate::start(
        cluster,
        "[pool]\nsize = 1\nmax_prepared_statements = 1\n[routing]\nreads = \"primary\"",
    );
    let mut conn = raw_client(gate.port);
    expect_replies(
        &mut conn,
        "Parse k + Sync",
        &[parse_message("k", "SELECT 'k'::text", &[]), sync_message()].concat(),
        "1Z",
    );
    expect_replies(
        &mut conn,
        "Parse j + Sync (evicts k from the connection)",
        &[parse_message("j", "SELECT 'j'::text", &[]), sync_message()].concat(),
        "1Z",
    );
    let got = expect_replies(
        &mut conn,
        "P/B/E 'SELECT 1/0'; Bind k; Execute; Sync",
        &[
            unnamed_statement("SELECT 1/0", &[]),
            bind_message("", "k", &[]),
            execute_message("", 0),
            sync_message(),
        ]
        .concat(),
        "1EZ",
    );
    assert_eq!(sqlstates(&got), vec!["22012"], "{got:?}");
    for (name, value) in [("k", "k"), ("j", "j"), ("k", "k")] {
        let got = expect_replies(
            &mut conn,
            &format!("Bind {name} + Execute + Sync after the failed batch"),
            &[
                bind_message("", name, &[]),
                execute_message("", 0),
                sync_message(),
            ]
            .concat(),
            "2DCZ",
        );
        assert_eq!(raw::first_column(&got), vec![Some(value.to_string())]);
    }
    let mut client = gate.connect("postgres", "postgres");
    assert_eq!(
        simple_value(&mut client, "SELECT 'other client'"),
        "other client"
    );
}

#[test]
fn a_fifty_statement_pipeline_returns_results_in_order() {
    let cluster = Cluster::shared();
    let table = format!("ext_fifty_{}", random_hex(8));
    on_primary(
        cluster,
        &format!("CREATE TABLE {table} (id serial PRIMARY KEY, v int NOT NULL)"),
    );
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, "");
    let mut conn = raw_client(gate.port);
    expect_replies(
        &mut conn,
        "Parse fifty 'SELECT $1::int' + Sync",
        &[
            parse_message("fifty", "SELECT $1::int", &[]),
            sync_message(),
        ]
        .concat(),
        "1Z",
    );
    let expected: Vec<Option<String>> = (0..50).map(|i| Some(i.to_string())).collect();

    // 50 × (Bind, Execute), then one Sync.
    let mut pipeline = Vec::new();
    for i in 0..50 {
        let value = i.to_string();
        pipeline.extend(bind_message("", "fifty", &[Some(&value)]));
        pipeline.extend(execute_message("", 0));
    }
    pipeline.extend(sync_message());
    for round in 0..3 {
        let got = expect_replies(
            &mut conn,
            &format!("50 x (Bind fifty, Execute) + one Sync, round {round}"),
            &pipeline,
            &format!("{}Z", "2DC".repeat(50)),
        );
        assert_eq!(raw::first_column(&got), expected, "round {round}");
    }

    // 50 batches, each with its own Sync, written at once.
    let mut pipeline = Vec::new();
    for i in 0..50 {
        let value = i.to_string();
        pipeline.extend(bind_message("", "fifty", &[Some(&value)]));
        pipeline.extend(execute_message("", 0));
        pipeline.extend(sync_message());
    }
    for round in 0..3 {
        let got = expect_replies(
            &mut conn,
            &format!("50 x (Bind fifty, Execute, Sync), round {round}"),
            &pipeline,
            &"2DCZ".repeat(50),
        );
        assert_eq!(raw::first_column(&got), expected, "round {round}");
        assert!(
            got.iter()
                .filter(|m| m.tag == b'Z')
                .all(|m| m.ready_status() == b'I'),
            "{got:?}"
        );
    }

    // 50 batches alternating a read (replica) and a write (primary), each
    // with its own Sync, written at once: in order, each where it belongs.
    expect_replies(
        &mut conn,
        "Parse r + Parse w + Sync",
        &[
            parse_message("r", "SELECT $1::int, inet_server_port()", &[]),
            parse_message(
                "w",
                &format!(
                    "INSERT INTO {table} (v) VALUES ($1::int) RETURNING v, inet_server_port()"
                ),
                &[],
            ),
            sync_message(),
        ]
        .concat(),
        "11Z",
    );
    let mut pipeline = Vec::new();
    for i in 0..50 {
        let value = i.to_string();
        let name = if i % 2 == 0 { "r" } else { "w" };
        pipeline.extend(bind_message("", name, &[Some(&value)]));
        pipeline.extend(execute_message("", 0));
        pipeline.extend(sync_message());
    }
    let got = expect_replies(
        &mut conn,
        "50 x (Bind r|w alternating, Execute, Sync)",
        &pipeline,
        &"2DCZ".repeat(50),
    );
    let rows = raw::rows(&got);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row[0],
            Some(i.to_string()),
            "result {i} out of order: {rows:?}"
        );
        let port: u16 = row[1].as_deref().unwrap_or("").parse().expect("a port");
        if i % 2 == 0 {
            assert!(cluster.is_replica_port(port), "read {i} ran on {port}");
        } else {
            assert_eq!(port, cluster.primary_port, "write {i} ran on {port}");
        }
    }
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            &format!("SELECT count(*), sum(v) FROM {table}")
        ),
        "25|625"
    );
}

#[test]
fn prepared_statement_survives_pool_churn_and_cursor_fetches_in_chunks() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "[pool]\nsize = 2");
    let shared_text = "SELECT $1::int * 7";
    let port = gate.port;
    let config = gate.config("postgres", "postgres");
    within(
        Duration::from_secs(60),
        "client A among churning clients",
        move |progress| {
            progress.step("client A connects and prepares");
            let mut a = config
                .connect(postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect: {}", describe_error(&e)));
            let statement = a
                .prepare(shared_text)
                .unwrap_or_else(|e| panic!("client A prepares: {}", describe_error(&e)));
            let got: i32 = a.query_one(&statement, &[&6]).expect("first run").get(0);
            assert_eq!(got, 42);

            let stop = AtomicBool::new(false);
            thread::scope(|s| {
                let churn: Vec<_> = (0..10)
                    .map(|id| {
                        let config = config.clone();
                        let stop = &stop;
                        s.spawn(move || churn_client(config, id, 3, Some(shared_text), stop))
                    })
                    .collect();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    thread::sleep(Duration::from_millis(1000));
                    progress.step("client A runs its statement after churn");

                    // A's statement, on whatever connection A borrows now.
                    for i in 0..20 {
                        let got: i32 = a
                            .query_one(&statement, &[&i])
                            .unwrap_or_else(|e| {
                                panic!(
                                    "client A's statement after churn, run {i}: {}",
                                    describe_error(&e)
                                )
                            })
                            .get(0);
                        assert_eq!(got, i * 7, "client A's statement, run {i}");
                    }

                    // A portal read 50 rows at a time inside a transaction.
                    progress.step("portal fetched 50 rows at a time in a transaction");
                    let mut tx = a
                        .transaction()
                        .unwrap_or_else(|e| panic!("BEGIN: {}", describe_error(&e)));
                    let portal = tx
                        .bind("SELECT generate_series(1, 1000)", &[])
                        .unwrap_or_else(|e| panic!("bind a portal: {}", describe_error(&e)));
                    let mut values = Vec::new();
                    let mut chunks = 0;
                    loop {
                        let rows = tx.query_portal(&portal, 50).unwrap_or_else(|e| {
                            panic!(
                                "fetch chunk {chunks} ({} rows so far): {}",
                                values.len(),
                                describe_error(&e)
                            )
                        });
                        if rows.is_empty() {
                            break;
                        }
                        assert!(rows.len() <= 50, "a chunk of {} rows", rows.len());
                        values.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
                        chunks += 1;
                        thread::sleep(Duration::from_millis(10));
                        assert!(chunks <= 25, "the portal never ends");
                    }
                    assert_eq!(chunks, 20, "1000 rows in chunks of 50");
                    assert!(
                        values == (1..=1000).collect::<Vec<i32>>(),
                        "the portal returned {} rows, not 1..=1000 in order: first {:?}",
                        values.len(),
                        &values[..values.len().min(10)]
                    );
                    tx.commit()
                        .unwrap_or_else(|e| panic!("COMMIT: {}", describe_error(&e)));

                    // Outside a transaction: Execute with a row limit and Flush keep
                    // the portal (and the connection) until Sync, while others churn.
                    progress.step("raw Execute(50) + Flush");
                    let mut conn = raw_client(port);
                    conn.send(
                        &[
                            parse_message("", "SELECT generate_series(1, 200)", &[]),
                            bind_message("", "", &[]),
                            execute_message("", 50),
                            flush_message(),
                        ]
                        .concat(),
                    )
                    .expect("send P/B/E(50)/Flush");
                    let mut got = conn.read_until_any(b"sCEZ");
                    assert_eq!(
                        raw::tags(&got),
                        format!("12{}s", "D".repeat(50)),
                        "Parse, Bind, Execute(50), Flush: {got:?}"
                    );
                    for chunk in 1..4 {
                        thread::sleep(Duration::from_millis(150));
                        conn.send(&[execute_message("", 50), flush_message()].concat())
                            .expect("send Execute(50)/Flush");
                        let more = conn.read_until_any(b"sCEZ");
                        assert_eq!(
                            raw::tags(&more),
                            format!("{}s", "D".repeat(50)),
                            "Execute(50) + Flush, chunk {chunk}: {more:?}"
                        );
                        got.extend(more);
                    }
                    conn.send(&[execute_message("", 50), flush_message()].concat())
                        .expect("send Execute(50)/Flush");
                    let last = conn.read_until_any(b"sCEZ");
                    assert_eq!(raw::tags(&last), "C", "the exhausted portal: {last:?}");
                    let end = conn.exchange(&sync_message(), 1);
                    assert_eq!(raw::tags(&end), "Z", "{end:?}");
                    let expected: Vec<Option<String>> =
                        (1..=200).map(|i| Some(i.to_string())).collect();
                    assert_eq!(raw::first_column(&got), expected);
                }));
                stop.store(true, Ordering::Relaxed);
                progress.step("waiting for the churn clients");
                let queries = finish_churn(churn);
                if let Err(panic) = result {
                    std::panic::resume_unwind(panic);
                }
                assert!(
                    queries > 100,
                    "the churn clients ran only {queries} queries"
                );
            });

            // And once more after the churn has stopped.
            progress.step("client A after the churn");
            let got: i32 = a.query_one(&statement, &[&9]).expect("last run").get(0);
            assert_eq!(got, 63);
        },
    );
}

/// Parses pgbench's `number of transactions actually processed: N`.
fn processed(out: &common::CmdOutput) -> u64 {
    out.stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no processed count in pgbench output:\n{}", out.stdout))
}

#[test]
fn pgbench_extended_and_prepared_on_a_pool_of_two_have_no_failures() {
    let cluster = Cluster::shared();
    let db = "ext_bench";
    cluster.create_database(db, "postgres");
    {
        let gate = PgGate::start(cluster, "");
        tools::pgbench_init_through(cluster, gate.port, db);
    }

    // Select-only: 20 clients on 2 threads over a pool of 2 connections per
    // server.
    let gate = PgGate::start(cluster, "[pool]\nsize = 2");
    for mode in ["extended", "prepared"] {
        let out = tools::pgbench(
            gate.port,
            "postgres",
            db,
            &["-S", "-M", mode, "-c", "20", "-j", "2", "-T", "4"],
            Duration::from_secs(60),
        );
        out.assert_success(&format!("pgbench -S -M {mode} -c 20 -j 2 through pggate"));
        assert!(
            out.stdout.contains("number of failed transactions: 0"),
            "pgbench -S -M {mode} reported failures:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            processed(&out) > 0,
            "pgbench -S -M {mode} processed nothing"
        );
    }
    drop(gate);

    // TPC-B-like transactions, prepared: 8 clients on 2 threads over a pool
    // of 2 connections. pgbench prepares each statement with a blocking
    // PQprepare the first time a client runs it, so a thread whose other
    // client holds a connection inside a transaction must not wait for a
    // connection just to prepare: PgGate answers a Parse of a statement the
    // pool's servers already accepted by itself.
    let gate = PgGate::start(cluster, "[pool]\nsize = 2\ncheckout_timeout = \"20s\"");
    let before = cluster.psql(
        cluster.primary_port,
        "postgres",
        db,
        "SELECT count(*) FROM pgbench_history",
    );
    let out = tools::pgbench(
        gate.port,
        "postgres",
        db,
        &["-M", "prepared", "-c", "8", "-j", "2", "-T", "4"],
        Duration::from_secs(60),
    );
    out.assert_success("pgbench -M prepared -c 8 -j 2 (TPC-B-like) through pggate");
    assert!(
        out.stdout.contains("number of failed transactions: 0"),
        "pgbench TPC-B-like -M prepared reported failures:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let done = processed(&out);
    assert!(done > 0, "pgbench TPC-B-like processed nothing");
    let after: u64 = cluster
        .psql(
            cluster.primary_port,
            "postgres",
            db,
            "SELECT count(*) FROM pgbench_history",
        )
        .parse()
        .expect("a count");
    let before: u64 = before.parse().expect("a count");
    assert!(
        after - before >= done,
        "pgbench reported {done} transactions but pgbench_history grew by {}",
        after - before
    );
}

#[test]
fn large_values_binary_results_and_big_results_come_through_intact() {
    let cluster = Cluster::shared();
    let table = format!("ext_large_{}", random_hex(8));
    on_primary(
        cluster,
        &format!("CREATE TABLE {table} (id int PRIMARY KEY, v text NOT NULL)"),
    );
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, "");
    let config = gate.config("postgres", "postgres");
    within(Duration::from_secs(30), "large values", move |progress| {
        let mut client = config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect: {}", describe_error(&e)));
        let mut direct = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
        progress.step("INSERT of a 5 MB parameter");

        // A 5 MB text parameter in, and back out.
        let big = random_hex(5_000_000);
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} (id, v) VALUES ($1, $2) RETURNING length(v), md5(v)"
            ))
            .unwrap_or_else(|e| panic!("prepare the INSERT: {}", describe_error(&e)));
        let row = client
            .query_one(&insert, &[&1i32, &big])
            .unwrap_or_else(|e| panic!("INSERT of 5 MB: {}", describe_error(&e)));
        let (length, md5): (i32, String) = (row.get(0), row.get(1));
        assert_eq!(length, 5_000_000);
        let expected_md5: String = direct
            .query_one("SELECT md5($1)", &[&big])
            .expect("md5 on the primary directly")
            .get(0);
        assert_eq!(md5, expected_md5, "md5 of the 5 MB value as stored");
        cluster.wait_replicas_caught_up();
        progress.step("SELECT of the 5 MB value");
        let select = client
            .prepare(&format!("SELECT v FROM {table} WHERE id = $1"))
            .unwrap_or_else(|e| panic!("prepare the SELECT: {}", describe_error(&e)));
        for _ in 0..2 {
            let back: String = client
                .query_one(&select, &[&1i32])
                .unwrap_or_else(|e| panic!("SELECT of 5 MB: {}", describe_error(&e)))
                .get(0);
            assert!(
                back == big,
                "the 5 MB value came back different (length {} vs {})",
                back.len(),
                big.len()
            );
        }

        // A 5 MB result computed by the server.
        progress.step("SELECT repeat('x', 5000000)");
        let sql = "SELECT repeat('x', 5000000), md5(repeat('x', 5000000))";
        let through: (String, String) = {
            let row = client
                .query_one(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
            (row.get(0), row.get(1))
        };
        let straight: (String, String) = {
            let row = direct.query_one(sql, &[]).expect("directly");
            (row.get(0), row.get(1))
        };
        assert_eq!(through.0.len(), 5_000_000);
        assert!(
            through.0.bytes().all(|b| b == b'x'),
            "repeat('x') came back altered"
        );
        assert_eq!(through.1, straight.1, "md5 through PgGate and directly");

        // Binary parameters and results: 1 MB of random bytes, int8, float8.
        progress.step("binary: 1 MB bytea, int8, float8");
        let bytes = random_bytes(1 << 20);
        let row = client
            .query_one(
                "SELECT $1::bytea, length($1::bytea), $2::int8, $3::float8, md5($1::bytea)",
                &[&bytes, &i64::MIN, &-1.5e300f64],
            )
            .unwrap_or_else(|e| panic!("binary round trip: {}", describe_error(&e)));
        let back: Vec<u8> = row.get(0);
        assert!(back == bytes, "1 MB of bytea came back different");
        assert_eq!(row.get::<_, i32>(1), 1 << 20);
        assert_eq!(row.get::<_, i64>(2), i64::MIN);
        assert_eq!(row.get::<_, f64>(3), -1.5e300);
        let expected_md5: String = direct
            .query_one("SELECT md5($1::bytea)", &[&bytes])
            .expect("md5 directly")
            .get(0);
        assert_eq!(row.get::<_, String>(4), expected_md5);

        // 200,000 rows, through PgGate and directly from the primary.
        progress.step("200,000 rows");
        let sql = "SELECT g, md5(g::text) FROM generate_series(1, 200000) g";
        let digest = |rows: &[postgres::Row]| {
            let mut hasher = DefaultHasher::new();
            for row in rows {
                row.get::<_, i32>(0).hash(&mut hasher);
                row.get::<_, String>(1).hash(&mut hasher);
            }
            hasher.finish()
        };
        let through = client
            .query(sql, &[])
            .unwrap_or_else(|e| panic!("200,000 rows through PgGate: {}", describe_error(&e)));
        let straight = direct.query(sql, &[]).expect("200,000 rows directly");
        assert_eq!(through.len(), 200_000);
        assert_eq!(through.len(), straight.len());
        assert_eq!(
            digest(&through),
            digest(&straight),
            "the 200,000 rows differ between PgGate and the primary"
        );
        // The session is fine after the big result.
        let got: i32 = client.query_one("SELECT 7", &[]).expect("after").get(0);
        assert_eq!(got, 7);
    });
}

#[test]
fn copy_in_the_extended_protocol_and_cancel_during_an_extended_query() {
    let cluster = Cluster::shared();
    let table = format!("ext_copy_{}", random_hex(8));
    on_primary(
        cluster,
        &format!("CREATE TABLE {table} (id int PRIMARY KEY, v text NOT NULL)"),
    );
    let gate = PgGate::start(cluster, "[pool]\nsize = 1\ncheckout_timeout = \"3s\"");
    let rows_on_primary = || {
        cluster.psql(
            cluster.primary_port,
            "postgres",
            "postgres",
            &format!("SELECT count(*), coalesce(string_agg(v, ',' ORDER BY id), '') FROM {table}"),
        )
    };
    let copy_sql = format!("COPY {table} FROM STDIN");
    let start_copy = [
        parse_message("", &copy_sql, &[]),
        bind_message("", "", &[]),
        execute_message("", 0),
    ]
    .concat();
    let mut conn = raw_client(gate.port);

    // (a) Parse/Bind/Execute of COPY FROM STDIN without a Sync, the data,
    // CopyDone, Sync.
    conn.send(&start_copy).expect("send P/B/E of COPY");
    let got = conn.read_count(3);
    assert_eq!(raw::tags(&got), "12G", "P/B/E of COPY FROM STDIN: {got:?}");
    let got = conn.exchange(
        &[
            copy_data_message(b"1\tone\n"),
            copy_data_message(b"2\ttwo\n3\tthree\n"),
            copy_done_message(),
            sync_message(),
        ]
        .concat(),
        1,
    );
    assert_eq!(
        raw::tags(&got),
        "CZ",
        "CopyData x2, CopyDone, Sync: {got:?}"
    );
    assert_eq!(got[0].command_tag(), "COPY 3");
    assert_eq!(rows_on_primary(), "3|one,two,three");

    // CopyFail: an error, nothing copied, the connection usable.
    conn.send(&start_copy).expect("send P/B/E of COPY");
    let got = conn.read_count(3);
    assert_eq!(raw::tags(&got), "12G", "P/B/E of COPY FROM STDIN: {got:?}");
    let got = conn.exchange(
        &[
            copy_data_message(b"4\tfour\n"),
            copy_fail_message("the client gave up"),
            sync_message(),
        ]
        .concat(),
        1,
    );
    assert_eq!(raw::tags(&got), "EZ", "CopyData, CopyFail, Sync: {got:?}");
    assert_eq!(sqlstates(&got), vec!["57014"], "{got:?}");
    assert_eq!(rows_on_primary(), "3|one,two,three");
    let got = expect_replies(
        &mut conn,
        "P/B/E 'SELECT 1' + Sync after CopyFail",
        &[unnamed_statement("SELECT 1", &[]), sync_message()].concat(),
        "12DCZ",
    );
    assert_eq!(raw::first_column(&got), vec![Some("1".to_string())]);

    // A server error while the client still streams: the late CopyData and
    // CopyDone are discarded up to the Sync.
    conn.send(&start_copy).expect("send P/B/E of COPY");
    let got = conn.read_count(3);
    assert_eq!(raw::tags(&got), "12G", "P/B/E of COPY FROM STDIN: {got:?}");
    let got = conn.exchange(
        &[
            copy_data_message(b"not-a-number\tbad\n"),
            copy_data_message(b"5\tfive\n"),
            copy_done_message(),
            sync_message(),
        ]
        .concat(),
        1,
    );
    assert_eq!(
        raw::tags(&got),
        "EZ",
        "bad CopyData, CopyData, CopyDone, Sync: {got:?}"
    );
    assert_eq!(sqlstates(&got), vec!["22P02"], "{got:?}");
    assert_eq!(rows_on_primary(), "3|one,two,three");

    // (b) Cancel of an extended-protocol query from another thread.
    let config = gate.config("postgres", "postgres");
    within(
        Duration::from_secs(30),
        "cancel of an extended query",
        move |progress| {
            progress.step("SELECT pg_sleep(5), cancelled after 300 ms");
            let mut client = config
                .connect(postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect: {}", describe_error(&e)));
            let token = client.cancel_token();
            let (result, elapsed) = thread::scope(|s| {
                let sleeper = s.spawn(|| {
                    let started = Instant::now();
                    let result = client.query("SELECT pg_sleep(5)", &[]).map(|_| ());
                    (result, started.elapsed())
                });
                thread::sleep(Duration::from_millis(300));
                token
                    .cancel_query(postgres::NoTls)
                    .unwrap_or_else(|e| panic!("send the cancel request: {e}"));
                sleeper.join().expect("query thread")
            });
            let error = result.expect_err("the cancelled query fails");
            assert_eq!(
                code_of(&error).as_deref(),
                Some("57014"),
                "{}",
                describe_error(&error)
            );
            assert!(
                elapsed < Duration::from_millis(1500),
                "the cancelled extended query ended after {elapsed:?}"
            );
            let got: i32 = client
                .query_one("SELECT $1::int", &[&5i32])
                .unwrap_or_else(|e| panic!("the client after the cancel: {}", describe_error(&e)))
                .get(0);
            assert_eq!(got, 5);
        },
    );

    // (c) COPY FROM STDIN as libpq's PQexecParams sends it:
    // Parse/Bind/Describe/Execute/Sync, then the data, CopyDone and another
    // Sync. The server ignores the Sync that arrives during COPY: one
    // ReadyForQuery for the two. The same bytes to the primary directly,
    // then through PgGate.
    let libpq_start = [
        parse_message("", &copy_sql, &[]),
        bind_message("", "", &[]),
        describe_message(b'P', ""),
        execute_message("", 0),
        sync_message(),
    ]
    .concat();
    let libpq_copy = |c: &mut RawConn, id: u32| -> Vec<Message> {
        c.send(&libpq_start).expect("send P/B/D/E/S of COPY");
        let mut got = c.read_count(4);
        c.send(
            &[
                copy_data_message(format!("{id}\trow{id}\n").as_bytes()),
                copy_done_message(),
                sync_message(),
            ]
            .concat(),
        )
        .expect("send CopyData, CopyDone, Sync");
        got.extend(c.read_until_readies_within(1, Duration::from_secs(3)));
        // Nothing more may come: one ReadyForQuery for the two Syncs.
        got.extend(c.read_for(Duration::from_millis(300)));
        // The connection goes on normally.
        c.send(
            &[
                unnamed_statement("SELECT 'after copy'", &[]),
                sync_message(),
            ]
            .concat(),
        )
        .expect("send P/B/E/S after the COPY");
        got.extend(c.read_until_readies_within(1, Duration::from_secs(3)));
        got
    };
    let direct = libpq_copy(&mut raw_client(cluster.primary_port), 6);
    let through = libpq_copy(&mut conn, 7);
    assert_eq!(
        raw::tags(&direct),
        "12nGCZ12DCZ",
        "the primary itself answered {direct:?}"
    );
    assert_eq!(
        raw::tags(&through),
        raw::tags(&direct),
        "libpq-style COPY (P/B/D/E/S, CopyData, CopyDone, S) then P/B/E/S: the primary \
         answers {direct:?}, through PgGate {through:?}"
    );
    assert_eq!(rows_on_primary(), "5|one,two,three,row6,row7");
    // The pool's one primary connection came back: another client writes.
    let mut other = gate.connect("postgres", "postgres");
    other
        .execute(
            &format!("INSERT INTO {table} VALUES ($1, 'other')"),
            &[&8i32],
        )
        .unwrap_or_else(|e| {
            panic!(
                "another client's write on the pool of one after the libpq-style COPY: {}",
                describe_error(&e)
            )
        });
    drop(conn);
}

#[test]
fn describe_of_a_statement_prepared_elsewhere_works() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "[pool]\nsize = 2\nmax_prepared_statements = 4");
    let parse_d1 = parse_message("d1", "SELECT $1::int AS x", &[]);

    // What the primary itself answers.
    let direct = raw_client(cluster.primary_port).exchange(
        &[
            parse_d1.clone(),
            describe_message(b'S', "d1"),
            sync_message(),
        ]
        .concat(),
        1,
    );
    assert_eq!(raw::tags(&direct), "1tTZ", "{direct:?}");

    let mut conn = raw_client(gate.port);
    expect_replies(
        &mut conn,
        "Parse d1 'SELECT $1::int AS x' + Sync",
        &[parse_d1, sync_message()].concat(),
        "1Z",
    );

    let config = gate.config("postgres", "postgres");
    within(
        Duration::from_secs(60),
        "Describe among churning clients",
        move |progress| {
            let stop = AtomicBool::new(false);
            thread::scope(|s| {
                // Eight statements each on connections that keep four: d1 is
                // evicted wherever it was.
                let churn: Vec<_> = (0..6)
                    .map(|id| {
                        let config = config.clone();
                        let stop = &stop;
                        s.spawn(move || churn_client(config, id, 8, None, stop))
                    })
                    .collect();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    thread::sleep(Duration::from_millis(700));
                    for round in 0..10 {
                        progress.step(&format!("Describe round {round}"));
                        let got = expect_replies(
                            &mut conn,
                            &format!("Describe S d1 + Sync, round {round}"),
                            &[describe_message(b'S', "d1"), sync_message()].concat(),
                            "tTZ",
                        );
                        assert_eq!(got[0].parameter_types(), vec![23], "round {round}");
                        assert_eq!(
                            got[1].row_fields(),
                            vec![("x".to_string(), 23)],
                            "round {round}"
                        );
                        assert_eq!(got[0].body, direct[1].body, "ParameterDescription bytes");
                        assert_eq!(got[1].body, direct[2].body, "RowDescription bytes");
                        let value = round.to_string();
                        let got = expect_replies(
                            &mut conn,
                            &format!("Describe S d1 + Bind d1 + Execute + Sync, round {round}"),
                            &[
                                describe_message(b'S', "d1"),
                                bind_message("", "d1", &[Some(&value)]),
                                execute_message("", 0),
                                sync_message(),
                            ]
                            .concat(),
                            "tT2DCZ",
                        );
                        assert_eq!(raw::first_column(&got), vec![Some(value)]);
                        thread::sleep(Duration::from_millis(50));
                    }
                }));
                stop.store(true, Ordering::Relaxed);
                let queries = finish_churn(churn);
                if let Err(panic) = result {
                    std::panic::resume_unwind(panic);
                }
                assert!(queries > 50, "the churn clients ran only {queries} queries");
            });
        },
    );
}
