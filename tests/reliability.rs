//! Reliability suite: PgGate under load, faults and hostile clients (SPEC
//! §3 Reset, §7 Health/retries, §8 SIGHUP, §9 errors; PITFALLS
//! "Resources", "Extended protocol", "COPY") against a real PostgreSQL
//! cluster (a primary and two streaming replicas built once for this test
//! binary).
//!
//! Each test starts its own PgGate, is named after the promise it checks
//! and asserts observable facts: client-visible errors and their SQLSTATEs,
//! which server ran a read (`inet_server_port()`), rows present on the
//! primary, `pg_stat_activity` on every server, PgGate's resident memory
//! (`/proc/PID/status` VmRSS) and open descriptors (`/proc/PID/fd`).
//!
//! Every test holds [`Faults`] for its whole run: the tests of this binary
//! run one at a time (they stop servers, freeze them with SIGSTOP, or
//! measure PgGate's memory and descriptors, which a neighbour would
//! disturb), and its drop puts the shared cluster back (servers running and
//! streaming) even when a test fails. A frozen server is always sent
//! SIGCONT by the [`Frozen`] guard.
//!
//! Running:
//! - CI part (about 70 s on two busy cores; keep it under three minutes):
//!   `cargo test --test reliability`
//! - Long runs, `#[ignore]`d (10,000 idle clients):
//!   `cargo test --test reliability -- --ignored --nocapture`
//! - The soak test (a release build against a cluster of its own, mixed
//!   pgbench and writer load, reloads and replica restarts, 10 minutes by
//!   default): `benches/soak [--minutes N]`
//!
//! The garbage-input test draws from a xorshift generator whose seed it
//! prints; `PGGATE_RELIABILITY_SEED=N` replays a run.

mod common;

use common::{
    try_read_port as read_port, try_rows as rows, try_value as value, FAST_HEALTH as HEALTH,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::faults::{self, Faults};
use common::raw::{self, Message, RawConn};
use common::stress::{self, Frozen, XorShift};
use common::{
    db_error, describe_error, log_lines, new_database, on_primary_in, random_hex, tail, Cluster,
    GateFiles, PgGate,
};

fn sleep_until(started: Instant, at: Duration) {
    if let Some(left) = at.checked_sub(started.elapsed()) {
        thread::sleep(left);
    }
}

/// The port in the first column of the first DataRow of a raw reply.
fn port_in(messages: &[Message]) -> Result<u16, String> {
    raw::first_column(messages)
        .into_iter()
        .next()
        .flatten()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in the reply {messages:?}"))
}

/// Backends of `db`, on every server of the cluster, that sit in the middle
/// of something waiting for a client: an open transaction, or an active
/// statement (an extended-protocol sequence without Sync, a COPY FROM
/// STDIN) waiting in `ClientRead`. `extra` (SQL) adds other conditions.
fn stuck_backends(cluster: &Cluster, db: &str, extra: &str) -> Vec<String> {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" OR ({extra})")
    };
    let sql = format!(
        "SELECT pid::text || ' ' || state || ' ' || coalesce(wait_event_type || ':' || \
         wait_event, '-') || ' ' || left(query, 80) FROM pg_stat_activity \
         WHERE datname = '{db}' AND backend_type = 'client backend' \
         AND pid <> pg_backend_pid() AND (state LIKE 'idle in transaction%' \
         OR (state = 'active' AND wait_event = 'ClientRead'){extra})"
    );
    let mut stuck = Vec::new();
    for port in cluster.all_ports() {
        match faults::try_direct(port, "postgres", &sql) {
            Ok(messages) => {
                for m in messages {
                    if let postgres::SimpleQueryMessage::Row(row) = m {
                        stuck.push(format!(
                            "{}: {}",
                            cluster.server_name(port),
                            row.get(0).unwrap_or("?")
                        ));
                    }
                }
            }
            Err(e) => stuck.push(format!("{}: cannot look: {e}", cluster.server_name(port))),
        }
    }
    stuck
}

/// Waits up to `limit` for [`stuck_backends`] to be empty: the time it took,
/// or what is still stuck.
fn wait_nothing_stuck(
    cluster: &Cluster,
    db: &str,
    extra: &str,
    limit: Duration,
) -> Result<Duration, Vec<String>> {
    let started = Instant::now();
    loop {
        let stuck = stuck_backends(cluster, db, extra);
        if stuck.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(stuck);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `(server, state, wait event)` of the backends on any server running a
/// statement that contains `marker`.
fn running_with(cluster: &Cluster, marker: &str) -> Vec<(String, String, String, i32)> {
    let sql = format!(
        "SELECT state, coalesce(wait_event, '-'), pid FROM pg_stat_activity \
         WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let mut found = Vec::new();
    for port in cluster.all_ports() {
        if let Ok(messages) = faults::try_direct(port, "postgres", &sql) {
            for m in messages {
                if let postgres::SimpleQueryMessage::Row(row) = m {
                    found.push((
                        cluster.server_name(port).to_string(),
                        row.get(0).unwrap_or("?").to_string(),
                        row.get(1).unwrap_or("?").to_string(),
                        row.get(2).and_then(|p| p.parse().ok()).unwrap_or(0),
                    ));
                }
            }
        }
    }
    found
}

/// Polls fresh raw sessions' reads until one runs on `port`; the time it
/// took, or what happened instead.
fn wait_raw_read_reaches(gate_port: u16, port: u16, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    while started.elapsed() < limit {
        let result = stress::raw_login(gate_port, "postgres", Duration::from_secs(5)).and_then(
            |mut conn| {
                stress::raw_query(
                    &mut conn,
                    "SELECT inet_server_port()",
                    Duration::from_secs(5),
                )
                .and_then(|m| port_in(&m))
            },
        );
        match result {
            Ok(p) if p == port => return Ok(started.elapsed()),
            Ok(p) => *seen.entry(p).or_default() += 1,
            Err(e) => errors.push(e),
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no read reached port {port} within {limit:?}; reads ran on {seen:?} (port: count); \
         {} errors, first: {:?}",
        errors.len(),
        errors.first()
    ))
}

/// When [`bounce_replica1`] stopped replica1 and started it again (since
/// the load started).
struct Bounce {
    killed_at: Duration,
    down_from: Duration,
    down_until: Duration,
    restarted_at: Duration,
}

/// The fault of the replica tests, under load that began at `started`:
/// replica1 stopped at 1.5 s and started again at 3.5 s; at 6 s the load is
/// told to `stop`.
fn bounce_replica1(faults: &Faults<'_>, started: Instant, stop: &AtomicBool) -> Bounce {
    sleep_until(started, Duration::from_millis(1500));
    let killed_at = started.elapsed();
    faults.stop("replica1");
    let down_from = started.elapsed();
    sleep_until(started, Duration::from_millis(3500));
    let down_until = started.elapsed();
    faults.start("replica1");
    let restarted_at = started.elapsed();
    sleep_until(started, Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    Bounce {
        killed_at,
        down_from,
        down_until,
        restarted_at,
    }
}

/// What the reader threads of the replica tests saw: when each read was
/// served and by which port, and the errors. A reader not done within 20 s
/// is an error too, described by `hung(reader id)`.
type Readings = (Vec<(Duration, u16)>, Vec<String>);

fn join_readers(
    readers: Vec<thread::JoinHandle<Readings>>,
    hung: impl Fn(usize) -> String,
) -> Readings {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = Vec::new();
    let mut errors = Vec::new();
    for (id, reader) in readers.into_iter().enumerate() {
        match stress::join_by(reader, deadline) {
            Ok((s, e)) => {
                served.extend(s);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("reader {id}: {e}: {}", hung(id))),
        }
    }
    (served, errors)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------

#[test]
fn reads_survive_a_replica_killed_and_restarted_under_load() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let replica1 = cluster.replica_ports[0];
    let gate = PgGate::start(cluster, HEALTH);

    const READERS: usize = 12;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<postgres::Client> = (0..READERS)
        .map(|_| gate.connect("postgres", "postgres"))
        .collect();
    // Per reader: when its read in flight was sent (ms since `started`, +1;
    // 0 when none is), to tell what a hung reader waits for.
    let in_flight: Arc<Vec<AtomicU64>> =
        Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, mut client)| {
            let stop = Arc::clone(&stop);
            let in_flight = Arc::clone(&in_flight);
            let config = gate.config("postgres", "postgres");
            thread::spawn(move || {
                let mut served: Vec<(Duration, u16)> = Vec::new();
                let mut errors: Vec<String> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    in_flight[id]
                        .store(started.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                    let result = rows(&mut client, "SELECT inet_server_port(), pg_sleep(0.01)");
                    in_flight[id].store(0, Ordering::Relaxed);
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
                            errors.push(format!("reader {id} at {:?}: {e}", started.elapsed()));
                            if client.is_closed() {
                                match config.connect(postgres::NoTls) {
                                    Ok(c) => client = c,
                                    Err(e) => {
                                        errors.push(format!(
                                            "reader {id} could not reconnect: {}",
                                            describe_error(&e)
                                        ));
                                        return (served, errors);
                                    }
                                }
                            }
                        }
                    }
                }
                (served, errors)
            })
        })
        .collect();

    let Bounce {
        killed_at,
        down_from,
        down_until,
        restarted_at,
    } = bounce_replica1(&faults, started, &stop);

    let (served, errors) = join_readers(readers, |id| {
        let since = in_flight[id].load(Ordering::Relaxed);
        format!(
            "its read sent at {:?} never got an answer (now {:?})",
            Duration::from_millis(since.saturating_sub(1)),
            started.elapsed()
        )
    });

    let mut by_server: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, port) in &served {
        *by_server.entry(cluster.server_name(*port)).or_default() += 1;
    }
    let during: Vec<u16> = served
        .iter()
        .filter(|(at, _)| *at > down_from && *at < down_until)
        .map(|(_, port)| *port)
        .collect();
    eprintln!(
        "{} reads by {READERS} clients ({by_server:?}); replica1 killed at {killed_at:?} (down from \
         {down_from:?}), restarted at {restarted_at:?}; {} reads while it was down",
        served.len(),
        during.len()
    );
    assert!(
        errors.is_empty(),
        "{} client-visible errors while replica1 was killed and restarted (killed at \
         {killed_at:?}, restarted at {restarted_at:?}):\n  {}\npggate log:\n{}",
        errors.len(),
        errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        log_lines(&gate, &["replica1", "ERROR", "WARN"], 30)
    );
    assert!(
        during.len() >= READERS,
        "only {} reads completed while replica1 was down ({} reads in all)",
        during.len(),
        served.len()
    );
    assert!(
        !during.contains(&replica1),
        "a read ran on replica1 while it was stopped"
    );
    let back =
        wait_raw_read_reaches(gate.port, replica1, Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!(
                "replica1 restarted but gets no reads: {e}\npggate log:\n{}",
                log_lines(&gate, &["replica1"], 30)
            )
        });
    eprintln!("reads reached replica1 again {back:?} after the load ended");
    drop(faults);
}

