//! State shared by every thread: the running configuration, the resolved
//! backends, credentials, the pools' global counters and waiter queues, and the
//! cancel-key registry. Workers touch it once per session or when a pool is
//! exhausted, never per message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::{Token, Waker};
use parking_lot::{Mutex, RwLock};

use crate::auth::pgpass::PgPass;
use crate::config::{Config, Role};

use super::extended::StatementId;
use super::worker::WorkerMsg;

/// A backend as workers see it: where it is and what it is for.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub name: String,
    pub host: String,
    pub addr: SocketAddr,
    pub port: u16,
    pub role: Role,
    pub weight: u32,
    /// Taken out of the configuration by a reload: no new work; its
    /// connections close once their client is done with them.
    pub removed: bool,
}

/// Most backends one PgGate process addresses over its lifetime (slots are
/// never reused, so a reload can add and remove backends without renumbering).
pub const MAX_BACKENDS: usize = 64;

/// The backends and what the health checks know of them. Indices are stable
/// for the life of the process; a reload builds a new `Topology` and swaps it.
pub struct Topology {
    pub backends: Vec<BackendInfo>,
    pub health: Arc<crate::health::HealthView>,
    /// The backend configured as `role = "primary"`, if any.
    pub configured_primary: Option<usize>,
}

impl Topology {
    pub fn new(backends: Vec<BackendInfo>, health: Arc<crate::health::HealthView>) -> Topology {
        let configured_primary = backends
            .iter()
            .position(|b| b.role == Role::Primary && !b.removed);
        Topology {
            backends,
            health,
            configured_primary,
        }
    }

    /// The backend writes go to now: the one health checks found to be an up
    /// primary (this follows promotions of `role = "auto"` backends), else the
    /// configured primary.
    pub fn primary(&self) -> Option<usize> {
        self.health
            .primary()
            .filter(|&i| self.backends.get(i).is_some_and(|b| !b.removed))
            .or(self.configured_primary)
    }

    /// The configuration the health checks probe: one entry per slot.
    pub fn health_config(&self, base: &Config) -> Config {
        let mut c = base.clone();
        c.backends = self
            .backends
            .iter()
            .map(|b| crate::config::BackendConfig {
                name: b.name.clone(),
                host: b.host.clone(),
                port: b.port,
                role: b.role,
                weight: b.weight,
            })
            .collect();
        c
    }
}

/// One worker's mailbox.
pub struct WorkerHandle {
    pub tx: Sender<WorkerMsg>,
    pub waker: Arc<Waker>,
}

impl WorkerHandle {
    pub fn send(&self, msg: WorkerMsg) {
        if self.tx.send(msg).is_ok() {
            if let Err(e) = self.waker.wake() {
                log::error!("could not wake worker: {e}");
            }
        }
    }
}

/// A client waiting for a backend connection of some pool.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    pub worker: usize,
    pub client: Token,
    pub generation: u64,
    pub since: Instant,
}

/// How much longer than the oldest waiter on its own worker a waiter on
/// another worker must have waited before a released connection moves to it.
/// Connections stay on the worker that uses them (moving one costs two
/// epoll_ctl calls and a wake-up), yet no worker's clients starve.
pub const WAITER_PATIENCE: Duration = Duration::from_millis(1);

/// The global side of one pool (backend, database, user): the cap is counted
/// here; idle connections live in the worker that owns them.
pub struct PoolShared {
    /// Open or opening connections that count against `pool.size`.
    pub total: AtomicUsize,
    /// Idle connections held by each worker (a hint for who can lend one).
    pub idle_on: Vec<AtomicUsize>,
    pub waiters: Mutex<VecDeque<Waiter>>,
    pub n_waiters: AtomicUsize,
}

impl PoolShared {
    fn new(workers: usize) -> PoolShared {
        PoolShared {
            total: AtomicUsize::new(0),
            idle_on: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            waiters: Mutex::new(VecDeque::new()),
            n_waiters: AtomicUsize::new(0),
        }
    }

