//! Numbers the workers publish for the metrics endpoint once a second (their
//! backend connections by state, their waiting clients and queued reads), and
//! the thread that turns them and the health view into the gauges. Off the
//! hot path: workers count their own slabs on their maintenance tick.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ops::metrics::BackendMetrics;

use super::shared::Shared;

/// What one worker holds, as of its last maintenance tick.
pub struct WorkerStats {
    pub idle: Vec<AtomicI64>,
    pub active: Vec<AtomicI64>,
    pub waiting: AtomicI64,
    /// Clients whose read is queued behind another client's read.
    pub queued: AtomicI64,
}

impl WorkerStats {
    pub fn new(backends: usize) -> WorkerStats {
        WorkerStats {
            idle: (0..backends).map(|_| AtomicI64::new(0)).collect(),
            active: (0..backends).map(|_| AtomicI64::new(0)).collect(),
            waiting: AtomicI64::new(0),
            queued: AtomicI64::new(0),
        }
    }
}

/// Updates the backend gauges every second until the process ends.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pggate-stats".into())
        .spawn(move || {
            let mut handles: Vec<Option<(bool, BackendMetrics)>> = Vec::new();
            let failures_seen: Vec<AtomicU64> = (0..super::shared::MAX_BACKENDS)
                .map(|_| AtomicU64::new(0))
                .collect();
            loop {
                update(&shared, &mut handles, &failures_seen);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map(|_| ())
}

fn update(
    shared: &Shared,
    handles: &mut Vec<Option<(bool, BackendMetrics)>>,
    failures_seen: &[AtomicU64],
) {
    let m = crate::ops::metrics();
    let stats = shared.stats.get().map(Vec::as_slice).unwrap_or(&[]);
    let topo = shared.topology();
    handles.resize_with(topo.backends.len(), || None);
    let primary = topo.primary();
    for (i, b) in topo.backends.iter().enumerate() {
        let Some(h) = topo.health.backends.get(i) else {
            continue;
        };
        if b.removed {
            if handles[i].take().is_some() {
                m.forget_backend(&b.name);
            }
            continue;
        }
        let is_primary = Some(i) == primary;
        if handles[i].as_ref().is_none_or(|(p, _)| *p != is_primary) {
            let role = if is_primary { "primary" } else { "replica" };
            handles[i] = Some((is_primary, m.backend(&b.name, role)));
        }
        let Some((_, bm)) = handles[i].as_ref() else {
            continue;
        };
        bm.up.set(i64::from(h.is_up()));
        let idle: i64 = stats
            .iter()
            .filter_map(|s| s.idle.get(i))
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        let active: i64 = stats
            .iter()
            .filter_map(|s| s.active.get(i))
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        bm.connections_idle.set(idle);
        bm.connections_active.set(active);
        bm.replication_lag_seconds
            .set(h.replay_lag().map(|d| d.as_secs_f64()).unwrap_or(0.0));
        let total = h.connect_failures_total();
        let seen = failures_seen[i].swap(total, Ordering::Relaxed);
        if total > seen {
            bm.connect_failures.inc_by(total - seen);
        }
    }
    let waiting: i64 = stats
        .iter()
        .map(|s| s.waiting.load(Ordering::Relaxed))
        .sum();
    m.pool_waiting_clients.set(waiting);
    let queued: i64 = stats.iter().map(|s| s.queued.load(Ordering::Relaxed)).sum();
    m.pipelined_reads_queued.set(queued);
}
