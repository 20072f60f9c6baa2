//! The configuration file (SPEC §2): the typed `Config` every other subsystem
//! reads, its built-in defaults, and the entry points that turn TOML text into a
//! validated `Config` or into every problem found (file, key, reason).
//!
//! This module owns the schema and its rules only. It opens no sockets, does no
//! DNS, and never panics on input; the only I/O is reading the config file in
//! `Config::load` and the files it names in `Config::check_files`.
//!
//! Submodules: `units` (duration and size strings), `read` (TOML tree to
//! `Config`: unknown keys, types, defaults), `validate` (rules between values),
//! `files` (TLS and credentials files named by the config).

mod files;
mod read;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use units::{parse_duration, parse_size, MAX_DURATION};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/pggate.toml";

/// The whole configuration file, every key filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub auth: AuthConfig,
    pub client_tls: ClientTlsConfig,
    pub backend_tls: BackendTlsConfig,
    pub pool: PoolConfig,
    pub routing: RoutingConfig,
    pub health: HealthConfig,
    pub backends: Vec<BackendConfig>,
}

/// `[proxy]`: the client-facing side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `host:port`; the host is an IP address or `localhost`, IPv6 in brackets.
    pub listen: String,
    /// Event-loop threads; 0 = one per CPU core.
    pub workers: usize,
    pub max_clients: usize,
    pub login_timeout: Duration,
    /// Zero means never.
    pub client_idle_timeout: Duration,
    /// Zero means close remaining clients as soon as the listener is closed.
    pub shutdown_timeout: Duration,
    /// Bytes, including the 4-byte length word.
    pub max_message_size: usize,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: log::LevelFilter,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `host:port` like `proxy.listen`; empty = metrics endpoint disabled.
    pub listen: String,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// libpq `.pgpass` file; empty = none.
    pub credentials_file: String,
    pub auth_user: String,
    pub auth_query: String,
}

/// `[client_tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsConfig {
    pub mode: ClientTlsMode,
    pub cert: String,
    pub key: String,
}

/// `[backend_tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTlsConfig {
    pub mode: BackendTlsMode,
    pub ca: String,
}

/// `[pool]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Per (backend, database, user); at least 1.
    pub size: usize,
    pub min_idle: usize,
    pub checkout_timeout: Duration,
    pub connect_timeout: Duration,
    /// At most 100; callers doubling `retry_backoff` should still saturate.
    pub connect_retries: u32,
    pub retry_backoff: Duration,
    /// Zero means idle connections are never closed for being idle.
    pub idle_timeout: Duration,
    /// Zero means connections are never recycled for age.
    pub max_lifetime: Duration,
    /// At least 1.
    pub max_prepared_statements: usize,
    /// A read waiting for a full pool may be sent down a connection whose
    /// running read was sent less than this long ago; zero turns it off.
    pub pipeline_window: Duration,
    /// At most this many reads wait behind one connection's running read; at least 1.
    pub pipeline_depth: usize,
    /// Once this many of a worker's connections to one backend are running,
    /// reads are pipelined behind them rather than taking another; at least 1.
    pub pipeline_after: usize,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    pub reads: ReadsTarget,
    /// As written in the file; SQL function names are case-insensitive, so
    /// compare them case-insensitively.
    pub write_functions: Vec<String>,
    /// Zero means lag is not checked.
    pub max_replica_lag: Duration,
    pub read_your_writes: ReadYourWrites,
    pub retry_read_only_errors: bool,
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub user: String,
    pub database: String,
}

/// One `[[backends]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Unique; defaults to `host:port` when the entry has no `name`.
    pub name: String,
    /// IP address (IPv6 without brackets) or DNS name.
    pub host: String,
    pub port: u16,
    pub role: Role,
    /// Share of replica reads, 0..=10000; 0 = this backend gets no plain reads.
    pub weight: u32,
}

/// Defines a config enum with its lowercase file spelling, `ALL`, `as_str`
/// and `Display`, so the spelling lives in exactly one place.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in the configuration file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// `auth.mode` (SPEC §5).
    AuthMode { Passthrough = "passthrough", Query = "query" }
}

config_enum! {
    /// `client_tls.mode` (SPEC §6).
    ClientTlsMode { Disable = "disable", Allow = "allow", Require = "require" }
}

