//! Operations (SPEC §8): the metrics PgGate exports, the HTTP endpoint that
//! serves them with `/healthz`, and systemd readiness notification.
//!
//! This subsystem depends on nothing else in the crate. The proxy feeds it
//! through the handles on [`Metrics`] and the `health` closure given to
//! [`http::serve`]; nothing here reaches back into sessions or pools.
//!
//! Submodules: `metrics` (names, registry, hot-path handles), `http` (the
//! `/metrics` and `/healthz` endpoint), `systemd` (`sd_notify` messages).

pub mod http;
pub mod metrics;
pub mod systemd;

pub use http::{serve, HttpServer};
pub use metrics::{init, metrics, BackendMetrics, Metrics};
