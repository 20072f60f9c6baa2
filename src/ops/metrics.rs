//! Every metric PgGate exports (SPEC §8): the names and label values as
//! constants, the `Metrics` registry that owns them, and the process-wide
//! instance behind `metrics()`.
//!
//! Hot paths never look anything up by string: each fixed label value (route,
//! pin reason, error kind, ...) is resolved once, here, into a child handle
//! that is a plain struct field, and per-backend series are resolved by
//! `Metrics::backend` into a `BackendMetrics` the caller keeps. Incrementing
//! any of them is one atomic operation. This module does no I/O; `render`
//! only formats text.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, exactly as scraped. Call sites use the typed handles on
/// [`Metrics`]; these constants exist so that the names are spelled once.
pub mod names {
    pub const CLIENTS_CONNECTED: &str = "pggate_clients_connected";
    pub const CLIENTS_ACCEPTED_TOTAL: &str = "pggate_clients_accepted_total";
    pub const CLIENTS_REJECTED_TOTAL: &str = "pggate_clients_rejected_total";
    pub const QUERIES_TOTAL: &str = "pggate_queries_total";
    pub const QUERY_DURATION_SECONDS: &str = "pggate_query_duration_seconds";
    pub const TRANSACTIONS_TOTAL: &str = "pggate_transactions_total";
    pub const SESSIONS_PINNED_TOTAL: &str = "pggate_sessions_pinned_total";
    pub const ERRORS_TOTAL: &str = "pggate_errors_total";
    pub const BACKEND_UP: &str = "pggate_backend_up";
    pub const BACKEND_CONNECTIONS: &str = "pggate_backend_connections";
    pub const BACKEND_CONNECT_FAILURES_TOTAL: &str = "pggate_backend_connect_failures_total";
    pub const BACKEND_REPLICATION_LAG_SECONDS: &str = "pggate_backend_replication_lag_seconds";
    pub const POOL_WAITING_CLIENTS: &str = "pggate_pool_waiting_clients";
    pub const READ_ONLY_RETRIES_TOTAL: &str = "pggate_read_only_retries_total";
    pub const PIPELINED_READS_TOTAL: &str = "pggate_pipelined_reads_total";
    pub const PIPELINED_READS_QUEUED: &str = "pggate_pipelined_reads_queued";
    pub const CONFIG_RELOADS_TOTAL: &str = "pggate_config_reloads_total";
    pub const BUILD_INFO: &str = "pggate_build_info";

    /// Every name above.
    pub const ALL: &[&str] = &[
        CLIENTS_CONNECTED,
        CLIENTS_ACCEPTED_TOTAL,
        CLIENTS_REJECTED_TOTAL,
        QUERIES_TOTAL,
        QUERY_DURATION_SECONDS,
        TRANSACTIONS_TOTAL,
        SESSIONS_PINNED_TOTAL,
        ERRORS_TOTAL,
        BACKEND_UP,
        BACKEND_CONNECTIONS,
        BACKEND_CONNECT_FAILURES_TOTAL,
        BACKEND_REPLICATION_LAG_SECONDS,
        POOL_WAITING_CLIENTS,
        READ_ONLY_RETRIES_TOTAL,
        PIPELINED_READS_TOTAL,
        PIPELINED_READS_QUEUED,
        CONFIG_RELOADS_TOTAL,
        BUILD_INFO,
    ];
}

/// Label names.
pub mod labels {
    pub const REASON: &str = "reason";
    pub const ROUTE: &str = "route";
    pub const KIND: &str = "kind";
    pub const BACKEND: &str = "backend";
    pub const ROLE: &str = "role";
    pub const STATE: &str = "state";
    pub const RESULT: &str = "result";
    pub const VERSION: &str = "version";

    /// Values of `state` on `pggate_backend_connections`.
    pub const STATE_IDLE: &str = "idle";
    pub const STATE_ACTIVE: &str = "active";
}