/// Replies of one extended-protocol read that are not a clean answer.
fn unclean_extended_reply(messages: &[Message]) -> Option<String> {
    let rows = raw::rows(messages);
    let clean = !messages.iter().any(|m| m.tag == b'E')
        && rows.len() == 1
        && port_in(messages).is_ok()
        && messages.last().is_some_and(|m| m.tag == b'Z');
    (!clean).then(|| format!("{messages:?}"))
}

#[test]
fn extended_protocol_reads_survive_a_replica_killed_under_load() {
    // The same promise as the simple-protocol test above, for the message
    // sequence drivers send (Parse/Bind/Describe/Execute/Sync, as
    // `pgbench -M extended` does).
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let replica1 = cluster.replica_ports[0];
    let gate = PgGate::start(cluster, HEALTH);

    const READERS: usize = 8;
    let read = [
        // Long enough that reads are in flight on replica1 when it dies.
        raw::parse_message("", "SELECT inet_server_port(), pg_sleep(0.02)", &[]),
        raw::bind_message("", "", &[]),
        raw::describe_message(b'P', ""),
        raw::execute_message("", 0),
        raw::sync_message(),
    ]
    .concat();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|id| {
            let stop = Arc::clone(&stop);
            let port = gate.port;
            let read = read.clone();
            thread::spawn(move || {
                let mut served: Vec<(Duration, u16)> = Vec::new();
                let mut errors = Vec::new();
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    let Some(c) = conn.as_mut() else {
                        match stress::raw_login(port, "postgres", Duration::from_secs(10)) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                errors.push(format!("reader {id}: login: {e}"));
                                return (served, errors);
                            }
                        }
                        continue;
                    };
                    let at = started.elapsed();
                    let reply = c
                        .send(&read)
                        .map_err(|e| format!("send: {e}"))
                        .and_then(|()| {
                            stress::read_reply_by(c, Instant::now() + Duration::from_secs(10))
                        });
                    match reply {
                        Ok(messages) => match unclean_extended_reply(&messages) {
                            None => served.push((at, port_in(&messages).unwrap_or(0))),
                            Some(reply) => {
                                errors.push(format!("reader {id}, read sent at {at:?}: {reply}"))
                            }
                        },
                        Err(e) => {
                            errors.push(format!("reader {id}, read sent at {at:?}: {e}"));
                            conn = None;
                        }
                    }
                }
                (served, errors)
            })
        })
        .collect();

    let Bounce {
        killed_at,
        down_from,
        down_until,
        restarted_at,
    } = bounce_replica1(&faults, started, &stop);

    let (served, errors) = join_readers(readers, |_| "no answer".to_string());
    let during = served
        .iter()
        .filter(|(at, _)| *at > down_from && *at < down_until)
        .count();
    eprintln!(
        "{} extended-protocol reads by {READERS} clients, {} while replica1 was down (killed at \
         {killed_at:?}, restarted at {restarted_at:?}); {} not answered cleanly",
        served.len(),
        during,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} extended-protocol reads outside a transaction were not answered cleanly while \
         replica1 was killed (at {killed_at:?}) and restarted (at {restarted_at:?}); each should \
         have been sent again elsewhere:\n  {}\npggate log:\n{}",
        errors.len(),
        errors
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        log_lines(&gate, &["replica1", "lost", "ERROR", "WARN"], 30)
    );
    assert!(
        during >= READERS,
        "only {during} reads completed while replica1 was down"
    );
    assert!(
        !served
            .iter()
            .any(|(at, port)| *at > down_from && *at < down_until && *port == replica1),
        "a read ran on replica1 while it was stopped"
    );
    drop(faults);
}

/// What one writer of [`acknowledged_writes_survive_reloads_and_a_primary_restart`] saw.
#[derive(Default)]
struct WriterLog {
    acked: Vec<i64>,
    /// (id, phase, when, SQLSTATE, message, connection closed)
    failed: Vec<(i64, u8, Duration, Option<String>, String, bool)>,
    connect_errors: Vec<String>,
    reconnects: usize,
}

const PHASE_RELOADS: u8 = 0;
const PHASE_RESTART: u8 = 1;
const PHASE_BACK: u8 = 2;

