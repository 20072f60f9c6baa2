//! Operations helpers: an HTTP GET for the metrics endpoint, a reader of
//! Prometheus text samples, and a PgGate process started with
//! `NOTIFY_SOCKET` set (the regular [`PgGate`](super::PgGate) removes it).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::gate::GateFiles;
use super::{pggate_bin, tail};

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port`, retried until `limit`
/// while the endpoint does not accept connections: `(status, body)`.
pub fn http_get(port: u16, path: &str, limit: Duration) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => {
                return Err(format!("nothing accepts connections on {addr}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("send the request to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read the response from {addr}: {e}"))?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response from {addr}: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The body of `GET /metrics` (panics unless it answers 200 within 3 s).
pub fn scrape(port: u16) -> String {
    match http_get(port, "/metrics", Duration::from_secs(3)) {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            panic!("GET /metrics on 127.0.0.1:{port} answered {status}: {body:?}")
        }
        Err(e) => panic!("GET /metrics on 127.0.0.1:{port}: {e}"),
    }
}

/// One sample line of a Prometheus text body.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample line of a Prometheus text body (comments skipped).
pub fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        // name="value" pairs separated by commas; values may hold \" escapes.
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => {
                                let (_, escaped) = chars.next()?;
                                value.push(match escaped {
                                    'n' => '\n',
                                    other => other,
                                });
                            }
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
        rest = &inner[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples of `name` whose labels include all of `labels`;
/// `None` when no sample matches.
pub fn sample_value(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(body)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Whether the body exports metric `name`: a sample of it, or of its
/// histogram/summary series (`_bucket`, `_sum`, `_count`).
pub fn has_metric(body: &str, name: &str) -> bool {
    samples(body).iter().any(|s| {
        s.name == name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| s.name == format!("{name}{suffix}"))
    })
}

/// Scrapes until `accept` holds for the value of `name{labels}` (a missing
/// sample is `None`), for at most `limit`. Returns the accepted value, or
/// the last value and the last body when time ran out.
pub fn wait_metric(
    port: u16,
    name: &str,
    labels: &[(&str, &str)],
    limit: Duration,
    accept: impl Fn(Option<f64>) -> bool,
) -> Result<Option<f64>, (Option<f64>, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let body = scrape(port);
        let value = sample_value(&body, name, labels);
        if accept(value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err((value, body));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of a metrics body that mention `name` (for failure messages).
pub fn metric_lines(body: &str, name: &str) -> String {
    body.lines()
        .filter(|line| line.contains(name))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `CLOCK_MONOTONIC` now, in microseconds (what systemd's `MONOTONIC_USEC`
/// is measured against).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A PgGate process run with `NOTIFY_SOCKET` (and any other variables)
/// set in its environment. It does not wait for the listening socket:
/// the caller decides what "started" means (e.g. `READY=1`). Dropping it
/// stops the process (SIGTERM, then SIGKILL after 2 s).
pub struct EnvGate {
    pub port: u16,
    pub files: GateFiles,
    child: Option<Child>,
    pid_marker: PathBuf,
}

impl EnvGate {
    /// Starts `pggate --config FILE --log-level debug` with `env` added to
    /// the environment of the test process.
    pub fn spawn(cluster: &Cluster, files: GateFiles, env: &[(&str, &Path)]) -> EnvGate {
        let log = File::create(&files.log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", files.log_path.display()));
        let log_for_stdout = log
            .try_clone()
            .unwrap_or_else(|e| panic!("clone the PgGate log handle: {e}"));
        let bin = pggate_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&files.config_path)
            .args(["--log-level", "debug"])
            .env_remove("NOTIFY_SOCKET");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let pid_marker = cluster.dir.join("pids").join(child.id().to_string());
        // Best effort: only the watchdog's last-resort kill depends on it.
        let _ = File::create(&pid_marker);
        EnvGate {
            port: files.listen_port,
            files,
            child: Some(child),
            pid_marker,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("pggate process handle")
    }

    /// Sends `signal` to PgGate.
    pub fn signal(&self, signal: i32) {
        assert!(self.child.is_some(), "pggate was already reaped");
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child and has not been reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill(pggate {}, {signal}) failed", self.pid());
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()?
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

    pub fn log_contents(&self) -> String {
        fs::read(&self.files.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.files.log_path.display()))
    }
}

impl Drop for EnvGate {
    fn drop(&mut self) {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            status = match child.try_wait() {
                Ok(Some(status)) => Some(status),
                _ => {
                    // SAFETY: as in `signal`; the child is not reaped yet.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    let deadline = Instant::now() + Duration::from_secs(2);
                    loop {
                        match child.try_wait() {
                            Ok(Some(status)) => break Some(status),
                            Ok(None) if Instant::now() < deadline => {
                                std::thread::sleep(Duration::from_millis(10))
                            }
                            _ => {
                                let _ = child.kill();
                                break child.wait().ok();
                            }
                        }
                    }
                }
            };
            let _ = fs::remove_file(&self.pid_marker);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- pggate (port {}, NOTIFY_SOCKET run) exited {status:?}; log tail ----\n{}\n---- end of pggate log ----",
                self.port,
                tail(&self.log_contents(), 80)
            );
        }
    }
}