    /// Reserves a slot under `cap`; false when the pool is full.
    pub fn try_reserve(&self, cap: usize) -> bool {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_slot(&self) {
        let _ = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn push_waiter(&self, w: Waiter) {
        let mut q = self.waiters.lock();
        q.push_back(w);
        // SeqCst: see `Worker::put_idle`.
        self.n_waiters.store(q.len(), Ordering::SeqCst);
    }

    /// The waiter a connection released on `worker` goes to: the oldest one
    /// on that worker, unless a waiter elsewhere has waited longer by more
    /// than [`WAITER_PATIENCE`] (or there is none on that worker).
    pub fn pop_waiter_for(&self, worker: usize) -> Option<Waiter> {
        if self.n_waiters.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.waiters.lock();
        let oldest = q.front()?.since;
        let pos = match q.iter().position(|w| w.worker == worker) {
            Some(i) if q[i].since.saturating_duration_since(oldest) <= WAITER_PATIENCE => i,
            _ => 0,
        };
        let w = q.remove(pos);
        self.n_waiters.store(q.len(), Ordering::Release);
        w
    }

    /// Drops the waiter entries of one client. Slab keys and generations are
    /// per worker, so the worker is part of a client's identity: without it,
    /// one worker could drop another's waiter, which would then wait until
    /// `pool.checkout_timeout` with connections idle.
    pub fn remove_waiter(&self, worker: usize, client: Token, generation: u64) {
        let mut q = self.waiters.lock();
        q.retain(|w| !(w.worker == worker && w.client == client && w.generation == generation));
        self.n_waiters.store(q.len(), Ordering::Release);
    }
}

/// All pools of one (database, user): one per backend.
pub struct UserPools {
    pub id: usize,
    pub database: String,
    pub user: String,
    pub per_backend: Vec<PoolShared>,
    /// A replica wanted a password PgGate does not have: reads go to the primary.
    pub no_replica_password: AtomicBool,
    /// Query mode: what PgGate logs in to backends with, from the client's login.
    pub credential: RwLock<Option<Credential>>,
    /// ParameterStatus values of a primary connection of this pool.
    pub server_params: RwLock<Option<super::conn::Params>>,
    /// Statements some server of this pool accepted a Parse of (by id): a
    /// client's Parse of one of them, alone before its Sync, is answered by
    /// PgGate without a connection. At most [`PARSED_STATEMENTS`].
    parsed: Mutex<foldhash::HashSet<StatementId>>,
    /// Passthrough: the primary let this user into this database without
    /// asking for anything (`trust` for PgGate's address): see [`Trust`].
    trusted: Mutex<Option<Trust>>,
}

/// The primary (backend slot `primary`) trusts a (database, user) until
/// `until`: PgGate lets further logins of it in without relaying them, as
/// long as their startup settings are ones the primary has accepted.
struct Trust {
    primary: usize,
    until: Instant,
    settings: HashSet<(String, String)>,
}

/// At most this many statements are remembered as parsed per pool.
pub const PARSED_STATEMENTS: usize = 4096;

/// At most this many distinct startup settings are remembered per pool.
const TRUSTED_SETTINGS: usize = 256;

impl UserPools {
    /// Whether a login with these startup settings may skip the relay.
    pub fn trusted_for(&self, primary: usize, settings: &[(String, String)]) -> bool {
        let trust = self.trusted.lock();
        let Some(t) = trust.as_ref() else {
            return false;
        };
        t.primary == primary
            && Instant::now() < t.until
            && settings.iter().all(|(n, v)| {
                n == "application_name" || t.settings.contains(&(n.clone(), v.clone()))
            })
    }

    /// A relayed login with these settings was let in without a password.
    pub fn set_trusted(
        &self,
        primary: usize,
        for_how_long: Duration,
        settings: &[(String, String)],
    ) {
        let mut trust = self.trusted.lock();
        let until = Instant::now() + for_how_long;
        match trust.as_mut() {
            Some(t) if t.primary == primary => t.until = until,
            _ => {
                *trust = Some(Trust {
                    primary,
                    until,
                    settings: HashSet::new(),
                })
            }
        }
        if let Some(t) = trust.as_mut() {
            for pair in settings {
                if t.settings.len() >= TRUSTED_SETTINGS {
                    break;
                }
                t.settings.insert(pair.clone());
            }
        }
    }

    /// A login of this user to this database was refused: relay again.
    pub fn clear_trusted(&self) {
        *self.trusted.lock() = None;
    }

    /// A server of this pool accepted a Parse of statement `id`.
    pub fn statement_parsed(&self, id: StatementId) {
        let mut parsed = self.parsed.lock();
        if parsed.len() < PARSED_STATEMENTS {
            parsed.insert(id);
        }
    }

    /// Whether a server of this pool has accepted a Parse of statement `id`.
    pub fn was_parsed(&self, id: &StatementId) -> bool {
        self.parsed.lock().contains(id)
    }
}

/// How PgGate logs in to a backend as a user.
#[derive(Clone)]
pub enum Credential {
    /// From the credentials file.
    Password(String),
    /// Recovered from a client's SCRAM proof (query mode).
    ScramKeys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
    /// The stored MD5 hash (query mode).
    Md5(String),
}

/// Where a client's cancel key leads.
#[derive(Debug, Clone, Copy)]
pub struct CancelTarget {
    pub secret: i32,
    pub worker: usize,
    pub client: Token,
    pub generation: u64,
}

pub struct Shared {
    /// The configuration in force; replaced whole by a reload. Workers keep a
    /// snapshot and refresh it when `config_version` moves.
    config: RwLock<Arc<Config>>,
    pub config_version: AtomicU64,
    /// TLS acceptor and connector; swapped whole on reload.
    pub tls: RwLock<Arc<super::tls::TlsSetup>>,
    topology: RwLock<Arc<Topology>>,
    pgpass: RwLock<Option<Arc<PgPass>>>,

    pub workers: OnceLock<Vec<WorkerHandle>>,
    pools: Mutex<HashMap<(String, String), Arc<UserPools>>>,
    cancel: Mutex<HashMap<i32, CancelTarget>>,
    warned_no_password: Mutex<HashSet<String>>,
    pub clients: AtomicUsize,
    pub shutting_down: AtomicBool,
    /// Query mode: where workers send `auth_query` lookups.
    pub lookup: OnceLock<Sender<super::lookup::LookupRequest>>,
    /// Per worker: its connections and waiting clients, for the metrics.
    pub stats: OnceLock<Vec<super::stats::WorkerStats>>,
    /// Seeds the mock SCRAM exchange for roles that do not exist.
    pub mock_key: [u8; 32],
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        backends: Vec<BackendInfo>,
        pgpass: Option<Arc<PgPass>>,
        tls: Arc<super::tls::TlsSetup>,
    ) -> Shared {
        let health = Arc::new(crate::health::HealthView::new(&config));
        let topology = Arc::new(Topology::new(backends, health));
        Shared {
            config: RwLock::new(config),
            config_version: AtomicU64::new(0),
            tls: RwLock::new(tls),
            topology: RwLock::new(topology),
            pgpass: RwLock::new(pgpass),
            workers: OnceLock::new(),
            pools: Mutex::new(HashMap::new()),
            cancel: Mutex::new(HashMap::new()),
            warned_no_password: Mutex::new(HashSet::new()),
            clients: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            lookup: OnceLock::new(),
            stats: OnceLock::new(),
            mock_key: crate::auth::scram_server::mock_key(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Installs a new configuration (after a successful reload).
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write() = config;
        self.config_version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn pgpass(&self) -> Option<Arc<PgPass>> {
        self.pgpass.read().clone()
    }

    pub fn set_pgpass(&self, p: Option<Arc<PgPass>>) {
        *self.pgpass.write() = p;
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    pub fn set_topology(&self, t: Arc<Topology>) {
        *self.topology.write() = t;
    }

    /// See `Topology::primary`.
    pub fn primary(&self) -> Option<usize> {
        self.topology.read().primary()
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        self.workers.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The pools of (database, user), created on first use.
    pub fn user_pools(&self, database: &str, user: &str) -> Arc<UserPools> {
        let mut pools = self.pools.lock();
        let next_id = pools.len();
        let workers = self.workers().len().max(1);
        pools
            .entry((database.to_string(), user.to_string()))
            .or_insert_with(|| {
                Arc::new(UserPools {
                    id: next_id,
                    database: database.to_string(),
                    user: user.to_string(),
                    per_backend: (0..MAX_BACKENDS)
                        .map(|_| PoolShared::new(workers))
                        .collect(),
                    no_replica_password: AtomicBool::new(false),
                    credential: RwLock::new(None),
                    server_params: RwLock::new(None),
                    parsed: Mutex::new(Default::default()),
                    trusted: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Every pool created so far.
    pub fn all_pools(&self) -> Vec<Arc<UserPools>> {
        self.pools.lock().values().cloned().collect()
    }

    /// Registers a fresh cancel key for a client; returns (pid, secret).
    pub fn register_cancel_key(&self, worker: usize, client: Token, generation: u64) -> (i32, i32) {
        let mut map = self.cancel.lock();
        loop {
            let pid = (random_u32() & 0x7fff_ffff) as i32;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = random_u32() as i32;
            map.insert(
                pid,
                CancelTarget {
                    secret,
                    worker,
                    client,
                    generation,
                },
            );
            return (pid, secret);
        }
    }

    pub fn unregister_cancel_key(&self, pid: i32) {
        self.cancel.lock().remove(&pid);
    }

    /// The client a CancelRequest names, if the secret matches.
    pub fn cancel_target(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let map = self.cancel.lock();
        map.get(&pid).filter(|t| t.secret == secret).copied()
    }

    /// Counts an accepted client against `proxy.max_clients`; false when full.
    pub fn take_client_slot(&self) -> bool {
        let max = self.config.read().proxy.max_clients;
        self.clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_client_slot(&self) {
        let _ = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Logs once per user that PgGate has no password for its own logins.
    pub fn warn_no_password(&self, user: &str, backend: &str) {
        if self.warned_no_password.lock().insert(user.to_string()) {
            log::warn!(
                "no password for user \"{user}\" in auth.credentials_file (backend {backend}); \
                 that user's reads go to the primary"
            );
        }
    }

    pub fn password_for(
        &self,
        backend: &BackendInfo,
        database: &str,
        user: &str,
    ) -> Option<String> {
        self.pgpass
            .read()
            .as_ref()?
            .lookup(&backend.host, backend.port, database, user)
            .map(str::to_string)
    }
}

/// A random u32 from the operating system's generator.
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        // The OS generator failing is not recoverable in a meaningful way; fall
        // back to time-derived bits rather than refusing service.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return t.rotate_left(13) ^ 0x9e37_79b9;
    }
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(worker: usize, client: usize, since: Instant) -> Waiter {
        Waiter {
            worker,
            client: Token(client),
            generation: 1,
            since,
        }
    }

    #[test]
    fn a_released_connection_stays_with_a_waiter_on_its_own_worker() {
        let pool = PoolShared::new(2);
        let t0 = Instant::now();
        pool.push_waiter(waiter(1, 10, t0));
        pool.push_waiter(waiter(0, 20, t0 + Duration::from_micros(300)));
        pool.push_waiter(waiter(1, 30, t0 + Duration::from_micros(400)));
        // Worker 0 keeps it for its own client, though worker 1's came first.
        assert_eq!(pool.pop_waiter_for(0).map(|w| w.client), Some(Token(20)));
        // No waiter left on worker 0: the oldest anywhere gets it.
        assert_eq!(pool.pop_waiter_for(0).map(|w| w.client), Some(Token(10)));
        assert_eq!(pool.pop_waiter_for(1).map(|w| w.client), Some(Token(30)));
        assert!(pool.pop_waiter_for(0).is_none());
        assert_eq!(pool.n_waiters.load(Ordering::Acquire), 0);
    }

    #[test]
    fn removing_a_waiter_leaves_another_workers_client_with_the_same_key() {
        // Slab keys and generations are per worker: the same pair names
        // different clients on different workers.
        let pool = PoolShared::new(2);
        let t0 = Instant::now();
        pool.push_waiter(waiter(0, 10, t0));
        pool.push_waiter(waiter(1, 10, t0));
        pool.remove_waiter(0, Token(10), 1);
        assert_eq!(pool.n_waiters.load(Ordering::Acquire), 1);
        assert_eq!(pool.pop_waiter_for(1).map(|w| w.worker), Some(1));
    }

    #[test]
    fn a_waiter_elsewhere_that_waited_much_longer_goes_first() {
        let pool = PoolShared::new(2);
        let t0 = Instant::now();
        pool.push_waiter(waiter(1, 10, t0));
        pool.push_waiter(waiter(0, 20, t0 + WAITER_PATIENCE * 3));
        assert_eq!(pool.pop_waiter_for(0).map(|w| w.client), Some(Token(10)));
        assert_eq!(pool.pop_waiter_for(0).map(|w| w.client), Some(Token(20)));
    }
}
