//! Tests for the configuration schema, one per promise of SPEC §2 and of the
//! validation rules: defaults, unknown keys, types, rules, files, units.

use std::path::PathBuf;
use std::time::Duration;

use super::read::SECTIONS;
use super::*;

const ORIGIN: &str = "/etc/pggate.toml";
const EXAMPLE: &str = include_str!("../../config/pggate.toml");

fn parse_ok(text: &str) -> Config {
    match Config::parse(text, ORIGIN) {
        Ok(config) => config,
        Err(errors) => panic!("expected {text:?} to be accepted, got {errors:#?}"),
    }
}

fn parse_err(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, ORIGIN) {
        Ok(config) => panic!("expected {text:?} to be rejected, got {config:#?}"),
        Err(errors) => errors,
    }
}

/// Asserts `text` is rejected with exactly one error, on `key`, whose
/// rendered message contains every one of `words`.
fn assert_single_error(text: &str, key: &str, words: &[&str]) {
    let errors = parse_err(text);
    assert_eq!(
        errors.len(),
        1,
        "expected one error for {text:?}: {errors:#?}"
    );
    let error = &errors[0];
    assert_eq!(error.origin, ORIGIN);
    assert_eq!(error.key, key, "wrong key for {text:?}: {error}");
    let shown = error.to_string();
    for word in words {
        assert!(shown.contains(word), "{shown:?} should mention {word:?}");
    }
}

fn keys(errors: &[ConfigError]) -> Vec<&str> {
    errors.iter().map(|e| e.key.as_str()).collect()
}

fn backends(entries: &[&str]) -> String {
    entries
        .iter()
        .map(|body| format!("[[backends]]\n{body}\n"))
        .collect()
}

/// A scratch directory unique to one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pggate-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

// ---- defaults -------------------------------------------------------------

#[test]
fn empty_file_means_built_in_defaults() {
    assert_eq!(parse_ok(""), Config::default());
    assert_eq!(parse_ok("# only a comment\n\n   \n"), Config::default());
}

#[test]
fn empty_tables_mean_built_in_defaults() {
    let text = "[proxy]\n[log]\n[metrics]\n[auth]\n[client_tls]\n[backend_tls]\n\
                [pool]\n[routing]\n[health]\n";
    assert_eq!(parse_ok(text), Config::default());
}

#[test]
fn every_default_is_the_one_in_spec() {
    let c = Config::default();
    assert_eq!(c.proxy.listen, "127.0.0.1:6432");
    assert_eq!(c.proxy.workers, 0);
    assert_eq!(c.proxy.max_clients, 10_000);
    assert_eq!(c.proxy.login_timeout, Duration::from_secs(15));
    assert_eq!(c.proxy.client_idle_timeout, Duration::ZERO);
    assert_eq!(c.proxy.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.proxy.max_message_size, 64 * 1024 * 1024);
    assert_eq!(c.log.level, log::LevelFilter::Info);
    assert_eq!(c.metrics.listen, "127.0.0.1:8080");
    assert_eq!(c.auth.mode, AuthMode::Passthrough);
    assert_eq!(c.auth.credentials_file, "");
    assert_eq!(c.auth.auth_user, "");
    assert_eq!(
        c.auth.auth_query,
        "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin AND rolname = $1"
    );
    assert_eq!(c.client_tls.mode, ClientTlsMode::Disable);
    assert_eq!(c.client_tls.cert, "");
    assert_eq!(c.client_tls.key, "");
    assert_eq!(c.backend_tls.mode, BackendTlsMode::Disable);
    assert_eq!(c.backend_tls.ca, "");
    assert_eq!(c.pool.mode, PoolMode::Transaction);
    assert_eq!(c.pool.size, 20);
    assert_eq!(c.pool.min_idle, 0);
    assert_eq!(c.pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(c.pool.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.pool.connect_retries, 3);
    assert_eq!(c.pool.retry_backoff, Duration::from_millis(100));
    assert_eq!(c.pool.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.pool.max_lifetime, Duration::from_secs(3600));
    assert_eq!(c.pool.max_prepared_statements, 1000);
    assert_eq!(c.routing.reads, ReadsTarget::Replicas);
    assert!(c.routing.write_functions.is_empty());
    assert_eq!(c.routing.max_replica_lag, Duration::from_secs(10));
    assert_eq!(c.routing.read_your_writes, ReadYourWrites::Off);
    assert!(c.routing.retry_read_only_errors);
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert_eq!(c.health.timeout, Duration::from_secs(1));
    assert_eq!(c.health.failures, 3);
    assert_eq!(c.health.user, "postgres");
    assert_eq!(c.health.database, "postgres");
    assert_eq!(
        c.backends,
        vec![BackendConfig {
            name: "primary".to_string(),
            host: "127.0.0.1".to_string(),
            port: 5432,
            role: Role::Primary,
            weight: 1,
        }]
    );
    assert_eq!(c.primary(), c.backends.first());
}

#[test]
fn example_config_equals_the_defaults() {
    assert_eq!(parse_ok(EXAMPLE), Config::default());
}

#[test]
fn example_config_shows_every_key_with_a_comment() {
    let root: toml::Table = EXAMPLE.parse().expect("example parses");
    for (section, keys) in SECTIONS {
        let table = match root.get(*section) {
            Some(toml::Value::Table(table)) => table,
            Some(toml::Value::Array(items)) => match items.first() {
                Some(toml::Value::Table(table)) => table,
                _ => panic!("[[{section}]] has no entry"),
            },
            _ => panic!("example lacks [{section}]"),
        };
        for key in *keys {
            assert!(table.contains_key(*key), "example lacks {section}.{key}");
        }
        assert_eq!(table.len(), keys.len(), "[{section}] has extra keys");
    }
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        assert!(line.contains("# "), "no comment on {line:?}");
        assert!(line.contains("reload: "), "no reload note on {line:?}");
    }
}

