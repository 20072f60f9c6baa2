//! Turns a parsed TOML tree into a `Config`: rejects unknown keys (with the
//! full key path and a suggestion), checks each value's type and spelling, and
//! fills in defaults. Rules that relate values to each other live in
//! `validate`; this file only judges one value at a time.
//!
//! Every problem is collected rather than returned early. A key whose value
//! was rejected keeps its default and is remembered in the "bad keys" set so
//! that `validate` does not pile a second, misleading complaint on top.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use toml::{Table, Value};

use super::units::{parse_duration, parse_size};
use super::{
    AuthConfig, AuthMode, BackendConfig, BackendTlsConfig, BackendTlsMode, ClientTlsConfig,
    ClientTlsMode, Config, ConfigError, HealthConfig, LogConfig, MetricsConfig, PoolConfig,
    PoolMode, ProxyConfig, ReadYourWrites, ReadsTarget, Role, RoutingConfig,
};

/// Key paths whose value was rejected while reading.
pub(super) type BadKeys = BTreeSet<String>;

/// The known keys of every table, in file order. `backends` is the array.
pub(super) const SECTIONS: &[(&str, &[&str])] = &[
    (
        "proxy",
        &[
            "listen",
            "workers",
            "max_clients",
            "login_timeout",
            "client_idle_timeout",
            "shutdown_timeout",
            "max_message_size",
        ],
    ),
    ("log", &["level"]),
    ("metrics", &["listen"]),
    (
        "auth",
        &["mode", "credentials_file", "auth_user", "auth_query"],
    ),
    ("client_tls", &["mode", "cert", "key"]),
    ("backend_tls", &["mode", "ca"]),
    (
        "pool",
        &[
            "mode",
            "size",
            "min_idle",
            "checkout_timeout",
            "connect_timeout",
            "connect_retries",
            "retry_backoff",
            "idle_timeout",
            "max_lifetime",
            "max_prepared_statements",
            "pipeline_window",
            "pipeline_depth",
            "pipeline_after",
        ],
    ),
    (
        "routing",
        &[
            "reads",
            "write_functions",
            "max_replica_lag",
            "read_your_writes",
            "retry_read_only_errors",
        ],
    ),
    (
        "health",
        &["interval", "timeout", "failures", "user", "database"],
    ),
    ("backends", &["name", "host", "port", "role", "weight"]),
];

fn section_keys(name: &str) -> &'static [&'static str] {
    SECTIONS
        .iter()
        .find(|(section, _)| *section == name)
        .map(|&(_, keys)| keys)
        .unwrap_or(&[])
}

/// A TOML syntax error as one line: position and message.
pub(super) fn syntax_error(text: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let reason = match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map_or(0, |last| last.chars().count())
                + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    };
    ConfigError::new(origin, "", reason)
}

/// Read every section of `root`; returns the config (defaults where a value
/// was missing or rejected), the problems, and the rejected key paths.
pub(super) fn read(root: &Table, origin: &str) -> (Config, Vec<ConfigError>, BadKeys) {
    let mut reader = Reader {
        origin,
        errors: Vec::new(),
        bad: BadKeys::new(),
    };
    reader.unknown_top_level_keys(root);
    let config = Config {
        proxy: reader.proxy(root),
        log: reader.log(root),
        metrics: reader.metrics(root),
        auth: reader.auth(root),
        client_tls: reader.client_tls(root),
        backend_tls: reader.backend_tls(root),
        pool: reader.pool(root),
        routing: reader.routing(root),
        health: reader.health(root),
        backends: reader.backends(root),
    };
    (config, reader.errors, reader.bad)
}

/// One table being read, with the key path that leads to it.
struct Section<'v> {
    path: String,
    table: Option<&'v Table>,
}

struct Reader<'o> {
    origin: &'o str,
    errors: Vec<ConfigError>,
    bad: BadKeys,
}

