//! Rules a well-typed `Config` must still satisfy (ranges, values that depend
//! on each other, the backend list). Every broken rule is reported; a rule
//! is skipped when a key it reads was already rejected while reading, so one
//! typo gives one message. No I/O and no DNS here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::read::{backend_path, BadKeys};
use super::{AuthMode, BackendConfig, BackendTlsMode, ClientTlsMode, Config, ConfigError, Role};

/// Largest `proxy.workers`.
pub(super) const MAX_WORKERS: usize = 1024;
/// Largest `pool.connect_retries`; the backoff doubles per attempt.
pub(super) const MAX_CONNECT_RETRIES: u32 = 100;
/// Largest `backends.weight`.
pub(super) const MAX_WEIGHT: u32 = 10_000;
/// `proxy.max_message_size` bounds.
pub(super) const MIN_MESSAGE_SIZE: usize = 1024;
pub(super) const MAX_MESSAGE_SIZE: usize = 1024 * 1024 * 1024;

pub(super) fn validate(config: &Config, origin: &str, bad: &BadKeys) -> Vec<ConfigError> {
    let mut rules = Rules {
        origin,
        bad,
        errors: Vec::new(),
    };
    rules.proxy(config);
    rules.metrics(config);
    rules.auth(config);
    rules.tls(config);
    rules.pool(config);
    rules.routing(config);
    rules.health(config);
    rules.backends(&config.backends);
    rules.errors
}

struct Rules<'a> {
    origin: &'a str,
    bad: &'a BadKeys,
    errors: Vec<ConfigError>,
}

