//! Integration tests of backend health (SPEC §7) and of the control
//! connections it runs on, against a real PostgreSQL cluster (a primary and
//! two streaming replicas built once for this test binary).
//!
//! The control client is checked with every login method the cluster's
//! `pg_hba.conf` asks for, and with both query protocols. The checker is
//! driven round by round (`probe_round`) so each test states exactly how
//! many probes a transition takes. Tests that pause or stop a replica, or
//! that expect every replica to keep up, hold one lock, so they never
//! disturb each other; each puts the cluster back as it found it, even when
//! it fails.

#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::pgbin::server_command;
use common::tools::run_with_timeout;
use common::{Cluster, CLEAR_USER, MD5_USER, SCRAM_USER};
use pggate::auth::PgPass;
use pggate::config::{BackendConfig, Config, Role};
use pggate::health::client::{self, ControlConn, ControlError};
use pggate::health::{Checker, HealthView};

const SECOND: Duration = Duration::from_secs(1);

/// Serialises the tests that change or depend on the replicas' state.
fn cluster_state_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn control(port: u16, user: &str, password: Option<&str>) -> Result<ControlConn, ControlError> {
    client::connect(
        local(port),
        "127.0.0.1",
        port,
        user,
        "postgres",
        password,
        Duration::from_secs(10),
    )
}

fn text_rows(rows: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|row| row.iter().map(|cell| cell.map(str::to_string)).collect())
        .collect()
}

fn backend(name: &str, port: u16, role: Role) -> BackendConfig {
    BackendConfig {
        name: name.to_string(),
        host: "127.0.0.1".to_string(),
        port,
        role,
        weight: 1,
    }
}

/// The cluster as `[[backends]]` (primary, replica1, replica2) with the
/// given roles; probes log in as the trust user `postgres`.
fn cluster_config(cluster: &Cluster, roles: [Role; 3]) -> Arc<Config> {
    let mut config = Config {
        backends: ["primary", "replica1", "replica2"]
            .into_iter()
            .zip(cluster.all_ports())
            .zip(roles)
            .map(|((name, port), role)| backend(name, port, role))
            .collect(),
        ..Config::default()
    };
    config.health.timeout = Duration::from_secs(2);
    config.health.failures = 3;
    Arc::new(config)
}

fn checker_for(config: &Arc<Config>, pgpass: Option<PgPass>) -> (Checker, Arc<HealthView>) {
    let view = Arc::new(HealthView::new(config));
    let checker = Checker::new(Arc::clone(config), pgpass.map(Arc::new), Arc::clone(&view));
    (checker, view)
}

/// Runs `sql` on the server at `port` as `postgres`, panicking on failure.
fn run(port: u16, sql: &str) -> Vec<Vec<Option<String>>> {
    control(port, "postgres", None)
        .and_then(|mut conn| conn.simple_query(sql))
        .unwrap_or_else(|e| panic!("{sql:?} on port {port}: {e}"))
}

/// `pg_ctl` on one of the cluster's data directories.
fn pg_ctl(cluster: &Cluster, server: &str, args: &[&str]) -> common::CmdOutput {
    let data = cluster.dir.join(server);
    let log = cluster.dir.join(format!("{server}.log"));
    let mut cmd = server_command("pg_ctl", &cluster.dir);
    cmd.arg("-D").arg(&data).arg("-l").arg(&log).args(args);
    run_with_timeout(&mut cmd, None, Duration::from_secs(90))
}

const PG_CTL_START: &[&str] = &["start", "-w", "-t", "60"];

/// Resumes replay on a replica when dropped, so a failing test cannot
/// leave it paused.
struct ReplayPaused(u16);

impl ReplayPaused {
    fn pause(port: u16) -> ReplayPaused {
        run(port, "SELECT pg_wal_replay_pause()");
        ReplayPaused(port)
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let resumed = control(self.0, "postgres", None)
            .and_then(|mut conn| conn.simple_query("SELECT pg_wal_replay_resume()"));
        if let Err(e) = resumed {
            eprintln!("could not resume replay on port {}: {e}", self.0);
        }
    }
}

/// Starts a stopped server again when dropped.
struct Stopped<'a> {
    cluster: &'a Cluster,
    server: &'static str,
    running: bool,
}