#[test]
fn example_replica_backend_parses_when_uncommented() {
    let (_, replica) = EXAMPLE
        .split_once("# A streaming replica:\n")
        .expect("example has a replica block");
    let uncommented: String = replica
        .lines()
        .map(|line| format!("{}\n", line.trim_start_matches("# ")))
        .collect();
    let config = parse_ok(&format!("{EXAMPLE}\n{uncommented}"));
    assert_eq!(config.backends.len(), 2);
    assert_eq!(config.backends[1].role, Role::Replica);
    assert_eq!(config.backends[1].name, "replica1");
}

// ---- every key ------------------------------------------------------------

#[test]
fn every_key_set_to_a_non_default_value_round_trips() {
    let text = r#"
        [proxy]
        listen = "[::1]:7432"
        workers = 8
        max_clients = 500
        login_timeout = "20s"
        client_idle_timeout = "5m"
        shutdown_timeout = "1m"
        max_message_size = "1MiB"

        [log]
        level = "debug"

        [metrics]
        listen = ""

        [auth]
        mode = "query"
        credentials_file = "/etc/pggate/pgpass"
        auth_user = "pggate_auth"
        auth_query = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

        [client_tls]
        mode = "require"
        cert = "/etc/pggate/server.crt"
        key = "/etc/pggate/server.key"

        [backend_tls]
        mode = "verify-full"
        ca = "/etc/pggate/ca.pem"

        [pool]
        mode = "session"
        size = 50
        min_idle = 5
        checkout_timeout = "250ms"
        connect_timeout = "2s"
        connect_retries = 0
        retry_backoff = "1s"
        idle_timeout = "0s"
        max_lifetime = "2h"
        max_prepared_statements = 10
        pipeline_window = "5ms"
        pipeline_depth = 3
        pipeline_after = 5

        [routing]
        reads = "primary"
        write_functions = ["audit_log", "bump_counter"]
        max_replica_lag = "0s"
        read_your_writes = "lsn"
        retry_read_only_errors = false

        [health]
        interval = "500ms"
        timeout = "300ms"
        failures = 1
        user = "monitor"
        database = "app"

        [[backends]]
        name = "db-a"
        host = "10.0.0.11"
        port = 5433
        role = "auto"
        weight = 0

        [[backends]]
        name = "db-b"
        host = "db-b.example.com"
        port = 6543
        role = "replica"
        weight = 3
    "#;
    let expected = Config {
        proxy: ProxyConfig {
            listen: "[::1]:7432".to_string(),
            workers: 8,
            max_clients: 500,
            login_timeout: Duration::from_secs(20),
            client_idle_timeout: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(60),
            max_message_size: 1024 * 1024,
        },
        log: LogConfig {
            level: log::LevelFilter::Debug,
        },
        metrics: MetricsConfig {
            listen: String::new(),
        },
        auth: AuthConfig {
            mode: AuthMode::Query,
            credentials_file: "/etc/pggate/pgpass".to_string(),
            auth_user: "pggate_auth".to_string(),
            auth_query: "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".to_string(),
        },
        client_tls: ClientTlsConfig {
            mode: ClientTlsMode::Require,
            cert: "/etc/pggate/server.crt".to_string(),
            key: "/etc/pggate/server.key".to_string(),
        },
        backend_tls: BackendTlsConfig {
            mode: BackendTlsMode::VerifyFull,
            ca: "/etc/pggate/ca.pem".to_string(),
        },
        pool: PoolConfig {
            mode: PoolMode::Session,
            size: 50,
            min_idle: 5,
            checkout_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            connect_retries: 0,
            retry_backoff: Duration::from_secs(1),
            idle_timeout: Duration::ZERO,
            max_lifetime: Duration::from_secs(7200),
            max_prepared_statements: 10,
            pipeline_window: Duration::from_millis(5),
            pipeline_depth: 3,
            pipeline_after: 5,
        },
        routing: RoutingConfig {
            reads: ReadsTarget::Primary,
            write_functions: vec!["audit_log".to_string(), "bump_counter".to_string()],
            max_replica_lag: Duration::ZERO,
            read_your_writes: ReadYourWrites::Lsn,
            retry_read_only_errors: false,
        },
        health: HealthConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            failures: 1,
            user: "monitor".to_string(),
            database: "app".to_string(),
        },
        backends: vec![
            BackendConfig {
                name: "db-a".to_string(),
                host: "10.0.0.11".to_string(),
                port: 5433,
                role: Role::Auto,
                weight: 0,
            },
            BackendConfig {
                name: "db-b".to_string(),
                host: "db-b.example.com".to_string(),
                port: 6543,
                role: Role::Replica,
                weight: 3,
            },
        ],
    };
    assert_eq!(parse_ok(text), expected);
}