config_enum! {
    /// `backend_tls.mode` (SPEC §6).
    BackendTlsMode {
        Disable = "disable",
        Prefer = "prefer",
        Require = "require",
        VerifyFull = "verify-full",
    }
}

config_enum! {
    /// `pool.mode` (SPEC §3).
    PoolMode { Transaction = "transaction", Session = "session" }
}

config_enum! {
    /// `routing.reads`.
    ReadsTarget { Replicas = "replicas", Primary = "primary" }
}

config_enum! {
    /// `routing.read_your_writes` (SPEC §4.2).
    ReadYourWrites { Off = "off", Lsn = "lsn" }
}

config_enum! {
    /// `backends.role`; `Auto` is classified by `pg_is_in_recovery()`.
    Role { Primary = "primary", Replica = "replica", Auto = "auto" }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".to_string(),
            workers: 0,
            max_clients: 10_000,
            login_timeout: Duration::from_secs(15),
            client_idle_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: log::LevelFilter::Info,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:8080".to_string(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Passthrough,
            credentials_file: String::new(),
            auth_user: String::new(),
            auth_query:
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin AND rolname = $1"
                    .to_string(),
        }
    }
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        ClientTlsConfig {
            mode: ClientTlsMode::Disable,
            cert: String::new(),
            key: String::new(),
        }
    }
}

impl Default for BackendTlsConfig {
    fn default() -> Self {
        BackendTlsConfig {
            mode: BackendTlsMode::Disable,
            ca: String::new(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            size: 20,
            min_idle: 0,
            checkout_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            connect_retries: 3,
            retry_backoff: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(10 * 60),
            max_lifetime: Duration::from_secs(60 * 60),
            max_prepared_statements: 1000,
            pipeline_window: Duration::from_millis(2),
            pipeline_depth: 8,
            pipeline_after: 2,
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            reads: ReadsTarget::Replicas,
            write_functions: Vec::new(),
            max_replica_lag: Duration::from_secs(10),
            read_your_writes: ReadYourWrites::Off,
            retry_read_only_errors: true,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            failures: 3,
            user: "postgres".to_string(),
            database: "postgres".to_string(),
        }
    }
}

impl Default for BackendConfig {
    /// The backend used when the file has no `[[backends]]`.
    fn default() -> Self {
        BackendConfig {
            name: "primary".to_string(),
            host: "127.0.0.1".to_string(),
            port: 5432,
            role: Role::Primary,
            weight: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            proxy: ProxyConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            auth: AuthConfig::default(),
            client_tls: ClientTlsConfig::default(),
            backend_tls: BackendTlsConfig::default(),
            pool: PoolConfig::default(),
            routing: RoutingConfig::default(),
            health: HealthConfig::default(),
            backends: vec![BackendConfig::default()],
        }
    }
}

impl Config {
    /// Parse TOML text; `origin` is the file name used in messages.
    ///
    /// Returns every problem found: syntax errors stop at the first one,
    /// unknown keys, wrong types and broken rules are all collected.
    pub fn parse(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        let root = match text.parse::<toml::Table>() {
            Ok(root) => root,
            Err(err) => return Err(vec![read::syntax_error(text, origin, &err)]),
        };
        let (config, mut errors, bad_keys) = read::read(&root, origin);
        errors.extend(validate::validate(&config, origin, &bad_keys));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Read and parse a file (a missing/unreadable file is one ConfigError naming it).
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(err) => Err(vec![ConfigError::new(
                &origin,
                "",
                format!("cannot read the configuration file: {err}"),
            )]),
        }
    }

    /// Extra checks for `--check` and reload: files named by the config
    /// (client_tls cert/key when mode != disable, backend_tls.ca when
    /// verify-full, auth.credentials_file when non-empty) exist and are
    /// readable; PEM files contain a "-----BEGIN" block of the right kind.
    /// Returns every problem.
    pub fn check_files(&self, origin: &str) -> Vec<ConfigError> {
        files::check_files(self, origin)
    }

    /// The `role = "primary"` backend, if any (none when every backend is `auto`).
    pub fn primary(&self) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.role == Role::Primary)
    }
}

/// One problem with a configuration: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name (or whatever the caller passed as origin).
    pub origin: String,
    /// Full key path such as `pool.size` or `backends[2].port` (entries counted
    /// from 1); empty for problems with the whole file.
    pub key: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

impl ConfigError {
    fn new(origin: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}