impl<'a> Stopped<'a> {
    fn stop(cluster: &'a Cluster, server: &'static str) -> Stopped<'a> {
        pg_ctl(
            cluster,
            server,
            &["stop", "-m", "immediate", "-w", "-t", "60"],
        )
        .assert_success(&format!("stopping {server}"));
        Stopped {
            cluster,
            server,
            running: false,
        }
    }

    fn start(&mut self) {
        pg_ctl(self.cluster, self.server, PG_CTL_START)
            .assert_success(&format!("starting {}", self.server));
        self.running = true;
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if !self.running {
            let out = pg_ctl(self.cluster, self.server, PG_CTL_START);
            if !out.success() {
                eprintln!("could not restart {}: {}", self.server, out.combined());
            }
        }
    }
}

#[test]
fn control_connections_log_in_with_trust_cleartext_md5_and_scram() {
    let cluster = Cluster::shared();
    let logins = [
        ("postgres", None),
        (CLEAR_USER.0, Some(CLEAR_USER.1)),
        (MD5_USER.0, Some(MD5_USER.1)),
        (SCRAM_USER.0, Some(SCRAM_USER.1)),
    ];
    for (user, password) in logins {
        let mut conn = control(cluster.primary_port, user, password)
            .unwrap_or_else(|e| panic!("login as {user}: {e}"));
        let rows = conn
            .simple_query(
                "SELECT current_user, application_name FROM pg_stat_activity \
                 WHERE pid = pg_backend_pid()",
            )
            .unwrap_or_else(|e| panic!("query as {user}: {e}"));
        assert_eq!(rows, text_rows(&[&[Some(user), Some("pggate")]]), "{user}");
    }
}

#[test]
fn a_wrong_password_is_refused_with_28p01() {
    let cluster = Cluster::shared();
    for user in [CLEAR_USER.0, MD5_USER.0, SCRAM_USER.0] {
        match control(cluster.primary_port, user, Some("not-the-password")) {
            Err(ControlError::Server { code, .. }) => assert_eq!(code, "28P01", "{user}"),
            other => panic!("{user}: expected 28P01, got {other:?}"),
        }
    }
}

#[test]
fn a_password_user_without_a_password_is_an_auth_error() {
    let cluster = Cluster::shared();
    for user in [CLEAR_USER.0, MD5_USER.0, SCRAM_USER.0] {
        match control(cluster.primary_port, user, None) {
            Err(ControlError::Auth(message)) => {
                assert!(message.contains("none is configured"), "{user}: {message}")
            }
            other => panic!("{user}: expected an auth error, got {other:?}"),
        }
    }
}

#[test]
fn simple_query_returns_every_row_as_text() {
    let cluster = Cluster::shared();
    let mut conn = control(cluster.primary_port, "postgres", None).expect("login");
    assert_eq!(
        conn.simple_query(
            "SELECT g, CASE WHEN g % 2 = 1 THEN 'odd' END, 'é' FROM generate_series(1, 3) g"
        )
        .expect("rows"),
        text_rows(&[
            &[Some("1"), Some("odd"), Some("é")],
            &[Some("2"), None, Some("é")],
            &[Some("3"), Some("odd"), Some("é")],
        ])
    );
    assert_eq!(
        conn.simple_query("SELECT 1; SELECT 2, 3")
            .expect("two results"),
        text_rows(&[&[Some("1")], &[Some("2"), Some("3")]])
    );
    assert_eq!(conn.simple_query("").expect("empty query"), text_rows(&[]));
    assert_eq!(
        conn.simple_query("SET application_name = 'x'")
            .expect("no rows"),
        text_rows(&[])
    );
}

#[test]
fn a_failed_query_is_a_server_error_and_the_connection_stays_usable() {
    let cluster = Cluster::shared();
    let mut conn = control(cluster.primary_port, "postgres", None).expect("login");
    match conn.simple_query("SELECT 1/0") {
        Err(ControlError::Server { code, message }) => {
            assert_eq!(code, "22012");
            assert_eq!(message, "division by zero");
        }
        other => panic!("expected division by zero, got {other:?}"),
    }
    match conn.query_params("SELECT $1::int", &["not a number"]) {
        Err(ControlError::Server { code, .. }) => assert_eq!(code, "22P02"),
        other => panic!("expected 22P02, got {other:?}"),
    }
    assert!(!conn.is_broken());
    assert_eq!(
        conn.simple_query("SELECT 'still here'").expect("usable"),
        text_rows(&[&[Some("still here")]])
    );
}