#[test]
fn acknowledged_writes_survive_reloads_and_a_primary_restart() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let db = new_database(cluster, "rel_acks");
    on_primary_in(
        cluster,
        &db,
        "CREATE TABLE acks (id bigint PRIMARY KEY, writer int NOT NULL)",
    );
    cluster.wait_replicas_caught_up();
    let files = GateFiles::write(cluster, HEALTH);
    let config_text = files.config_text();
    let config_path = files.config_path.clone();
    let gate = PgGate::start_with_files(files, &[]);

    const WRITERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(PHASE_RELOADS));
    let ok_after_restart: Arc<Vec<AtomicBool>> =
        Arc::new((0..WRITERS).map(|_| AtomicBool::new(false)).collect());
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let stop = Arc::clone(&stop);
            let phase = Arc::clone(&phase);
            let ok_after_restart = Arc::clone(&ok_after_restart);
            let config = gate.config("postgres", &db);
            thread::spawn(move || {
                let mut log = WriterLog::default();
                let mut client = match config.connect(postgres::NoTls) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        log.connect_errors.push(describe_error(&e));
                        None
                    }
                };
                let mut seq: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Some(c) = client.as_mut() else {
                        match config.connect(postgres::NoTls) {
                            Ok(c) => {
                                client = Some(c);
                                log.reconnects += 1;
                            }
                            Err(e) => {
                                log.connect_errors.push(format!(
                                    "at {:?}: {}",
                                    started.elapsed(),
                                    describe_error(&e)
                                ));
                                thread::sleep(Duration::from_millis(100));
                            }
                        }
                        continue;
                    };
                    seq += 1;
                    let id = writer as i64 * 1_000_000_000 + seq;
                    let in_phase = phase.load(Ordering::Relaxed);
                    let at = started.elapsed();
                    match c.simple_query(&format!(
                        "INSERT INTO acks (id, writer) VALUES ({id}, {writer})"
                    )) {
                        Ok(_) => {
                            log.acked.push(id);
                            if in_phase == PHASE_BACK {
                                ok_after_restart[writer].store(true, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            // A write still in flight when the restart began
                            // belongs to the restart.
                            let in_phase = in_phase.max(phase.load(Ordering::Relaxed));
                            let closed = c.is_closed();
                            let (code, message) = match db_error(&e) {
                                Some((code, message)) => (Some(code), message),
                                None => (None, format!("{e} ({e:?})")),
                            };
                            log.failed.push((id, in_phase, at, code, message, closed));
                            if closed {
                                client = None;
                            }
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                log
            })
        })
        .collect();

    // Phase 1: the same valid configuration reloaded every 300 ms.
    let mut reloads_sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(300));
        std::fs::write(&config_path, &config_text)
            .unwrap_or_else(|e| panic!("rewrite {}: {e}", config_path.display()));
        gate.signal(libc::SIGHUP);
        reloads_sent += 1;
    }
    thread::sleep(Duration::from_millis(300));

    // Phase 2: the primary restarts (fast shutdown) under the writes.
    phase.store(PHASE_RESTART, Ordering::Relaxed);
    let restart_from = started.elapsed();
    let restart = faults::pg_ctl(
        cluster,
        "primary",
        &["restart", "-m", "fast", "-w", "-t", "60"],
    );
    restart.assert_success("pg_ctl restart -m fast of the primary");
    let back_at = started.elapsed();
    phase.store(PHASE_BACK, Ordering::Relaxed);
    let recovery_limit = Duration::from_secs(20);
    while started.elapsed() < back_at + recovery_limit
        && !ok_after_restart.iter().all(|ok| ok.load(Ordering::Relaxed))
    {
        thread::sleep(Duration::from_millis(50));
    }
    let recovered_in = started.elapsed() - back_at;
    // A little more load on the recovered primary.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logs = Vec::new();
    let mut problems = Vec::new();
    for (writer, handle) in writers.into_iter().enumerate() {
        match stress::join_by(handle, deadline) {
            Ok(log) => logs.push(log),
            Err(e) => problems.push(format!("writer {writer}: {e}")),
        }
    }

    let reloaded = gate
        .log_contents()
        .matches("configuration reloaded")
        .count();
    let reload_failures = log_lines(&gate, &["reload failed", "reload refused"], 10);
    let acked: BTreeSet<i64> = logs.iter().flat_map(|l| l.acked.iter().copied()).collect();
    let failed: Vec<_> = logs.iter().flat_map(|l| l.failed.iter()).collect();
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for (_, phase, _, code, _, _) in &failed {
        *by_code
            .entry(format!(
                "phase {phase} {}",
                code.as_deref().unwrap_or("(no SQLSTATE)")
            ))
            .or_default() += 1;
    }
    let reconnects: usize = logs.iter().map(|l| l.reconnects).sum();
    let connect_errors: Vec<&String> = logs.iter().flat_map(|l| l.connect_errors.iter()).collect();
    eprintln!(
        "{} acknowledged writes, {} failed ({by_code:?}); {reloads_sent} SIGHUPs sent, \
         {reloaded} reloads logged; primary restart from {restart_from:?} to {back_at:?}, all \
         writers succeeded again {recovered_in:?} later; {reconnects} reconnects, {} connect errors \
         (first: {:?})",
        acked.len(),
        failed.len(),
        connect_errors.len(),
        connect_errors.first()
    );

    let during_reloads: Vec<String> = failed
        .iter()
        .filter(|f| f.1 == PHASE_RELOADS)
        .map(|f| format!("id {} at {:?}: [{:?}] {}", f.0, f.2, f.3, f.4))
        .collect();
    if !during_reloads.is_empty() {
        problems.push(format!(
            "{} writes failed while the configuration was reloaded every 300 ms:\n    {}",
            during_reloads.len(),
            during_reloads
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n    ")
        ));
    }
    if reloaded * 4 < reloads_sent * 3 {
        problems.push(format!(
            "{reloads_sent} SIGHUPs were sent but only {reloaded} \"configuration reloaded\" lines \
             were logged"
        ));
    }
    if !reload_failures.is_empty() {
        problems.push(format!(
            "reloading an unchanged valid file failed:\n{reload_failures}"
        ));
    }
    let unclear: Vec<String> = failed
        .iter()
        .filter(|f| f.1 != PHASE_RELOADS)
        .filter(|f| {
            let clear_code =
                f.3.as_deref()
                    .is_some_and(|c| c.starts_with("08") || c == "57P01");
            !clear_code || f.4.trim().is_empty()
        })
        .map(|f| {
            format!(
                "id {} at {:?} (phase {}): SQLSTATE {:?}, message {:?}, connection closed: {}",
                f.0, f.2, f.1, f.3, f.4, f.5
            )
        })
        .collect();
    if !unclear.is_empty() {
        problems.push(format!(
            "{} writes failed around the primary restart without a clear 08xxx/57P01 error:\n    {}",
            unclear.len(),
            unclear
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n    ")
        ));
    }
    let not_recovered: Vec<usize> = (0..WRITERS)
        .filter(|w| !ok_after_restart[*w].load(Ordering::Relaxed))
        .collect();
    if !not_recovered.is_empty() {
        problems.push(format!(
            "writers {not_recovered:?} had no successful write within {recovery_limit:?} after the \
             primary was back"
        ));
    }
    if acked.is_empty() {
        problems.push("no write was acknowledged at all".to_string());
    }

    // The primary may still be finishing its startup for new sessions.
    let present_rows = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match faults::try_direct(cluster.primary_port, &db, "SELECT id FROM acks") {
                Ok(messages) => break messages,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot read the acknowledged rows on the primary: {e}")
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    let present: BTreeSet<i64> = present_rows
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .collect();
    let missing: Vec<i64> = acked.difference(&present).copied().collect();
    let unacked_present = present.difference(&acked).count();
    eprintln!(
        "{} rows on the primary: every acknowledged id present: {}; {unacked_present} rows of \
         writes whose answer was an error (in flight when the primary stopped)",
        present.len(),
        missing.is_empty()
    );
    if !missing.is_empty() {
        problems.push(format!(
            "{} acknowledged writes are missing on the primary, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["primary", "reload", "ERROR", "WARN"], 40)
    );
    drop(faults);
}

#[test]
fn backend_connections_terminated_idle_and_busy() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let db = new_database(cluster, "rel_term");
    on_primary_in(cluster, &db, "CREATE TABLE t (n int)");
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, HEALTH);

    let mut clients: Vec<postgres::Client> =
        (0..4).map(|_| gate.connect("postgres", &db)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        for _ in 0..6 {
            read_port(client).expect("a read before the terminations");
        }
        rows(client, &format!("INSERT INTO t VALUES ({i})"))
            .expect("a write before the terminations");
    }

    // PgGate's idle pooled connections: everything in this database.
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' \
         AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    );
    let mut terminated: BTreeMap<&str, usize> = BTreeMap::new();
    for port in cluster.all_ports() {
        let mut direct = cluster.connect_direct(port, "postgres", "postgres");
        let killed = rows(&mut direct, &terminate)
            .unwrap_or_else(|e| panic!("terminate on {}: {e}", cluster.server_name(port)));
        terminated.insert(cluster.server_name(port), killed.len());
    }
    eprintln!("idle pooled backends terminated: {terminated:?}");
    assert!(
        terminated.get("primary").copied().unwrap_or(0) > 0
            && terminated.get("replica1").copied().unwrap_or(0)
                + terminated.get("replica2").copied().unwrap_or(0)
                > 0,
        "expected PgGate's pooled connections on the primary and the replicas in {db}, \
         terminated {terminated:?}"
    );
    thread::sleep(Duration::from_millis(300));

    let mut problems = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        for r in 0..6 {
            if let Err(e) = read_port(client) {
                problems.push(format!("client {i} read {r}: {e}"));
            }
        }
        if let Err(e) = rows(client, &format!("INSERT INTO t VALUES ({})", 10 + i)) {
            problems.push(format!("client {i} write: {e}"));
        }
    }
    assert!(
        problems.is_empty(),
        "after pg_terminate_backend of PgGate's idle pooled connections ({terminated:?}) the \
         clients should keep working:\n  {}\npggate log:\n{}",
        problems.join("\n  "),
        log_lines(&gate, &["57P01", "08006", "terminat", "ERROR", "WARN"], 30)
    );

    // A busy connection: a read outside a transaction, on a replica.
    let marker = format!("rel_busy_{}", random_hex(8));
    let busy = {
        let config = gate.config("postgres", &db);
        let sql = format!("SELECT inet_server_port() AS {marker}, pg_sleep(2)");
        thread::spawn(move || {
            let mut client = config
                .connect(postgres::NoTls)
                .map_err(|e| format!("connect: {}", describe_error(&e)))?;
            let started = Instant::now();
            let outcome = match client.simple_query(&sql) {
                Ok(messages) => {
                    let port = messages.iter().find_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(row) => {
                            row.get(0).and_then(|p| p.parse::<u16>().ok())
                        }
                        _ => None,
                    });
                    Ok(port.unwrap_or(0))
                }
                Err(e) => Err((db_error(&e), describe_error(&e), client.is_closed())),
            };
            let took = started.elapsed();
            let after = if client.is_closed() {
                Err("the session was closed".to_string())
            } else {
                read_port(&mut client).map(|_| ())
            };
            Ok::<_, String>((outcome, took, after))
        })
    };
    let others_stop = Arc::new(AtomicBool::new(false));
    let others = {
        let stop = Arc::clone(&others_stop);
        let config = gate.config("postgres", &db);
        thread::spawn(move || {
            let mut client = config
                .connect(postgres::NoTls)
                .map_err(|e| format!("connect: {}", describe_error(&e)))?;
            let mut served = 0usize;
            let mut slowest = Duration::ZERO;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match read_port(&mut client) {
                    Ok(_) => served += 1,
                    Err(e) => failures.push(e),
                }
                slowest = slowest.max(started.elapsed());
                thread::sleep(Duration::from_millis(20));
            }
            Ok::<_, String>((served, slowest, failures))
        })
    };

    let deadline = Instant::now() + Duration::from_secs(5);
    let victim = loop {
        let found = running_with(cluster, &marker);
        if let Some(v) = found.into_iter().find(|v| v.1 == "active") {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the statement marked {marker} never showed up as running on any server"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let victim_port = faults.port(&victim.0);
    let killed = value(
        &mut cluster.connect_direct(victim_port, "postgres", "postgres"),
        &format!("SELECT pg_terminate_backend({})", victim.3),
    )
    .expect("terminate the busy backend");
    assert_eq!(
        killed, "t",
        "pg_terminate_backend({}) on {}",
        victim.3, victim.0
    );
    let terminated_at = Instant::now();

    let mut problems = Vec::new();
    if victim.0 == "primary" {
        problems.push(format!(
            "the read marked {marker} ran on the primary, expected a replica"
        ));
    }
    match stress::join_by(busy, terminated_at + Duration::from_secs(15)) {
        Err(e) => problems.push(format!(
            "the client whose busy backend was terminated: {e} (no answer 15 s after \
             pg_terminate_backend)"
        )),
        Ok(Err(e)) => problems.push(format!("the busy client: {e}")),
        Ok(Ok((outcome, took, after))) => {
            match &outcome {
                Ok(port) => eprintln!(
                    "the busy read (terminated on {}) was answered after {took:?}, from {}",
                    victim.0,
                    cluster.server_name(*port)
                ),
                Err((Some((code, message)), _, closed))
                    if (code.starts_with("08") || code == "57P01") && !message.is_empty() =>
                {
                    eprintln!(
                        "the busy read failed after {took:?} with [{code}] {message} \
                         (connection closed: {closed})"
                    )
                }
                Err((_, described, closed)) => problems.push(format!(
                    "the busy read failed after {took:?} without a clear 08xxx/57P01 error: \
                     {described} (connection closed: {closed})"
                )),
            }
            if let Err(e) = after {
                problems.push(format!(
                    "outside a transaction the busy client's session should stay usable: {e}"
                ));
            }
        }
    }
    thread::sleep(Duration::from_millis(300));
    others_stop.store(true, Ordering::Relaxed);
    match stress::join_by(others, Instant::now() + Duration::from_secs(10)) {
        Err(e) => problems.push(format!("the other client: {e}")),
        Ok(Err(e)) => problems.push(format!("the other client: {e}")),
        Ok(Ok((served, slowest, failures))) => {
            eprintln!("the other client ran {served} reads meanwhile, slowest {slowest:?}");
            if !failures.is_empty() {
                problems.push(format!("the other client's reads failed: {failures:?}"));
            }
            if served == 0 {
                problems.push("the other client was not served meanwhile".to_string());
            }
            if slowest > Duration::from_secs(3) {
                problems.push(format!("the other client's slowest read took {slowest:?}"));
            }
        }
    }
    match gate
        .config("postgres", &db)
        .connect(postgres::NoTls)
        .map_err(|e| describe_error(&e))
        .and_then(|mut c| {
            read_port(&mut c)?;
            rows(&mut c, "INSERT INTO t VALUES (100)")
        }) {
        Ok(_) => {}
        Err(e) => problems.push(format!("a new client afterwards: {e}")),
    }
    assert!(
        problems.is_empty(),
        "after terminating a busy backend ({} pid {}): {} problems:\n  {}\npggate log:\n{}",
        victim.0,
        victim.3,
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["57P01", "08006", "terminat", "ERROR", "WARN"], 30)
    );
    drop(faults);
}

