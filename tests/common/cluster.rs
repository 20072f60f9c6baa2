//! The PostgreSQL cluster the tests run against: one primary and two
//! streaming replicas under a fresh temp dir, on free ports, built once per
//! test binary and shared by all its tests.
//!
//! Statics are never dropped, so a detached watchdog shell (one per cluster)
//! waits for the test process to exit and then stops every postmaster and
//! removes the directory. Set `PGGATE_TEST_KEEP=1` to keep the directory
//! (data and server logs) for a post-mortem; the servers are stopped anyway.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::pgbin::{self, server_command};
use super::tools::{self, run_with_timeout};
use super::{free_port, password_of, random_hex, simple_value, tail};

/// The data directories of a cluster, relative to its temp dir.
const SERVERS: [&str; 3] = ["primary", "replica1", "replica2"];

pub struct Cluster {
    /// The temp dir holding data directories, server logs and PgGate runs.
    pub dir: PathBuf,
    pub primary_port: u16,
    pub replica_ports: [u16; 2],
    /// Serialises CREATE DATABASE (concurrent copies of template1 can fail).
    create_lock: Mutex<()>,
}

impl Cluster {
    /// The cluster of this test binary, built on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let result = SHARED.get_or_init(|| {
            let started = Instant::now();
            match std::panic::catch_unwind(build) {
                Ok(cluster) => {
                    eprintln!(
                        "pggate test cluster ready in {:.1?}: {} (primary {}, replicas {:?})",
                        started.elapsed(),
                        cluster.dir.display(),
                        cluster.primary_port,
                        cluster.replica_ports
                    );
                    Ok(cluster)
                }
                Err(payload) => Err(panic_text(payload.as_ref())),
            }
        });
        match result {
            Ok(cluster) => cluster,
            // Every test that needs the cluster fails with the same reason,
            // instead of each trying to build it again.
            Err(reason) => panic!("the test cluster could not be built: {reason}"),
        }
    }

    /// Primary first, then the replicas.
    pub fn all_ports(&self) -> [u16; 3] {
        [
            self.primary_port,
            self.replica_ports[0],
            self.replica_ports[1],
        ]
    }

    pub fn is_replica_port(&self, port: u16) -> bool {
        self.replica_ports.contains(&port)
    }

    /// "primary", "replica1" or "replica2".
    pub fn server_name(&self, port: u16) -> &'static str {
        let index = self
            .all_ports()
            .iter()
            .position(|p| *p == port)
            .unwrap_or_else(|| panic!("port {port} is not a server of the test cluster"));
        SERVERS[index]
    }

    /// What the server listening on `port` has logged so far (every
    /// statement: `log_statement = 'all'`).
    pub fn server_log(&self, port: u16) -> String {
        let path = self.dir.join(format!("{}.log", self.server_name(port)));
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Runs `sql` with `psql -X -A -t` directly on the server at `port` and
    /// returns its trimmed output. Panics with psql's stderr on failure.
    pub fn psql(&self, port: u16, user: &str, db: &str, sql: &str) -> String {
        let mut cmd = tools::client_command("psql", port, user, db);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let out = run_with_timeout(&mut cmd, None, Duration::from_secs(60));
        if !out.status.success() {
            panic!(
                "psql on port {port} as {user} in {db} failed ({}) running {sql:?}:\n{}",
                out.status, out.stderr
            );
        }
        out.stdout.trim().to_string()
    }

    /// A client connected straight to the server at `port`, bypassing PgGate.
    pub fn connect_direct(&self, port: u16, user: &str, db: &str) -> postgres::Client {
        direct_config(port, user, db)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| {
                panic!(
                    "direct connection to port {port} as {user} in {db}: {}",
                    super::describe_error(&e)
                )
            })
    }

    /// Waits until both replicas have replayed everything committed on the
    /// primary before this call.
    ///
    /// A marker row is bumped with a synchronous commit; WAL is replayed in
    /// order, so a replica that sees the new value has every earlier commit.
    pub fn wait_replicas_caught_up(&self) {
        let mut primary = self.connect_direct(self.primary_port, "postgres", "postgres");
        primary
            .batch_execute("SET synchronous_commit = on")
            .expect("SET synchronous_commit on the primary");
        let target: i64 = simple_value(
            &mut primary,
            "UPDATE pggate_harness_sync SET n = n + 1 RETURNING n",
        )
        .parse()
        .expect("marker value is a number");
        for port in self.replica_ports {
            let mut replica = self.connect_direct(port, "postgres", "postgres");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let seen: i64 = simple_value(&mut replica, "SELECT n FROM pggate_harness_sync")
                    .parse()
                    .expect("marker value is a number");
                if seen >= target {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{} (port {port}) has not replayed the primary's commits after 30 s \
                         (marker {seen} < {target}); its log ends with:\n{}",
                        self.server_name(port),
                        tail(&self.server_log(port), 30)
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// `CREATE DATABASE name OWNER owner` on the primary; returns once both
    /// replicas have it too.
    pub fn create_database(&self, name: &str, owner: &str) {
        {
            let _serial = self
                .create_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.psql(
                self.primary_port,
                "postgres",
                "postgres",
                &format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""),
            );
        }
        self.wait_replicas_caught_up();
    }
}

/// A `postgres::Config` for a direct connection to a cluster server.
pub fn direct_config(port: u16, user: &str, db: &str) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = password_of(user) {
        config.password(password);
    }
    config
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "(non-text panic)".to_string()
    }
}