/// Upper bounds of the `pggate_query_duration_seconds` buckets: 100 µs (a
/// statement answered from a warm pooled connection on the same host) up to
/// 10 s (anything slower is an outlier whatever the bucket).
pub const QUERY_DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Declares a struct holding one child per fixed label value, so that a call
/// site picks a field instead of formatting or hashing a label.
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident = $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name<T> {
            $($(#[$fmeta])* pub $field: T,)+
        }

        impl<T> $name<T> {
            /// Every label value, in declaration order.
            pub const LABELS: &'static [&'static str] = &[$($label),+];

            fn resolve(mut child: impl FnMut(&'static str) -> T) -> Self {
                Self { $($field: child($label),)+ }
            }
        }
    };
}

label_values! {
    /// One child per `route` (where a statement or transaction was sent).
    Routes {
        primary = "primary",
        replica = "replica",
    }
}

label_values! {
    /// One child per `reason` a client is refused before its session starts.
    RejectReasons {
        /// `proxy.max_clients` reached (53300).
        max_clients = "max_clients",
        /// Startup and authentication did not finish within `proxy.login_timeout`.
        login_timeout = "login_timeout",
        /// Wrong password or unknown user (28P01).
        auth_failed = "auth_failed",
        /// Malformed or oversized startup traffic (08P01).
        protocol_error = "protocol_error",
        /// `client_tls.mode = "require"` and the client did not use TLS.
        tls_required = "tls_required",
        /// A `replication` connection, which PgGate does not proxy.
        replication = "replication",
        /// Arrived while draining for shutdown (57P01).
        shutting_down = "shutting_down",
    }
}

label_values! {
    /// One child per `reason` a session is pinned (SPEC §3 Pinning).
    PinReasons {
        set = "set",
        reset = "reset",
        set_config = "set_config",
        prepare = "prepare",
        listen = "listen",
        declare_with_hold = "declare_with_hold",
        temp_object = "temp_object",
        advisory_lock = "advisory_lock",
        load = "load",
    }
}

label_values! {
    /// One child per `kind` of error PgGate met while serving a session.
    ErrorKinds {
        /// A backend connect failed after every retry.
        backend_connect = "backend_connect",
        /// A backend refused PgGate's own login (missing or wrong credentials).
        backend_auth = "backend_auth",
        /// TLS towards a backend could not be set up or verified.
        backend_tls = "backend_tls",
        /// A backend connection was lost while in use.
        backend_lost = "backend_lost",
        /// No pooled connection within `pool.checkout_timeout`.
        checkout_timeout = "checkout_timeout",
        /// A client or backend broke the protocol, or sent an oversized message.
        protocol = "protocol",
        /// A client's TLS handshake failed.
        client_tls = "client_tls",
        /// A read-only retry on the primary failed too (SPEC §4.1).
        read_only_retry_failed = "read_only_retry_failed",
    }
}

label_values! {
    /// One child per `result` of a configuration reload.
    ReloadResults {
        success = "success",
        failure = "failure",
    }
}

/// The series of one backend, resolved once by [`Metrics::backend`].
///
/// The handles stay valid across reloads as long as the backend keeps its
/// name and role; resolve again after a role change, and stop using them
/// after [`Metrics::forget_backend`] (updates would no longer be exported).
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// `pggate_backend_up{backend,role}`: 1 up, 0 down.
    pub up: IntGauge,
    /// `pggate_backend_connections{backend,state="idle"}`.
    pub connections_idle: IntGauge,
    /// `pggate_backend_connections{backend,state="active"}`.
    pub connections_active: IntGauge,
    /// `pggate_backend_connect_failures_total{backend}`.
    pub connect_failures: IntCounter,
    /// `pggate_backend_replication_lag_seconds{backend}`.
    pub replication_lag_seconds: Gauge,
}

/// The registry of every PgGate metric, with pre-resolved children.
pub struct Metrics {
    registry: Registry,
    version: String,