#[test]
fn every_enum_value_is_accepted() {
    for mode in AuthMode::ALL {
        let extra = if *mode == AuthMode::Query {
            "auth_user = \"a\"\ncredentials_file = \"/p\"\n"
        } else {
            ""
        };
        let text = format!("[auth]\nmode = \"{mode}\"\n{extra}");
        assert_eq!(parse_ok(&text).auth.mode, *mode);
    }
    for mode in ClientTlsMode::ALL {
        let text = format!("[client_tls]\nmode = \"{mode}\"\ncert = \"c\"\nkey = \"k\"\n");
        assert_eq!(parse_ok(&text).client_tls.mode, *mode);
    }
    for mode in BackendTlsMode::ALL {
        let text = format!("[backend_tls]\nmode = \"{mode}\"\nca = \"ca\"\n");
        assert_eq!(parse_ok(&text).backend_tls.mode, *mode);
    }
    for mode in PoolMode::ALL {
        assert_eq!(
            parse_ok(&format!("[pool]\nmode = \"{mode}\"")).pool.mode,
            *mode
        );
    }
    for reads in ReadsTarget::ALL {
        let text = format!("[routing]\nreads = \"{reads}\"");
        assert_eq!(parse_ok(&text).routing.reads, *reads);
    }
    for ryw in ReadYourWrites::ALL {
        let text = format!("[routing]\nread_your_writes = \"{ryw}\"");
        assert_eq!(parse_ok(&text).routing.read_your_writes, *ryw);
    }
    for (word, level) in [
        ("error", log::LevelFilter::Error),
        ("warn", log::LevelFilter::Warn),
        ("info", log::LevelFilter::Info),
        ("debug", log::LevelFilter::Debug),
        ("trace", log::LevelFilter::Trace),
    ] {
        assert_eq!(
            parse_ok(&format!("[log]\nlevel = \"{word}\"")).log.level,
            level
        );
    }
    assert_eq!(BackendTlsMode::VerifyFull.to_string(), "verify-full");
    assert_eq!(Role::Auto.as_str(), "auto");
}

#[test]
fn sizes_may_be_plain_integers_of_bytes() {
    let config = parse_ok("[proxy]\nmax_message_size = 1048576");
    assert_eq!(config.proxy.max_message_size, 1024 * 1024);
    let config = parse_ok("[proxy]\nmax_message_size = \"2048\"");
    assert_eq!(config.proxy.max_message_size, 2048);
}

#[test]
fn backend_keys_have_defaults_and_name_defaults_to_host_and_port() {
    let config = parse_ok(&backends(&["host = \"db1\""]));
    assert_eq!(
        config.backends,
        vec![BackendConfig {
            name: "db1:5432".to_string(),
            host: "db1".to_string(),
            port: 5432,
            role: Role::Primary,
            weight: 1,
        }]
    );
    let config = parse_ok(&backends(&["host = \"::1\"\nport = 5433"]));
    assert_eq!(config.backends[0].name, "[::1]:5433");
    let config = parse_ok(&backends(&[""]));
    assert_eq!(config.backends[0].name, "127.0.0.1:5432");
}

// ---- unknown keys ---------------------------------------------------------

#[test]
fn unknown_top_level_table_is_named() {
    assert_single_error(
        "[poool]\nsize = 3",
        "poool",
        &[ORIGIN, "unknown key \"poool\"", "did you mean \"pool\""],
    );
    assert_single_error(
        "[frobnicate]\n",
        "frobnicate",
        &["unknown key \"frobnicate\"", "proxy", "backends"],
    );
}

#[test]
fn unknown_key_in_a_table_is_named_with_its_full_path() {
    assert_single_error(
        "[pool]\nsise = 3",
        "pool.sise",
        &[
            "/etc/pggate.toml: pool.sise: unknown key \"pool.sise\"",
            "did you mean \"pool.size\"",
        ],
    );
    assert_single_error(
        "[health]\nzzz = 1",
        "health.zzz",
        &[
            "unknown key \"health.zzz\"",
            "interval, timeout, failures, user, database",
        ],
    );
}

#[test]
fn unknown_key_in_a_backends_entry_is_named_with_its_entry() {
    let text = backends(&[
        "name = \"a\"",
        "name = \"b\"\nhots = \"x\"\nrole = \"replica\"",
    ]);
    assert_single_error(
        &text,
        "backends[2].hots",
        &[
            "unknown key \"backends[2].hots\"",
            "did you mean \"backends[2].host\"",
        ],
    );
}

#[test]
fn top_level_key_that_belongs_in_a_table_says_which() {
    assert_single_error(
        "listen = \"0.0.0.0:6432\"",
        "listen",
        &["\"proxy.listen\"", "\"metrics.listen\""],
    );
}

#[test]
fn odd_key_names_are_quoted() {
    assert_single_error("[pool]\n\"si ze\" = 1", "pool.\"si ze\"", &["unknown key"]);
}

#[test]
fn every_unknown_key_is_reported() {
    let text = "typo = 1\n[proxy]\nlisten_addr = \"x\"\n[pool]\nsise = 1\n\
                [[backends]]\nhots = \"x\"\n";
    let errors = parse_err(text);
    assert_eq!(
        keys(&errors),
        vec!["typo", "proxy.listen_addr", "pool.sise", "backends[1].hots"]
    );
}

// ---- types and spellings ----------------------------------------------------

#[test]
fn section_that_is_not_a_table_is_named() {
    assert_single_error(
        "pool = 5",
        "pool",
        &["expected a table ([pool])", "integer 5"],
    );
}

#[test]
fn backends_must_be_an_array_of_tables() {
    assert_single_error("[backends]\nname = \"x\"", "backends", &["[[backends]]"]);
    assert_single_error("backends = [1]", "backends[1]", &["expected a table"]);
}

#[test]
fn bad_duration_is_named() {
    assert_single_error(
        "[pool]\ncheckout_timeout = \"5 parsecs\"",
        "pool.checkout_timeout",
        &["invalid duration \"5 parsecs\"", "\"250ms\""],
    );
    assert_single_error(
        "[proxy]\nlogin_timeout = 15",
        "proxy.login_timeout",
        &["duration string with a unit", "integer 15"],
    );
    assert_single_error(
        "[health]\ninterval = \"2\"",
        "health.interval",
        &["has no unit"],
    );
}

