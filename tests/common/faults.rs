//! Faults injected into PostgreSQL servers, and the guards that undo them.
//!
//! [`Faults`] is held by a test that stops servers or pauses replay on the
//! shared cluster: it serialises such tests (one process-wide lock) and, when
//! dropped, puts the cluster back as it was — every server running, replay
//! resumed, both replicas streaming and caught up — even when the test fails.
//!
//! [`Pair`] is a throwaway primary and streaming replica of its own (for
//! tests that promote a replica, which the shared cluster must never see).
//! Dropping it stops both servers; a detached watchdog shell stops them too if
//! the test process dies first.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cluster::{direct_config, Cluster};
use super::pgbin::{self, server_command};
use super::tools::run_with_timeout;
use super::{describe_error, free_port, random_hex, tail, CmdOutput};

/// The servers of the shared cluster, by data directory name.
pub const SERVERS: [&str; 3] = ["primary", "replica1", "replica2"];

/// How long restoring the cluster may take before it is reported as failed.
const RESTORE_LIMIT: Duration = Duration::from_secs(60);

/// `pg_ctl ARGS` on the data directory `dir/server`, logging to
/// `dir/server.log`, as the server's OS user.
pub fn pg_ctl_in(dir: &Path, server: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = server_command("pg_ctl", dir);
    cmd.arg("-D")
        .arg(dir.join(server))
        .arg("-l")
        .arg(dir.join(format!("{server}.log")))
        .args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(90))
}

/// `pg_ctl ARGS` on one of the shared cluster's servers.
pub fn pg_ctl(cluster: &Cluster, server: &str, args: &[&str]) -> CmdOutput {
    pg_ctl_in(&cluster.dir, server, args)
}

pub const PG_CTL_START: &[&str] = &["start", "-w", "-t", "60"];
pub const PG_CTL_STOP_IMMEDIATE: &[&str] = &["stop", "-m", "immediate", "-w", "-t", "60"];

/// Whether `pg_ctl status` finds a running postmaster in `dir/server`.
pub fn is_running_in(dir: &Path, server: &str) -> bool {
    pg_ctl_in(dir, server, &["status"]).success()
}

/// Runs `sql` directly on the server at `port` as `postgres`, returning the
/// error text instead of panicking.
pub fn try_direct(
    port: u16,
    db: &str,
    sql: &str,
) -> Result<Vec<postgres::SimpleQueryMessage>, String> {
    let mut config = direct_config(port, "postgres", db);
    config.connect_timeout(Duration::from_secs(5));
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|e| format!("connect to port {port}: {}", describe_error(&e)))?;
    client
        .simple_query(sql)
        .map_err(|e| format!("{sql:?} on port {port}: {}", describe_error(&e)))
}

/// The first column of the first row of `sql` run directly on `port`.
pub fn try_direct_value(port: u16, db: &str, sql: &str) -> Result<Option<String>, String> {
    let messages = try_direct(port, db, sql)?;
    Ok(messages
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })
        .flatten())
}

/// Number of replicas the primary reports as `streaming`.
pub fn streaming_replicas(cluster: &Cluster) -> Result<u32, String> {
    let value = try_direct_value(
        cluster.primary_port,
        "postgres",
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
    )?;
    value
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("count of streaming replicas {value:?}: {e}"))
}