    /// `pggate_clients_connected`.
    pub clients_connected: IntGauge,
    /// `pggate_clients_accepted_total`.
    pub clients_accepted: IntCounter,
    /// `pggate_clients_rejected_total{reason}`.
    pub clients_rejected: RejectReasons<IntCounter>,
    /// `pggate_queries_total{route}`.
    pub queries: Routes<IntCounter>,
    /// `pggate_query_duration_seconds{route}`.
    pub query_duration: Routes<Histogram>,
    /// `pggate_transactions_total{route}`.
    pub transactions: Routes<IntCounter>,
    /// `pggate_sessions_pinned_total{reason}`.
    pub sessions_pinned: PinReasons<IntCounter>,
    /// `pggate_errors_total{kind}`.
    pub errors: ErrorKinds<IntCounter>,
    /// `pggate_pool_waiting_clients`.
    pub pool_waiting_clients: IntGauge,
    /// `pggate_read_only_retries_total`.
    pub read_only_retries: IntCounter,
    /// `pggate_pipelined_reads_total`.
    pub pipelined_reads: IntCounter,
    /// `pggate_pipelined_reads_queued`.
    pub pipelined_reads_queued: IntGauge,
    /// `pggate_config_reloads_total{result}`.
    pub config_reloads: ReloadResults<IntCounter>,

    backend_up: IntGaugeVec,
    backend_connections: IntGaugeVec,
    backend_connect_failures: IntCounterVec,
    backend_replication_lag: GaugeVec,
    /// Role each known backend is exported with, so that a role change or a
    /// removal can drop the old `pggate_backend_up` series.
    backend_roles: Mutex<HashMap<String, String>>,
}

impl Metrics {
    /// A fresh registry with every metric registered and every fixed label
    /// value present at zero; `pggate_build_info{version}` is set to 1.
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new();

