//! Helpers for stress and resource tests: a reproducible pseudo-random
//! generator, what `/proc` says about a process (resident memory, open
//! descriptors, children), the descriptor limit of the test process, a guard
//! that freezes a PostgreSQL server with SIGSTOP and always thaws it, and
//! raw-protocol logins and queries that return errors instead of panicking
//! (for many clients on many threads, where one failure must be counted,
//! not abort the thread).
//!
//! Like the rest of the harness, nothing here knows how PgGate works inside.

use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::raw::{self, Message, RawConn};

/// xorshift64: small, fast and reproducible from its seed (printed by the
/// tests so a failing run can be replayed).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is the one state xorshift never leaves.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Between `low` and `high` pseudo-random bytes.
    pub fn bytes_between(&mut self, low: u64, high: u64) -> Vec<u8> {
        let n = self.between(low, high) as usize;
        self.bytes(n)
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seed for a generator: `$var` when set (to replay a run), otherwise
/// from the kernel. Printed either way.
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var}={text:?} is not a number: {e}")),
        _ => u64::from_be_bytes(
            super::random_bytes(8)
                .try_into()
                .expect("eight random bytes"),
        ),
    };
    eprintln!("random seed {seed} (replay with {var}={seed})");
    seed
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Number of open file descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: i32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// What each open descriptor of `pid` points at (`socket:[123]`, a path),
/// sorted, for a report when descriptors leak.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let mut targets: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    targets.sort();
    targets
}

/// Summarises descriptor targets by kind: `socket`, `pipe`, `anon_inode:...`
/// or the path, with counts.
pub fn fd_kinds(targets: &[String]) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for target in targets {
        let kind = match target.split_once(":[") {
            Some((kind, _)) => kind.to_string(),
            None => target.clone(),
        };
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    kinds
}

/// Raises the soft RLIMIT_NOFILE of the test process to its hard limit
/// (children such as PgGate inherit it). Returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit(RLIMIT_NOFILE) failed");
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(
            rc, 0,
            "setrlimit(RLIMIT_NOFILE) to {} failed",
            limit.rlim_max
        );
    }
    limit.rlim_cur
}

/// The pid in the first line of `DATA/postmaster.pid`.
pub fn postmaster_pid(cluster_dir: &Path, server: &str) -> i32 {
    let path = cluster_dir.join(server).join("postmaster.pid");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}: {text:?}", path.display()))
}

/// Parent pid and state letter of `pid` from `/proc/PID/stat`.
fn parent_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields that
    // follow start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// Direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| parent_and_state(*child).is_some_and(|(parent, _)| parent == pid))
        .collect()
}

/// A PostgreSQL server frozen with SIGSTOP: the postmaster first (so it
/// forks nothing new), then every child (PostgreSQL makes each child a
/// process-group leader of its own, so signalling the postmaster's group
/// would miss them). Dropping the guard sends SIGCONT to all of them; a
/// detached shell does the same if the test process dies first.
pub struct Frozen {
    pub server: String,
    pub pids: Vec<i32>,
    thawed: bool,
    rescue: Option<Child>,
}

impl Frozen {
    pub fn freeze(cluster_dir: &Path, server: &str) -> Frozen {
        let postmaster = postmaster_pid(cluster_dir, server);
        let mut frozen = Frozen {
            server: server.to_string(),
            pids: Vec::new(),
            thawed: false,
            rescue: None,
        };
        frozen.stop(postmaster);
        // A fork in progress when the postmaster stopped shows up late.
        for _ in 0..3 {
            for child in children_of(postmaster) {
                if !frozen.pids.contains(&child) {
                    frozen.stop(child);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        frozen.rescue = Some(rescue_shell(&frozen.pids));
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let running: Vec<i32> = frozen
                .pids
                .iter()
                .copied()
                .filter(|pid| parent_and_state(*pid).is_some_and(|(_, state)| state != 'T'))
                .collect();
            if running.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                panic!("processes {running:?} of {server} are not stopped 2 s after SIGSTOP");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        frozen
    }

    fn stop(&mut self, pid: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        if rc == 0 {
            self.pids.push(pid);
        } else if self.pids.is_empty() {
            panic!(
                "SIGSTOP to the postmaster {pid} of {} failed: {}",
                self.server,
                io::Error::last_os_error()
            );
        }
    }

    /// SIGCONT to every frozen process (children first, postmaster last).
    pub fn thaw(&mut self) {
        if self.thawed {
            return;
        }
        for pid in self.pids.iter().rev() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
        self.thawed = true;
        if let Some(mut rescue) = self.rescue.take() {
            let _ = rescue.kill();
            let _ = rescue.wait();
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// A detached shell that sends SIGCONT to `pids` once the test process has
/// exited, in case it dies (SIGKILL) with a server still frozen.
fn rescue_shell(pids: &[i32]) -> Child {
    let list: Vec<String> = pids.iter().map(i32::to_string).collect();
    let script = format!(
        "while kill -0 {test} 2>/dev/null; do sleep 0.5; done; kill -CONT {list} 2>/dev/null",
        test = std::process::id(),
        list = list.join(" ")
    );
    super::spawn_detached_shell(&script, false, "SIGCONT rescue shell")
}

/// Waits for `handle` until `deadline`; an error when the thread is still
/// running then (it is left behind) or panicked.
pub fn join_by<T>(handle: JoinHandle<T>, deadline: Instant) -> Result<T, String> {
    while !handle.is_finished() {
        if Instant::now() > deadline {
            return Err("still running at the deadline (hung)".to_string());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.join().map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<String>() {
            format!("panicked: {s}")
        } else if let Some(s) = payload.downcast_ref::<&str>() {
            format!("panicked: {s}")
        } else {
            "panicked".to_string()
        }
    })
}

/// A TCP connection to 127.0.0.1:`port` wrapped as a [`RawConn`], or the
/// error.
pub fn raw_connect(port: u16, limit: Duration) -> Result<RawConn, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream =
        TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(raw::READ_LIMIT))
        .and_then(|()| stream.set_write_timeout(Some(raw::READ_LIMIT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options on {addr}: {e}"))?;
    Ok(RawConn {
        stream,
        backend_key: None,
        parameters: Vec::new(),
    })
}

/// Reads messages up to and including ReadyForQuery, or fails at
/// `deadline`, at EOF or on a read error (the connection is then
/// unusable: a timeout may have cut a message in half).
pub fn read_reply_by(conn: &mut RawConn, deadline: Instant) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no ReadyForQuery by the deadline; got {messages:?}"
            ));
        }
        conn.stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set read timeout: {e}"))?;
        match conn.read_message() {
            Ok(Some(m)) => {
                let done = m.tag == b'Z';
                messages.push(m);
                if done {
                    return Ok(messages);
                }
            }
            Ok(None) => return Err(format!("connection closed; got {messages:?}")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no ReadyForQuery by the deadline; got {messages:?}"
                ))
            }
            Err(e) => return Err(format!("read error {e}; got {messages:?}")),
        }
    }
}