impl Rules<'_> {
    /// Report `reason` against `key` unless one of `reads` was already
    /// rejected while reading (its value here is only a stand-in default).
    fn check(&mut self, ok: bool, key: &str, reads: &[&str], reason: impl FnOnce() -> String) {
        if ok || reads.iter().any(|k| self.bad.contains(*k)) {
            return;
        }
        self.errors
            .push(ConfigError::new(self.origin, key.to_string(), reason()));
    }

    fn positive(&mut self, value: Duration, key: &str) {
        self.check(!value.is_zero(), key, &[key], || {
            "must be longer than zero, such as \"5s\"".to_string()
        });
    }

    fn not_empty(&mut self, value: &str, key: &str, reason: &str) {
        self.check(!value.trim().is_empty(), key, &[key], || reason.to_string());
    }

    fn proxy(&mut self, config: &Config) {
        let proxy = &config.proxy;
        if let Err(reason) = check_listen(&proxy.listen) {
            self.check(false, "proxy.listen", &["proxy.listen"], || reason);
        }
        self.check(
            proxy.workers <= MAX_WORKERS,
            "proxy.workers",
            &["proxy.workers"],
            || {
                format!(
                    "{} is too many; expected 0 (one per CPU core) to {MAX_WORKERS}",
                    proxy.workers
                )
            },
        );
        self.check(
            proxy.max_clients >= 1,
            "proxy.max_clients",
            &["proxy.max_clients"],
            || "must be at least 1".to_string(),
        );
        self.positive(proxy.login_timeout, "proxy.login_timeout");
        let size = proxy.max_message_size;
        self.check(
            (MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&size),
            "proxy.max_message_size",
            &["proxy.max_message_size"],
            || format!("{size} bytes is out of range; expected \"1KiB\" to \"1GiB\""),
        );
    }

    fn metrics(&mut self, config: &Config) {
        let listen = &config.metrics.listen;
        if listen.is_empty() {
            return;
        }
        if let Err(reason) = check_listen(listen) {
            self.check(false, "metrics.listen", &["metrics.listen"], || {
                format!("{reason}; or \"\" to disable metrics")
            });
        }
    }

    fn auth(&mut self, config: &Config) {
        let auth = &config.auth;
        if auth.mode != AuthMode::Query || self.bad.contains("auth.mode") {
            return;
        }
        self.not_empty(
            &auth.auth_user,
            "auth.auth_user",
            "must name the role that runs auth_query when auth.mode = \"query\"",
        );
        self.not_empty(
            &auth.credentials_file,
            "auth.credentials_file",
            "must name a .pgpass file holding auth_user's password when auth.mode = \"query\"",
        );
        self.not_empty(
            &auth.auth_query,
            "auth.auth_query",
            "must be a query returning (rolname, rolpassword) for $1 when auth.mode = \"query\"",
        );
    }

    fn tls(&mut self, config: &Config) {
        let client = &config.client_tls;
        if client.mode != ClientTlsMode::Disable && !self.bad.contains("client_tls.mode") {
            let mode = client.mode;
            for (value, key, what) in [
                (&client.cert, "client_tls.cert", "PEM certificate chain"),
                (&client.key, "client_tls.key", "PEM private key"),
            ] {
                self.not_empty(
                    value,
                    key,
                    &format!("must name a {what} file when client_tls.mode = \"{mode}\""),
                );
            }
        }
        let backend = &config.backend_tls;
        if backend.mode == BackendTlsMode::VerifyFull && !self.bad.contains("backend_tls.mode") {
            self.not_empty(
                &backend.ca,
                "backend_tls.ca",
                "must name a PEM CA bundle file when backend_tls.mode = \"verify-full\"",
            );
        }
    }

    fn pool(&mut self, config: &Config) {
        let pool = &config.pool;
        self.check(pool.size >= 1, "pool.size", &["pool.size"], || {
            "must be at least 1".to_string()
        });
        self.check(
            pool.min_idle <= pool.size,
            "pool.min_idle",
            &["pool.min_idle", "pool.size"],
            || {
                format!(
                    "{} is more than pool.size ({}); expected 0 to pool.size",
                    pool.min_idle, pool.size
                )
            },
        );
        self.positive(pool.checkout_timeout, "pool.checkout_timeout");
        self.positive(pool.connect_timeout, "pool.connect_timeout");
        self.check(
            pool.connect_retries <= MAX_CONNECT_RETRIES,
            "pool.connect_retries",
            &["pool.connect_retries"],
            || {
                format!(
                    "{} is too many; expected 0 to {MAX_CONNECT_RETRIES}",
                    pool.connect_retries
                )
            },
        );
        self.check(
            pool.max_prepared_statements >= 1,
            "pool.max_prepared_statements",
            &["pool.max_prepared_statements"],
            || "must be at least 1".to_string(),
        );
        self.check(
            pool.pipeline_after >= 1,
            "pool.pipeline_after",
            &["pool.pipeline_after"],
            || "must be at least 1".to_string(),
        );
        self.check(
            pool.pipeline_depth >= 1,
            "pool.pipeline_depth",
            &["pool.pipeline_depth"],
            || {
                "must be at least 1 (turn pipelining off with pool.pipeline_window = \"0ms\")"
                    .to_string()
            },
        );
    }

    fn routing(&mut self, config: &Config) {
        for (index, name) in config.routing.write_functions.iter().enumerate() {
            let ok = !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '(');
            self.check(
                ok,
                "routing.write_functions",
                &["routing.write_functions"],
                || {
                    format!(
                    "item {} ({name:?}) is not a function name; expected a bare name such as \"my_func\"",
                    index + 1
                )
                },
            );
        }
    }

    fn health(&mut self, config: &Config) {
        let health = &config.health;
        self.positive(health.interval, "health.interval");
        self.positive(health.timeout, "health.timeout");
        self.check(
            health.failures >= 1,
            "health.failures",
            &["health.failures"],
            || "must be at least 1".to_string(),
        );
        self.not_empty(
            &health.user,
            "health.user",
            "must name the role health probes log in as",
        );
        self.not_empty(
            &health.database,
            "health.database",
            "must name the database health probes connect to",
        );
    }

    fn backends(&mut self, backends: &[BackendConfig]) {
        if self.bad.contains("backends") {
            return;
        }
        self.check(!backends.is_empty(), "backends", &[], || {
            "at least one [[backends]] entry is required".to_string()
        });
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, backend) in backends.iter().enumerate() {
            let path = backend_path(index);
            let key = |field: &str| format!("{path}.{field}");
            self.backend(backend, &path);
            if let Some(&first) = names.get(backend.name.as_str()) {
                self.check(false, &key("name"), &[&key("name")], || {
                    format!(
                        "{:?} is already the name of {}; names must be unique",
                        backend.name,
                        backend_path(first)
                    )
                });
            } else {
                names.insert(&backend.name, index);
            }
        }
        self.roles(backends);
    }

    fn backend(&mut self, backend: &BackendConfig, path: &str) {
        let name_key = format!("{path}.name");
        self.check(
            !backend.name.trim().is_empty() && !backend.name.chars().any(char::is_control),
            &name_key,
            &[&name_key],
            || "must be a non-empty label without control characters".to_string(),
        );
        let host_key = format!("{path}.host");
        if let Err(reason) = check_host(&backend.host) {
            self.check(false, &host_key, &[&host_key], || reason);
        }
        let port_key = format!("{path}.port");
        self.check(backend.port != 0, &port_key, &[&port_key], || {
            "must be 1 to 65535".to_string()
        });
        let weight_key = format!("{path}.weight");
        self.check(
            backend.weight <= MAX_WEIGHT,
            &weight_key,
            &[&weight_key],
            || {
                format!(
                    "{} is too large; expected 0 (no reads) to {MAX_WEIGHT}",
                    backend.weight
                )
            },
        );
    }

    /// Exactly one primary, or at most one when some backend is `auto`.
    fn roles(&mut self, backends: &[BackendConfig]) {
        let role_keys: Vec<String> = (0..backends.len())
            .map(|index| format!("{}.role", backend_path(index)))
            .collect();
        let role_keys: Vec<&str> = role_keys.iter().map(String::as_str).collect();
        let primaries: Vec<String> = backends
            .iter()
            .filter(|b| b.role == Role::Primary)
            .map(|b| format!("{:?}", b.name))
            .collect();
        let any_auto = backends.iter().any(|b| b.role == Role::Auto);
        if primaries.len() > 1 {
            self.check(false, "backends", &role_keys, || {
                format!(
                    "{} backends have role = \"primary\" ({}); at most one may",
                    primaries.len(),
                    primaries.join(", ")
                )
            });
        } else if primaries.is_empty() && !any_auto && !backends.is_empty() {
            self.check(false, "backends", &role_keys, || {
                "no backend has role = \"primary\"; exactly one must, \
                 unless role = \"auto\" backends are used"
                    .to_string()
            });
        }
    }
}