        let clients_connected = register(
            &registry,
            IntGauge::new(
                names::CLIENTS_CONNECTED,
                "Client connections currently open.",
            ),
        );
        let clients_accepted = register(
            &registry,
            IntCounter::new(
                names::CLIENTS_ACCEPTED_TOTAL,
                "Client connections accepted since start.",
            ),
        );
        let clients_rejected = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::CLIENTS_REJECTED_TOTAL,
                    "Client connections refused before their session started, by reason.",
                ),
                &[labels::REASON],
            ),
        );
        let queries = register(
            &registry,
            IntCounterVec::new(
                Opts::new(names::QUERIES_TOTAL, "Statements forwarded, by route."),
                &[labels::ROUTE],
            ),
        );
        let query_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    names::QUERY_DURATION_SECONDS,
                    "Time from a client's statement to the backend's answer, by route.",
                )
                .buckets(QUERY_DURATION_BUCKETS.to_vec()),
                &[labels::ROUTE],
            ),
        );
        let transactions = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::TRANSACTIONS_TOTAL,
                    "Transactions (or single statements outside one) completed, by route.",
                ),
                &[labels::ROUTE],
            ),
        );
        let sessions_pinned = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::SESSIONS_PINNED_TOTAL,
                    "Sessions pinned to their primary connection, by the statement that pinned them.",
                ),
                &[labels::REASON],
            ),
        );
        let errors = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::ERRORS_TOTAL,
                    "Errors met while serving sessions, by kind.",
                ),
                &[labels::KIND],
            ),
        );
        let backend_up = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(names::BACKEND_UP, "Backend health: 1 up, 0 down."),
                &[labels::BACKEND, labels::ROLE],
            ),
        );
        let backend_connections = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    names::BACKEND_CONNECTIONS,
                    "Open backend connections, by backend and state.",
                ),
                &[labels::BACKEND, labels::STATE],
            ),
        );
        let backend_connect_failures = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::BACKEND_CONNECT_FAILURES_TOTAL,
                    "Failed backend connection attempts, by backend.",
                ),
                &[labels::BACKEND],
            ),
        );
        let backend_replication_lag = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    names::BACKEND_REPLICATION_LAG_SECONDS,
                    "Replay lag of a replica as last probed, in seconds.",
                ),
                &[labels::BACKEND],
            ),
        );
        let pool_waiting_clients = register(
            &registry,
            IntGauge::new(
                names::POOL_WAITING_CLIENTS,
                "Clients currently waiting for a pooled backend connection.",
            ),
        );
        let read_only_retries = register(
            &registry,
            IntCounter::new(
                names::READ_ONLY_RETRIES_TOTAL,
                "Statements re-sent to the primary after a replica answered 25006.",
            ),
        );
        let pipelined_reads = register(
            &registry,
            IntCounter::new(
                names::PIPELINED_READS_TOTAL,
                "Reads sent down a connection behind another client's read (pool.pipeline_window).",
            ),
        );
        let pipelined_reads_queued = register(
            &registry,
            IntGauge::new(
                names::PIPELINED_READS_QUEUED,
                "Reads currently queued behind another client's read, as of the workers' last tick.",
            ),
        );
        let config_reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    names::CONFIG_RELOADS_TOTAL,
                    "Configuration reloads, by result.",
                ),
                &[labels::RESULT],
            ),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    names::BUILD_INFO,
                    "Always 1; the version label names the build.",
                ),
                &[labels::VERSION],
            ),
        );
        build_info.with_label_values(&[version]).set(1);

        Metrics {
            registry,
            version: version.to_owned(),
            clients_connected,
            clients_accepted,
            clients_rejected: RejectReasons::resolve(|v| clients_rejected.with_label_values(&[v])),
            queries: Routes::resolve(|v| queries.with_label_values(&[v])),
            query_duration: Routes::resolve(|v| query_duration.with_label_values(&[v])),
            transactions: Routes::resolve(|v| transactions.with_label_values(&[v])),
            sessions_pinned: PinReasons::resolve(|v| sessions_pinned.with_label_values(&[v])),
            errors: ErrorKinds::resolve(|v| errors.with_label_values(&[v])),
            pool_waiting_clients,
            read_only_retries,
            pipelined_reads,
            pipelined_reads_queued,
            config_reloads: ReloadResults::resolve(|v| config_reloads.with_label_values(&[v])),
            backend_up,
            backend_connections,
            backend_connect_failures,
            backend_replication_lag,
            backend_roles: Mutex::new(HashMap::new()),
        }
    }

    /// The version exported in `pggate_build_info`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The underlying registry, for callers that add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolves (creating at zero if new) the series of backend `name` with
    /// `role`. Calling it again for the same name returns handles to the same
    /// series, so counters carry over a reload; with a different role, the
    /// `pggate_backend_up` series of the old role is dropped.
    pub fn backend(&self, name: &str, role: &str) -> BackendMetrics {
        let mut roles = self.backend_roles.lock();
        match roles.get_mut(name) {
            Some(known) if known == role => {}
            Some(known) => {
                let _ = self.backend_up.remove_label_values(&[name, known]);
                role.clone_into(known);
            }
            None => {
                roles.insert(name.to_owned(), role.to_owned());
            }
        }
        BackendMetrics {
            up: self.backend_up.with_label_values(&[name, role]),
            connections_idle: self
                .backend_connections
                .with_label_values(&[name, labels::STATE_IDLE]),
            connections_active: self
                .backend_connections
                .with_label_values(&[name, labels::STATE_ACTIVE]),
            connect_failures: self.backend_connect_failures.with_label_values(&[name]),
            replication_lag_seconds: self.backend_replication_lag.with_label_values(&[name]),
        }
    }

    /// Drops every series of backend `name` (removed by a reload). Returns
    /// whether the backend was known.
    pub fn forget_backend(&self, name: &str) -> bool {
        let Some(role) = self.backend_roles.lock().remove(name) else {
            return false;
        };
        // Absent series are not an error here: the goal is that none remain.
        let _ = self.backend_up.remove_label_values(&[name, &role]);
        let _ = self
            .backend_connections
            .remove_label_values(&[name, labels::STATE_IDLE]);
        let _ = self
            .backend_connections
            .remove_label_values(&[name, labels::STATE_ACTIVE]);
        let _ = self.backend_connect_failures.remove_label_values(&[name]);
        let _ = self.backend_replication_lag.remove_label_values(&[name]);
        true
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("metrics: encoding the scrape failed: {e}");
        }
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }
}

