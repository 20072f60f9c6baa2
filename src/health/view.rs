//! The published health of every configured backend: whether it is up,
//! whether it is the primary, how far behind it replays, and counters for
//! the metrics. Workers read it on the hot path, so every value is a plain
//! atomic (no locks, no allocation); the health checker writes it, and a
//! worker that could not connect to a replica takes it down early
//! ([`BackendState::suspect`]).
//!
//! Each value is current on its own: a reader may see a new role together
//! with the previous round's lag, which is harmless because the next round
//! is at most one interval away. No I/O here.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{BackendConfig, Config, Role};

/// `lag_micros` value meaning "unknown, or not a replica".
const LAG_UNKNOWN: u64 = u64::MAX;

/// What one probe result did to a backend's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The failed probe that reached the threshold: no new work from now on.
    WentDown,
    /// A good probe after the backend had been down.
    CameUp,
}

/// One backend's published state, at the same index as its `[[backends]]`
/// entry in the configuration the view was built from.
#[derive(Debug)]
pub struct BackendState {
    name: String,
    host: String,
    port: u16,
    configured_role: Role,
    up: AtomicBool,
    primary: AtomicBool,
    lag_micros: AtomicU64,
    replay_lsn: AtomicU64,
    consecutive_failures: AtomicU32,
    connect_failures_total: AtomicU64,
}

impl BackendState {
    /// The state of a backend nothing is known about yet: up (a new backend
    /// is usable before its first probe), primary as configured (`auto`
    /// counts as not primary until probed), lag unknown.
    pub fn new(backend: &BackendConfig) -> BackendState {
        BackendState {
            name: backend.name.clone(),
            host: backend.host.clone(),
            port: backend.port,
            configured_role: backend.role,
            up: AtomicBool::new(true),
            primary: AtomicBool::new(backend.role == Role::Primary),
            lag_micros: AtomicU64::new(LAG_UNKNOWN),
            replay_lsn: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            connect_failures_total: AtomicU64::new(0),
        }
    }

    /// The backend's `name` (the label of logs and metrics).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `role` written in the configuration (not the detected one).
    pub fn configured_role(&self) -> Role {
        self.configured_role
    }