/// A listen address: `IP:port`, `[IPv6]:port` or `localhost:port`. Port 0
/// lets the kernel choose. No name resolution happens here.
pub(super) fn check_listen(listen: &str) -> Result<(), String> {
    const ACCEPTED: &str =
        "expected IP:port, [IPv6]:port or localhost:port, such as \"127.0.0.1:6432\"";
    if listen.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(format!("{listen:?} has no port; {ACCEPTED}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{listen:?} has no valid port (0 to 65535); {ACCEPTED}"
        ));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{listen:?}: write IPv6 addresses in brackets, such as \"[::1]:6432\""
        ));
    }
    Err(format!(
        "{listen:?}: {host:?} is not an IP address or localhost; {ACCEPTED}"
    ))
}

/// A backend host: an IP address (IPv6 without brackets) or a DNS name.
/// Unix-domain socket directories are not supported.
pub(super) fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() {
        return Err("must be an IP address or host name".to_string());
    }
    if host.starts_with('/') {
        return Err(format!(
            "{host:?} looks like a Unix-domain socket directory, which is not supported; \
             give an IP address or host name"
        ));
    }
    if host.starts_with('[') {
        return Err(format!(
            "{host:?}: write IPv6 addresses without brackets, such as \"::1\""
        ));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if host.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not an IP address or host name; expected e.g. \"10.0.0.5\" or \"db1.example.com\""
        ))
    }
}