/// Sends a StartupMessage (user `postgres`, trust) and reads to
/// ReadyForQuery by `deadline`; an error for anything but a clean login.
pub fn raw_login_by(conn: &mut RawConn, db: &str, deadline: Instant) -> Result<(), String> {
    conn.send(&raw::startup_message(&[
        ("user", "postgres"),
        ("database", db),
    ]))
    .map_err(|e| format!("send StartupMessage: {e}"))?;
    finish_login_by(conn, deadline)
}

/// The second half of [`raw_login_by`], for a StartupMessage already sent
/// (e.g. on many connections before reading any reply).
pub fn finish_login_by(conn: &mut RawConn, deadline: Instant) -> Result<(), String> {
    let messages = read_reply_by(conn, deadline).map_err(|e| format!("login: {e}"))?;
    if let Some(error) = messages.iter().find(|m| m.tag == b'E') {
        return Err(format!("login refused: {error:?}"));
    }
    for m in &messages {
        if m.tag == b'R' && m.body.get(..4) != Some(&[0, 0, 0, 0][..]) {
            return Err(format!(
                "login asked for a password (the raw client only does trust): {m:?}"
            ));
        }
        if m.tag == b'K' && m.body.len() >= 8 {
            let pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
            let key = i32::from_be_bytes([m.body[4], m.body[5], m.body[6], m.body[7]]);
            conn.backend_key = Some((pid, key));
        }
    }
    Ok(())
}

/// A new raw connection to `port` logged in as `postgres` to `db` within
/// `limit`.
pub fn raw_login(port: u16, db: &str, limit: Duration) -> Result<RawConn, String> {
    let deadline = Instant::now() + limit;
    let mut conn = raw_connect(port, limit)?;
    raw_login_by(&mut conn, db, deadline)?;
    Ok(conn)
}

/// Runs a simple Query and reads its reply within `limit`; an
/// ErrorResponse is returned as an error too (with its SQLSTATE first).
pub fn raw_query(conn: &mut RawConn, sql: &str, limit: Duration) -> Result<Vec<Message>, String> {
    let deadline = Instant::now() + limit;
    conn.send(&raw::query_message(sql))
        .map_err(|e| format!("send Query: {e}"))?;
    let messages = read_reply_by(conn, deadline)?;
    if let Some(error) = messages.iter().find(|m| m.tag == b'E') {
        return Err(format!(
            "[{}] {}",
            error.sqlstate().unwrap_or_default(),
            error.text().unwrap_or_default()
        ));
    }
    Ok(messages)
}

/// Everything the peer sends within `wait` or until it closes, as raw
/// bytes, and whether it closed (EOF or reset).
pub fn drain_for(conn: &mut RawConn, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (bytes, false);
        }
        if conn.stream.set_read_timeout(Some(left)).is_err() {
            return (bytes, true);
        }
        match conn.stream.read(&mut buf) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (bytes, false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (bytes, true),
        }
    }
}

/// The complete backend messages at the start of `bytes` (a trailing
/// partial message is ignored; a nonsensical length stops the parse).
pub fn split_messages(bytes: &[u8]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 5 {
        let tag = bytes[at];
        let len = i32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        if len < 4 {
            break;
        }
        let end = at + 1 + len as usize;
        if end > bytes.len() {
            break;
        }
        messages.push(Message {
            tag,
            body: bytes[at + 5..end].to_vec(),
        });
        at = end;
    }
    messages
}
