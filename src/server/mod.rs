//! The running proxy: resolves the backends, starts the worker threads and the
//! acceptor, and waits for signals. Sockets are owned by workers
//! (`worker.rs`); this module only wires the threads together.

mod backend;
mod conn;
mod extended;
mod follow;
mod local_auth;
mod lookup;
mod pool;
mod session;
pub mod shared;
mod stats;
mod stream;
mod timer_fd;
pub mod tls;
mod worker;

use std::io::Write;
use std::net::{TcpListener, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use mio::{Poll, Waker};

use crate::auth::pgpass::PgPass;
use crate::config::Config;
use crate::protocol::write;

use shared::{BackendInfo, Shared, WorkerHandle};
use worker::{Worker, WorkerMsg, WAKER};

/// Why the proxy could not start or stopped abnormally.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves every backend's address (once, at start: never on a worker).
fn resolve_backends(config: &Config) -> Result<Vec<BackendInfo>, RunError> {
    config
        .backends
        .iter()
        .map(|b| {
            let addr = (b.host.as_str(), b.port)
                .to_socket_addrs()
                .map_err(|e| {
                    RunError(format!(
                        "backend \"{}\": cannot resolve {}: {e}",
                        b.name, b.host
                    ))
                })?
                .next()
                .ok_or_else(|| {
                    RunError(format!("backend \"{}\": {} has no address", b.name, b.host))
                })?;
            Ok(BackendInfo {
                name: b.name.clone(),
                host: b.host.clone(),
                addr,
                port: b.port,
                role: b.role,
                weight: b.weight,
                removed: false,
            })
        })
        .collect()
}

/// The number of event-loop threads `proxy.workers = 0` means: one per two
/// CPU cores, at least one. A proxy shares its machine with clients or
/// servers, and a worker that is kept busy batches more events per wake-up:
/// on two cores one worker spends about 10% less CPU per transaction than two
/// and serves as many (`pgbench -S` at 16, 64 and 256 clients).
pub fn default_workers() -> usize {
    workers_for_cores(thread::available_parallelism().map_or(1, |n| n.get()))
}

fn workers_for_cores(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Runs PgGate until SIGTERM or SIGINT. Returns once the process should exit.
pub fn run(config: Config, source: ConfigSource) -> Result<(), RunError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Handlers first: a reload or stop sent as soon as PgGate says it is
    // ready must not hit the default action (which ends the process).
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| RunError(format!("cannot install signal handlers: {e}")))?;
    let config = Arc::new(config);
    let backends = resolve_backends(&config)?;
    let pgpass = if config.auth.credentials_file.is_empty() {
        None
    } else {
        let path = std::path::Path::new(&config.auth.credentials_file);
        let p = PgPass::load(path)
            .map_err(|e| RunError(format!("auth.credentials_file {}: {e}", path.display())))?;
        for w in p.warnings() {
            log::warn!("{w}");
        }
        Some(Arc::new(p))
    };
    let listener = TcpListener::bind(config.proxy.listen.as_str())
        .map_err(|e| RunError(format!("cannot listen on {}: {e}", config.proxy.listen)))?;
    let tls = tls::TlsSetup::build(&config).map_err(RunError)?;
    let shared = Arc::new(Shared::new(config.clone(), backends, pgpass, tls));

    let n = match config.proxy.workers {
        0 => default_workers(),
        n => n,
    };
    let mut handles = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    for id in 0..n {
        let poll = Poll::new().map_err(|e| RunError(format!("cannot create poll: {e}")))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| RunError(format!("cannot create waker: {e}")))?,
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        handles.push(WorkerHandle { tx, waker });
        workers.push((id, poll, rx));
    }
    if shared.workers.set(handles).is_err() {
        return Err(RunError("workers started twice".into()));
    }
    let _ = shared.stats.set(
        (0..n)
            .map(|_| stats::WorkerStats::new(shared::MAX_BACKENDS))
            .collect(),
    );
    crate::ops::init(env!("CARGO_PKG_VERSION"));
    stats::spawn(shared.clone())
        .map_err(|e| RunError(format!("cannot start the stats thread: {e}")))?;
    let _http = if config.metrics.listen.is_empty() {
        None
    } else {
        let health_shared = shared.clone();
        let server = crate::ops::serve(&config.metrics.listen, move || {
            health_shared.primary().is_some()
        })
        .map_err(|e| {
            RunError(format!(
                "cannot serve metrics on {}: {e}",
                config.metrics.listen
            ))
        })?;
        Some(server)
    };
    if config.auth.mode == crate::config::AuthMode::Query {
        let tx = lookup::spawn(shared.clone())
            .map_err(|e| RunError(format!("cannot start the auth_query thread: {e}")))?;
        let _ = shared.lookup.set(tx);
    }
    let checker = crate::health::Checker::new(
        config.clone(),
        shared.pgpass(),
        shared.topology().health.clone(),
    );
    let health = checker
        .spawn(config.health.interval)
        .map_err(|e| RunError(format!("cannot start the health thread: {e}")))?;
    let mut threads = Vec::new();
    for (id, poll, rx) in workers {
        let w = Worker::new(id, poll, rx, shared.clone());
        let t = thread::Builder::new()
            .name(format!("pggate-worker-{id}"))
            .spawn(move || w.run())
            .map_err(|e| RunError(format!("cannot start worker thread: {e}")))?;
        threads.push(t);
    }

    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.proxy.listen.clone());
    log::info!(
        "listening on {local} with {n} workers; primary {}",
        shared
            .primary()
            .map(|i| shared.topology().backends[i].addr.to_string())
            .unwrap_or_else(|| "none".into())
    );
    let acceptor_shared = shared.clone();
    thread::Builder::new()
        .name("pggate-acceptor".into())
        .spawn(move || accept_loop(listener, acceptor_shared))
        .map_err(|e| RunError(format!("cannot start acceptor thread: {e}")))?;

    crate::ops::systemd::ready();
    wait_for_signals(signals, &shared, &source, threads, health)
}