/// Registers a collector built from constant names and help texts. Failure
/// would mean an invalid or duplicate constant above, which the tests rule
/// out, so it is not a runtime condition.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    built: prometheus::Result<C>,
) -> C {
    let collector = built.expect("metric definitions are constants");
    registry
        .register(Box::new(collector.clone()))
        .expect("each metric is registered once");
    collector
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// Creates the process-wide metrics with `version` in `pggate_build_info`.
/// The first call (or the first `metrics()`) wins; a later call with another
/// version logs a warning and returns the existing instance.
pub fn init(version: &str) -> &'static Metrics {
    let metrics = GLOBAL.get_or_init(|| Metrics::new(version));
    if metrics.version != version {
        log::warn!(
            "metrics: already initialised with version {}, ignoring {version}",
            metrics.version
        );
    }
    metrics
}

/// The process-wide metrics, created with this crate's version if `init` has
/// not run yet.
pub fn metrics() -> &'static Metrics {
    GLOBAL.get_or_init(|| Metrics::new(env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[track_caller]
    fn assert_line(text: &str, line: &str) {
        assert!(has_line(text, line), "missing line {line:?} in:\n{text}");
    }

    #[test]
    fn every_spec_metric_is_exported_before_any_traffic() {
        let m = Metrics::new("9.8.7");
        m.backend("db1", "primary");
        let text = m.render();

        let spec: &[(&str, &str, &[&str])] = &[
            ("pggate_clients_connected", "gauge", &[]),
            ("pggate_clients_accepted_total", "counter", &[]),
            ("pggate_clients_rejected_total", "counter", &["reason"]),
            ("pggate_queries_total", "counter", &["route"]),
            ("pggate_query_duration_seconds", "histogram", &["route"]),
            ("pggate_transactions_total", "counter", &["route"]),
            ("pggate_sessions_pinned_total", "counter", &["reason"]),
            ("pggate_errors_total", "counter", &["kind"]),
            ("pggate_backend_up", "gauge", &["backend", "role"]),
            ("pggate_backend_connections", "gauge", &["backend", "state"]),
            (
                "pggate_backend_connect_failures_total",
                "counter",
                &["backend"],
            ),
            (
                "pggate_backend_replication_lag_seconds",
                "gauge",
                &["backend"],
            ),
            ("pggate_pool_waiting_clients", "gauge", &[]),
            ("pggate_read_only_retries_total", "counter", &[]),
            ("pggate_pipelined_reads_total", "counter", &[]),
            ("pggate_pipelined_reads_queued", "gauge", &[]),
            ("pggate_config_reloads_total", "counter", &["result"]),
            ("pggate_build_info", "gauge", &["version"]),
        ];
        assert_eq!(spec.len(), names::ALL.len());
        for (name, kind, label_names) in spec {
            assert!(names::ALL.contains(name), "{name} has no constant");
            assert_line(&text, &format!("# TYPE {name} {kind}"));
            let sample = if *kind == "histogram" {
                format!("{name}_count")
            } else {
                (*name).to_owned()
            };
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("{sample}{{")) || l.starts_with(&format!("{sample} "))
                })
                .collect();
            assert!(!samples.is_empty(), "no sample of {name}");
            for label in *label_names {
                assert!(
                    samples.iter().all(|s| s.contains(&format!("{label}=\""))),
                    "{name} lacks label {label}: {samples:?}"
                );
            }
        }
    }

    #[test]
    fn every_fixed_label_value_starts_at_zero() {
        let text = Metrics::new("1").render();
        let families: [(&str, &str, &[&str]); 6] = [
            (
                "pggate_clients_rejected_total",
                "reason",
                RejectReasons::<()>::LABELS,
            ),
            ("pggate_queries_total", "route", Routes::<()>::LABELS),
            ("pggate_transactions_total", "route", Routes::<()>::LABELS),
            (
                "pggate_sessions_pinned_total",
                "reason",
                PinReasons::<()>::LABELS,
            ),
            ("pggate_errors_total", "kind", ErrorKinds::<()>::LABELS),
            (
                "pggate_config_reloads_total",
                "result",
                ReloadResults::<()>::LABELS,
            ),
        ];
        for (name, label, values) in families {
            for value in values {
                assert_line(&text, &format!("{name}{{{label}=\"{value}\"}} 0"));
            }
        }
        for route in ["primary", "replica"] {
            assert_line(
                &text,
                &format!("pggate_query_duration_seconds_count{{route=\"{route}\"}} 0"),
            );
        }
        for name in [
            "pggate_clients_connected",
            "pggate_clients_accepted_total",
            "pggate_pool_waiting_clients",
            "pggate_read_only_retries_total",
            "pggate_pipelined_reads_total",
            "pggate_pipelined_reads_queued",
        ] {
            assert_line(&text, &format!("{name} 0"));
        }
    }

    #[test]
    fn spec_reasons_routes_kinds_and_results_are_all_present() {
        for reason in [
            "max_clients",
            "login_timeout",
            "auth_failed",
            "protocol_error",
            "tls_required",
            "shutting_down",
        ] {
            assert!(RejectReasons::<()>::LABELS.contains(&reason), "{reason}");
        }
        assert_eq!(
            PinReasons::<()>::LABELS,
            [
                "set",
                "reset",
                "set_config",
                "prepare",
                "listen",
                "declare_with_hold",
                "temp_object",
                "advisory_lock",
                "load"
            ]
        );
        for kind in [
            "backend_connect",
            "backend_lost",
            "checkout_timeout",
            "protocol",
            "read_only_retry_failed",
        ] {
            assert!(ErrorKinds::<()>::LABELS.contains(&kind), "{kind}");
        }
        assert_eq!(Routes::<()>::LABELS, ["primary", "replica"]);
        assert_eq!(ReloadResults::<()>::LABELS, ["success", "failure"]);
    }

    #[test]
    fn build_info_is_one_with_the_version() {
        let text = Metrics::new("1.2.3").render();
        assert_line(&text, "pggate_build_info{version=\"1.2.3\"} 1");
    }

    #[test]
    fn handles_move_their_own_series() {
        let m = Metrics::new("1");
        m.clients_accepted.inc();
        m.clients_connected.set(3);
        m.clients_rejected.login_timeout.inc();
        m.queries.replica.inc_by(2);
        m.transactions.primary.inc();
        m.sessions_pinned.declare_with_hold.inc();
        m.errors.checkout_timeout.inc();
        m.pool_waiting_clients.set(4);
        m.read_only_retries.inc();
        m.pipelined_reads.inc();
        m.pipelined_reads_queued.set(2);
        m.config_reloads.failure.inc();
        let text = m.render();
        assert_line(&text, "pggate_clients_accepted_total 1");
        assert_line(&text, "pggate_clients_connected 3");
        assert_line(
            &text,
            "pggate_clients_rejected_total{reason=\"login_timeout\"} 1",
        );
        assert_line(
            &text,
            "pggate_clients_rejected_total{reason=\"max_clients\"} 0",
        );
        assert_line(&text, "pggate_queries_total{route=\"replica\"} 2");
        assert_line(&text, "pggate_queries_total{route=\"primary\"} 0");
        assert_line(&text, "pggate_transactions_total{route=\"primary\"} 1");
        assert_line(
            &text,
            "pggate_sessions_pinned_total{reason=\"declare_with_hold\"} 1",
        );
        assert_line(&text, "pggate_errors_total{kind=\"checkout_timeout\"} 1");
        assert_line(&text, "pggate_pool_waiting_clients 4");
        assert_line(&text, "pggate_read_only_retries_total 1");
        assert_line(&text, "pggate_pipelined_reads_total 1");
        assert_line(&text, "pggate_pipelined_reads_queued 2");
        assert_line(&text, "pggate_config_reloads_total{result=\"failure\"} 1");
        assert_line(&text, "pggate_config_reloads_total{result=\"success\"} 0");
    }

    #[test]
    fn query_duration_has_the_proxy_buckets() {
        let m = Metrics::new("1");
        m.query_duration.primary.observe(0.003);
        m.query_duration.primary.observe(20.0);
        let text = m.render();
        let bounds: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("pggate_query_duration_seconds_bucket{route=\"primary\""))
            .filter_map(|l| {
                l.split("le=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        let expected = [
            "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
            "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
        ];
        assert_eq!(bounds, expected);
        let p = "pggate_query_duration_seconds_bucket{route=\"primary\"";
        assert_line(&text, &format!("{p},le=\"0.0025\"}} 0"));
        assert_line(&text, &format!("{p},le=\"0.005\"}} 1"));
        assert_line(&text, &format!("{p},le=\"10\"}} 1"));
        assert_line(&text, &format!("{p},le=\"+Inf\"}} 2"));
        assert_line(
            &text,
            "pggate_query_duration_seconds_count{route=\"primary\"} 2",
        );
        assert_line(
            &text,
            "pggate_query_duration_seconds_count{route=\"replica\"} 0",
        );
    }

    #[test]
    fn backend_series_appear_when_resolved_and_disappear_when_forgotten() {
        let m = Metrics::new("1");
        assert!(!m.render().contains("backend=\"r1\""));

        let r1 = m.backend("r1", "replica");
        let text = m.render();
        assert_line(
            &text,
            "pggate_backend_up{backend=\"r1\",role=\"replica\"} 0",
        );
        assert_line(
            &text,
            "pggate_backend_connections{backend=\"r1\",state=\"idle\"} 0",
        );
        assert_line(
            &text,
            "pggate_backend_connections{backend=\"r1\",state=\"active\"} 0",
        );
        assert_line(
            &text,
            "pggate_backend_connect_failures_total{backend=\"r1\"} 0",
        );
        assert_line(
            &text,
            "pggate_backend_replication_lag_seconds{backend=\"r1\"} 0",
        );

        let p = m.backend("p", "primary");
        r1.up.set(1);
        r1.connections_idle.set(5);
        r1.connections_active.set(2);
        r1.connect_failures.inc();
        r1.replication_lag_seconds.set(0.5);
        p.up.set(1);
        let text = m.render();
        assert_line(
            &text,
            "pggate_backend_up{backend=\"r1\",role=\"replica\"} 1",
        );
        assert_line(
            &text,
            "pggate_backend_connections{backend=\"r1\",state=\"idle\"} 5",
        );
        assert_line(
            &text,
            "pggate_backend_connections{backend=\"r1\",state=\"active\"} 2",
        );
        assert_line(
            &text,
            "pggate_backend_connect_failures_total{backend=\"r1\"} 1",
        );
        assert_line(
            &text,
            "pggate_backend_replication_lag_seconds{backend=\"r1\"} 0.5",
        );
        assert_line(&text, "pggate_backend_up{backend=\"p\",role=\"primary\"} 1");

        assert!(m.forget_backend("r1"));
        assert!(!m.forget_backend("r1"));
        let text = m.render();
        assert!(!text.contains("backend=\"r1\""), "{text}");
        assert_line(&text, "pggate_backend_up{backend=\"p\",role=\"primary\"} 1");
    }

    #[test]
    fn resolving_a_backend_again_keeps_its_counters_and_follows_its_role() {
        let m = Metrics::new("1");
        m.backend("a", "replica").connect_failures.inc();
        let again = m.backend("a", "replica");
        again.connect_failures.inc();
        assert_eq!(again.connect_failures.get(), 2);

        // Promotion of a `role = "auto"` backend: the old role's series goes.
        let promoted = m.backend("a", "primary");
        promoted.up.set(1);
        let text = m.render();
        assert!(!text.contains("role=\"replica\""), "{text}");
        assert_line(&text, "pggate_backend_up{backend=\"a\",role=\"primary\"} 1");
        assert_line(
            &text,
            "pggate_backend_connect_failures_total{backend=\"a\"} 2",
        );

        assert!(m.forget_backend("a"));
        assert!(!m.render().contains("backend=\"a\""));
        let back = m.backend("a", "primary");
        assert_eq!(back.connect_failures.get(), 0);
    }

    #[test]
    fn metric_names_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for name in names::ALL {
            assert!(name.starts_with("pggate_"), "{name}");
            assert!(seen.insert(*name), "{name} listed twice");
        }
    }

    #[test]
    fn the_global_instance_is_created_once() {
        let first = metrics();
        assert!(std::ptr::eq(first, metrics()));
        assert!(std::ptr::eq(first, init(first.version())));
        assert!(has_line(
            &first.render(),
            &format!("pggate_build_info{{version=\"{}\"}} 1", first.version())
        ));
    }
}
