//! Running PostgreSQL client programs (`psql`, `pgbench`) against any port,
//! with the test passwords in `PGPASSWORD`, captured output and a hard time
//! limit so that a hang fails the test instead of stalling the run.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{password_of, pgbin};

/// What a finished client program did.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout and stderr together, for assertions on "the output".
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with everything the program printed unless it exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A command for client program `tool` (from the PostgreSQL install the
/// harness uses) aimed at 127.0.0.1:`port` as `user` in `db`, through
/// libpq's environment variables. The known test password goes in
/// `PGPASSWORD`; settings inherited from the caller's environment are
/// removed so they cannot change what the test does.
pub fn client_command(tool: &str, port: u16, user: &str, db: &str) -> Command {
    let mut cmd = Command::new(pgbin::tool(tool));
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGOPTIONS",
        "PGAPPNAME",
        "PGSSLMODE",
        "PGGSSENCMODE",
        "PGTARGETSESSIONATTRS",
        "PGCLIENTENCODING",
        "PGDATESTYLE",
        "PGTZ",
        "PGSYSCONFDIR",
        "PSQLRC",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGDATABASE", db)
        .env("PGCONNECT_TIMEOUT", "10");
    match password_of(user) {
        Some(password) => cmd.env("PGPASSWORD", password),
        None => cmd.env_remove("PGPASSWORD"),
    };
    cmd
}

/// A client program running in the background with its output captured.
pub struct Running {
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
    what: String,
}

/// Spawns `cmd` with piped stdio; `stdin` (if any) is written and closed.
pub fn spawn_captured(cmd: &mut Command, stdin: Option<&[u8]>) -> Running {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let input = input.to_vec();
        // A separate thread: the program may print before reading it all.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = child.stdout.take().map(read_all_in_background);
    let stderr = child.stderr.take().map(read_all_in_background);
    Running {
        child,
        stdout,
        stderr,
        started,
        what,
    }
}

fn read_all_in_background<R: Read + Send + 'static>(mut pipe: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the program.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet reaped (wait takes self by value).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the program to exit. Past `timeout` it is killed and the
    /// test fails with whatever it printed.
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
        let deadline = self.started + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let (stdout, stderr) = self.collect();
                    panic!(
                        "{} did not finish within {timeout:?}; killed.\nstdout:\n{stdout}\nstderr:\n{stderr}",
                        self.what
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        };
        let elapsed = self.started.elapsed();
        let (stdout, stderr) = self.collect();
        CmdOutput {
            status,
            stdout,
            stderr,
            elapsed,
        }
    }

    fn collect(&mut self) -> (String, String) {
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        };
        (text(self.stdout.take()), text(self.stderr.take()))
    }
}

/// Runs `cmd` to completion (killed and failed after `timeout`).
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> CmdOutput {
    spawn_captured(cmd, stdin).wait(timeout)
}

/// `psql -X -A -t -v ON_ERROR_STOP=1 ARGS` against `port`; never panics on
/// the program's own failure, so tests can assert on errors.
pub fn psql(port: u16, user: &str, db: &str, args: &[&str]) -> CmdOutput {
    psql_with_stdin(port, user, db, args, None)
}

/// [`psql`] with `stdin` fed to the program (e.g. COPY data).
pub fn psql_with_stdin(
    port: u16,
    user: &str,
    db: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> CmdOutput {
    let mut cmd = client_command("psql", port, user, db);
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args);
    run_with_timeout(&mut cmd, stdin, Duration::from_secs(60))
}

/// `pgbench ARGS` against `port` (database `db` as its last argument).
pub fn pgbench(port: u16, user: &str, db: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    let mut cmd = client_command("pgbench", port, user, db);
    cmd.args(args).arg(db);
    run_with_timeout(&mut cmd, None, timeout)
}

/// `pgbench -i -s 1` of `db` through the proxy on `port`; checks on the
/// primary that all 100,000 accounts are there and waits for the replicas.
pub fn pgbench_init_through(cluster: &super::Cluster, port: u16, db: &str) {
    pgbench(
        port,
        "postgres",
        db,
        &["-i", "-s", "1", "-q"],
        Duration::from_secs(60),
    )
    .assert_success("pgbench -i -s 1 through pggate");
    assert_eq!(
        cluster.psql(
            cluster.primary_port,
            "postgres",
            db,
            "SELECT count(*) FROM pgbench_accounts"
        ),
        "100000",
        "pgbench_accounts after pgbench -i -s 1 through pggate"
    );
    cluster.wait_replicas_caught_up();
}