impl Reader<'_> {
    fn error(&mut self, key: String, reason: String) {
        self.errors.push(ConfigError::new(self.origin, key, reason));
    }

    fn unknown_top_level_keys(&mut self, root: &Table) {
        for key in root.keys() {
            if SECTIONS.iter().any(|(section, _)| section == key) {
                continue;
            }
            let path = key_path("", key);
            let homes: Vec<String> = SECTIONS
                .iter()
                .filter(|(_, keys)| keys.contains(&key.as_str()))
                .map(|(section, _)| format!("\"{section}.{key}\""))
                .collect();
            let hint = if !homes.is_empty() {
                format!(
                    "; it belongs in a table: did you mean {}?",
                    homes.join(" or ")
                )
            } else if let Some(close) = closest(key, SECTIONS.iter().map(|(s, _)| *s)) {
                format!("; did you mean \"{close}\"?")
            } else {
                let names: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
                format!("; the tables are: {}", names.join(", "))
            };
            self.error(path.clone(), format!("unknown key \"{path}\"{hint}"));
        }
    }

    fn unknown_keys(&mut self, table: &Table, path: &str, known: &[&str]) {
        for key in table.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let full = key_path(path, key);
            let hint = match closest(key, known.iter().copied()) {
                Some(close) => {
                    // The value was probably meant for `close`; its default
                    // must not draw a second complaint.
                    let meant = key_path(path, close);
                    let hint = format!("; did you mean \"{meant}\"?");
                    self.bad.insert(meant);
                    hint
                }
                None => format!("; accepted keys here: {}", known.join(", ")),
            };
            self.error(full.clone(), format!("unknown key \"{full}\"{hint}"));
        }
    }

    /// The top-level table `name`, after reporting its unknown keys.
    fn section<'v>(&mut self, root: &'v Table, name: &str) -> Section<'v> {
        let table = match root.get(name) {
            None => None,
            Some(Value::Table(table)) => {
                self.unknown_keys(table, name, section_keys(name));
                Some(table)
            }
            Some(other) => {
                self.error(
                    name.to_string(),
                    format!("expected a table ([{name}]), found {}", Describe(other)),
                );
                None
            }
        };
        Section {
            path: name.to_string(),
            table,
        }
    }

    /// The value of `key` converted by `convert`, or `default` when the key
    /// is absent or its value is rejected (which is reported).
    fn field<T>(
        &mut self,
        section: &Section<'_>,
        key: &str,
        default: T,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> T {
        let Some(value) = section.table.and_then(|table| table.get(key)) else {
            return default;
        };
        match convert(value) {
            Ok(converted) => converted,
            Err(reason) => {
                let path = key_path(&section.path, key);
                self.bad.insert(path.clone());
                self.error(path, reason);
                default
            }
        }
    }

    fn proxy(&mut self, root: &Table) -> ProxyConfig {
        let s = self.section(root, "proxy");
        let d = ProxyConfig::default();
        ProxyConfig {
            listen: self.field(&s, "listen", d.listen, string),
            workers: self.field(&s, "workers", d.workers, unsigned),
            max_clients: self.field(&s, "max_clients", d.max_clients, unsigned),
            login_timeout: self.field(&s, "login_timeout", d.login_timeout, duration),
            client_idle_timeout: self.field(
                &s,
                "client_idle_timeout",
                d.client_idle_timeout,
                duration,
            ),
            shutdown_timeout: self.field(&s, "shutdown_timeout", d.shutdown_timeout, duration),
            max_message_size: self.field(&s, "max_message_size", d.max_message_size, size),
        }
    }

    fn log(&mut self, root: &Table) -> LogConfig {
        let s = self.section(root, "log");
        let d = LogConfig::default();
        LogConfig {
            level: self.field(&s, "level", d.level, choice),
        }
    }

    fn metrics(&mut self, root: &Table) -> MetricsConfig {
        let s = self.section(root, "metrics");
        let d = MetricsConfig::default();
        MetricsConfig {
            listen: self.field(&s, "listen", d.listen, string),
        }
    }

    fn auth(&mut self, root: &Table) -> AuthConfig {
        let s = self.section(root, "auth");
        let d = AuthConfig::default();
        AuthConfig {
            mode: self.field(&s, "mode", d.mode, choice),
            credentials_file: self.field(&s, "credentials_file", d.credentials_file, string),
            auth_user: self.field(&s, "auth_user", d.auth_user, string),
            auth_query: self.field(&s, "auth_query", d.auth_query, string),
        }
    }

    fn client_tls(&mut self, root: &Table) -> ClientTlsConfig {
        let s = self.section(root, "client_tls");
        let d = ClientTlsConfig::default();
        ClientTlsConfig {
            mode: self.field(&s, "mode", d.mode, choice),
            cert: self.field(&s, "cert", d.cert, string),
            key: self.field(&s, "key", d.key, string),
        }
    }

    fn backend_tls(&mut self, root: &Table) -> BackendTlsConfig {
        let s = self.section(root, "backend_tls");
        let d = BackendTlsConfig::default();
        BackendTlsConfig {
            mode: self.field(&s, "mode", d.mode, choice),
            ca: self.field(&s, "ca", d.ca, string),
        }
    }

    fn pool(&mut self, root: &Table) -> PoolConfig {
        let s = self.section(root, "pool");
        let d = PoolConfig::default();
        PoolConfig {
            mode: self.field(&s, "mode", d.mode, choice),
            size: self.field(&s, "size", d.size, unsigned),
            min_idle: self.field(&s, "min_idle", d.min_idle, unsigned),
            checkout_timeout: self.field(&s, "checkout_timeout", d.checkout_timeout, duration),
            connect_timeout: self.field(&s, "connect_timeout", d.connect_timeout, duration),
            connect_retries: self.field(&s, "connect_retries", d.connect_retries, unsigned),
            retry_backoff: self.field(&s, "retry_backoff", d.retry_backoff, duration),
            idle_timeout: self.field(&s, "idle_timeout", d.idle_timeout, duration),
            max_lifetime: self.field(&s, "max_lifetime", d.max_lifetime, duration),
            max_prepared_statements: self.field(
                &s,
                "max_prepared_statements",
                d.max_prepared_statements,
                unsigned,
            ),
            pipeline_window: self.field(&s, "pipeline_window", d.pipeline_window, duration),
            pipeline_depth: self.field(&s, "pipeline_depth", d.pipeline_depth, unsigned),
            pipeline_after: self.field(&s, "pipeline_after", d.pipeline_after, unsigned),
        }
    }

    fn routing(&mut self, root: &Table) -> RoutingConfig {
        let s = self.section(root, "routing");
        let d = RoutingConfig::default();
        RoutingConfig {
            reads: self.field(&s, "reads", d.reads, choice),
            write_functions: self.field(&s, "write_functions", d.write_functions, string_list),
            max_replica_lag: self.field(&s, "max_replica_lag", d.max_replica_lag, duration),
            read_your_writes: self.field(&s, "read_your_writes", d.read_your_writes, choice),
            retry_read_only_errors: self.field(
                &s,
                "retry_read_only_errors",
                d.retry_read_only_errors,
                boolean,
            ),
        }
    }

    fn health(&mut self, root: &Table) -> HealthConfig {
        let s = self.section(root, "health");
        let d = HealthConfig::default();
        HealthConfig {
            interval: self.field(&s, "interval", d.interval, duration),
            timeout: self.field(&s, "timeout", d.timeout, duration),
            failures: self.field(&s, "failures", d.failures, unsigned),
            user: self.field(&s, "user", d.user, string),
            database: self.field(&s, "database", d.database, string),
        }
    }

    /// `[[backends]]`: absent means the built-in primary; present but empty
    /// is left for `validate` to reject.
    fn backends(&mut self, root: &Table) -> Vec<BackendConfig> {
        let items = match root.get("backends") {
            None => return vec![BackendConfig::default()],
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.bad.insert("backends".to_string());
                self.error(
                    "backends".to_string(),
                    format!(
                        "expected an array of tables ([[backends]]), found {}",
                        Describe(other)
                    ),
                );
                return Vec::new();
            }
        };
        let mut backends = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let path = backend_path(index);
            match item {
                Value::Table(table) => backends.push(self.backend(table, path)),
                other => {
                    self.bad.insert("backends".to_string());
                    self.error(
                        path,
                        format!(
                            "expected a table ([[backends]] entry), found {}",
                            Describe(other)
                        ),
                    );
                }
            }
        }
        backends
    }

    fn backend(&mut self, table: &Table, path: String) -> BackendConfig {
        self.unknown_keys(table, &path, section_keys("backends"));
        let s = Section {
            path,
            table: Some(table),
        };
        let d = BackendConfig::default();
        let host = self.field(&s, "host", d.host, string);
        let port = self.field(&s, "port", d.port, unsigned);
        let default_name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let name_path = key_path(&s.path, "name");
        let derived_from_bad = ["host", "port"]
            .iter()
            .any(|field| self.bad.contains(&key_path(&s.path, field)));
        if derived_from_bad && !table.contains_key("name") {
            self.bad.insert(name_path);
        }
        BackendConfig {
            name: self.field(&s, "name", default_name, string),
            host,
            port,
            role: self.field(&s, "role", d.role, choice),
            weight: self.field(&s, "weight", d.weight, unsigned),
        }
    }
}

