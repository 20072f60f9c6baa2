//! Backend health (SPEC §7): a checker thread probes every configured
//! backend each `health.interval` and publishes, per backend, whether it is
//! up, whether it is the primary (`pg_is_in_recovery()`), its WAL position
//! and, for replicas, its replay lag. Event-loop workers read that
//! [`HealthView`] on the hot path with plain atomic loads; nothing here
//! touches their sockets, and the checker is the view's only writer.
//!
//! Submodules: `client` (the blocking control-connection client, also meant
//! for `auth_query`), `probe` (the probe statement and how its answer is
//! read), `lag` (replica lag from WAL positions and replay timestamps),
//! `view` (the shared state), `checker` (the rounds).
//!
//! Wiring: build `Arc::new(HealthView::new(&config))`, hand it to the
//! workers with the `Arc<Config>` it was built from, and start
//! `Checker::new(config, pgpass, view).spawn(config.health.interval)`, which
//! returns the [`HealthThread`] to stop it with.
//! The view's indices follow `config.backends`. On a reload that changes the
//! backends, build `old_view.rebuilt(&new_config)` (it keeps the state of
//! servers present in both), publish it with the new configuration, stop the
//! old checker and spawn a new one on the new view. A reload that leaves the
//! backends alone (`HealthView::matches`) may keep the view and only restart
//! the checker (for a new interval, timeout, threshold, login or
//! credentials file). [`Checker::set_config`] and [`Checker::set_pgpass`]
//! do the same for a checker driven by hand with [`Checker::probe_round`].

mod checker;
pub mod client;
mod lag;
mod probe;
mod view;

pub use checker::{Checker, HealthThread};
pub use client::{ControlConn, ControlError, Row};
pub use probe::{parse_lsn, parse_probe, Probe, PROBE_SQL};
pub use view::{BackendState, HealthView, Transition};