#[test]
fn query_params_binds_text_parameters() {
    let cluster = Cluster::shared();
    let mut conn = control(cluster.primary_port, "postgres", None).expect("login");
    assert_eq!(
        conn.query_params(
            "SELECT $1::int + 1, $2::text, $3::text IS NULL",
            &["41", "it's; DROP TABLE x", ""]
        )
        .expect("rows"),
        text_rows(&[&[Some("42"), Some("it's; DROP TABLE x"), Some("f")]])
    );
    assert_eq!(
        conn.query_params("SELECT g FROM generate_series(1, $1::int) g", &["2"])
            .expect("rows"),
        text_rows(&[&[Some("1")], &[Some("2")]])
    );
    // The default auth_query, as auth.mode = "query" will run it.
    let auth_query = Config::default().auth.auth_query;
    let rows = conn
        .query_params(&auth_query, &[SCRAM_USER.0])
        .expect("auth_query");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some(SCRAM_USER.0));
    assert!(
        rows[0][1]
            .as_deref()
            .is_some_and(|secret| secret.starts_with("SCRAM-SHA-256$")),
        "{rows:?}"
    );
    assert_eq!(
        conn.query_params(&auth_query, &["no_such_role"])
            .expect("no rows"),
        text_rows(&[])
    );
}

#[test]
fn probes_log_in_with_the_credentials_file() {
    let cluster = Cluster::shared();
    let mut config = Config {
        backends: vec![backend("primary", cluster.primary_port, Role::Primary)],
        ..Config::default()
    };
    config.health.user = SCRAM_USER.0.to_string();
    config.health.failures = 1;
    let config = Arc::new(config);

    let pgpass = PgPass::parse(&format!(
        "127.0.0.1:{}:postgres:{}:{}\n",
        cluster.primary_port, SCRAM_USER.0, SCRAM_USER.1
    ));
    let (mut checker, view) = checker_for(&config, Some(pgpass));
    checker.probe_round();
    assert!(view.backends[0].is_up());
    assert_eq!(view.primary(), Some(0));
    assert!(view.primary_lsn() > 0);

    let (mut checker, view) = checker_for(&config, None);
    checker.probe_round();
    assert!(
        !view.backends[0].is_up(),
        "no password for a SCRAM user: the probe fails"
    );
    assert_eq!(view.backends[0].connect_failures_total(), 1);
    assert_eq!(view.primary(), None);
}

#[test]
fn probe_round_detects_roles_and_replicas_in_step_have_no_lag() {
    let _lock = cluster_state_lock();
    let cluster = Cluster::shared();
    let config = cluster_config(cluster, [Role::Auto, Role::Auto, Role::Replica]);
    let (mut checker, view) = checker_for(&config, None);
    assert_eq!(
        view.primary(),
        None,
        "auto backends are not primary before a probe"
    );

    cluster.wait_replicas_caught_up();
    checker.probe_round();
    assert_eq!(view.primary(), Some(0));
    assert!(view.backends[0].is_primary());
    assert!(!view.backends[1].is_primary());
    assert!(!view.backends[2].is_primary());
    assert_eq!(view.backends[0].replay_lag(), None, "a primary has no lag");
    assert!(view.primary_lsn() > 0);
    for i in [1, 2] {
        let state = &view.backends[i];
        assert!(state.is_up(), "{}", state.name());
        assert!(state.replay_lsn() > 0, "{}", state.name());
        let lag = state.replay_lag();
        assert!(
            lag.is_some_and(|lag| lag <= SECOND),
            "{} lags {lag:?}",
            state.name()
        );
        assert!(view.replica_usable(i, SECOND), "{}", state.name());
        assert_eq!(state.consecutive_failures(), 0);
    }
    assert!(!view.replica_usable(0, Duration::ZERO), "the primary");

    // A backend configured as primary that is in recovery is not primary.
    let wrong = cluster_config(cluster, [Role::Replica, Role::Primary, Role::Replica]);
    let (mut checker, view) = checker_for(&wrong, None);
    assert_eq!(
        view.primary(),
        Some(1),
        "as configured before the first probe"
    );
    checker.probe_round();
    assert!(!view.backends[1].is_primary());
    assert!(view.backends[0].is_primary());
    assert_eq!(view.primary(), Some(0), "the detected primary");
}