#[test]
fn bad_size_is_named() {
    assert_single_error(
        "[proxy]\nmax_message_size = \"64 MeB\"",
        "proxy.max_message_size",
        &["invalid size \"64 MeB\"", "KiB"],
    );
    assert_single_error(
        "[proxy]\nmax_message_size = -1",
        "proxy.max_message_size",
        &["-1 is out of range"],
    );
    assert_single_error(
        "[proxy]\nmax_message_size = 1.5",
        "proxy.max_message_size",
        &["expected a size"],
    );
}

#[test]
fn bad_enum_value_is_named_with_the_accepted_values() {
    assert_single_error(
        "[pool]\nmode = \"transactoin\"",
        "pool.mode",
        &[
            "\"transactoin\" is not accepted",
            "\"transaction\", \"session\"",
        ],
    );
    assert_single_error(
        "[backend_tls]\nmode = \"verify_full\"",
        "backend_tls.mode",
        &["\"disable\", \"prefer\", \"require\", \"verify-full\""],
    );
    assert_single_error(
        "[log]\nlevel = \"verbose\"",
        "log.level",
        &["\"error\", \"warn\", \"info\", \"debug\", \"trace\""],
    );
    assert_single_error(
        "[client_tls]\nmode = true",
        "client_tls.mode",
        &["\"disable\", \"allow\", \"require\"", "boolean true"],
    );
    assert_single_error(
        &backends(&["role = \"master\""]),
        "backends[1].role",
        &["\"primary\", \"replica\", \"auto\""],
    );
    assert_single_error(
        "[routing]\nreads = \"Replicas\"",
        "routing.reads",
        &["\"replicas\", \"primary\""],
    );
    assert_single_error(
        "[routing]\nread_your_writes = \"on\"",
        "routing.read_your_writes",
        &["\"off\", \"lsn\""],
    );
    assert_single_error(
        "[auth]\nmode = \"md5\"",
        "auth.mode",
        &["\"passthrough\", \"query\""],
    );
}

#[test]
fn wrong_types_are_named() {
    assert_single_error(
        "[proxy]\nworkers = \"4\"",
        "proxy.workers",
        &["whole number"],
    );
    assert_single_error(
        "[routing]\nretry_read_only_errors = \"yes\"",
        "routing.retry_read_only_errors",
        &["true or false"],
    );
    assert_single_error(
        "[routing]\nwrite_functions = \"f\"",
        "routing.write_functions",
        &["array of strings"],
    );
    assert_single_error(
        "[routing]\nwrite_functions = [\"f\", 1]",
        "routing.write_functions",
        &["item 2"],
    );
    assert_single_error(
        "[metrics]\nlisten = 8080",
        "metrics.listen",
        &["expected a string"],
    );
    assert_single_error(
        "[health]\nfailures = 2.5",
        "health.failures",
        &["whole number"],
    );
}

#[test]
fn out_of_range_integers_are_named() {
    assert_single_error(
        &backends(&["port = 70000"]),
        "backends[1].port",
        &["70000 is out of range", "65535"],
    );
    assert_single_error(&backends(&["port = -1"]), "backends[1].port", &["-1"]);
    assert_single_error(
        "[health]\nfailures = 4294967296",
        "health.failures",
        &["4294967295"],
    );
    assert_single_error("[pool]\nsize = -3", "pool.size", &["out of range"]);
}

#[test]
fn every_type_error_is_reported() {
    let text = "[proxy]\nworkers = \"x\"\n[pool]\nmode = \"y\"\nidle_timeout = 5\n\
                [[backends]]\nport = \"z\"\n";
    let errors = parse_err(text);
    assert_eq!(
        keys(&errors),
        vec![
            "proxy.workers",
            "pool.mode",
            "pool.idle_timeout",
            "backends[1].port"
        ]
    );
}

#[test]
fn a_rejected_value_gives_one_message_not_two() {
    // pool.size falls back to its default (20); min_idle 30 must not be
    // reported as larger than a size the user never wrote.
    assert_single_error(
        "[pool]\nsize = \"40\"\nmin_idle = 30",
        "pool.size",
        &["whole number"],
    );
    // A misspelt role must not also count as a missing primary.
    assert_single_error(
        &backends(&[
            "name = \"a\"\nhost = \"h1\"\nrole = \"primray\"",
            "name = \"b\"\nhost = \"h2\"\nrole = \"replica\"",
        ]),
        "backends[1].role",
        &["\"primary\""],
    );
}

