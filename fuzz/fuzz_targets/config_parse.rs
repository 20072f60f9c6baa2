//! Fuzz target: arbitrary bytes (read as lossy UTF-8) as a configuration
//! file, and as a duration and a size string. `Config::parse` must never
//! panic; an accepted file must keep every rule the configuration promises
//! (at least one backend, one primary unless `auto` is used, pool.size ≥ 1,
//! positive timeouts, ...); a rejected one must come with errors that name
//! the file. `parse_duration` and `parse_size` must never panic and keep
//! their bounds. Pure: no I/O here.

#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pggate::config::{
    parse_duration, parse_size, AuthMode, BackendTlsMode, ClientTlsMode, Config, Role, MAX_DURATION,
};

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let parsed = Config::parse(&text, ORIGIN);
    match &parsed {
        Ok(config) => check_config(config),
        Err(errors) => {
            assert!(!errors.is_empty(), "Err with no error");
            for error in errors {
                assert_eq!(error.origin, ORIGIN);
                assert!(!error.reason.is_empty(), "{error:?}");
                assert!(error.to_string().starts_with("fuzz.toml: "), "{error}");
            }
        }
    }
    // Same text, same answer.
    assert_eq!(Config::parse(&text, ORIGIN), parsed);

    // The units on the whole input and on its first line (a bare value).
    let first_line = text.lines().next().unwrap_or_default();
    for s in [&*text, first_line] {
        check_duration(s);
        check_size(s);
    }
});

fn check_duration(s: &str) {
    match parse_duration(s) {
        Ok(d) => {
            assert!(d <= MAX_DURATION, "{s:?} -> {d:?}");
            // A duration needs a unit unless it is zero.
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                assert!(d.is_zero(), "{s:?} -> {d:?}");
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fn check_size(s: &str) {
    match parse_size(s) {
        Ok(n) => {
            let t = s.trim();
            assert!(t.starts_with(|c: char| c.is_ascii_digit()), "{s:?} -> {n}");
            // A plain number is exactly that many bytes.
            if t.bytes().all(|b| b.is_ascii_digit()) {
                assert_eq!(t.parse::<u128>().ok(), Some(n as u128), "{s:?}");
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fn check_listen(listen: &str) {
    if listen.parse::<SocketAddr>().is_ok() {
        return;
    }
    let (host, port) = listen.rsplit_once(':').expect("listen has a port");
    assert!(port.parse::<u16>().is_ok(), "{listen:?}");
    assert!(host.eq_ignore_ascii_case("localhost"), "{listen:?}");
}

fn check_host(host: &str) {
    if host.parse::<IpAddr>().is_ok() {
        return;
    }
    assert!(!host.is_empty() && host.len() <= 253, "{host:?}");
    assert!(!host.starts_with('/') && !host.starts_with('['), "{host:?}");
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        assert!(!label.is_empty() && label.len() <= 63, "{host:?}");
        assert!(
            label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{host:?}"
        );
        assert!(!label.starts_with('-') && !label.ends_with('-'), "{host:?}");
    }
}

fn not_blank(s: &str) -> bool {
    !s.trim().is_empty()
}

fn check_config(c: &Config) {
    let durations: [Duration; 11] = [
        c.proxy.login_timeout,
        c.proxy.client_idle_timeout,
        c.proxy.shutdown_timeout,
        c.pool.checkout_timeout,
        c.pool.connect_timeout,
        c.pool.retry_backoff,
        c.pool.idle_timeout,
        c.pool.max_lifetime,
        c.routing.max_replica_lag,
        c.health.interval,
        c.health.timeout,
    ];
    assert!(durations.iter().all(|d| *d <= MAX_DURATION), "{c:?}");

    // [proxy]
    check_listen(&c.proxy.listen);
    assert!(c.proxy.workers <= 1024, "{c:?}");
    assert!(c.proxy.max_clients >= 1, "{c:?}");
    assert!(!c.proxy.login_timeout.is_zero(), "{c:?}");
    assert!(
        (1024..=1024 * 1024 * 1024).contains(&c.proxy.max_message_size),
        "{c:?}"
    );

    // [metrics]
    if !c.metrics.listen.is_empty() {
        check_listen(&c.metrics.listen);
    }

    // [auth]
    if c.auth.mode == AuthMode::Query {
        assert!(not_blank(&c.auth.auth_user), "{c:?}");
        assert!(not_blank(&c.auth.credentials_file), "{c:?}");
        assert!(not_blank(&c.auth.auth_query), "{c:?}");
    }

    // TLS
    if c.client_tls.mode != ClientTlsMode::Disable {
        assert!(not_blank(&c.client_tls.cert), "{c:?}");
        assert!(not_blank(&c.client_tls.key), "{c:?}");
    }
    if c.backend_tls.mode == BackendTlsMode::VerifyFull {
        assert!(not_blank(&c.backend_tls.ca), "{c:?}");
    }

    // [pool]
    let pool = &c.pool;
    assert!(pool.size >= 1, "{c:?}");
    assert!(pool.min_idle <= pool.size, "{c:?}");
    assert!(!pool.checkout_timeout.is_zero(), "{c:?}");
    assert!(!pool.connect_timeout.is_zero(), "{c:?}");
    assert!(pool.connect_retries <= 100, "{c:?}");
    assert!(pool.max_prepared_statements >= 1, "{c:?}");

    // [routing]
    for name in &c.routing.write_functions {
        assert!(!name.is_empty(), "{c:?}");
        assert!(
            !name.chars().any(|ch| ch.is_whitespace() || ch == '('),
            "{c:?}"
        );
    }

    // [health]
    assert!(!c.health.interval.is_zero(), "{c:?}");
    assert!(!c.health.timeout.is_zero(), "{c:?}");
    assert!(c.health.failures >= 1, "{c:?}");
    assert!(not_blank(&c.health.user), "{c:?}");
    assert!(not_blank(&c.health.database), "{c:?}");

    // [[backends]]
    assert!(!c.backends.is_empty(), "accepted config without backends");
    let mut names = BTreeSet::new();
    for b in &c.backends {
        assert!(names.insert(b.name.as_str()), "duplicate name {:?}", b.name);
        assert!(not_blank(&b.name), "{b:?}");
        assert!(!b.name.chars().any(char::is_control), "{b:?}");
        check_host(&b.host);
        assert_ne!(b.port, 0, "{b:?}");
        assert!(b.weight <= 10_000, "{b:?}");
    }
    let primaries = c
        .backends
        .iter()
        .filter(|b| b.role == Role::Primary)
        .count();
    let any_auto = c.backends.iter().any(|b| b.role == Role::Auto);
    assert!(primaries <= 1, "{c:?}");
    assert!(primaries == 1 || any_auto, "{c:?}");
    match c.primary() {
        Some(p) => assert_eq!(p.role, Role::Primary),
        None => assert_eq!(primaries, 0),
    }
}
