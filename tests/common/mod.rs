//! Integration-test harness: a real PostgreSQL cluster (one primary, two
//! streaming replicas) built once per test binary, a PgGate process per test
//! in front of it, runners for `psql`/`pgbench`, and a minimal raw protocol
//! client for the cases no driver will produce (vanishing clients, garbage,
//! hand-made cancel requests).
//!
//! Nothing here knows how PgGate works inside: the harness only talks to it
//! the way users do (config file, command line, sockets, signals).
#![allow(dead_code)]

pub mod cluster;
pub mod fake;
pub mod faults;
pub mod gate;
pub mod ops;
pub mod pgbin;
pub mod raw;
pub mod stress;
pub mod tls;
pub mod tools;

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;

pub use cluster::Cluster;
#[allow(unused_imports)]
pub use gate::{GateFiles, PgGate};
pub use tools::CmdOutput;

/// Roles the cluster creates, with their passwords and how `pg_hba.conf`
/// makes the primary ask for them.
pub const SCRAM_USER: (&str, &str) = ("scram_user", "scram_pw");
pub const MD5_USER: (&str, &str) = ("md5_user", "md5_pw");
pub const CLEAR_USER: (&str, &str) = ("clear_user", "clear_pw");

/// The password the tests know for `user`; `None` for trust users such as
/// `postgres`.
pub fn password_of(user: &str) -> Option<&'static str> {
    [SCRAM_USER, MD5_USER, CLEAR_USER]
        .iter()
        .find(|(name, _)| *name == user)
        .map(|(_, password)| *password)
}

/// Path of the PgGate binary under test: Cargo's `CARGO_BIN_EXE_pggate` when
/// the tests are built inside the pggate crate, otherwise `$PGGATE_BIN`.
pub fn pggate_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_pggate") {
        return PathBuf::from(path);
    }
    match std::env::var_os("PGGATE_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "no PgGate binary: these tests are meant to run with `cargo test` in the pggate \
             crate (which sets CARGO_BIN_EXE_pggate); elsewhere set PGGATE_BIN=/path/to/pggate"
        ),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a fresh listener")
        .port()
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// A random lowercase hex string of `n` characters, for unique names.
pub fn random_hex(n: usize) -> String {
    random_bytes(n.div_ceil(2))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..n]
        .to_string()
}

/// Rows of a simple-protocol query, every column as text (`None` for NULL).
/// Panics with the statement and the error when it fails.
pub fn simple_rows(client: &mut postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("simple query {sql:?} failed: {}", describe_error(&e)));
    rows_of(messages)
}

/// The rows among a simple query's messages, every column as text (`None`
/// for NULL).
pub fn rows_of(messages: Vec<postgres::SimpleQueryMessage>) -> Rows {
    messages
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The single non-NULL value of a simple-protocol query that returns one row
/// with one or more columns (the first column is returned).
pub fn simple_value(client: &mut postgres::Client, sql: &str) -> String {
    let rows = simple_rows(client, sql);
    assert_eq!(
        rows.len(),
        1,
        "{sql:?} returned {} rows: {rows:?}",
        rows.len()
    );
    rows[0][0]
        .clone()
        .unwrap_or_else(|| panic!("{sql:?} returned NULL"))
}

/// `inet_server_port()` of whichever server ran the statement.
pub fn server_port(client: &mut postgres::Client) -> u16 {
    let port = simple_value(client, "SELECT inet_server_port()");
    port.parse()
        .unwrap_or_else(|e| panic!("inet_server_port() returned {port:?}: {e}"))
}

/// An error with its SQLSTATE and server message when there is one.
pub fn describe_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} [{}]: {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e} ({e:?})"),
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Fast probes: a dead backend is down after 2 × 200 ms.
pub const FAST_HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nfailures = 2\n";

pub type Rows = Vec<Vec<Option<String>>>;

/// Rows of a simple-protocol query, or the error described (for tests that
/// expect failures).
pub fn try_rows(client: &mut postgres::Client, sql: &str) -> Result<Rows, String> {
    client
        .simple_query(sql)
        .map(rows_of)
        .map_err(|e| describe_error(&e))
}

/// First column of the single row of `sql`.
pub fn try_value(client: &mut postgres::Client, sql: &str) -> Result<String, String> {
    let rows = try_rows(client, sql)?;
    match rows.as_slice() {
        [row] => row[0]
            .clone()
            .ok_or_else(|| format!("{sql:?} returned NULL")),
        _ => Err(format!("{sql:?} returned {} rows: {rows:?}", rows.len())),
    }
}

/// The port of the server that ran a read on `client`.
pub fn try_read_port(client: &mut postgres::Client) -> Result<u16, String> {
    let port = try_value(client, "SELECT inet_server_port()")?;
    port.parse()
        .map_err(|e| format!("inet_server_port() = {port:?}: {e}"))
}

/// `(SQLSTATE, message)` of a server-style error, if the error is one.
pub fn db_error(e: &postgres::Error) -> Option<(String, String)> {
    e.as_db_error()
        .map(|db| (db.code().code().to_string(), db.message().to_string()))
}

/// The lines of PgGate's log that mention any of `words` (the last `max`),
/// with runs of the same message folded into one line and a count.
pub fn log_lines(gate: &PgGate, words: &[&str], max: usize) -> String {
    let log = gate.log_contents();
    let mut folded: Vec<(String, usize)> = Vec::new();
    for line in log
        .lines()
        .filter(|line| words.iter().any(|w| line.contains(w)))
    {
        // Lines start with an `HH:MM:SS ` timestamp.
        let message = line.get(9..).unwrap_or(line);
        match folded.last_mut() {
            Some((last, count)) if last.get(9..).unwrap_or(last) == message => *count += 1,
            _ => folded.push((line.to_string(), 1)),
        }
    }
    let start = folded.len().saturating_sub(max);
    folded[start..]
        .iter()
        .map(|(line, count)| match count {
            1 => line.clone(),
            n => format!("{line}   (x{n})"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A new database (owned by `postgres`) for one test, on every server.
pub fn new_database(cluster: &Cluster, prefix: &str) -> String {
    let db = format!("{prefix}_{}", random_hex(8));
    cluster.create_database(&db, "postgres");
    db
}

/// Runs `sql` directly on the primary in `db` (setup, not through PgGate).
pub fn on_primary_in(cluster: &Cluster, db: &str, sql: &str) -> Rows {
    let mut client = cluster.connect_direct(cluster.primary_port, "postgres", db);
    try_rows(&mut client, sql).unwrap_or_else(|e| panic!("{sql:?} on the primary: {e}"))
}

/// Starts `sh -c script` in a session of its own, so that Ctrl-C on the
/// tests spares it (watchdogs and rescue shells that must outlive a killed
/// test process). Its output is dropped, but for stderr when `show_errors`;
/// `what` names it if it cannot start.
pub fn spawn_detached_shell(script: &str, show_errors: bool, what: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if show_errors {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("start the {what}: {e}"))
}