/// One read of [`a_stalled_backend_is_marked_down_and_nobody_hangs`].
struct TimedRead {
    started: Duration,
    took: Duration,
    result: Result<u16, String>,
}

#[test]
fn a_stalled_backend_is_marked_down_and_nobody_hangs() {
    let cluster = Cluster::shared();
    let faults = Faults::take(cluster);
    let replica2 = cluster.replica_ports[1];
    let gate = PgGate::start(
        cluster,
        &format!("{HEALTH}[pool]\nconnect_timeout = \"1s\"\n"),
    );
    // Pooled connections to replica2 exist before it stalls.
    wait_raw_read_reaches(gate.port, replica2, Duration::from_secs(10))
        .expect("reads reach replica2 before the stall");

    const READERS: usize = 6;
    const READ_LIMIT: Duration = Duration::from_secs(10);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let port = gate.port;
            thread::spawn(move || {
                let mut reads = Vec::new();
                let mut conn: Option<RawConn> = None;
                while !stop.load(Ordering::Relaxed) {
                    let at = started.elapsed();
                    let t = Instant::now();
                    let result = match conn.as_mut() {
                        Some(c) => stress::raw_query(c, "SELECT inet_server_port()", READ_LIMIT)
                            .and_then(|m| port_in(&m)),
                        None => match stress::raw_login(port, "postgres", READ_LIMIT) {
                            Ok(c) => {
                                conn = Some(c);
                                continue;
                            }
                            Err(e) => Err(format!("login: {e}")),
                        },
                    };
                    if result.is_err() {
                        conn = None;
                    }
                    reads.push(TimedRead {
                        started: at,
                        took: t.elapsed(),
                        result,
                    });
                    thread::sleep(Duration::from_millis(20));
                }
                reads
            })
        })
        .collect();

    sleep_until(started, Duration::from_millis(500));
    let mut frozen = Frozen::freeze(&cluster.dir, "replica2");
    let frozen_at = started.elapsed();
    eprintln!(
        "replica2 frozen at {frozen_at:?}: SIGSTOP to {} processes {:?}",
        frozen.pids.len(),
        frozen.pids
    );
    sleep_until(started, frozen_at + Duration::from_millis(2500));
    // The final reads: replica2 must be down by now.
    let mut final_reads: Vec<TimedRead> = Vec::new();
    let mut session = stress::raw_login(gate.port, "postgres", Duration::from_secs(5));
    for _ in 0..10 {
        let at = started.elapsed();
        let t = Instant::now();
        let result = match session.as_mut() {
            Ok(c) => stress::raw_query(c, "SELECT inet_server_port()", Duration::from_secs(5))
                .and_then(|m| port_in(&m)),
            Err(e) => Err(format!("login: {e}")),
        };
        final_reads.push(TimedRead {
            started: at,
            took: t.elapsed(),
            result,
        });
    }
    sleep_until(started, frozen_at + Duration::from_secs(4));
    frozen.thaw();
    let thawed_at = started.elapsed();
    sleep_until(started, thawed_at + Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);

    let mut problems = Vec::new();
    let mut reads: Vec<TimedRead> = Vec::new();
    let deadline = Instant::now() + READ_LIMIT + Duration::from_secs(5);
    for (id, reader) in readers.into_iter().enumerate() {
        match stress::join_by(reader, deadline) {
            Ok(r) => reads.extend(r),
            Err(e) => problems.push(format!("reader {id}: {e}")),
        }
    }
    let slow: Vec<String> = reads
        .iter()
        .chain(final_reads.iter())
        .filter(|r| r.took > Duration::from_secs(5))
        .map(|r| {
            format!(
                "started at {:?}, took {:?}: {:?}",
                r.started, r.took, r.result
            )
        })
        .collect();
    let errors: Vec<String> = reads
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| format!("at {:?} after {:?}: {e}", r.started, r.took))
        })
        .collect();
    let mut by_server: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &reads {
        if let Ok(port) = r.result {
            *by_server.entry(cluster.server_name(port)).or_default() += 1;
        }
    }
    let slowest = reads.iter().map(|r| r.took).max().unwrap_or_default();
    eprintln!(
        "{} reads by {READERS} readers ({by_server:?}), {} errors, slowest {slowest:?}; frozen \
         {frozen_at:?}..{thawed_at:?}; final reads: {:?}",
        reads.len(),
        errors.len(),
        final_reads
            .iter()
            .map(|r| format!("{:?} in {:?}", r.result, r.took))
            .collect::<Vec<_>>()
    );
    if !errors.is_empty() {
        eprintln!(
            "read errors (allowed while replica2 is being marked down):\n  {}",
            errors.join("\n  ")
        );
    }
    if !slow.is_empty() {
        problems.push(format!(
            "{} reads took longer than 5 s:\n    {}",
            slow.len(),
            slow.join("\n    ")
        ));
    }
    for (i, r) in final_reads.iter().enumerate() {
        match &r.result {
            Ok(port) if *port != replica2 => {}
            Ok(port) => problems.push(format!(
                "final read {i} (2.5 s into the stall) ran on {}",
                cluster.server_name(*port)
            )),
            Err(e) => problems.push(format!(
                "final read {i} (2.5 s into the stall) failed after {:?}: {e}",
                r.took
            )),
        }
    }
    if reads.iter().filter(|r| r.result.is_ok()).count() == 0 {
        problems.push("no reader's read succeeded".to_string());
    }
    // Back to normal after SIGCONT.
    match wait_raw_read_reaches(gate.port, replica2, Duration::from_secs(10)) {
        Ok(took) => eprintln!("reads reached replica2 again {took:?} after the load ended"),
        Err(e) => problems.push(format!("after SIGCONT: {e}")),
    }
    assert!(
        problems.is_empty(),
        "replica2 frozen (SIGSTOP) from {frozen_at:?} to {thawed_at:?}: {} problems:\n  {}\n\
         pggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["replica2", "ERROR", "WARN"], 40)
    );
    drop(frozen);
    drop(faults);
}

