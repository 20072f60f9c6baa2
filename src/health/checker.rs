//! The health checker (SPEC §7): every interval it probes each backend once
//! (except those a reload removed, see [`Checker::set_removed`])
//! over a control connection kept open between rounds, and publishes what it
//! learned in the shared [`HealthView`]: up/down after `health.failures`
//! consecutive failures, the detected role, WAL positions and replica lag.
//!
//! It runs on its own thread with blocking sockets; within a round every
//! backend is probed on a thread of its own, so one backend's timeout never
//! delays another's probe. It is the only writer of the view. It logs each
//! state change once: a warning when a backend goes down, an info when it
//! comes back, and its role when the detected role changes.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::client::{self, ControlConn, ControlError};
use super::lag::WalHistory;
use super::probe::{parse_probe, Probe, PROBE_SQL};
use super::view::{BackendState, HealthView, Transition};
use crate::auth::PgPass;
use crate::config::{BackendConfig, Config, HealthConfig, Role};

/// Shortest pause between the starts of two rounds, whatever the interval.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Probes the configured backends and publishes their state.
pub struct Checker {
    config: Arc<Config>,
    pgpass: Option<Arc<PgPass>>,
    view: Arc<HealthView>,
    /// One control connection per backend index, kept between rounds.
    conns: Vec<Option<ControlConn>>,
    /// The primary's WAL positions at recent rounds: what replicas are
    /// compared with.
    history: WalHistory,
    /// Backend indices no longer probed: a reload removed them.
    removed: Vec<bool>,
}

/// Why one probe failed.
#[derive(Debug)]
enum ProbeError {
    /// The control connection could not be opened or logged in.
    Connect(ControlError),
    /// The probe statement failed.
    Query(ControlError),
    /// The probe statement answered something unexpected.
    Result(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Connect(err) => write!(f, "cannot connect: {err}"),
            ProbeError::Query(err) => write!(f, "probe query failed: {err}"),
            ProbeError::Result(reason) => write!(f, "unexpected probe result: {reason}"),
        }
    }
}

/// What became of one backend's probe in a round.
enum Outcome {
    Probed(Result<Probe, ProbeError>),
    /// The probe could not be run (no thread for it): no news either way.
    NotRun,
    /// The backend was removed by a reload: not probed.
    Removed,
}

impl Checker {
    /// A checker for `config.backends`, publishing into `view`, which must
    /// have been built from the same configuration ([`HealthView::new`]).
    /// Probes log in as `health.user` to `health.database`, with the
    /// password `pgpass` has for that backend's host:port:database:user.
    pub fn new(config: Arc<Config>, pgpass: Option<Arc<PgPass>>, view: Arc<HealthView>) -> Checker {
        if !view.matches(&config) {
            error!(
                "health view built for other backends than the configuration ({} states for {} \
                 backends); backend states may be misattributed",
                view.backends.len(),
                config.backends.len()
            );
        }
        let conns = config.backends.iter().map(|_| None).collect();
        Checker {
            config,
            pgpass,
            view,
            conns,
            history: WalHistory::default(),
            removed: Vec::new(),
        }
    }

    /// Stops probing the backends marked `true` (by index, as
    /// `config.backends`): a reload removed them, and only the connections
    /// still open to them keep their slots. Their control connections close
    /// at the next round; the view keeps what it knew of them, except that
    /// they no longer count as a primary.
    pub fn set_removed(&mut self, removed: Vec<bool>) {
        self.removed = removed;
    }

    /// The view this checker publishes into.
    pub fn view(&self) -> Arc<HealthView> {
        Arc::clone(&self.view)
    }

    /// Applies a reloaded configuration. Connections to servers still
    /// configured are kept (all are closed if `health.user` or
    /// `health.database` changed). When the backends changed (names,
    /// addresses, roles, order or count), the checker switches to a new view
    /// built with [`HealthView::rebuilt`], which keeps what is known about
    /// remaining servers; fetch it with [`Checker::view`] and publish it
    /// together with the new configuration, since indices follow
    /// `config.backends`.
    pub fn set_config(&mut self, config: Arc<Config>) {
        let same_login = self.config.health.user == config.health.user
            && self.config.health.database == config.health.database;
        let mut old: Vec<(&BackendConfig, Option<ControlConn>)> = self
            .config
            .backends
            .iter()
            .zip(std::mem::take(&mut self.conns))
            .collect();
        let mut conns: Vec<Option<ControlConn>> = Vec::with_capacity(config.backends.len());
        for backend in &config.backends {
            let kept = old
                .iter_mut()
                .find(|(was, conn)| {
                    conn.is_some() && was.host == backend.host && was.port == backend.port
                })
                .and_then(|(_, conn)| conn.take())
                .filter(|_| same_login);
            conns.push(kept.map(|mut conn| {
                conn.set_timeout(config.health.timeout);
                conn
            }));
        }
        drop(old);
        self.conns = conns;
        if !self.view.matches(&config) {
            self.view = Arc::new(self.view.rebuilt(&config));
            // Positions are recorded per backend index, which may now name
            // another server.
            self.history = WalHistory::default();
        }
        self.config = config;
    }