/// Key path of the `index`th (from 0) `[[backends]]` entry, counted from 1.
pub(super) fn backend_path(index: usize) -> String {
    format!("backends[{}]", index.saturating_add(1))
}

/// `parent.key`, quoting `key` the way TOML would when it is not a bare key.
fn key_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// The candidate nearest to `word` when it is close enough to be a typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting an adjacent transposition as one edit (optimal
/// string alignment), ASCII case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    // rows[i][j] = distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// "a string (\"x\")", "an integer (5)", ... for messages.
struct Describe<'v>(&'v Value);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::String(s) => write!(f, "the string {s:?}"),
            Value::Integer(n) => write!(f, "the integer {n}"),
            Value::Float(x) => write!(f, "the number {x}"),
            Value::Boolean(b) => write!(f, "the boolean {b}"),
            Value::Datetime(d) => write!(f, "the date-time {d}"),
            Value::Array(_) => f.write_str("an array"),
            Value::Table(_) => f.write_str("a table"),
        }
    }
}

fn string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", Describe(other))),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected true or false (without quotes), found {}",
            Describe(other)
        )),
    }
}

/// A whole number that fits `T` (usize, u32, u16).
fn unsigned<T>(value: &Value) -> Result<T, String>
where
    T: TryFrom<i64> + Bounded,
{
    match value {
        Value::Integer(n) => T::try_from(*n).map_err(|_| {
            format!(
                "{n} is out of range; expected a whole number from 0 to {}",
                T::MAX_TEXT
            )
        }),
        other => Err(format!(
            "expected a whole number (without quotes), found {}",
            Describe(other)
        )),
    }
}