/// Stops whatever servers were started if building fails midway (the
/// watchdog would, but only once the whole test process has exited).
struct BuildGuard {
    dir: PathBuf,
    started: Vec<PathBuf>,
    finished: bool,
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for data in self.started.iter().rev() {
            let _ = server_command("pg_ctl", &self.dir)
                .arg("-D")
                .arg(data)
                .args(["stop", "-m", "immediate", "-w"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn build() -> Cluster {
    // Resolve the binaries first: a missing install must fail loudly here.
    pgbin::bin_dir();
    // Not $TMPDIR: the postgres OS user must be able to reach the directory.
    let dir = Path::new("/tmp").join(format!(
        "pggate-test-{}-{}",
        std::process::id(),
        random_hex(8)
    ));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    pgbin::give_to_server_user(&dir);
    fs::create_dir(dir.join("pids")).expect("create the pid directory of the watchdog");
    start_watchdog(&dir);

    let mut guard = BuildGuard {
        dir: dir.clone(),
        started: Vec::new(),
        finished: false,
    };

    let primary_data = dir.join("primary");
    run_server_tool(
        server_command("initdb", &dir)
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
        "initdb",
    );
    append(
        &primary_data.join("postgresql.conf"),
        &server_settings(&dir),
    );
    fs::write(primary_data.join("pg_hba.conf"), HBA)
        .unwrap_or_else(|e| panic!("write pg_hba.conf: {e}"));

    let primary_port = start_server(&dir, "primary", &mut guard);
    set_up_roles(primary_port);

    let mut replica_ports = [0u16; 2];
    for (i, name) in ["replica1", "replica2"].into_iter().enumerate() {
        run_server_tool(
            server_command("pg_basebackup", &dir)
                .args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(dir.join(name))
                .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]),
            "pg_basebackup",
        );
        replica_ports[i] = start_server(&dir, name, &mut guard);
    }

    let cluster = Cluster {
        dir,
        primary_port,
        replica_ports,
        create_lock: Mutex::new(()),
    };
    wait_streaming(&cluster);
    for port in cluster.replica_ports {
        let mut replica = cluster.connect_direct(port, "postgres", "postgres");
        assert_eq!(
            simple_value(&mut replica, "SELECT pg_is_in_recovery()"),
            "t",
            "the server on port {port} should be a standby"
        );
    }
    cluster.wait_replicas_caught_up();
    guard.finished = true;
    cluster
}

const HBA: &str = "\
# written by the pggate test harness
local   all          all                      trust
host    replication  postgres    127.0.0.1/32 trust
host    all          postgres    127.0.0.1/32 trust
host    all          scram_user  127.0.0.1/32 scram-sha-256
host    all          md5_user    127.0.0.1/32 md5
host    all          clear_user  127.0.0.1/32 password
host    all          all         127.0.0.1/32 trust
";

fn server_settings(dir: &Path) -> String {
    format!(
        "
# ---- pggate test harness ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '{dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
wal_writer_delay = 10ms
max_connections = 300
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
logging_collector = off
log_statement = 'all'
log_line_prefix = '%m [%p] %q%u@%d '
password_encryption = 'scram-sha-256'
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

fn run_server_tool(cmd: &mut Command, what: &str) {
    let out = run_with_timeout(cmd, None, Duration::from_secs(120));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        );
    }
}

/// Starts the server in `dir/name` on a free port (retrying with another
/// port if someone took it meanwhile) and returns the port.
fn start_server(dir: &Path, name: &str, guard: &mut BuildGuard) -> u16 {
    let data = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    for attempt in 1..=3 {
        let port = free_port();
        // The last setting in the file wins.
        append(&data.join("postgresql.conf"), &format!("port = {port}\n"));
        let out = run_with_timeout(
            server_command("pg_ctl", dir)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]),
            None,
            Duration::from_secs(90),
        );
        if out.status.success() {
            guard.started.push(data);
            return port;
        }
        let log_text = fs::read_to_string(&log).unwrap_or_default();
        if attempt < 3 && log_text.contains("could not bind") {
            continue;
        }
        // pg_ctl may have left a postmaster behind when it gave up waiting.
        guard.started.push(data);
        panic!(
            "pg_ctl start of {name} failed ({}): {}{}\n--- {} ---\n{}",
            out.status,
            out.stdout,
            out.stderr,
            log.display(),
            tail(&log_text, 40)
        );
    }
    unreachable!("the last attempt returns or panics")
}