#[test]
fn syntax_error_gives_line_and_column_on_one_line() {
    let errors = parse_err("[pool]\nsize = 3\nmode = \n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "");
    let shown = errors[0].to_string();
    assert!(shown.starts_with("/etc/pggate.toml: TOML syntax error at line 3, column 8"));
    assert!(!shown.contains('\n'), "{shown:?}");
    let errors = parse_err("[pool]\nsize = 1\nsize = 2\n");
    assert!(errors[0].reason.contains("line 3"), "{}", errors[0]);
}

// ---- rules ----------------------------------------------------------------

#[test]
fn at_least_one_backend_is_required() {
    assert_single_error("backends = []", "backends", &["at least one [[backends]]"]);
}

#[test]
fn backend_names_must_be_unique() {
    let text = backends(&[
        "name = \"db\"\nhost = \"10.0.0.1\"",
        "name = \"db\"\nhost = \"10.0.0.2\"\nrole = \"replica\"",
    ]);
    assert_single_error(
        &text,
        "backends[2].name",
        &["\"db\" is already the name of backends[1]"],
    );
}

#[test]
fn backend_names_must_not_be_empty() {
    assert_single_error(
        &backends(&["name = \"\""]),
        "backends[1].name",
        &["non-empty"],
    );
    assert_single_error(
        &backends(&["name = \"a\\tb\""]),
        "backends[1].name",
        &["control"],
    );
}

#[test]
fn one_server_may_be_listed_twice() {
    // Useful for trying routing against a single server.
    let text = backends(&["name = \"a\"", "name = \"b\"\nrole = \"replica\""]);
    assert_eq!(parse_ok(&text).backends.len(), 2);
}

#[test]
fn exactly_one_primary_without_auto() {
    let two = backends(&["name = \"a\"\nhost = \"h1\"", "name = \"b\"\nhost = \"h2\""]);
    assert_single_error(
        &two,
        "backends",
        &["2 backends have role = \"primary\"", "\"a\", \"b\""],
    );
    let none = backends(&["role = \"replica\""]);
    assert_single_error(&none, "backends", &["no backend has role = \"primary\""]);
    let one = backends(&["host = \"h1\"", "host = \"h2\"\nrole = \"replica\""]);
    assert_eq!(
        parse_ok(&one).primary().map(|b| b.host.as_str()),
        Some("h1")
    );
}

#[test]
fn auto_backends_allow_zero_or_one_primary() {
    let zero = backends(&[
        "host = \"h1\"\nrole = \"auto\"",
        "host = \"h2\"\nrole = \"auto\"",
    ]);
    assert_eq!(parse_ok(&zero).primary(), None);
    let one = backends(&["host = \"h1\"\nrole = \"auto\"", "host = \"h2\""]);
    assert_eq!(
        parse_ok(&one).primary().map(|b| b.host.as_str()),
        Some("h2")
    );
    let two = backends(&[
        "host = \"h1\"\nrole = \"auto\"",
        "host = \"h2\"",
        "host = \"h3\"",
    ]);
    assert_single_error(&two, "backends", &["at most one may"]);
}

#[test]
fn backend_weight_may_be_zero_but_is_bounded() {
    let zero = backends(&[
        "host = \"h1\"",
        "host = \"h2\"\nrole = \"replica\"\nweight = 0",
    ]);
    assert_eq!(parse_ok(&zero).backends[1].weight, 0);
    let big = backends(&["weight = 10000"]);
    assert_eq!(parse_ok(&big).backends[0].weight, 10_000);
    assert_single_error(
        &backends(&["weight = 10001"]),
        "backends[1].weight",
        &["0 (no reads) to 10000"],
    );
}

#[test]
fn backend_port_must_not_be_zero() {
    assert_single_error(
        &backends(&["port = 0"]),
        "backends[1].port",
        &["1 to 65535"],
    );
}

#[test]
fn backend_host_must_be_an_address_or_name() {
    for good in [
        "10.0.0.5",
        "::1",
        "db1",
        "db-1.example.com",
        "db_1.internal.",
    ] {
        parse_ok(&backends(&[&format!("host = \"{good}\"")]));
    }
    for (bad, word) in [
        ("", "IP address or host name"),
        ("/var/run/postgresql", "Unix-domain socket"),
        ("[::1]", "without brackets"),
        ("db 1", "not an IP address or host name"),
        ("db..example", "not an IP address or host name"),
        ("-db", "not an IP address or host name"),
    ] {
        assert_single_error(
            &backends(&[&format!("host = \"{bad}\"")]),
            "backends[1].host",
            &[word],
        );
    }
}

#[test]
fn proxy_listen_must_be_host_and_port() {
    for good in [
        "127.0.0.1:6432",
        "0.0.0.0:6432",
        "[::1]:6432",
        "[::]:0",
        "localhost:6432",
    ] {
        let config = parse_ok(&format!("[proxy]\nlisten = \"{good}\""));
        assert_eq!(config.proxy.listen, good);
    }
    for (bad, word) in [
        ("6432", "has no port"),
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:", "no valid port"),
        ("127.0.0.1:65536", "no valid port"),
        ("::1:6432", "in brackets"),
        ("db.example.com:6432", "not an IP address or localhost"),
        (":6432", "not an IP address or localhost"),
        ("", "has no port"),
    ] {
        assert_single_error(
            &format!("[proxy]\nlisten = \"{bad}\""),
            "proxy.listen",
            &[word],
        );
    }
}

#[test]
fn metrics_listen_may_be_empty_or_host_and_port() {
    assert_eq!(parse_ok("[metrics]\nlisten = \"\"").metrics.listen, "");
    assert_eq!(
        parse_ok("[metrics]\nlisten = \"localhost:9090\"")
            .metrics
            .listen,
        "localhost:9090"
    );
    assert_single_error(
        "[metrics]\nlisten = \"9090\"",
        "metrics.listen",
        &["has no port", "\"\" to disable"],
    );
}

#[test]
fn pool_size_must_be_at_least_one() {
    assert_single_error("[pool]\nsize = 0", "pool.size", &["at least 1"]);
}

#[test]
fn min_idle_must_not_exceed_size() {
    assert_eq!(parse_ok("[pool]\nsize = 5\nmin_idle = 5").pool.min_idle, 5);
    assert_single_error(
        "[pool]\nsize = 5\nmin_idle = 6",
        "pool.min_idle",
        &["6 is more than pool.size (5)"],
    );
}

#[test]
fn max_message_size_is_between_1kib_and_1gib() {
    assert_eq!(
        parse_ok("[proxy]\nmax_message_size = \"1KiB\"")
            .proxy
            .max_message_size,
        1024
    );
    assert_eq!(
        parse_ok("[proxy]\nmax_message_size = \"1GiB\"")
            .proxy
            .max_message_size,
        1 << 30
    );
    for bad in ["\"1023B\"", "\"1073741825\"", "\"2GiB\"", "0"] {
        assert_single_error(
            &format!("[proxy]\nmax_message_size = {bad}"),
            "proxy.max_message_size",
            &["\"1KiB\" to \"1GiB\""],
        );
    }
}

#[test]
fn workers_are_at_most_1024() {
    assert_eq!(parse_ok("[proxy]\nworkers = 1024").proxy.workers, 1024);
    assert_single_error(
        "[proxy]\nworkers = 1025",
        "proxy.workers",
        &["0 (one per CPU core) to 1024"],
    );
}

#[test]
fn max_clients_must_be_at_least_one() {
    assert_single_error(
        "[proxy]\nmax_clients = 0",
        "proxy.max_clients",
        &["at least 1"],
    );
}

#[test]
fn timeouts_that_cannot_be_zero_are_rejected() {
    for (section, key) in [
        ("proxy", "login_timeout"),
        ("pool", "checkout_timeout"),
        ("pool", "connect_timeout"),
        ("health", "interval"),
        ("health", "timeout"),
    ] {
        assert_single_error(
            &format!("[{section}]\n{key} = \"0s\""),
            &format!("{section}.{key}"),
            &["longer than zero"],
        );
    }
}

#[test]
fn timeouts_where_zero_means_never_accept_zero() {
    let text = "[proxy]\nclient_idle_timeout = \"0s\"\nshutdown_timeout = \"0s\"\n\
                [pool]\nretry_backoff = \"0s\"\nidle_timeout = \"0s\"\nmax_lifetime = \"0s\"\n\
                [routing]\nmax_replica_lag = \"0s\"\n";
    let config = parse_ok(text);
    assert_eq!(config.pool.max_lifetime, Duration::ZERO);
    assert_eq!(config.routing.max_replica_lag, Duration::ZERO);
}

#[test]
fn connect_retries_are_at_most_100() {
    assert_eq!(
        parse_ok("[pool]\nconnect_retries = 100")
            .pool
            .connect_retries,
        100
    );
    assert_single_error(
        "[pool]\nconnect_retries = 101",
        "pool.connect_retries",
        &["0 to 100"],
    );
}

#[test]
fn pipeline_after_must_be_at_least_one() {
    assert_single_error(
        "[pool]\npipeline_after = 0",
        "pool.pipeline_after",
        &["at least 1"],
    );
}

#[test]
fn pipeline_depth_must_be_at_least_one() {
    assert_single_error(
        "[pool]\npipeline_depth = 0",
        "pool.pipeline_depth",
        &["at least 1"],
    );
}

#[test]
fn max_prepared_statements_must_be_at_least_one() {
    assert_single_error(
        "[pool]\nmax_prepared_statements = 0",
        "pool.max_prepared_statements",
        &["at least 1"],
    );
}

#[test]
fn health_failures_must_be_at_least_one() {
    assert_single_error("[health]\nfailures = 0", "health.failures", &["at least 1"]);
}

#[test]
fn health_user_and_database_must_not_be_empty() {
    let errors = parse_err("[health]\nuser = \"\"\ndatabase = \" \"");
    assert_eq!(keys(&errors), vec!["health.user", "health.database"]);
}

#[test]
fn auth_query_mode_requires_auth_user_and_credentials_file() {
    let errors = parse_err("[auth]\nmode = \"query\"\nauth_query = \"\"");
    assert_eq!(
        keys(&errors),
        vec!["auth.auth_user", "auth.credentials_file", "auth.auth_query"]
    );
    assert!(errors[0].reason.contains("auth.mode = \"query\""));
    let config = parse_ok("[auth]\nmode = \"query\"\nauth_user = \"u\"\ncredentials_file = \"f\"");
    assert_eq!(config.auth.mode, AuthMode::Query);
}

#[test]
fn client_tls_requires_cert_and_key_unless_disabled() {
    for mode in ["allow", "require"] {
        let errors = parse_err(&format!("[client_tls]\nmode = \"{mode}\""));
        assert_eq!(keys(&errors), vec!["client_tls.cert", "client_tls.key"]);
        assert!(errors[0].reason.contains(mode));
    }
    assert_single_error(
        "[client_tls]\nmode = \"allow\"\ncert = \"c\"",
        "client_tls.key",
        &["PEM private key"],
    );
}

#[test]
fn backend_tls_verify_full_requires_ca() {
    assert_single_error(
        "[backend_tls]\nmode = \"verify-full\"",
        "backend_tls.ca",
        &["CA bundle", "verify-full"],
    );
    assert_eq!(
        parse_ok("[backend_tls]\nmode = \"require\"")
            .backend_tls
            .mode,
        BackendTlsMode::Require
    );
}

#[test]
fn write_functions_must_be_names() {
    assert_single_error(
        "[routing]\nwrite_functions = [\"ok\", \"\"]",
        "routing.write_functions",
        &["item 2"],
    );
    assert_single_error(
        "[routing]\nwrite_functions = [\"f()\"]",
        "routing.write_functions",
        &["bare name"],
    );
}

#[test]
fn every_broken_rule_is_reported() {
    let text = "[proxy]\nworkers = 2000\n[pool]\nsize = 0\n[health]\nfailures = 0\n\
                interval = \"0s\"\n[client_tls]\nmode = \"require\"\n\
                [[backends]]\nport = 0\nrole = \"replica\"\n";
    let errors = parse_err(text);
    assert_eq!(
        keys(&errors),
        vec![
            "proxy.workers",
            "client_tls.cert",
            "client_tls.key",
            "pool.size",
            "health.interval",
            "health.failures",
            "backends[1].port",
            "backends",
        ]
    );
}

#[test]
fn unknown_keys_type_errors_and_rules_are_reported_together() {
    let text = "[pool]\nsise = 1\nmode = \"x\"\nconnect_retries = 500\n";
    assert_eq!(
        keys(&parse_err(text)),
        vec!["pool.sise", "pool.mode", "pool.connect_retries"]
    );
}

#[test]
fn a_misspelt_key_does_not_draw_a_complaint_about_the_default_it_left() {
    // `sise` was meant as pool.size; min_idle 30 is not checked against the
    // default size of 20.
    assert_single_error(
        "[pool]\nsise = 40\nmin_idle = 30",
        "pool.sise",
        &["pool.size"],
    );
    // `hots` was meant as host; the default host must not make two backends
    // share a derived name.
    let text = backends(&["host = \"127.0.0.1\"", "hots = \"h2\"\nrole = \"replica\""]);
    assert_single_error(
        &text,
        "backends[2].hots",
        &["did you mean \"backends[2].host\""],
    );
}

// ---- errors, files, loading ---------------------------------------------------

#[test]
fn config_error_display_is_file_key_reason() {
    let error = ConfigError::new("f.toml", "pool.size", "must be at least 1");
    assert_eq!(error.to_string(), "f.toml: pool.size: must be at least 1");
    let error = ConfigError::new("f.toml", "", "cannot read");
    assert_eq!(error.to_string(), "f.toml: cannot read");
}

#[test]
fn load_of_a_missing_file_is_one_error_naming_it() {
    let path = scratch_dir("missing").join("nope.toml");
    let errors = Config::load(&path).expect_err("missing file");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].origin, path.display().to_string());
    assert_eq!(errors[0].key, "");
    assert!(errors[0].to_string().contains("nope.toml: cannot read"));
}

