//! A PgGate process in front of the test cluster: its config and credentials
//! files in a temp dir of their own, the process with stderr captured to a
//! log file, and clients connected to it.
//!
//! The config is built from sections: the harness writes `[proxy] listen`,
//! `[metrics] listen`, `[auth] credentials_file` and three `[[backends]]`;
//! a test's `extra_toml` is merged into that. A `[table]` the harness also
//! writes has its keys added or overridden; any `[[backends]]` in
//! `extra_toml` replaces the harness's backends; other sections are appended.
//! One `key = value` per line.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::{describe_error, free_port, password_of, pggate_bin, tail};

/// Files of one PgGate run.
pub struct GateFiles {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub credentials_path: PathBuf,
    pub log_path: PathBuf,
    /// The port written as `proxy.listen`.
    pub listen_port: u16,
    /// Where the watchdog finds PgGate pids to kill if the tests die.
    pids_dir: PathBuf,
}

impl GateFiles {
    /// Writes a config (harness defaults merged with `extra_toml`) and the
    /// credentials file into a new directory under the cluster's temp dir.
    pub fn write(cluster: &Cluster, extra_toml: &str) -> GateFiles {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let dir = cluster.dir.join(format!("gate-{run}"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let credentials_path = dir.join("credentials.pgpass");
        fs::write(&credentials_path, credentials_text())
            .and_then(|()| {
                fs::set_permissions(&credentials_path, fs::Permissions::from_mode(0o600))
            })
            .unwrap_or_else(|e| panic!("write {}: {e}", credentials_path.display()));
        let files = GateFiles {
            config_path: dir.join("pggate.toml"),
            log_path: dir.join("pggate.log"),
            credentials_path,
            listen_port: free_port(),
            pids_dir: cluster.dir.join("pids"),
            dir,
        };
        files.rewrite_config(cluster, extra_toml);
        files
    }

    /// Replaces the config file (same listen port and credentials file),
    /// e.g. before a SIGHUP.
    pub fn rewrite_config(&self, cluster: &Cluster, extra_toml: &str) {
        let text = config_toml(
            cluster,
            self.listen_port,
            &self.credentials_path.display().to_string(),
            extra_toml,
        );
        fs::write(&self.config_path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config_path.display()));
    }

    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.config_path.display()))
    }
}

/// libpq `.pgpass` lines for the password users, used by PgGate's own
/// backend logins (replicas, extra primary connections).
pub fn credentials_text() -> String {
    [super::SCRAM_USER, super::MD5_USER, super::CLEAR_USER]
        .iter()
        .map(|(user, password)| format!("127.0.0.1:*:*:{user}:{password}\n"))
        .collect()
}

struct Section {
    header: String,
    entries: Vec<(String, String)>,
}