    /// True until `health.failures` consecutive probes have failed; one
    /// good probe makes it true again.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The detected role: `!pg_is_in_recovery()` at the last good probe.
    /// Before the first probe: as configured, with `auto` counted as not
    /// primary.
    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::Relaxed)
    }

    /// How far this replica's replay is behind the primary, as of its last
    /// good probe; `None` when unknown (not probed yet, or behind with
    /// nothing to date it by) or when this backend is a primary.
    pub fn replay_lag(&self) -> Option<Duration> {
        match self.lag_micros.load(Ordering::Relaxed) {
            LAG_UNKNOWN => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Replicas: `pg_last_wal_replay_lsn()`; primaries:
    /// `pg_current_wal_lsn()`; as of the last good probe, 0 before one.
    pub fn replay_lsn(&self) -> u64 {
        self.replay_lsn.load(Ordering::Relaxed)
    }

    /// Failed probes since the last good one.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Probe connections that could not be opened or logged in, since start
    /// (a counter for `pggate_backend_connect_failures_total`).
    pub fn connect_failures_total(&self) -> u64 {
        self.connect_failures_total.load(Ordering::Relaxed)
    }

    /// Applies one probe result: a failure counts towards `failures`
    /// consecutive failures (treated as at least 1), after which the backend
    /// is down; a success resets the count and brings it up. Returns the
    /// transition, if any, so the caller logs each one exactly once.
    pub fn record(&self, ok: bool, failures: u32) -> Option<Transition> {
        let was_up = self.is_up();
        let (up, count) = next_state(was_up, self.consecutive_failures(), ok, failures);
        self.consecutive_failures.store(count, Ordering::Relaxed);
        self.up.store(up, Ordering::Relaxed);
        match (was_up, up) {
            (true, false) => Some(Transition::WentDown),
            (false, true) => Some(Transition::CameUp),
            _ => None,
        }
    }

    /// Takes the backend out of use after a connection to it failed outside
    /// the probes, without waiting for `failures` probes to fail: until the
    /// next good probe brings it back (as after a failed probe). Returns
    /// whether it was up until now, so the caller logs it once.
    pub fn suspect(&self) -> bool {
        self.up.swap(false, Ordering::Relaxed)
    }

    /// Sets the detected role; returns whether it changed.
    pub fn set_primary(&self, primary: bool) -> bool {
        self.primary.swap(primary, Ordering::Relaxed) != primary
    }

    /// Sets the measured lag (`None`: unknown or not a replica).
    pub fn set_replay_lag(&self, lag: Option<Duration>) {
        let micros = match lag {
            // u64::MAX microseconds is half a million years; saturating just
            // below it keeps "unknown" distinct.
            Some(lag) => {
                u64::try_from(lag.as_micros()).map_or(LAG_UNKNOWN - 1, |m| m.min(LAG_UNKNOWN - 1))
            }
            None => LAG_UNKNOWN,
        };
        self.lag_micros.store(micros, Ordering::Relaxed);
    }

    pub fn set_replay_lsn(&self, lsn: u64) {
        self.replay_lsn.store(lsn, Ordering::Relaxed);
    }

    /// Counts a probe connection that could not be opened or logged in.
    pub fn count_connect_failure(&self) {
        self.connect_failures_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `backend` is the same server under the same name and role,
    /// so a rebuilt view may keep this state.
    fn describes(&self, backend: &BackendConfig) -> bool {
        self.name == backend.name
            && self.host == backend.host
            && self.port == backend.port
            && self.configured_role == backend.role
    }

    /// A copy of everything measured about this server, under `backend`'s
    /// name and role.
    fn carried_to(&self, backend: &BackendConfig) -> BackendState {
        let state = BackendState::new(backend);
        state.up.store(self.is_up(), Ordering::Relaxed);
        state.primary.store(self.is_primary(), Ordering::Relaxed);
        state
            .lag_micros
            .store(self.lag_micros.load(Ordering::Relaxed), Ordering::Relaxed);
        state.set_replay_lsn(self.replay_lsn());
        state
            .consecutive_failures
            .store(self.consecutive_failures(), Ordering::Relaxed);
        state
            .connect_failures_total
            .store(self.connect_failures_total(), Ordering::Relaxed);
        state
    }
}

/// The up/down state machine: (up, consecutive failures) after one probe.
fn next_state(up: bool, failures_so_far: u32, ok: bool, threshold: u32) -> (bool, u32) {
    if ok {
        return (true, 0);
    }
    let failures = failures_so_far.saturating_add(1);
    (up && failures < threshold.max(1), failures)
}

/// Every backend's state, indexed like `config.backends` of the
/// configuration it was built from. Shared as `Arc<HealthView>`; when a
/// reload changes the backends, build a new view (see [`HealthView::rebuilt`])
/// and publish it together with the new configuration.
#[derive(Debug)]
pub struct HealthView {
    pub backends: Vec<BackendState>,
}

impl HealthView {
    /// A view of `config.backends` with nothing probed yet.
    pub fn new(config: &Config) -> HealthView {
        HealthView {
            backends: config.backends.iter().map(BackendState::new).collect(),
        }
    }

    /// A view for a reloaded `config` that keeps what is known about
    /// servers present before (same host and port), so a reload neither
    /// resurrects a down backend nor forgets a detected primary. New servers
    /// start as in [`HealthView::new`].
    pub fn rebuilt(&self, config: &Config) -> HealthView {
        let backends = config
            .backends
            .iter()
            .map(|backend| {
                match self
                    .backends
                    .iter()
                    .find(|old| old.host == backend.host && old.port == backend.port)
                {
                    Some(old) => old.carried_to(backend),
                    None => BackendState::new(backend),
                }
            })
            .collect();
        HealthView { backends }
    }

    /// Whether this view was built for exactly `config`'s backends (same
    /// count, order, names, addresses and roles).
    pub fn matches(&self, config: &Config) -> bool {
        self.backends.len() == config.backends.len()
            && self
                .backends
                .iter()
                .zip(&config.backends)
                .all(|(state, backend)| state.describes(backend))
    }

    /// Index of the current primary: a backend that is up and detected
    /// primary; among several, the one configured `role = "primary"`, then
    /// the lowest index. `None` when no primary is up.
    pub fn primary(&self) -> Option<usize> {
        let mut candidates = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_up() && b.is_primary());
        let first = candidates.next()?;
        if first.1.configured_role == Role::Primary {
            return Some(first.0);
        }
        let preferred = candidates.find(|(_, b)| b.configured_role == Role::Primary);
        Some(preferred.unwrap_or(first).0)
    }

    /// Whether replica `i` may serve reads now: up, not primary, and lag
    /// within `max_lag` (zero: lag unchecked). A lag not measured yet (before
    /// the first probe) does not hold a replica back: like `is_up`, the view
    /// starts optimistic. False for an index outside the view.
    pub fn replica_usable(&self, i: usize, max_lag: Duration) -> bool {
        let Some(backend) = self.backends.get(i) else {
            return false;
        };
        backend.is_up()
            && !backend.is_primary()
            && (max_lag.is_zero() || backend.replay_lag().is_none_or(|lag| lag <= max_lag))
    }

    /// The current primary's WAL position at its last good probe; 0 when no
    /// primary is up or none has been probed.
    pub fn primary_lsn(&self) -> u64 {
        self.primary()
            .and_then(|i| self.backends.get(i))
            .map_or(0, BackendState::replay_lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, port: u16, role: Role) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            host: "127.0.0.1".to_string(),
            port,
            role,
            weight: 1,
        }
    }

    fn config(backends: Vec<BackendConfig>) -> Config {
        Config {
            backends,
            ..Config::default()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_backend_goes_down_only_after_the_configured_number_of_failures() {
        let state = BackendState::new(&backend("r", 1, Role::Replica));
        assert!(state.is_up());
        assert_eq!(state.record(false, 3), None);
        assert_eq!(state.record(false, 3), None);
        assert!(state.is_up());
        assert_eq!(state.consecutive_failures(), 2);
        assert_eq!(state.record(false, 3), Some(Transition::WentDown));
        assert!(!state.is_up());
        // Further failures keep it down without another transition.
        assert_eq!(state.record(false, 3), None);
        assert_eq!(state.consecutive_failures(), 4);
    }

    #[test]
    fn one_good_probe_brings_a_backend_back() {
        let state = BackendState::new(&backend("r", 1, Role::Replica));
        state.record(false, 1);
        assert!(!state.is_up());
        assert_eq!(state.record(true, 1), Some(Transition::CameUp));
        assert!(state.is_up());
        assert_eq!(state.consecutive_failures(), 0);
        assert_eq!(state.record(true, 1), None);
    }

    #[test]
    fn a_good_probe_resets_the_failure_count() {
        let state = BackendState::new(&backend("r", 1, Role::Replica));
        state.record(false, 3);
        state.record(false, 3);
        state.record(true, 3);
        state.record(false, 3);
        state.record(false, 3);
        assert!(state.is_up(), "only two consecutive failures");
        assert_eq!(state.record(false, 3), Some(Transition::WentDown));
    }

    #[test]
    fn a_threshold_of_zero_counts_as_one() {
        assert_eq!(next_state(true, 0, false, 0), (false, 1));
        assert_eq!(next_state(true, u32::MAX, false, 5), (false, u32::MAX));
        assert_eq!(next_state(false, 7, true, 5), (true, 0));
    }

    #[test]
    fn roles_start_as_configured_and_auto_starts_as_not_primary() {
        let view = HealthView::new(&config(vec![
            backend("p", 1, Role::Primary),
            backend("r", 2, Role::Replica),
            backend("a", 3, Role::Auto),
        ]));
        assert!(view.backends[0].is_primary());
        assert!(!view.backends[1].is_primary());
        assert!(!view.backends[2].is_primary());
        assert!(view.backends.iter().all(BackendState::is_up));
        assert!(view.backends.iter().all(|b| b.replay_lag().is_none()));
        assert_eq!(view.primary(), Some(0));
    }

    #[test]
    fn primary_is_none_when_no_primary_is_up() {
        let view = HealthView::new(&config(vec![
            backend("a1", 1, Role::Auto),
            backend("a2", 2, Role::Auto),
        ]));
        assert_eq!(view.primary(), None);
        assert_eq!(view.primary_lsn(), 0);

        let view = HealthView::new(&config(vec![backend("p", 1, Role::Primary)]));
        view.backends[0].record(false, 1);
        assert_eq!(view.primary(), None);
    }

    #[test]
    fn primary_prefers_the_configured_primary_then_the_lowest_index() {
        let view = HealthView::new(&config(vec![
            backend("a1", 1, Role::Auto),
            backend("a2", 2, Role::Auto),
            backend("p", 3, Role::Primary),
        ]));
        view.backends[0].set_primary(true);
        view.backends[1].set_primary(true);
        assert_eq!(view.primary(), Some(2), "configured primary wins");

        view.backends[2].record(false, 1);
        assert_eq!(view.primary(), Some(0), "then the lowest index");

        view.backends[0].record(false, 1);
        assert_eq!(view.primary(), Some(1));

        view.backends[2].record(true, 1);
        view.backends[2].set_primary(false);
        assert_eq!(view.primary(), Some(1), "a demoted primary is skipped");
    }

    #[test]
    fn primary_lsn_is_the_current_primarys_position() {
        let view = HealthView::new(&config(vec![
            backend("p", 1, Role::Primary),
            backend("r", 2, Role::Replica),
        ]));
        view.backends[0].set_replay_lsn(500);
        view.backends[1].set_replay_lsn(400);
        assert_eq!(view.primary_lsn(), 500);
    }

    #[test]
    fn replica_usable_requires_up_not_primary_and_fresh_enough() {
        let view = HealthView::new(&config(vec![
            backend("p", 1, Role::Primary),
            backend("r", 2, Role::Replica),
        ]));
        assert!(!view.replica_usable(0, Duration::ZERO), "the primary");
        assert!(
            view.replica_usable(1, Duration::ZERO),
            "lag unchecked: usable before its first probe"
        );
        assert!(
            view.replica_usable(1, SECOND),
            "lag checked but not measured yet: usable, like a backend not probed yet"
        );
        view.backends[1].set_replay_lag(Some(Duration::from_millis(300)));
        assert!(view.replica_usable(1, SECOND));
        view.backends[1].set_replay_lag(Some(SECOND));
        assert!(view.replica_usable(1, SECOND), "the bound itself is fine");
        view.backends[1].set_replay_lag(Some(Duration::from_millis(1001)));
        assert!(!view.replica_usable(1, SECOND));
        assert!(view.replica_usable(1, Duration::ZERO));
        view.backends[1].record(false, 1);
        assert!(!view.replica_usable(1, Duration::ZERO), "down");
        assert!(!view.replica_usable(7, Duration::ZERO), "no such backend");
    }

    #[test]
    fn lag_round_trips_and_saturates() {
        let state = BackendState::new(&backend("r", 1, Role::Replica));
        state.set_replay_lag(Some(Duration::from_micros(1_500_123)));
        assert_eq!(state.replay_lag(), Some(Duration::from_micros(1_500_123)));
        state.set_replay_lag(Some(Duration::MAX));
        assert_eq!(
            state.replay_lag(),
            Some(Duration::from_micros(LAG_UNKNOWN - 1))
        );
        state.set_replay_lag(None);
        assert_eq!(state.replay_lag(), None);
    }

    #[test]
    fn connect_failures_are_counted() {
        let state = BackendState::new(&backend("r", 1, Role::Replica));
        state.count_connect_failure();
        state.count_connect_failure();
        assert_eq!(state.connect_failures_total(), 2);
    }

    #[test]
    fn a_rebuilt_view_keeps_what_is_known_about_remaining_servers() {
        let old = HealthView::new(&config(vec![
            backend("p", 1, Role::Primary),
            backend("r", 2, Role::Replica),
        ]));
        old.backends[1].record(false, 1);
        old.backends[1].count_connect_failure();
        old.backends[0].set_replay_lsn(42);

        let new_config = config(vec![
            backend("r-renamed", 2, Role::Auto),
            backend("new", 3, Role::Replica),
            backend("p", 1, Role::Primary),
        ]);
        assert!(!old.matches(&new_config));
        let new = old.rebuilt(&new_config);
        assert!(new.matches(&new_config));
        assert_eq!(new.backends[0].name(), "r-renamed");
        assert_eq!(new.backends[0].configured_role(), Role::Auto);
        assert!(!new.backends[0].is_up(), "still down");
        assert_eq!(new.backends[0].connect_failures_total(), 1);
        assert!(new.backends[1].is_up(), "a new backend starts up");
        assert_eq!(new.primary(), Some(2));
        assert_eq!(new.primary_lsn(), 42);
    }
}