#[test]
fn load_reads_and_validates_a_file() {
    let dir = scratch_dir("load");
    let path = dir.join("pggate.toml");
    std::fs::write(&path, "[pool]\nsize = 7\n").expect("write");
    assert_eq!(Config::load(&path).map(|c| c.pool.size), Ok(7));
    std::fs::write(&path, "[pool]\nsize = 0\n").expect("write");
    let errors = Config::load(&path).expect_err("invalid");
    assert_eq!(errors[0].origin, path.display().to_string());
    std::fs::write(&path, [0xff, 0xfe, b'\n']).expect("write");
    assert_eq!(Config::load(&path).map_err(|e| e.len()), Err(1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_files_reports_every_missing_file() {
    let dir = scratch_dir("check-missing");
    let missing = |name: &str| dir.join(name).display().to_string();
    let mut config = Config::default();
    config.client_tls.mode = ClientTlsMode::Allow;
    config.client_tls.cert = missing("server.crt");
    config.client_tls.key = missing("server.key");
    config.backend_tls.mode = BackendTlsMode::VerifyFull;
    config.backend_tls.ca = missing("ca.pem");
    config.auth.credentials_file = missing("pgpass");
    let errors = config.check_files(ORIGIN);
    assert_eq!(
        keys(&errors),
        vec![
            "client_tls.cert",
            "client_tls.key",
            "backend_tls.ca",
            "auth.credentials_file"
        ]
    );
    for error in &errors {
        assert_eq!(error.origin, ORIGIN);
        assert!(error.reason.starts_with("cannot read"), "{error}");
    }
    assert!(errors[0].reason.contains("server.crt"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_files_ignores_files_that_are_not_used() {
    let mut config = Config::default();
    config.client_tls.cert = "/nonexistent/server.crt".to_string();
    config.backend_tls.mode = BackendTlsMode::Require;
    config.backend_tls.ca = "/nonexistent/ca.pem".to_string();
    assert!(config.check_files(ORIGIN).is_empty());
}

#[test]
fn check_files_accepts_readable_pem_files_of_the_right_kind() {
    let dir = scratch_dir("check-ok");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let pgpass = dir.join("pgpass");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    std::fs::write(
        &key,
        "-----BEGIN RSA PRIVATE KEY-----\r\nMII=\r\n-----END RSA PRIVATE KEY-----\r\n",
    )
    .expect("write");
    std::fs::write(&pgpass, "*:*:*:pggate:secret\n").expect("write");
    let mut config = Config::default();
    config.client_tls.mode = ClientTlsMode::Require;
    config.client_tls.cert = cert.display().to_string();
    config.client_tls.key = key.display().to_string();
    config.backend_tls.mode = BackendTlsMode::VerifyFull;
    config.backend_tls.ca = cert.display().to_string();
    config.auth.credentials_file = pgpass.display().to_string();
    assert_eq!(config.check_files(ORIGIN), vec![]);

    // Certificate and key swapped, and a CA file that is not PEM.
    config.client_tls.cert = key.display().to_string();
    config.client_tls.key = cert.display().to_string();
    config.backend_tls.ca = pgpass.display().to_string();
    let errors = config.check_files(ORIGIN);
    assert_eq!(
        keys(&errors),
        vec!["client_tls.cert", "client_tls.key", "backend_tls.ca"]
    );
    assert!(
        errors[0].reason.contains("-----BEGIN RSA PRIVATE KEY-----"),
        "{}",
        errors[0]
    );
    assert!(errors[2].reason.contains("no PEM block"), "{}", errors[2]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_files_reports_a_required_file_left_empty() {
    let mut config = Config::default();
    config.client_tls.mode = ClientTlsMode::Require;
    let errors = config.check_files(ORIGIN);
    assert_eq!(keys(&errors), vec!["client_tls.cert", "client_tls.key"]);
    assert!(errors[0].reason.contains("no file given"));
}

#[test]
fn primary_is_the_role_primary_backend() {
    let text = backends(&[
        "name = \"r\"\nhost = \"h1\"\nrole = \"replica\"",
        "name = \"p\"\nhost = \"h2\"",
    ]);
    assert_eq!(
        parse_ok(&text).primary().map(|b| b.name.as_str()),
        Some("p")
    );
}

#[test]
fn default_path_is_etc_pggate_toml() {
    assert_eq!(DEFAULT_PATH, "/etc/pggate.toml");
}

// ---- units ------------------------------------------------------------------

#[test]
fn parse_duration_accepts_numbers_with_units() {
    for (text, expected) in [
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("10m", Duration::from_secs(600)),
        ("1h", Duration::from_secs(3600)),
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("1h 30m", Duration::from_secs(5400)),
        (" 2s ", Duration::from_secs(2)),
        ("100us", Duration::from_micros(100)),
        ("2days", Duration::from_secs(2 * 86_400)),
        ("100y", MAX_DURATION),
    ] {
        assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn parse_duration_rejects_bad_input() {
    for (text, word) in [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("5", "has no unit"),
        ("5 parsecs", "invalid duration"),
        ("-5s", "invalid duration"),
        ("s", "invalid duration"),
        ("5S", "invalid duration"),
        ("five seconds", "invalid duration"),
    ] {
        let err = parse_duration(text).expect_err(text);
        assert!(err.contains(word), "{text:?}: {err}");
        assert!(
            err.contains("\"5s\"") || err.contains("has no unit"),
            "{err}"
        );
    }
}

#[test]
fn parse_duration_rejects_overflow_and_absurd_lengths() {
    for text in [
        "999999999999999999999s",
        "18446744073709551615s",
        "101y",
        "600000000000y",
    ] {
        assert!(parse_duration(text).is_err(), "{text:?}");
    }
}

#[test]
fn parse_size_accepts_units() {
    for (text, expected) in [
        ("512B", 512),
        ("512b", 512),
        ("1024", 1024),
        ("0", 0),
        ("64KiB", 64 * 1024),
        ("64kib", 64 * 1024),
        ("64MiB", 64 << 20),
        ("1GiB", 1 << 30),
        ("64KB", 64_000),
        ("64kB", 64_000),
        ("10MB", 10_000_000),
        ("1GB", 1_000_000_000),
        (" 64 MiB ", 64 << 20),
    ] {
        assert_eq!(parse_size(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn parse_size_rejects_bad_input() {
    for text in [
        "", "MiB", "1.5MiB", "64 MeB", "-1", "64K", "0x10", "1 2", "1GiBs", "١٢",
    ] {
        let err = parse_size(text).expect_err(text);
        assert!(err.contains("invalid size"), "{text:?}: {err}");
        assert!(err.contains("KiB"), "{err}");
    }
}

#[test]
fn parse_size_rejects_overflow() {
    for text in [
        "18446744073709551616",
        "99999999999999999999999999",
        "17179869184GiB",
        "18446744073709551615KiB",
    ] {
        let err = parse_size(text).expect_err(text);
        assert!(err.contains("too large"), "{text:?}: {err}");
    }
}

// ---- robustness ----------------------------------------------------------------

#[test]
fn no_input_makes_parse_panic() {
    let fragments = [
        "[proxy]",
        "[pool]",
        "[[backends]]",
        "[backends]",
        "[log]",
        "[a.b]",
        "[[pool]]",
        "listen = ",
        "\"x\"",
        "'y'",
        "1",
        "-1",
        "1e400",
        "nan",
        "inf",
        "true",
        "[]",
        "[1,\"a\"]",
        "{}",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "size",
        "port",
        "role",
        "weight",
        "mode",
        "\"\"\"",
        "'''",
        "#",
        "=",
        "\n",
        " ",
        ".",
        "\\u0000",
        "\"\\u00e9\"",
        "é",
        "\u{0}",
        "9223372036854775807",
        "-9223372036854775808",
        "\"18446744073709551615GiB\"",
        "\"1y1y1y1y1y1y\"",
        "name",
        "host",
        "\"/\"",
        "\"[\"",
        "\":\"",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let pieces = next() % 12;
        let text: String = (0..pieces)
            .map(|_| fragments[(next() % fragments.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(if next() % 2 == 0 { " " } else { "\n" });
        let _ = Config::parse(&text, ORIGIN);
    }
    // Structurally valid files with hostile values.
    for value in [
        "-1",
        "1e400",
        "\"\"",
        "[[]]",
        "{x = 1}",
        "1979-05-27",
        "\"\\u0000\"",
        "9223372036854775807",
    ] {
        for (section, keys) in SECTIONS {
            for key in *keys {
                let header = if *section == "backends" {
                    "[[backends]]"
                } else {
                    ""
                };
                let text = if header.is_empty() {
                    format!("[{section}]\n{key} = {value}\n")
                } else {
                    format!("{header}\n{key} = {value}\n")
                };
                let _ = Config::parse(&text, ORIGIN);
            }
        }
    }
    let deep = format!("a = {}{}", "[".repeat(5000), "]".repeat(5000));
    let _ = Config::parse(&deep, ORIGIN);
}