/// Accepts clients and deals them to the workers in turn.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next = 0usize;
    loop {
        let (mut sock, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                // Out of descriptors and the like: do not spin.
                thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if shared.shutting_down.load(Ordering::Acquire) {
            return;
        }
        if !shared.take_client_slot() {
            crate::ops::metrics().clients_rejected.max_clients.inc();
            log::warn!("refusing client {peer}: proxy.max_clients reached");
            let mut buf = Vec::new();
            write::error_response(
                &mut buf,
                "FATAL",
                "53300",
                "sorry, too many clients already",
            );
            let _ = sock.set_nonblocking(true);
            let _ = sock.write(&buf);
            continue;
        }
        let workers = shared.workers();
        if workers.is_empty() {
            return;
        }
        workers[next % workers.len()].send(WorkerMsg::NewClient(sock));
        next = next.wrapping_add(1);
    }
}

/// Where the configuration came from, for reloads.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: std::path::PathBuf,
    /// False: the default path, which may not exist (built-in defaults then).
    pub explicit: bool,
}

/// Handles signals until the proxy should exit: SIGHUP reloads, SIGTERM and
/// SIGINT drain (a second one exits at once).
fn wait_for_signals(
    mut signals: signal_hook::iterator::Signals,
    shared: &Arc<Shared>,
    source: &ConfigSource,
    workers: Vec<thread::JoinHandle<()>>,
    mut health: crate::health::HealthThread,
) -> Result<(), RunError> {
    use signal_hook::consts::SIGHUP;
    let mut draining_since: Option<std::time::Instant> = None;
    let mut told_now = false;
    loop {
        // Until a drain starts, sleep until a signal comes; while draining,
        // also look at the workers every 50 ms.
        let arrived: Vec<i32> = if draining_since.is_none() {
            signals.wait().collect()
        } else {
            signals.pending().collect()
        };
        for sig in arrived {
            match sig {
                SIGHUP if draining_since.is_none() => {
                    if let Some(restarted) = reload(shared, source) {
                        health.stop();
                        health = restarted;
                    }
                }
                SIGHUP => {}
                _ if draining_since.is_some() => {
                    log::warn!("second signal {sig}: exiting at once");
                    crate::ops::systemd::stopping();
                    return Ok(());
                }
                _ => {
                    log::info!("signal {sig} received: draining (open transactions finish, idle clients are closed)");
                    crate::ops::systemd::stopping();
                    shared.shutting_down.store(true, Ordering::Release);
                    // Wake the acceptor so it sees the flag and closes the listener.
                    let listen = shared.config().proxy.listen.clone();
                    let _ = std::net::TcpStream::connect_timeout(
                        &listen
                            .to_socket_addrs()
                            .ok()
                            .and_then(|mut a| a.next())
                            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
                        std::time::Duration::from_millis(200),
                    );
                    for w in shared.workers() {
                        w.send(WorkerMsg::Shutdown);
                    }
                    draining_since = Some(std::time::Instant::now());
                }
            }
        }
        if let Some(since) = draining_since {
            if workers.iter().all(|w| w.is_finished()) {
                log::info!("all sessions closed; exiting");
                return Ok(());
            }
            if !told_now && since.elapsed() >= shared.config().proxy.shutdown_timeout {
                log::warn!("proxy.shutdown_timeout reached: closing the remaining sessions");
                for w in shared.workers() {
                    w.send(WorkerMsg::ShutdownNow);
                }
                told_now = true;
            }
            if told_now
                && since.elapsed()
                    >= shared.config().proxy.shutdown_timeout + std::time::Duration::from_secs(2)
            {
                return Ok(());
            }
        }
        if draining_since.is_some() {
            thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Re-reads and validates the configuration; applies it whole or not at all.
/// Returns the restarted health thread.
fn reload(shared: &Arc<Shared>, source: &ConfigSource) -> Option<crate::health::HealthThread> {
    crate::ops::systemd::reloading();
    let m = crate::ops::metrics();
    let result = prepare_reload(shared, source);
    let stop = match result {
        Err(problems) => {
            for p in &problems {
                log::error!("reload refused: {p}");
            }
            log::error!("configuration reload failed; the running configuration stays");
            m.config_reloads.failure.inc();
            None
        }
        Ok((config, tls, pgpass, topology)) => {
            let old = shared.config();
            for (key, changed) in [
                ("proxy.listen", old.proxy.listen != config.proxy.listen),
                ("proxy.workers", old.proxy.workers != config.proxy.workers),
                (
                    "metrics.listen",
                    old.metrics.listen != config.metrics.listen,
                ),
            ] {
                if changed {
                    log::warn!("{key} changed: it takes effect after a restart");
                }
            }
            let mut config = config;
            config.proxy.listen = old.proxy.listen.clone();
            config.proxy.workers = old.proxy.workers;
            config.metrics.listen = old.metrics.listen.clone();
            let config = Arc::new(config);
            log::set_max_level(config.log.level);
            *shared.tls.write() = tls;
            shared.set_pgpass(pgpass.clone());
            let topology = Arc::new(topology);
            shared.set_topology(topology.clone());
            shared.set_config(config.clone());
            let mut checker = crate::health::Checker::new(
                Arc::new(topology.health_config(&config)),
                pgpass,
                topology.health.clone(),
            );
            checker.set_removed(topology.backends.iter().map(|b| b.removed).collect());
            let restarted = checker.spawn(config.health.interval);
            if let Err(e) = &restarted {
                log::error!("cannot restart the health thread: {e}");
            }
            m.config_reloads.success.inc();
            log::info!("configuration reloaded");
            restarted.ok()
        }
    };
    crate::ops::systemd::ready();
    stop
}

type Prepared = (
    crate::config::Config,
    Arc<tls::TlsSetup>,
    Option<Arc<PgPass>>,
    shared::Topology,
);

/// The backend slots after a reload: a backend kept (same name, host and
/// port) keeps its index and gets its new role and weight; a new one gets a
/// new index; one no longer configured is marked removed. What the health
/// checks know is carried over.
fn next_topology(
    old: &shared::Topology,
    config: &crate::config::Config,
) -> Result<shared::Topology, String> {
    let mut slots = old.backends.clone();
    for s in slots.iter_mut() {
        s.removed = true;
    }
    for b in &config.backends {
        let kept = slots
            .iter_mut()
            .find(|s| s.name == b.name && s.host == b.host && s.port == b.port);
        match kept {
            Some(s) => {
                s.removed = false;
                s.role = b.role;
                s.weight = b.weight;
            }
            None => {
                if slots.len() >= shared::MAX_BACKENDS {
                    return Err(format!(
                        "backends: at most {} backends can be added over the life of one PgGate process; restart it",
                        shared::MAX_BACKENDS
                    ));
                }
                let addr = (b.host.as_str(), b.port)
                    .to_socket_addrs()
                    .map_err(|e| {
                        format!("backends: \"{}\": cannot resolve {}: {e}", b.name, b.host)
                    })?
                    .next()
                    .ok_or_else(|| {
                        format!("backends: \"{}\": {} has no address", b.name, b.host)
                    })?;
                slots.push(BackendInfo {
                    name: b.name.clone(),
                    host: b.host.clone(),
                    addr,
                    port: b.port,
                    role: b.role,
                    weight: b.weight,
                    removed: false,
                });
            }
        }
    }
    let draft = shared::Topology::new(slots, old.health.clone());
    let health = Arc::new(old.health.rebuilt(&draft.health_config(config)));
    Ok(shared::Topology::new(draft.backends, health))
}

fn prepare_reload(shared: &Shared, source: &ConfigSource) -> Result<Prepared, Vec<String>> {
    let config = if !source.explicit && !source.path.exists() {
        crate::config::Config::default()
    } else {
        crate::config::Config::load(&source.path)
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?
    };
    let origin = source.path.display().to_string();
    let problems: Vec<String> = config
        .check_files(&origin)
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let topology =
        next_topology(&shared.topology(), &config).map_err(|e| vec![format!("{origin}: {e}")])?;
    let tls = tls::TlsSetup::build(&config).map_err(|e| vec![format!("{origin}: {e}")])?;
    let pgpass = if config.auth.credentials_file.is_empty() {
        None
    } else {
        let path = std::path::Path::new(&config.auth.credentials_file);
        Some(Arc::new(PgPass::load(path).map_err(|e| {
            vec![format!(
                "{origin}: auth.credentials_file: {}: {e}",
                path.display()
            )]
        })?))
    };
    Ok((config, tls, pgpass, topology))
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_worker_per_two_cores() {
        let got: Vec<usize> = [1, 2, 3, 4, 8, 64].map(super::workers_for_cores).to_vec();
        assert_eq!(got, [1, 1, 1, 2, 4, 32]);
    }
}