fn set_up_roles(primary_port: u16) {
    let mut client = direct_config(primary_port, "postgres", "postgres")
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the new primary: {e}"));
    client
        .batch_execute(
            "CREATE ROLE scram_user LOGIN PASSWORD 'scram_pw';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5_pw';
             RESET password_encryption;
             CREATE ROLE clear_user LOGIN PASSWORD 'clear_pw';
             GRANT ALL ON SCHEMA public TO scram_user, md5_user, clear_user;
             CREATE TABLE pggate_harness_sync (n bigint NOT NULL);
             INSERT INTO pggate_harness_sync VALUES (0);",
        )
        .unwrap_or_else(|e| panic!("create the test roles: {}", super::describe_error(&e)));
    let stored = simple_value(
        &mut client,
        "SELECT string_agg(rolname || '=' || left(rolpassword, 3), ',' ORDER BY rolname) \
         FROM pg_authid WHERE rolname IN ('scram_user', 'md5_user', 'clear_user')",
    );
    assert_eq!(
        stored, "clear_user=SCR,md5_user=md5,scram_user=SCR",
        "password storage of the test roles"
    );
}

fn wait_streaming(cluster: &Cluster) {
    let mut primary = cluster.connect_direct(cluster.primary_port, "postgres", "postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let streaming = simple_value(
            &mut primary,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        );
        if streaming == "2" {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "only {streaming} of 2 replicas streaming after 30 s; replica1 log:\n{}\nreplica2 log:\n{}",
                tail(&cluster.server_log(cluster.replica_ports[0]), 20),
                tail(&cluster.server_log(cluster.replica_ports[1]), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Starts the detached shell that cleans up after this test process: it
/// kills the PgGate processes registered in `dir/pids`, stops every
/// postmaster of the cluster and removes `dir`.
// It outlives the test process by design, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn start_watchdog(dir: &Path) {
    let dir_text = dir.to_str().expect("temp dir path is UTF-8");
    let pg_ctl = pgbin::tool("pg_ctl");
    let pg_ctl = sh_quote(pg_ctl.to_str().expect("pg_ctl path is UTF-8"));
    let data_dirs: Vec<String> = SERVERS
        .iter()
        .map(|name| sh_quote(&format!("{dir_text}/{name}")))
        .collect();
    let keep = std::env::var("PGGATE_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    let script = format!(
        r#"
pid={pid}
dir={dir}
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
for f in "$dir"/pids/*; do
  [ -e "$f" ] || continue
  kill -9 "${{f##*/}}" 2>/dev/null
done
for d in {data_dirs}; do
  [ -f "$d/postmaster.pid" ] || continue
  postmaster=$(head -n 1 "$d/postmaster.pid")
  {prefix}{pg_ctl} -D "$d" stop -m immediate -w -t 20 >/dev/null 2>&1 || kill -9 "$postmaster" 2>/dev/null
done
{cleanup}
"#,
        pid = std::process::id(),
        dir = sh_quote(dir_text),
        data_dirs = data_dirs.join(" "),
        prefix = pgbin::server_shell_prefix(),
        cleanup = if keep {
            "echo \"pggate test cluster kept in $dir\" >&2"
        } else {
            "rm -rf \"$dir\""
        },
    );
    super::spawn_detached_shell(&script, keep, "cluster watchdog shell");
}