    /// Replaces the credentials file used for later logins.
    pub fn set_pgpass(&mut self, pgpass: Option<Arc<PgPass>>) {
        self.pgpass = pgpass;
    }

    /// Probes every backend not removed once, in parallel, and publishes
    /// the results.
    /// Takes at most about twice `health.timeout` (reconnect, then probe).
    pub fn probe_round(&mut self) {
        let config = Arc::clone(&self.config);
        self.conns.resize_with(config.backends.len(), || None);
        let pgpass = self.pgpass.clone();
        let health = &config.health;
        // Every position read in this round is read after this instant, so
        // it covers everything committed before it.
        let round_start = Instant::now();

        let outcomes: Vec<Outcome> = thread::scope(|scope| {
            let running: Vec<_> = self
                .conns
                .iter_mut()
                .zip(&config.backends)
                .enumerate()
                .map(|(index, (slot, backend))| {
                    let conn = slot.take();
                    if self.removed.get(index).copied().unwrap_or(false) {
                        drop(conn);
                        return (slot, backend, None);
                    }
                    let password = pgpass.as_deref().and_then(|p| {
                        p.lookup(&backend.host, backend.port, &health.database, &health.user)
                    });
                    let spawned = thread::Builder::new()
                        .name(format!("pggate-probe-{index}"))
                        .spawn_scoped(scope, move || {
                            probe_backend(conn, backend, health, password)
                        });
                    (slot, backend, Some(spawned))
                })
                .collect();
            running
                .into_iter()
                .map(|(slot, backend, spawned)| {
                    let Some(spawned) = spawned else {
                        return Outcome::Removed;
                    };
                    let joined = spawned
                        .map_err(|e| format!("cannot start a probe thread: {e}"))
                        .and_then(|handle| {
                            handle
                                .join()
                                .map_err(|_| "the probe thread panicked".to_string())
                        });
                    match joined {
                        Ok((conn, result)) => {
                            *slot = conn;
                            Outcome::Probed(result)
                        }
                        Err(reason) => {
                            error!(
                                "backend {} ({}:{}): probe not run: {reason}",
                                backend.name, backend.host, backend.port
                            );
                            Outcome::NotRun
                        }
                    }
                })
                .collect()
        });
        self.publish(&config, &outcomes, round_start);
    }

    /// Runs [`probe_round`](Self::probe_round) every `interval` (measured
    /// from the start of one round to the start of the next) on a thread of
    /// its own, starting at once, until [`HealthThread::stop`]. The thread
    /// then closes its control connections and ends; joining it waits at
    /// most one round. Between rounds it sleeps without waking. A reload
    /// while it runs: stop it, and start a new checker with a view from
    /// [`HealthView::rebuilt`] (the old thread's last writes land in the old
    /// view, which nobody reads any more).
    pub fn spawn(mut self, interval: Duration) -> io::Result<HealthThread> {
        let interval = interval.max(MIN_INTERVAL);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("pggate-health".to_string())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    let next_round = Instant::now() + interval;
                    self.probe_round();
                    sleep_until(next_round, &flag);
                }
            })?;
        Ok(HealthThread { stop, handle })
    }

    /// Publishes one round's outcomes: availability and role first, then
    /// replica lag against the primary's positions.
    fn publish(&mut self, config: &Config, outcomes: &[Outcome], round_start: Instant) {
        let threshold = config.health.failures;
        for ((backend, outcome), state) in config
            .backends
            .iter()
            .zip(outcomes)
            .zip(&self.view.backends)
        {
            match outcome {
                Outcome::NotRun => {}
                // No longer probed: it must not stay the view's primary on
                // its last answer (replica lag is measured against that).
                Outcome::Removed => {
                    state.set_primary(false);
                }
                Outcome::Probed(Ok(probe)) => {
                    if state.record(true, threshold) == Some(Transition::CameUp) {
                        info!(
                            "backend {} ({}:{}) is up again",
                            backend.name, backend.host, backend.port
                        );
                    }
                    let primary = !probe.in_recovery;
                    if state.set_primary(primary) {
                        log_role_change(backend, primary);
                    }
                    if let Some(lsn) = probe.lsn {
                        state.set_replay_lsn(lsn);
                    }
                }
                Outcome::Probed(Err(err)) => {
                    if matches!(err, ProbeError::Connect(_)) {
                        state.count_connect_failure();
                    }
                    record_failure(backend, state, threshold, err);
                }
            }
        }

        if let Some(primary) = self.view.primary() {
            if let Some(Outcome::Probed(Ok(Probe {
                in_recovery: false,
                lsn: Some(lsn),
                ..
            }))) = outcomes.get(primary)
            {
                self.history.record(primary, *lsn, round_start);
            }
        }
        let now = Instant::now();
        for (outcome, state) in outcomes.iter().zip(&self.view.backends) {
            if let Outcome::Probed(Ok(probe)) = outcome {
                let lag = if probe.in_recovery {
                    self.history.lag(probe.lsn, probe.replay_age, now)
                } else {
                    None
                };
                state.set_replay_lag(lag);
            }
        }
    }
}