/// The largest value of an integer type, for messages.
trait Bounded {
    const MAX_TEXT: &'static str;
}

impl Bounded for usize {
    const MAX_TEXT: &'static str = if usize::BITS == 64 {
        "18446744073709551615"
    } else {
        "4294967295"
    };
}

impl Bounded for u32 {
    const MAX_TEXT: &'static str = "4294967295";
}

impl Bounded for u16 {
    const MAX_TEXT: &'static str = "65535";
}

fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => parse_duration(s),
        other => Err(format!(
            "expected a duration string with a unit, such as \"250ms\", \"5s\", \"10m\" or \"1h\"; found {}",
            Describe(other)
        )),
    }
}

/// A size string (`"64MiB"`) or a plain non-negative integer of bytes.
fn size(value: &Value) -> Result<usize, String> {
    match value {
        Value::String(s) => parse_size(s),
        Value::Integer(n) => usize::try_from(*n)
            .map_err(|_| format!("{n} is out of range; expected a size such as \"64MiB\"")),
        other => Err(format!(
            "expected a size such as \"64KiB\" or \"64MiB\", found {}",
            Describe(other)
        )),
    }
}

fn string_list(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "expected an array of strings, such as [\"my_func\"]; found {}",
            Describe(value)
        ));
    };
    let mut strings = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => strings.push(s.clone()),
            other => {
                return Err(format!(
                    "expected an array of strings; item {} is {}",
                    index + 1,
                    Describe(other)
                ))
            }
        }
    }
    Ok(strings)
}

/// A value spelled as one of a fixed set of lowercase words.
trait Choice: Copy + 'static {
    fn all() -> &'static [Self];
    fn name(self) -> &'static str;
}

fn choice<T: Choice>(value: &Value) -> Result<T, String> {
    let names: Vec<String> = T::all()
        .iter()
        .map(|c| format!("\"{}\"", c.name()))
        .collect();
    let accepted = names.join(", ");
    match value {
        Value::String(s) => T::all()
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("{s:?} is not accepted; expected one of {accepted}")),
        other => Err(format!(
            "expected one of {accepted}, found {}",
            Describe(other)
        )),
    }
}

macro_rules! choice_for_config_enum {
    ($($name:ident),+) => {
        $(impl Choice for $name {
            fn all() -> &'static [Self] {
                $name::ALL
            }
            fn name(self) -> &'static str {
                self.as_str()
            }
        })+
    };
}

choice_for_config_enum!(
    AuthMode,
    ClientTlsMode,
    BackendTlsMode,
    PoolMode,
    ReadsTarget,
    ReadYourWrites,
    Role
);

impl Choice for log::LevelFilter {
    fn all() -> &'static [Self] {
        use log::LevelFilter::{Debug, Error, Info, Trace, Warn};
        &[Error, Warn, Info, Debug, Trace]
    }
    fn name(self) -> &'static str {
        match self {
            log::LevelFilter::Off => "off",
            log::LevelFilter::Error => "error",
            log::LevelFilter::Warn => "warn",
            log::LevelFilter::Info => "info",
            log::LevelFilter::Debug => "debug",
            log::LevelFilter::Trace => "trace",
        }
    }
}