impl Section {
    fn new(header: &str, entries: &[(&str, String)]) -> Section {
        Section {
            header: header.to_string(),
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), format!("{k} = {v}")))
                .collect(),
        }
    }

    fn set(&mut self, key: String, line: String) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = line,
            None => self.entries.push((key, line)),
        }
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The config text PgGate gets: listen on `listen_port`, no metrics
/// listener, the credentials file, the cluster's three servers as
/// backends, and `extra_toml` merged in (see the module doc).
pub fn config_toml(
    cluster: &Cluster,
    listen_port: u16,
    credentials_path: &str,
    extra_toml: &str,
) -> String {
    let backend = |name: &str, port: u16, role: &str| {
        Section::new(
            "[[backends]]",
            &[
                ("name", toml_string(name)),
                ("host", toml_string("127.0.0.1")),
                ("port", port.to_string()),
                ("role", toml_string(role)),
            ],
        )
    };
    let mut sections = vec![
        // Two workers unless a test says otherwise, whatever the machine:
        // clients and connections then also meet across workers.
        Section::new(
            "[proxy]",
            &[
                ("listen", toml_string(&format!("127.0.0.1:{listen_port}"))),
                ("workers", "2".to_string()),
            ],
        ),
        Section::new("[metrics]", &[("listen", toml_string(""))]),
        Section::new(
            "[auth]",
            &[("credentials_file", toml_string(credentials_path))],
        ),
        backend("primary", cluster.primary_port, "primary"),
        backend("replica1", cluster.replica_ports[0], "replica"),
        backend("replica2", cluster.replica_ports[1], "replica"),
    ];

    let mut extra_replaces_backends = false;
    let mut current: Option<usize> = None;
    for raw_line in extra_toml.lines() {
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("[[") {
            if line == "[[backends]]" && !extra_replaces_backends {
                sections.retain(|s| s.header != "[[backends]]");
                extra_replaces_backends = true;
            }
            sections.push(Section::new(line, &[]));
            current = Some(sections.len() - 1);
        } else if line.starts_with('[') {
            current = Some(match sections.iter().position(|s| s.header == line) {
                Some(index) => index,
                None => {
                    sections.push(Section::new(line, &[]));
                    sections.len() - 1
                }
            });
        } else {
            let (key, _) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("extra_toml line is not `key = value`: {raw_line:?}"));
            let index = current.unwrap_or_else(|| {
                panic!("extra_toml line {raw_line:?} comes before any [section] header")
            });
            sections[index].set(key.trim().to_string(), line.to_string());
        }
    }

    let mut text = String::from("# written by the pggate test harness\n");
    for section in &sections {
        text.push('\n');
        text.push_str(&section.header);
        text.push('\n');
        for (_, line) in &section.entries {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// A running PgGate. Dropping it stops the process (SIGTERM, then SIGKILL
/// after 2 s); if the test is failing, the tail of its log is printed.
pub struct PgGate {
    pub port: u16,
    pub files: GateFiles,
    child: Option<Child>,
    pid_marker: PathBuf,
}

impl PgGate {
    /// Starts PgGate in front of `cluster` with the harness config merged
    /// with `extra_toml`, and waits until it accepts TCP connections.
    pub fn start(cluster: &Cluster, extra_toml: &str) -> PgGate {
        PgGate::start_with_files(GateFiles::write(cluster, extra_toml), &[])
    }

    /// Starts `pggate --config FILE --log-level debug EXTRA_ARGS`.
    pub fn start_with_files(files: GateFiles, extra_args: &[&str]) -> PgGate {
        let log = File::create(&files.log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", files.log_path.display()));
        let log_for_stdout = log
            .try_clone()
            .unwrap_or_else(|e| panic!("clone the PgGate log handle: {e}"));
        let bin = pggate_bin();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&files.config_path)
            .args(["--log-level", "debug"])
            .args(extra_args)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let pid_marker = files.pids_dir.join(child.id().to_string());
        // Best effort: only the watchdog's last-resort kill depends on it.
        let _ = File::create(&pid_marker);
        let mut gate = PgGate {
            port: files.listen_port,
            files,
            child: Some(child),
            pid_marker,
        };
        gate.wait_listening(Duration::from_secs(10));
        gate
    }

    fn wait_listening(&mut self, limit: Duration) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "pggate exited ({status}) before listening on {addr}; config:\n{}\nlog:\n{}",
                    self.files.config_text(),
                    tail(&self.log_contents(), 60)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pggate did not listen on {addr} within {limit:?}; log:\n{}",
                    tail(&self.log_contents(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("pggate process handle")
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to PgGate.
    pub fn signal(&self, signal: i32) {
        if self.child.is_none() {
            panic!("pggate was already reaped");
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child and has not been reaped (child is still Some).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill(pggate {}, {signal}) failed", self.pid());
    }

    /// The exit status if PgGate has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for pggate: {e}"))
    }

    /// Waits up to `limit` for PgGate to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything PgGate wrote to stderr/stdout so far.
    pub fn log_contents(&self) -> String {
        fs::read(&self.files.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.files.log_path.display()))
    }

    /// A libpq URL for this PgGate.
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        match password {
            Some(password) => format!(
                "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
                self.port
            ),
            None => format!("postgresql://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// A client config for this PgGate with the known test password of
    /// `user`; tests add options or application_name to it.
    pub fn config(&self, user: &str, db: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = password_of(user) {
            config.password(password);
        }
        config
    }

    /// A client through PgGate as `user` in `db` (panics on failure).
    pub fn connect(&self, user: &str, db: &str) -> postgres::Client {
        self.config(user, db)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| {
                panic!(
                    "connect through pggate (port {}) as {user} to {db}: {}\npggate log:\n{}",
                    self.port,
                    describe_error(&e),
                    tail(&self.log_contents(), 40)
                )
            })
    }

    /// Connects with an explicit password, returning the error if any.
    pub fn try_connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = password {
            config.password(password);
        }
        config.connect(postgres::NoTls)
    }

    /// Stops PgGate with SIGTERM and returns its exit status (SIGKILL
    /// after `limit`).
    pub fn stop(mut self, limit: Duration) -> ExitStatus {
        self.terminate(limit)
            .expect("pggate process handle present until stopped")
    }

    fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            _ => {
                // SAFETY: kill has no memory-safety preconditions; the
                // child has not been reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + limit;
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        _ => {
                            let _ = child.kill();
                            break child.wait().unwrap_or_else(|e| panic!("reap pggate: {e}"));
                        }
                    }
                }
            }
        };
        let _ = fs::remove_file(&self.pid_marker);
        Some(status)
    }
}

impl Drop for PgGate {
    fn drop(&mut self) {
        let status = self.terminate(Duration::from_secs(2));
        if std::thread::panicking() {
            eprintln!(
                "---- pggate (port {}) exited {:?}; log tail ({}) ----\n{}\n---- end of pggate log ----",
                self.port,
                status,
                self.files.log_path.display(),
                tail(&self.log_contents(), 80)
            );
        }
    }
}
