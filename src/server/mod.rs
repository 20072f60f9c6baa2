//! The running proxy: resolves the backends, starts the worker threads and the
//! acceptor, and waits for signals. Sockets are owned by workers
//! (`worker.rs`); this module only wires the threads together.

mod backend;
mod conn;
mod extended;
mod pool;
mod session;
pub mod shared;
mod local_auth;
mod lookup;
mod stream;
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
            })
        })
        .collect()
}

/// The number of event-loop threads `proxy.workers = 0` means.
pub fn default_workers() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs PgGate until SIGTERM or SIGINT. Returns once the process should exit.
pub fn run(config: Config) -> Result<(), RunError> {
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
    if config.auth.mode == crate::config::AuthMode::Query {
        let tx = lookup::spawn(shared.clone())
            .map_err(|e| RunError(format!("cannot start the auth_query thread: {e}")))?;
        let _ = shared.lookup.set(tx);
    }
    let checker = crate::health::Checker::new(
        config.clone(),
        shared.pgpass.clone(),
        shared.health.clone(),
    );
    let stop_health = Arc::new(std::sync::atomic::AtomicBool::new(false));
    checker
        .spawn(config.health.interval, stop_health.clone())
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
            .map(|i| shared.backends[i].addr.to_string())
            .unwrap_or_else(|| "none".into())
    );
    let acceptor_shared = shared.clone();
    thread::Builder::new()
        .name("pggate-acceptor".into())
        .spawn(move || accept_loop(listener, acceptor_shared))
        .map_err(|e| RunError(format!("cannot start acceptor thread: {e}")))?;

    wait_for_signals(&shared)
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

/// Blocks until SIGTERM or SIGINT.
fn wait_for_signals(shared: &Shared) -> Result<(), RunError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| RunError(format!("cannot install signal handlers: {e}")))?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => log::warn!("SIGHUP received: configuration reload is not supported by this version; restart to apply changes"),
            _ => {
                log::info!("signal {sig} received, shutting down");
                shared.shutting_down.store(true, Ordering::Release);
                return Ok(());
            }
        }
    }
    Ok(())
}