/// Frontend message types, for frames that look plausible. FunctionCall
/// (`F`) is left out: a random one could, however unlikely, call a real
/// function with random arguments.
const FRONTEND_TAGS: &[u8] = b"QPBEDCSHXdcfp";

/// One garbage connection: what was sent, whether PgGate closed it within
/// the wait, and the ErrorResponses it sent.
struct Garbage {
    kind: &'static str,
    before_login: bool,
    closed: bool,
    errors: Vec<Message>,
}

fn random_frame(rng: &mut XorShift) -> Vec<u8> {
    let tag = if rng.below(4) == 0 {
        let t = rng.next_u64() as u8;
        if t == b'F' {
            b'Q'
        } else {
            t
        }
    } else {
        *rng.pick(FRONTEND_TAGS)
    };
    let body = rng.bytes_between(0, 511);
    let mut frame = vec![tag];
    frame.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn garbage_connection(port: u16, db: &str, rng: &mut XorShift) -> Result<Garbage, String> {
    let mut conn = stress::raw_connect(port, Duration::from_secs(5))?;
    let mode = rng.below(7);
    let login = mode >= 3;
    if login {
        stress::raw_login_by(&mut conn, db, Instant::now() + Duration::from_secs(10))?;
    }
    let (kind, bytes): (&'static str, Vec<u8>) = match mode {
        0 => ("random bytes before login", rng.bytes_between(1, 2048)),
        1 => {
            let startup = raw::startup_message(&[("user", "postgres"), ("database", db)]);
            let cut = rng.between(1, startup.len() as u64 - 1) as usize;
            ("truncated startup packet", startup[..cut].to_vec())
        }
        2 => {
            let len: i32 = match rng.below(6) {
                0 => 0,
                1 => rng.below(8) as i32,
                2 => i32::MAX,
                3 => -(rng.between(1, 1 << 30) as i32),
                4 => rng.between(10_001, 100_000_000) as i32,
                _ => rng.next_u64() as i32,
            };
            let mut packet = len.to_be_bytes().to_vec();
            packet.extend(rng.bytes_between(0, 63));
            ("startup packet with a bad length", packet)
        }
        3 => {
            let frames: Vec<u8> = (0..rng.between(1, 5))
                .flat_map(|_| random_frame(rng))
                .collect();
            ("random frames after login", frames)
        }
        4 => {
            let tag = *rng.pick(FRONTEND_TAGS);
            let len = rng.between(5, 4000) as usize;
            let mut frame = vec![tag];
            frame.extend_from_slice(&(len as i32).to_be_bytes());
            frame.extend(rng.bytes_between(0, len as u64 - 5));
            ("truncated frame after login", frame)
        }
        5 => ("random bytes after login", rng.bytes_between(1, 2048)),
        _ => {
            let len: i32 = match rng.below(3) {
                0 => rng.between(1 << 20, i32::MAX as u64) as i32,
                1 => rng.below(4) as i32,
                _ => -(rng.between(1, 1 << 30) as i32),
            };
            let mut frame = vec![*rng.pick(FRONTEND_TAGS)];
            frame.extend_from_slice(&len.to_be_bytes());
            ("bad frame length after login", frame)
        }
    };
    // PgGate may close while we still write: that is an answer too.
    let _ = conn.send(&bytes);
    let (reply, closed) = stress::drain_for(&mut conn, Duration::from_millis(150));
    let errors = stress::split_messages(&reply)
        .into_iter()
        .filter(|m| m.tag == b'E')
        .collect();
    Ok(Garbage {
        kind,
        before_login: !login,
        closed,
        errors,
    })
}

/// Sends `bytes` on a clone of `conn`'s socket from another thread (PgGate
/// may stop reading or close while we write), then collects what PgGate
/// answers within `limit`: its ErrorResponses and whether it closed.
fn send_and_collect(conn: &mut RawConn, bytes: Vec<u8>, limit: Duration) -> (Vec<Message>, bool) {
    let mut writer = conn.stream.try_clone().expect("clone a raw socket");
    let sender = thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(&bytes);
    });
    let (reply, closed) = stress::drain_for(conn, limit);
    let _ = stress::join_by(sender, Instant::now() + Duration::from_secs(10));
    let errors = stress::split_messages(&reply)
        .into_iter()
        .filter(|m| m.tag == b'E')
        .collect();
    (errors, closed)
}

/// Checks an answer to a malformed or oversized message: before login a
/// close (with at most a `pggate: ` 08P01 error), after login a `pggate: `
/// 08P01 error and a close.
fn check_rejection(
    what: &str,
    (errors, closed): (Vec<Message>, bool),
    after_login: bool,
    problems: &mut Vec<String>,
) {
    let clear = |m: &Message| {
        m.sqlstate().as_deref() == Some("08P01")
            && m.text().is_some_and(|t| t.starts_with("pggate: "))
    };
    let answer = format!("errors {errors:?}, closed: {closed}");
    if !closed {
        problems.push(format!(
            "{what}: the connection was not closed within 5 s ({answer})"
        ));
    }
    if errors.iter().any(|m| !clear(m)) {
        problems.push(format!(
            "{what}: expected SQLSTATE 08P01 and a message starting \"pggate: \" ({answer})"
        ));
    }
    if after_login && errors.is_empty() {
        problems.push(format!(
            "{what}: closed without an ErrorResponse; expected 08P01 \"pggate: ...\" first"
        ));
    }
    eprintln!("{what}: {answer}");
}