/// Waits until both replicas stream from the primary and have replayed
/// everything it committed before this call.
pub fn wait_streaming_and_caught_up(cluster: &Cluster, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last: String;
    loop {
        match streaming_replicas(cluster) {
            Ok(2) => break,
            Ok(n) => last = format!("{n} of 2 replicas streaming"),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(format!("replicas not streaming after {limit:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = try_direct_value(
        cluster.primary_port,
        "postgres",
        "SET synchronous_commit = on; UPDATE pggate_harness_sync SET n = n + 1 RETURNING n",
    )?
    .unwrap_or_default();
    let target: i64 = target
        .parse()
        .map_err(|e| format!("marker value {target:?}: {e}"))?;
    for port in cluster.replica_ports {
        loop {
            let seen = try_direct_value(port, "postgres", "SELECT n FROM pggate_harness_sync");
            match seen {
                Ok(Some(n)) if n.parse::<i64>().is_ok_and(|n| n >= target) => break,
                Ok(other) => last = format!("port {port} at marker {other:?} < {target}"),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(format!("replicas not caught up after {limit:?}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Serialises the tests of one binary that stop servers or pause replay.
pub fn cluster_state_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Exclusive use of the shared cluster for faults; restores it on drop.
pub struct Faults<'a> {
    pub cluster: &'a Cluster,
    _lock: MutexGuard<'static, ()>,
}

impl<'a> Faults<'a> {
    /// Takes the process-wide lock and checks the cluster is healthy
    /// (a previous test may have failed to restore it).
    pub fn take(cluster: &'a Cluster) -> Faults<'a> {
        let lock = cluster_state_lock();
        let faults = Faults {
            cluster,
            _lock: lock,
        };
        if let Err(e) = faults.restore() {
            panic!("the shared cluster is not healthy before the test: {e}");
        }
        faults
    }

    pub fn port(&self, server: &str) -> u16 {
        let index = SERVERS
            .iter()
            .position(|s| *s == server)
            .unwrap_or_else(|| panic!("{server} is not a server of the shared cluster"));
        self.cluster.all_ports()[index]
    }

    /// `pg_ctl stop -m immediate` (a crash, as far as clients can tell).
    pub fn stop(&self, server: &str) -> Duration {
        let started = Instant::now();
        pg_ctl(self.cluster, server, PG_CTL_STOP_IMMEDIATE)
            .assert_success(&format!("pg_ctl stop -m immediate of {server}"));
        started.elapsed()
    }

    /// Starts `server` again and waits until it accepts connections
    /// (`pg_ctl start -w`); does not wait for streaming.
    pub fn start(&self, server: &str) {
        pg_ctl(self.cluster, server, PG_CTL_START)
            .assert_success(&format!("pg_ctl start of {server}"));
    }

    /// Waits until both replicas stream and have caught up (panics after
    /// `limit`).
    pub fn wait_streaming(&self, limit: Duration) {
        if let Err(e) = wait_streaming_and_caught_up(self.cluster, limit) {
            panic!("{e}");
        }
    }

    /// `pg_wal_replay_pause()` on a replica; returns once replay has
    /// actually stopped (a commit on the primary reaches the pause point).
    pub fn pause_replay(&self, server: &str) {
        let port = self.port(server);
        try_direct(port, "postgres", "SELECT pg_wal_replay_pause()")
            .unwrap_or_else(|e| panic!("pause replay on {server}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Recovery checks for a pause request before each record, so
            // give it one to reach.
            try_direct(
                self.cluster.primary_port,
                "postgres",
                "UPDATE pggate_harness_sync SET n = n + 1",
            )
            .unwrap_or_else(|e| panic!("bump the marker on the primary: {e}"));
            let state =
                try_direct_value(port, "postgres", "SELECT pg_get_wal_replay_pause_state()")
                    .unwrap_or_else(|e| panic!("replay pause state of {server}: {e}"));
            if state.as_deref() == Some("paused") {
                return;
            }
            if Instant::now() > deadline {
                panic!("replay on {server} not paused 10 s after pg_wal_replay_pause(): {state:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pg_wal_replay_resume()` on a replica.
    pub fn resume_replay(&self, server: &str) {
        let port = self.port(server);
        try_direct(port, "postgres", "SELECT pg_wal_replay_resume()")
            .unwrap_or_else(|e| panic!("resume replay on {server}: {e}"));
    }

    /// Every server running, replay resumed on both replicas, both
    /// streaming and caught up.
    pub fn restore(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for server in SERVERS {
            if !is_running_in(&self.cluster.dir, server) {
                let out = pg_ctl(self.cluster, server, PG_CTL_START);
                if !out.success() {
                    problems.push(format!(
                        "could not start {server}: {}\n{}",
                        out.combined().trim(),
                        tail(&self.cluster.server_log(self.port(server)), 20)
                    ));
                }
            }
        }
        for server in ["replica1", "replica2"] {
            let port = self.port(server);
            let paused = try_direct_value(port, "postgres", "SELECT pg_is_wal_replay_paused()");
            match paused {
                Ok(Some(p)) if p == "t" => {
                    if let Err(e) = try_direct(port, "postgres", "SELECT pg_wal_replay_resume()") {
                        problems.push(format!("could not resume replay on {server}: {e}"));
                    }
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{server}: {e}")),
            }
        }
        if problems.is_empty() {
            if let Err(e) = wait_streaming_and_caught_up(self.cluster, RESTORE_LIMIT) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

impl Drop for Faults<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            if std::thread::panicking() {
                eprintln!("could not restore the shared cluster: {e}");
            } else {
                panic!("could not restore the shared cluster after the test: {e}");
            }
        }
    }
}

/// A throwaway primary (`node1`) and streaming replica (`node2`) in a temp
/// dir of their own, on free ports.
pub struct Pair {
    pub dir: PathBuf,
    pub primary_port: u16,
    pub replica_port: u16,
    /// Postmaster pids seen after each start, checked dead after stopping.
    postmasters: Vec<u32>,
}

pub const PAIR_PRIMARY: &str = "node1";
pub const PAIR_REPLICA: &str = "node2";

impl Pair {
    /// initdb, start the primary, `pg_basebackup -R` the replica, start it
    /// and wait until it streams.
    pub fn build() -> Pair {
        pgbin::bin_dir();
        let dir = Path::new("/tmp").join(format!(
            "pggate-pair-{}-{}",
            std::process::id(),
            random_hex(8)
        ));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        pgbin::give_to_server_user(&dir);
        start_pair_watchdog(&dir);
        let mut pair = Pair {
            dir,
            primary_port: 0,
            replica_port: 0,
            postmasters: Vec::new(),
        };

        let primary_data = pair.dir.join(PAIR_PRIMARY);
        let out = run_with_timeout(
            server_command("initdb", &pair.dir)
                .arg("-D")
                .arg(&primary_data)
                .args([
                    "-A",
                    "trust",
                    "--auth-local=trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]),
            None,
            Duration::from_secs(120),
        );
        out.assert_success("initdb of the pair's primary");
        append(
            &primary_data.join("postgresql.conf"),
            &pair_settings(&pair.dir),
        );
        fs::write(
            primary_data.join("pg_hba.conf"),
            "local all all trust\nhost replication all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n",
        )
        .unwrap_or_else(|e| panic!("write the pair's pg_hba.conf: {e}"));
        pair.primary_port = pair.start_new(PAIR_PRIMARY);

        let out = run_with_timeout(
            server_command("pg_basebackup", &pair.dir)
                .args(["-h", "127.0.0.1", "-p", &pair.primary_port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(pair.dir.join(PAIR_REPLICA))
                .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]),
            None,
            Duration::from_secs(120),
        );
        out.assert_success("pg_basebackup of the pair's replica");
        pair.replica_port = pair.start_new(PAIR_REPLICA);

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let streaming = try_direct_value(
                pair.primary_port,
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            );
            if matches!(streaming.as_ref().map(|v| v.as_deref()), Ok(Some("1"))) {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the pair's replica is not streaming after 30 s ({streaming:?}); its log:\n{}",
                    tail(&pair.log(PAIR_REPLICA), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pair
    }

    /// Gives `server` a free port, starts it and records its postmaster.
    fn start_new(&mut self, server: &str) -> u16 {
        let port = free_port();
        append(
            &self.dir.join(server).join("postgresql.conf"),
            &format!("port = {port}\n"),
        );
        let out = self.pg_ctl(server, PG_CTL_START);
        self.note_postmaster(server);
        if !out.success() {
            panic!(
                "pg_ctl start of the pair's {server} failed: {}\n{}",
                out.combined(),
                tail(&self.log(server), 30)
            );
        }
        port
    }

    fn note_postmaster(&mut self, server: &str) {
        let pid_file = self.dir.join(server).join("postmaster.pid");
        if let Some(pid) = fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            self.postmasters.push(pid);
        }
    }

    pub fn pg_ctl(&self, server: &str, args: &[&str]) -> CmdOutput {
        pg_ctl_in(&self.dir, server, args)
    }

    pub fn log(&self, server: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{server}.log"))).unwrap_or_default()
    }

    /// Stops both servers (immediate) and checks that no postmaster of the
    /// pair is left alive.
    pub fn stop_all(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for server in [PAIR_PRIMARY, PAIR_REPLICA] {
            if self.dir.join(server).join("postmaster.pid").exists() {
                let out = self.pg_ctl(server, PG_CTL_STOP_IMMEDIATE);
                if !out.success() && is_running_in(&self.dir, server) {
                    problems.push(format!(
                        "pg_ctl stop of {server}: {}",
                        out.combined().trim()
                    ));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive: Vec<u32> = self
                .postmasters
                .iter()
                .copied()
                .filter(|pid| process_alive(*pid))
                .collect();
            if alive.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for pid in &alive {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
                problems.push(format!("postmasters {alive:?} survived pg_ctl stop"));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Also after an explicit stop_all: nothing may have been left behind.
        if let Err(e) = self.stop_all() {
            eprintln!("stopping the throwaway pair: {e}");
        }
        if std::thread::panicking() {
            for server in [PAIR_PRIMARY, PAIR_REPLICA] {
                eprintln!(
                    "---- pair {server} log tail ----\n{}",
                    tail(&self.log(server), 30)
                );
            }
        }
        let keep = std::env::var("PGGATE_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
        if !keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

fn pair_settings(dir: &Path) -> String {
    format!(
        "
# ---- pggate test pair ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '{dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
wal_writer_delay = 10ms
max_connections = 100
shared_buffers = 16MB
wal_level = replica
max_wal_senders = 5
hot_standby = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
",
        dir = dir.display()
    )
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A detached shell that stops the pair's postmasters and removes its
/// directory once the test process has exited, whatever way it ended.
// It outlives the test process by design, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn start_pair_watchdog(dir: &Path) {
    let dir_text = dir.to_str().expect("temp dir path is UTF-8");
    let pg_ctl = pgbin::tool("pg_ctl");
    let pg_ctl = sh_quote(pg_ctl.to_str().expect("pg_ctl path is UTF-8"));
    let keep = std::env::var("PGGATE_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    let script = format!(
        r#"
pid={pid}
dir={dir}
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
for d in "$dir/{primary}" "$dir/{replica}"; do
  [ -f "$d/postmaster.pid" ] || continue
  postmaster=$(head -n 1 "$d/postmaster.pid")
  {prefix}{pg_ctl} -D "$d" stop -m immediate -w -t 20 >/dev/null 2>&1 || kill -9 "$postmaster" 2>/dev/null
done
{cleanup}
"#,
        pid = std::process::id(),
        dir = sh_quote(dir_text),
        primary = PAIR_PRIMARY,
        replica = PAIR_REPLICA,
        prefix = pgbin::server_shell_prefix(),
        cleanup = if keep { "" } else { "rm -rf \"$dir\"" },
    );
    super::spawn_detached_shell(&script, false, "pair watchdog shell");
}