#[test]
fn a_paused_replica_lags_beyond_the_limit_and_recovers_when_resumed() {
    let _lock = cluster_state_lock();
    let cluster = Cluster::shared();
    let config = cluster_config(cluster, [Role::Primary, Role::Replica, Role::Replica]);
    let (mut checker, view) = checker_for(&config, None);
    let [primary, replica1, _] = cluster.all_ports();
    run(
        primary,
        "CREATE TABLE IF NOT EXISTS health_lag (a int); TRUNCATE health_lag",
    );
    cluster.wait_replicas_caught_up();
    checker.probe_round();
    assert!(view.replica_usable(1, SECOND), "in step before the pause");

    let paused = ReplayPaused::pause(replica1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lags = Vec::new();
    loop {
        run(
            primary,
            "INSERT INTO health_lag SELECT generate_series(1, 1000)",
        );
        checker.probe_round();
        let lag = view.backends[1].replay_lag();
        lags.push(lag);
        if lag.is_some_and(|lag| lag > 2 * SECOND) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica1's lag did not pass 2 s within 30 s of pausing replay: {lags:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!view.replica_usable(1, SECOND), "lags {lags:?}");
    assert!(view.replica_usable(1, Duration::ZERO), "lag unchecked");
    assert!(view.backends[1].is_up(), "lagging is not down");
    assert!(
        view.backends[1].replay_lsn() < view.primary_lsn(),
        "replay {} behind primary {}",
        view.backends[1].replay_lsn(),
        view.primary_lsn()
    );
    assert!(
        view.replica_usable(2, 5 * SECOND),
        "replica2 keeps up: {:?}",
        view.backends[2].replay_lag()
    );
    // The lag keeps growing while replay stays paused.
    let before = view.backends[1].replay_lag();
    std::thread::sleep(SECOND);
    checker.probe_round();
    let after = view.backends[1].replay_lag();
    assert!(after > before, "{before:?} then {after:?}");

    drop(paused);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !view.replica_usable(1, SECOND) {
        assert!(
            Instant::now() < deadline,
            "replica1 not usable 30 s after resuming: lag {:?}",
            view.backends[1].replay_lag()
        );
        std::thread::sleep(Duration::from_millis(100));
        checker.probe_round();
    }
    run(primary, "DROP TABLE health_lag");
}

#[test]
fn a_stopped_replica_is_down_after_failures_probes_and_up_after_one() {
    let _lock = cluster_state_lock();
    let cluster = Cluster::shared();
    let config = cluster_config(cluster, [Role::Primary, Role::Replica, Role::Replica]);
    let (mut checker, view) = checker_for(&config, None);
    checker.probe_round();
    assert!(view.backends[2].is_up());
    assert_eq!(view.backends[2].connect_failures_total(), 0);

    let mut stopped = Stopped::stop(cluster, "replica2");
    for round in 1..=2 {
        checker.probe_round();
        assert!(
            view.backends[2].is_up(),
            "still up after {round} failed probes"
        );
        assert_eq!(view.backends[2].consecutive_failures(), round);
        assert!(view.replica_usable(2, Duration::ZERO));
    }
    checker.probe_round();
    assert!(!view.backends[2].is_up(), "down after 3 failed probes");
    assert!(!view.replica_usable(2, Duration::ZERO));
    assert_eq!(
        view.backends[2].connect_failures_total(),
        3,
        "each failed probe tried to reconnect"
    );
    assert!(view.backends[0].is_up() && view.backends[1].is_up());
    assert_eq!(view.primary(), Some(0));

    stopped.start();
    checker.probe_round();
    assert!(view.backends[2].is_up(), "up after one good probe");
    assert_eq!(view.backends[2].consecutive_failures(), 0);
    assert!(view.replica_usable(2, Duration::ZERO));
    drop(stopped);
    cluster.wait_replicas_caught_up();
}

#[test]
fn the_spawned_checker_probes_until_stopped() {
    let cluster = Cluster::shared();
    let config = Arc::new(Config {
        backends: vec![backend("primary", cluster.primary_port, Role::Auto)],
        ..Config::default()
    });
    let (checker, view) = checker_for(&config, None);
    let health = checker
        .spawn(Duration::from_millis(100))
        .expect("start the health thread");

    let deadline = Instant::now() + Duration::from_secs(10);
    while view.primary() != Some(0) {
        assert!(Instant::now() < deadline, "no probe within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    health.stop();
    let stopping = Instant::now();
    health.join().expect("the health thread ends cleanly");
    assert!(stopping.elapsed() < Duration::from_secs(5));
}