#[test]
fn bad_input_never_stops_pggate() {
    let cluster = Cluster::shared();
    let _exclusive = Faults::take(cluster);
    let db = new_database(cluster, "rel_bad");
    on_primary_in(
        cluster,
        &db,
        "CREATE TABLE t (n int); CREATE TABLE copy_t (n int)",
    );
    cluster.wait_replicas_caught_up();
    let mut gate = PgGate::start(
        cluster,
        "[proxy]\nmax_message_size = \"1MiB\"\nlogin_timeout = \"5s\"",
    );
    let seed = stress::seed("PGGATE_RELIABILITY_SEED");
    let mut problems = Vec::new();

    // 1. Garbage: 6 threads × 50 connections.
    let started = Instant::now();
    let workers: Vec<_> = (0..6u64)
        .map(|t| {
            let port = gate.port;
            let db = db.clone();
            thread::spawn(move || {
                let mut rng = XorShift::new(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                (0..50)
                    .map(|_| garbage_connection(port, &db, &mut rng))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for (t, worker) in workers.into_iter().enumerate() {
        match stress::join_by(worker, Instant::now() + Duration::from_secs(120)) {
            Ok(results) => outcomes.extend(results),
            Err(e) => problems.push(format!("garbage thread {t}: {e}")),
        }
    }
    let mut kinds: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for outcome in &outcomes {
        match outcome {
            Ok(g) => {
                let entry = kinds.entry(g.kind).or_default();
                entry.0 += 1;
                entry.1 += g.closed as usize;
                entry.2 += !g.errors.is_empty() as usize;
                for e in &g.errors {
                    if g.before_login && !e.text().is_some_and(|t| t.starts_with("pggate: ")) {
                        problems.push(format!(
                            "{}: PgGate's own error does not start with \"pggate: \": {e:?}",
                            g.kind
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("a garbage connection could not be made: {e}")),
        }
    }
    eprintln!(
        "{} garbage connections in {:?} (kind: sent, closed by PgGate within 150 ms, answered \
         with an error): {kinds:?}",
        outcomes.len(),
        started.elapsed()
    );
    if let Some(status) = gate.try_wait() {
        panic!(
            "pggate exited ({status}) during the garbage connections; log:\n{}",
            tail(&gate.log_contents(), 60)
        );
    }
    if let Err(stuck) = wait_nothing_stuck(cluster, &db, "", Duration::from_secs(3)) {
        problems.push(format!(
            "3 s after the garbage connections, backends of {db} still wait for a client: {stuck:?}"
        ));
    }

    // 2. Oversized and nonsensical lengths.
    let five = Duration::from_secs(5);
    for (what, len) in [
        ("a startup packet declaring 2 GiB", i32::MAX),
        ("a startup packet declaring 4 bytes", 4),
        ("a startup packet declaring a negative length", -8),
    ] {
        let mut conn = stress::raw_connect(gate.port, five).expect("connect");
        let answer = send_and_collect(&mut conn, len.to_be_bytes().to_vec(), five);
        check_rejection(what, answer, false, &mut problems);
    }
    let oversized = {
        let mut query = vec![b'Q'];
        let body_len = 2 << 20;
        query.extend_from_slice(&((body_len + 4) as i32).to_be_bytes());
        query.extend(vec![b'x'; body_len - 1]);
        query.push(0);
        query
    };
    for (what, bytes) in [
        (
            "a 2 MiB Query with max_message_size = 1MiB",
            oversized.clone(),
        ),
        (
            "a Query header declaring 2 GiB",
            [&[b'Q'][..], &i32::MAX.to_be_bytes()].concat(),
        ),
        (
            "a Query declaring a negative length",
            [&[b'Q'][..], &(-5i32).to_be_bytes()].concat(),
        ),
        (
            "a Sync declaring 3 bytes",
            [&[b'S'][..], &3i32.to_be_bytes()].concat(),
        ),
    ] {
        let mut conn = stress::raw_login(gate.port, &db, five).expect("raw login");
        let answer = send_and_collect(&mut conn, bytes, five);
        check_rejection(what, answer, true, &mut problems);
    }

    // 3. A startup packet larger than any buffer: 10 MB.
    {
        let big = "x".repeat(10 << 20);
        let packet = raw::startup_message(&[
            ("user", "postgres"),
            ("database", &db),
            ("application_name", &big),
        ]);
        let mut conn = stress::raw_connect(gate.port, five).expect("connect");
        let rss_before = stress::rss_kib(gate.pid()).unwrap_or(0);
        let answer = send_and_collect(&mut conn, packet, Duration::from_secs(10));
        let rss_after = stress::rss_kib(gate.pid()).unwrap_or(0);
        eprintln!(
            "10 MB startup packet: PgGate RSS {:.1} -> {:.1} MiB",
            mib(rss_before),
            mib(rss_after)
        );
        check_rejection("a 10 MB startup packet", answer, false, &mut problems);
    }

    // 4. Parse + Bind, then the client vanishes.
    let marker = format!("rel_vanish_{}", random_hex(8));
    {
        // Flushed: a backend has parsed and bound, and waits for more.
        let mut conn = stress::raw_login(gate.port, &db, five).expect("raw login");
        conn.send(
            &[
                raw::parse_message("", &format!("SELECT $1::text AS {marker}_a"), &[]),
                raw::bind_message("", "", &[Some("a")]),
                raw::flush_message(),
            ]
            .concat(),
        )
        .expect("send Parse/Bind/Flush");
        let (reply, closed) = stress::drain_for(&mut conn, Duration::from_millis(500));
        let tags = raw::tags(&stress::split_messages(&reply));
        if tags != "12" || closed {
            problems.push(format!(
                "Parse + Bind + Flush: expected ParseComplete and BindComplete, got {tags:?} \
                 (closed: {closed})"
            ));
        }
        eprintln!(
            "before vanishing after Parse+Bind+Flush the backend is: {:?}",
            running_with(cluster, &format!("{marker}_a"))
        );
        conn.vanish();

        // Not flushed: Parse + Bind of a write sit wherever they sit.
        let mut conn = stress::raw_login(gate.port, &db, five).expect("raw login");
        conn.send(
            &[
                raw::parse_message(
                    "",
                    &format!("INSERT INTO t SELECT $1::int /* {marker}_b */"),
                    &[],
                ),
                raw::bind_message("", "", &[Some("7")]),
            ]
            .concat(),
        )
        .expect("send Parse/Bind");
        thread::sleep(Duration::from_millis(300));
        conn.vanish();

        // A suspended portal (Execute with a row limit) in the implicit
        // transaction of an unfinished extended sequence.
        let mut conn = stress::raw_login(gate.port, &db, five).expect("raw login");
        conn.send(
            &[
                raw::parse_message(
                    "s1",
                    &format!("SELECT generate_series(1, 100) AS {marker}_c"),
                    &[],
                ),
                raw::bind_message("p1", "s1", &[]),
                raw::execute_message("p1", 10),
                raw::flush_message(),
            ]
            .concat(),
        )
        .expect("send Parse/Bind/Execute(10)/Flush");
        let (reply, _) = stress::drain_for(&mut conn, Duration::from_millis(500));
        let tags = raw::tags(&stress::split_messages(&reply));
        if tags != format!("12{}s", "D".repeat(10)) {
            problems.push(format!(
                "Parse + Bind + Execute(10) + Flush: expected 12, ten DataRows and \
                 PortalSuspended, got {tags:?}"
            ));
        }
        conn.vanish();
        if let Err(stuck) = wait_nothing_stuck(
            cluster,
            &db,
            &format!("query LIKE '%{marker}%' AND state <> 'idle'"),
            Duration::from_secs(3),
        ) {
            problems.push(format!(
                "3 s after clients vanished in the middle of extended-protocol sequences, \
                 backends of {db} still wait for them: {stuck:?}"
            ));
        }
        let inserted = on_primary_in(cluster, &db, "SELECT count(*) FROM t");
        if inserted != vec![vec![Some("0".to_string())]] {
            problems.push(format!(
                "the vanished client's Parse + Bind of an INSERT (never executed) left rows: \
                 {inserted:?}"
            ));
        }
    }

    // 5. A client vanishing in the middle of COPY FROM STDIN.
    {
        let mut conn = stress::raw_login(gate.port, &db, five).expect("raw login");
        conn.send_query("COPY copy_t FROM STDIN");
        let (reply, closed) = stress::drain_for(&mut conn, Duration::from_millis(1000));
        let tags = raw::tags(&stress::split_messages(&reply));
        if tags != "G" || closed {
            problems.push(format!(
                "COPY copy_t FROM STDIN: expected CopyInResponse, got {tags:?} (closed: {closed})"
            ));
        }
        conn.send(
            &[
                raw::copy_data_message(b"1\n"),
                raw::copy_data_message(b"2\n"),
            ]
            .concat(),
        )
        .expect("send CopyData");
        thread::sleep(Duration::from_millis(200));
        eprintln!(
            "before vanishing mid-COPY the backend is: {:?}",
            running_with(cluster, "COPY copy_t FROM STDIN")
        );
        conn.vanish();
        if let Err(stuck) = wait_nothing_stuck(
            cluster,
            &db,
            "state = 'active' AND query LIKE 'COPY%'",
            Duration::from_secs(3),
        ) {
            problems.push(format!(
                "3 s after a client vanished mid-COPY, backends of {db} still wait: {stuck:?}"
            ));
        }
        let copied = on_primary_in(cluster, &db, "SELECT count(*) FROM copy_t");
        if copied != vec![vec![Some("0".to_string())]] {
            problems.push(format!(
                "the vanished client's unfinished COPY left rows: {copied:?}"
            ));
        }
    }

    // 6. After all of it, PgGate is alive and serves a normal client.
    if let Some(status) = gate.try_wait() {
        panic!(
            "pggate exited ({status}); log:\n{}",
            tail(&gate.log_contents(), 60)
        );
    }
    match gate
        .config("postgres", &db)
        .connect(postgres::NoTls)
        .map_err(|e| describe_error(&e))
        .and_then(|mut c| {
            let n = value(&mut c, "SELECT 41 + 1")?;
            rows(&mut c, "INSERT INTO t VALUES (1)")?;
            Ok(n)
        }) {
        Ok(n) if n == "42" => {}
        Ok(n) => problems.push(format!("a normal client afterwards got {n:?} for 41 + 1")),
        Err(e) => problems.push(format!("a normal client afterwards: {e}")),
    }
    let panics = log_lines(&gate, &["panicked"], 10);
    if !panics.is_empty() {
        problems.push(format!("PgGate's log shows panics:\n{panics}"));
    }
    assert!(
        problems.is_empty(),
        "bad input (seed {seed}): {} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["ERROR", "WARN", "panic"], 40)
    );
}

#[test]
fn a_client_that_stops_reading_a_huge_result_leaves_memory_bounded() {
    let cluster = Cluster::shared();
    let _exclusive = Faults::take(cluster);
    let db = new_database(cluster, "rel_mem");
    let gate = PgGate::start(cluster, "");
    let pid = gate.pid();

    let mut warm = gate.connect("postgres", &db);
    for _ in 0..20 {
        read_port(&mut warm).expect("warm-up read");
    }
    value(
        &mut warm,
        "SELECT count(*) FROM (SELECT repeat('x', 1000) FROM generate_series(1, 2000)) s",
    )
    .expect("warm-up result of 2 MB");
    thread::sleep(Duration::from_millis(500));
    let before = stress::rss_kib(pid).expect("PgGate's VmRSS");

    let marker = format!("rel_big_{}", random_hex(8));
    let mut stalled = stress::raw_login(gate.port, &db, Duration::from_secs(5)).expect("raw login");
    stalled.send_query(&format!(
        "SELECT repeat('x', 1000) AS {marker} FROM generate_series(1, 400000)"
    ));
    let started = Instant::now();

    let quick = {
        let config = gate.config("postgres", &db);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(500));
            let mut client = config
                .connect(postgres::NoTls)
                .map_err(|e| format!("connect: {}", describe_error(&e)))?;
            let mut took = Vec::new();
            for i in 0..10 {
                let t = Instant::now();
                let v = value(&mut client, &format!("SELECT {i} + 1"))
                    .map_err(|e| format!("quick query {i}: {e}"))?;
                if v != (i + 1).to_string() {
                    return Err(format!("quick query {i} returned {v:?}"));
                }
                took.push(t.elapsed());
                thread::sleep(Duration::from_millis(200));
            }
            Ok::<_, String>(took)
        })
    };

    let mut peak = before;
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let rss = stress::rss_kib(pid).expect("PgGate's VmRSS");
        peak = peak.max(rss);
        samples.push(rss);
        thread::sleep(Duration::from_millis(100));
    }
    let backend = running_with(cluster, &marker);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "PgGate RSS {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB) over 5 s with a client not \
         reading a ~400 MB result; samples (MiB): {:?}; the backend: {backend:?}",
        mib(before),
        mib(peak),
        mib(growth),
        samples
            .iter()
            .step_by(5)
            .map(|k| (mib(*k) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    if growth >= 64 * 1024 {
        problems.push(format!(
            "PgGate's RSS grew by {:.1} MiB (limit 64 MiB) while a client did not read",
            mib(growth)
        ));
    }
    if !backend.iter().any(|b| b.1 == "active") {
        problems.push(format!(
            "the huge query is not running on any server while its client is stalled: {backend:?}"
        ));
    }
    match stress::join_by(quick, Instant::now() + Duration::from_secs(60)) {
        Err(e) => problems.push(format!("the other client: {e}")),
        Ok(Err(e)) => problems.push(format!("the other client: {e}")),
        Ok(Ok(took)) => {
            let slowest = took.iter().max().copied().unwrap_or_default();
            eprintln!("10 quick queries of another client meanwhile, slowest {slowest:?}");
            if slowest > Duration::from_secs(5) {
                problems.push(format!("another client's quick query took {slowest:?}"));
            }
        }
    }
    // The stream is intact where the client left it.
    let head = stalled.read_count(20);
    let wanted = "x".repeat(1000);
    if head[0].tag != b'T'
        || head[1..]
            .iter()
            .any(|m| m.tag != b'D' || m.data_row() != vec![Some(wanted.clone())])
    {
        problems.push(format!(
            "the stalled client's stream does not start with RowDescription and the \
             expected rows: {:?}",
            &head[..3]
        ));
    }
    stalled.vanish();
    // Its backend is freed (cancelled, drained or closed), not left stuck.
    let vanished = Instant::now();
    let deadline = vanished + Duration::from_secs(20);
    loop {
        let left = running_with(cluster, &marker);
        if !left.iter().any(|b| b.1 == "active") {
            eprintln!(
                "the stalled client's query stopped running {:?} after it vanished",
                vanished.elapsed()
            );
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "20 s after the stalled client vanished its query still runs: {left:?}"
            ));
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let after = stress::rss_kib(pid).unwrap_or(0);
    eprintln!(
        "PgGate RSS after the client vanished: {:.1} MiB",
        mib(after)
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["ERROR", "WARN"], 30)
    );
}

/// Open descriptors of `pid`: the least of a few samples (a health probe
/// in flight holds one for a moment).
fn settled_fd_count(pid: i32) -> usize {
    (0..5)
        .map(|_| {
            let n = stress::fd_count(pid).expect("PgGate's /proc/PID/fd");
            thread::sleep(Duration::from_millis(100));
            n
        })
        .min()
        .expect("five samples")
}

/// One connect/login/query/disconnect cycle; `kind` 0 ends cleanly with
/// Terminate, 1 drops the socket after the query, 2 drops it while the
/// query runs, 3 after sending the startup packet, 4 halfway through it.
fn churn_cycle(port: u16, db: &str, n: usize, kind: usize) -> Result<(), String> {
    let limit = Duration::from_secs(10);
    let mut conn = stress::raw_connect(port, limit)?;
    match kind {
        3 => {
            conn.send(&raw::startup_message(&[
                ("user", "postgres"),
                ("database", db),
            ]))
            .map_err(|e| format!("send startup: {e}"))?;
            conn.vanish();
            return Ok(());
        }
        4 => {
            let startup = raw::startup_message(&[("user", "postgres"), ("database", db)]);
            conn.send(&startup[..startup.len() / 2])
                .map_err(|e| format!("send half a startup: {e}"))?;
            conn.vanish();
            return Ok(());
        }
        _ => {}
    }
    stress::raw_login_by(&mut conn, db, Instant::now() + limit)?;
    if kind == 2 {
        conn.send_query(&format!("SELECT {n}, pg_sleep(0.05)"));
        conn.vanish();
        return Ok(());
    }
    let reply = stress::raw_query(&mut conn, &format!("SELECT {n}"), limit)?;
    let got = raw::first_column(&reply);
    if got != vec![Some(n.to_string())] {
        return Err(format!("SELECT {n} returned {got:?}"));
    }
    if kind == 0 {
        conn.send(&raw::terminate_message())
            .map_err(|e| format!("send Terminate: {e}"))?;
    }
    conn.vanish();
    Ok(())
}

#[test]
fn connect_churn_leaks_no_file_descriptors() {
    let cluster = Cluster::shared();
    let _exclusive = Faults::take(cluster);
    let db = new_database(cluster, "rel_fds");
    const POOL: usize = 4;
    let gate = PgGate::start(cluster, &format!("[pool]\nsize = {POOL}"));
    let pid = gate.pid();

    // Warm-up: fill the pools and whatever PgGate allocates once.
    for n in 0..30 {
        churn_cycle(gate.port, &db, n, 0).unwrap_or_else(|e| panic!("warm-up cycle {n}: {e}"));
    }
    thread::sleep(Duration::from_secs(1));
    let start_fds = settled_fd_count(pid);
    let start_targets = stress::fd_targets(pid);

    const THREADS: usize = 4;
    const CYCLES: usize = 300;
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let port = gate.port;
            let db = db.clone();
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut abrupt = 0;
                for i in (t..CYCLES).step_by(THREADS) {
                    // Every third cycle is abrupt, of four kinds in turn.
                    let kind = if i % 3 == 2 { 1 + (i / 3) % 4 } else { 0 };
                    abrupt += (kind != 0) as usize;
                    if let Err(e) = churn_cycle(port, &db, i, kind) {
                        failures.push(format!("cycle {i} (kind {kind}): {e}"));
                    }
                }
                (failures, abrupt)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut abrupt = 0;
    for (t, worker) in workers.into_iter().enumerate() {
        match stress::join_by(worker, Instant::now() + Duration::from_secs(120)) {
            Ok((f, a)) => {
                failures.extend(f);
                abrupt += a;
            }
            Err(e) => failures.push(format!("churn thread {t}: {e}")),
        }
    }
    let churn_time = started.elapsed();
    thread::sleep(Duration::from_secs(2));
    let end_fds = settled_fd_count(pid);
    let end_targets = stress::fd_targets(pid);
    let mut backends: BTreeMap<&str, i64> = BTreeMap::new();
    for port in cluster.all_ports() {
        let n = faults::try_direct_value(
            port,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                 AND backend_type = 'client backend'"
            ),
        )
        .ok()
        .flatten()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1);
        backends.insert(cluster.server_name(port), n);
    }
    eprintln!(
        "{CYCLES} cycles ({abrupt} abrupt) in {churn_time:?}; PgGate descriptors {start_fds} \
         after warm-up, {end_fds} 2 s after the churn ({:?} -> {:?}); backend connections of \
         {db}: {backends:?}",
        stress::fd_kinds(&start_targets),
        stress::fd_kinds(&end_targets)
    );
    let mut problems = Vec::new();
    if !failures.is_empty() {
        problems.push(format!(
            "{} cycles failed:\n    {}",
            failures.len(),
            failures
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n    ")
        ));
    }
    if end_fds > start_fds + 5 {
        problems.push(format!(
            "PgGate holds {end_fds} descriptors after the churn, {start_fds} before (limit +5): \
             {:?} -> {:?}",
            stress::fd_kinds(&start_targets),
            stress::fd_kinds(&end_targets)
        ));
    }
    for (server, n) in &backends {
        if *n < 0 || *n > POOL as i64 {
            problems.push(format!(
                "{server} has {n} backend connections of {db} after the churn; pool.size = {POOL}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n  {}\npggate log:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_lines(&gate, &["ERROR", "WARN"], 30)
    );
}

/// What a batch of raw clients saw: logins, queries, failures, and the
/// time when all had logged in.
struct Crowd {
    logged_in: usize,
    answered: usize,
    failures: Vec<String>,
    login_time: Duration,
    total_time: Duration,
    rss_before_kib: u64,
    rss_held_kib: u64,
    /// After every connection has run its query (still held).
    rss_queried_kib: u64,
    fds_held: usize,
}

/// `threads` threads each open `per_thread` raw connections to PgGate and
/// log them in as `postgres` (`inflight` logins in progress per thread at
/// a time), all threads starting together; once every thread is done
/// logging in, each connection runs `SELECT 1`; all stay open until the
/// end. Everything must finish within `limit`.
fn crowd(
    gate: &PgGate,
    threads: usize,
    per_thread: usize,
    inflight: usize,
    limit: Duration,
) -> Crowd {
    let pid = gate.pid();
    let rss_before_kib = stress::rss_kib(pid).unwrap_or(0);
    let start = Arc::new(Barrier::new(threads + 1));
    let logged_in = Arc::new(Barrier::new(threads + 1));
    let queried = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (start, logged_in, queried) = (
                Arc::clone(&start),
                Arc::clone(&logged_in),
                Arc::clone(&queried),
            );
            let port = gate.port;
            thread::spawn(move || {
                start.wait();
                let deadline = Instant::now() + limit;
                let mut failures = Vec::new();
                let mut ready: Vec<RawConn> = Vec::with_capacity(per_thread);
                let mut left = per_thread;
                while left > 0 {
                    let batch = left.min(inflight);
                    left -= batch;
                    let mut opened = Vec::with_capacity(batch);
                    for _ in 0..batch {
                        match stress::raw_connect(port, Duration::from_secs(10)).and_then(
                            |mut c| {
                                c.send(&raw::startup_message(&[
                                    ("user", "postgres"),
                                    ("database", "postgres"),
                                ]))
                                .map_err(|e| format!("send startup: {e}"))?;
                                Ok(c)
                            },
                        ) {
                            Ok(c) => opened.push(c),
                            Err(e) => failures.push(e),
                        }
                    }
                    for mut c in opened {
                        match stress::finish_login_by(&mut c, deadline) {
                            Ok(()) => ready.push(c),
                            Err(e) => failures.push(e),
                        }
                    }
                }
                let logged = ready.len();
                logged_in.wait();
                let mut sent = Vec::with_capacity(ready.len());
                for (i, mut c) in ready.into_iter().enumerate() {
                    match c.send(&raw::query_message("SELECT 1")) {
                        Ok(()) => sent.push(c),
                        Err(e) => failures.push(format!("connection {i}: send SELECT 1: {e}")),
                    }
                }
                let mut answered = 0;
                for (i, c) in sent.iter_mut().enumerate() {
                    match stress::read_reply_by(c, deadline) {
                        Ok(m) if raw::first_column(&m) == vec![Some("1".to_string())] => {
                            answered += 1
                        }
                        Ok(m) => failures.push(format!("connection {i}: SELECT 1 answered {m:?}")),
                        Err(e) => failures.push(format!("connection {i}: SELECT 1: {e}")),
                    }
                }
                queried.wait();
                // The connections are held until every thread is done.
                drop(sent);
                (logged, answered, failures)
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    logged_in.wait();
    let login_time = started.elapsed();
    let rss_held_kib = stress::rss_kib(pid).unwrap_or(0);
    let fds_held = stress::fd_count(pid).unwrap_or(0);
    queried.wait();
    let total_time = started.elapsed();
    let rss_queried_kib = stress::rss_kib(pid).unwrap_or(0);
    let mut result = Crowd {
        logged_in: 0,
        answered: 0,
        failures: Vec::new(),
        login_time,
        total_time,
        rss_before_kib,
        rss_held_kib,
        rss_queried_kib,
        fds_held,
    };
    for (t, worker) in workers.into_iter().enumerate() {
        match stress::join_by(worker, Instant::now() + Duration::from_secs(30)) {
            Ok((logged, answered, failures)) => {
                result.logged_in += logged;
                result.answered += answered;
                result.failures.extend(failures);
            }
            Err(e) => result.failures.push(format!("client thread {t}: {e}")),
        }
    }
    result
}

/// Failures grouped by their text with digits removed, most frequent first.
fn failure_summary(failures: &[String]) -> String {
    let mut groups: BTreeMap<String, (usize, &String)> = BTreeMap::new();
    for f in failures {
        let key: String = f
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(160)
            .collect();
        groups.entry(key).or_insert((0, f)).0 += 1;
    }
    let mut groups: Vec<_> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.0));
    groups
        .iter()
        .take(8)
        .map(|(n, example)| format!("{n} × {example}"))
        .collect::<Vec<_>>()
        .join("\n    ")
}

#[test]
fn a_thousand_clients_connect_at_once() {
    let cluster = Cluster::shared();
    let _exclusive = Faults::take(cluster);
    let nofile = stress::raise_nofile_limit();
    let gate = PgGate::start(cluster, "[proxy]\nmax_clients = 2000");
    let crowd = crowd(&gate, 20, 50, 50, Duration::from_secs(30));
    eprintln!(
        "1000 clients: {} logged in within {:?}, {} answered SELECT 1, all done in {:?}; PgGate \
         RSS {:.1} MiB -> {:.1} MiB, {} descriptors (RLIMIT_NOFILE {nofile})",
        crowd.logged_in,
        crowd.login_time,
        crowd.answered,
        crowd.total_time,
        mib(crowd.rss_before_kib),
        mib(crowd.rss_held_kib),
        crowd.fds_held
    );
    assert!(
        crowd.failures.is_empty() && crowd.answered == 1000,
        "1000 clients connecting at once: {} logged in, {} answered SELECT 1; {} failures:\n    \
         {}\npggate log:\n{}",
        crowd.logged_in,
        crowd.answered,
        crowd.failures.len(),
        failure_summary(&crowd.failures),
        log_lines(&gate, &["ERROR", "WARN"], 30)
    );
    assert!(
        crowd.total_time < Duration::from_secs(30),
        "1000 clients took {:?} to log in and run SELECT 1 (limit 30 s)",
        crowd.total_time
    );
}

#[test]
#[ignore = "long: 10,000 connections; run with --ignored"]
fn ten_thousand_idle_clients_are_held() {
    let cluster = Cluster::shared();
    let _exclusive = Faults::take(cluster);
    let nofile = stress::raise_nofile_limit();
    assert!(
        nofile >= 10_500,
        "RLIMIT_NOFILE is {nofile}: the test process and PgGate (which inherits the limit) each \
         need more than 10,500 descriptors (raise the hard limit, e.g. `ulimit -Hn 65536`)"
    );
    let gate = PgGate::start(cluster, "[proxy]\nmax_clients = 12000");
    // Warm-up, so that the baseline includes pools and allocator arenas.
    let _ = crowd(&gate, 10, 10, 10, Duration::from_secs(30));
    thread::sleep(Duration::from_millis(500));
    let crowd = crowd(&gate, 50, 200, 10, Duration::from_secs(180));
    let per_client = |kib: u64| kib.saturating_sub(crowd.rss_before_kib) as f64 * 1024.0 / 10_000.0;
    eprintln!(
        "10,000 idle clients: {} logged in within {:?}, {} answered SELECT 1, all done in {:?}; \
         PgGate RSS {:.1} MiB before, {:.1} MiB holding them logged in ({:.0} bytes per client), \
         {:.1} MiB after each ran SELECT 1 ({:.0} bytes per client); {} descriptors",
        crowd.logged_in,
        crowd.login_time,
        crowd.answered,
        crowd.total_time,
        mib(crowd.rss_before_kib),
        mib(crowd.rss_held_kib),
        per_client(crowd.rss_held_kib),
        mib(crowd.rss_queried_kib),
        per_client(crowd.rss_queried_kib),
        crowd.fds_held
    );
    assert!(
        crowd.failures.is_empty() && crowd.answered == 10_000,
        "10,000 idle clients: {} logged in, {} answered SELECT 1; {} failures:\n    {}\n\
         pggate log:\n{}",
        crowd.logged_in,
        crowd.answered,
        crowd.failures.len(),
        failure_summary(&crowd.failures),
        log_lines(&gate, &["ERROR", "WARN"], 30)
    );
}