/// Counts a failed probe, logging the failure that takes a backend down
/// (once) and earlier ones at debug level.
fn record_failure(backend: &BackendConfig, state: &BackendState, threshold: u32, err: &ProbeError) {
    match state.record(false, threshold) {
        Some(Transition::WentDown) => warn!(
            "backend {} ({}:{}) is down after {} failed probes: {err}",
            backend.name,
            backend.host,
            backend.port,
            state.consecutive_failures()
        ),
        _ => debug!(
            "backend {} ({}:{}): probe {} failed: {err}",
            backend.name,
            backend.host,
            backend.port,
            state.consecutive_failures()
        ),
    }
}

fn log_role_change(backend: &BackendConfig, primary: bool) {
    let detected = if primary {
        "a primary"
    } else {
        "a standby (in recovery)"
    };
    let unexpected = matches!(
        (backend.role, primary),
        (Role::Primary, false) | (Role::Replica, true)
    );
    if unexpected {
        warn!(
            "backend {} ({}:{}) is {detected}, although configured as role = \"{}\"",
            backend.name, backend.host, backend.port, backend.role
        );
    } else {
        info!(
            "backend {} ({}:{}) is now {detected}",
            backend.name, backend.host, backend.port
        );
    }
}

/// One probe of one backend: on the kept connection if there is one (a
/// connection that fails quickly is reopened at once, since a dropped idle
/// connection says nothing about the server), otherwise on a new one.
/// Returns the connection to keep for the next round.
fn probe_backend(
    conn: Option<ControlConn>,
    backend: &BackendConfig,
    health: &HealthConfig,
    password: Option<&str>,
) -> (Option<ControlConn>, Result<Probe, ProbeError>) {
    if let Some(mut conn) = conn {
        let result = run_probe(&mut conn);
        let retry = match &result {
            Ok(_) => false,
            // A server that did not answer in time would not answer a
            // second connection any faster; don't spend another timeout.
            Err(ProbeError::Query(ControlError::Timeout { .. })) => false,
            Err(_) => conn.is_broken(),
        };
        if !retry {
            return (Some(conn).filter(|c| !c.is_broken()), result);
        }
        if let Err(err) = &result {
            debug!(
                "backend {} ({}:{}): control connection lost ({err}); reconnecting",
                backend.name, backend.host, backend.port
            );
        }
    }
    let mut conn = match open(backend, health, password) {
        Ok(conn) => conn,
        Err(err) => return (None, Err(ProbeError::Connect(err))),
    };
    let result = run_probe(&mut conn);
    (Some(conn).filter(|c| !c.is_broken()), result)
}

fn run_probe(conn: &mut ControlConn) -> Result<Probe, ProbeError> {
    let rows = conn.simple_query(PROBE_SQL).map_err(ProbeError::Query)?;
    parse_probe(&rows).map_err(ProbeError::Result)
}

/// Opens a control connection to `backend`, trying each address its host
/// resolves to until one accepts the TCP connection.
fn open(
    backend: &BackendConfig,
    health: &HealthConfig,
    password: Option<&str>,
) -> Result<ControlConn, ControlError> {
    const RESOLVING: &str = "resolving the host name";
    let addrs = (backend.host.as_str(), backend.port)
        .to_socket_addrs()
        .map_err(|source| ControlError::Io {
            during: RESOLVING,
            source,
        })?;
    let mut last_error = None;
    for addr in addrs {
        match client::connect(
            addr,
            &backend.host,
            backend.port,
            &health.user,
            &health.database,
            password,
            health.timeout,
        ) {
            Ok(conn) => return Ok(conn),
            // Nothing listening there (or it hung up at once): the next
            // address may be the one the server listens on.
            Err(err @ (ControlError::Io { .. } | ControlError::Closed { .. })) => {
                last_error = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    Err(last_error.unwrap_or_else(|| ControlError::Io {
        during: RESOLVING,
        source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
    }))
}

/// A running health checker.
pub struct HealthThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl HealthThread {
    /// Asks the thread to end: it wakes from its sleep at once, or ends
    /// after the probe round it is in. Does not wait for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
    }

    /// Waits for the thread to end (after [`HealthThread::stop`]).
    pub fn join(self) -> thread::Result<()> {
        self.handle.join()
    }
}

/// Sleeps until `deadline`, waking early when `stop` is set (the setter
/// unparks this thread).
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        if left.is_zero() {
            return;
        }
        thread::park_timeout(left);
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
