//! Tests of the checker's rounds against scripted fake servers on local
//! sockets: parallel probes, kept and reopened control connections, role
//! changes, and reconfiguration. Real-server behaviour (lag, stopped
//! replicas, every login method) is covered by `tests/health.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use super::*;
use crate::config::Role;
use crate::protocol::write as w;

const TIMEOUT: Duration = Duration::from_millis(400);

/// How a fake server answers the probe.
#[derive(Clone)]
enum Answer {
    /// `pg_is_in_recovery()`, the LSN and the replay age, as text.
    Row(&'static str, &'static str, Option<&'static str>),
    /// Never answers (the client must time out).
    Silent,
}

/// A fake PostgreSQL server: trust logins, and each Query answered as the
/// shared [`Answer`] says. Counts the connections it accepted.
struct FakeServer {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    accepted: Arc<AtomicUsize>,
    /// Close each connection after this many answered queries.
    close_after: Arc<Mutex<Option<usize>>>,
}

impl FakeServer {
    fn start(answer: Answer) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().expect("local address").port();
        let answer = Arc::new(Mutex::new(answer));
        let accepted = Arc::new(AtomicUsize::new(0));
        let close_after = Arc::new(Mutex::new(None));
        let server = FakeServer {
            port,
            answer: Arc::clone(&answer),
            accepted: Arc::clone(&accepted),
            close_after: Arc::clone(&close_after),
        };
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let answer = Arc::clone(&answer);
                let close_after = Arc::clone(&close_after);
                thread::spawn(move || serve(stream, &answer, &close_after));
            }
        });
        server
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().expect("answer lock") = answer;
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn backend(&self, name: &str, role: Role) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            host: "127.0.0.1".to_string(),
            port: self.port,
            role,
            weight: 1,
        }
    }
}

fn serve(mut stream: TcpStream, answer: &Mutex<Answer>, close_after: &Mutex<Option<usize>>) {
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return;
    }
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
    if stream.read_exact(&mut startup).is_err() {
        return;
    }
    let mut out = Vec::new();
    w::authentication(&mut out, crate::protocol::auth_code::OK, &[]);
    w::ready_for_query(&mut out, b'I');
    if stream.write_all(&out).is_err() {
        return;
    }
    let mut answered = 0;
    loop {
        let mut header = [0u8; 5];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if stream.read_exact(&mut body).is_err() || header[0] == b'X' {
            return;
        }
        let current = answer.lock().expect("answer lock").clone();
        match current {
            Answer::Silent => thread::sleep(TIMEOUT * 4),
            Answer::Row(recovery, lsn, age) => {
                let mut out = data_row(&[Some(recovery), Some(lsn), age]);
                out.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0");
                w::ready_for_query(&mut out, b'I');
                if stream.write_all(&out).is_err() {
                    return;
                }
            }
        }
        answered += 1;
        if *close_after.lock().expect("close lock") == Some(answered) {
            return;
        }
    }
}

fn data_row(cells: &[Option<&str>]) -> Vec<u8> {
    let mut body = (cells.len() as i16).to_be_bytes().to_vec();
    for cell in cells {
        match cell {
            Some(text) => {
                body.extend_from_slice(&(text.len() as i32).to_be_bytes());
                body.extend_from_slice(text.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = vec![b'D'];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

const PRIMARY: Answer = Answer::Row("f", "0/200", None);
const STANDBY: Answer = Answer::Row("t", "0/100", Some("0.5"));

fn config(backends: Vec<BackendConfig>, failures: u32) -> Arc<Config> {
    let mut config = Config {
        backends,
        ..Config::default()
    };
    config.health.timeout = TIMEOUT;
    config.health.failures = failures;
    Arc::new(config)
}

fn checker(config: &Arc<Config>) -> (Checker, Arc<HealthView>) {
    let view = Arc::new(HealthView::new(config));
    (
        Checker::new(Arc::clone(config), None, Arc::clone(&view)),
        view,
    )
}

#[test]
fn probes_of_different_backends_run_in_parallel() {
    let servers: Vec<FakeServer> = (0..4).map(|_| FakeServer::start(Answer::Silent)).collect();
    let config = config(
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| s.backend(&format!("b{i}"), Role::Replica))
            .collect(),
        1,
    );
    let (mut checker, view) = checker(&config);
    // A silent server takes a whole timeout per probe: it logs the probe in
    // and never answers the query.
    let started = Instant::now();
    checker.probe_round();
    let elapsed = started.elapsed();
    assert!(
        elapsed < TIMEOUT * 2,
        "four silent backends took {elapsed:?}: probes waited for each other"
    );
    for state in &view.backends {
        assert!(!state.is_up(), "{}", state.name());
        assert_eq!(state.consecutive_failures(), 1, "{}", state.name());
        assert_eq!(state.connect_failures_total(), 0, "{}", state.name());
    }
}

#[test]
fn the_control_connection_is_kept_between_rounds() {
    let primary = FakeServer::start(PRIMARY);
    let replica = FakeServer::start(STANDBY);
    let config = config(
        vec![
            primary.backend("p", Role::Primary),
            replica.backend("r", Role::Replica),
        ],
        3,
    );
    let (mut checker, view) = checker(&config);
    for _ in 0..3 {
        checker.probe_round();
    }
    assert_eq!(primary.accepted(), 1);
    assert_eq!(replica.accepted(), 1);
    assert_eq!(view.primary(), Some(0));
    assert_eq!(view.primary_lsn(), 0x200);
    assert_eq!(view.backends[1].replay_lsn(), 0x100);
    assert_eq!(
        view.backends[1].replay_lag(),
        Some(Duration::from_millis(500)),
        "behind the primary: dated by its last replay"
    );
    assert_eq!(view.backends[0].replay_lag(), None);

    replica.set(Answer::Row("t", "0/200", Some("3600")));
    checker.probe_round();
    assert_eq!(
        view.backends[1].replay_lag(),
        Some(Duration::ZERO),
        "caught up: no lag however old its last transaction"
    );
}

#[test]
fn a_removed_backend_is_not_probed_and_no_longer_counts_as_the_primary() {
    // A reload replaced primary p by q: p's slot stays, marked removed.
    let p = FakeServer::start(PRIMARY);
    let q = FakeServer::start(PRIMARY);
    let r = FakeServer::start(STANDBY);
    let config = config(
        vec![
            p.backend("p", Role::Primary),
            q.backend("q", Role::Primary),
            r.backend("r", Role::Replica),
        ],
        1,
    );
    let (mut checker, view) = checker(&config);
    checker.probe_round();
    assert_eq!(
        view.primary(),
        Some(0),
        "before the removal: the first primary"
    );

    checker.set_removed(vec![true, false, false]);
    for _ in 0..3 {
        checker.probe_round();
    }
    assert_eq!(p.accepted(), 1, "a removed backend was connected to again");
    assert_eq!(q.accepted(), 1);
    assert_eq!(
        view.primary(),
        Some(1),
        "a removed primary, no longer probed, still counts as the primary"
    );
    assert_eq!(
        view.backends[2].replay_lag(),
        Some(Duration::from_millis(500)),
        "the replica's lag is measured against the primary still probed"
    );
}

#[test]
fn a_lost_control_connection_is_reopened_within_the_round() {
    let server = FakeServer::start(PRIMARY);
    *server.close_after.lock().expect("close lock") = Some(1);
    let config = config(vec![server.backend("p", Role::Primary)], 1);
    let (mut checker, view) = checker(&config);
    checker.probe_round();
    checker.probe_round();
    assert!(
        view.backends[0].is_up(),
        "a dropped idle connection is no failure"
    );
    assert_eq!(view.backends[0].consecutive_failures(), 0);
    assert_eq!(server.accepted(), 2);
}

#[test]
fn a_slow_backend_is_not_probed_twice_in_one_round() {
    let server = FakeServer::start(PRIMARY);
    let config = config(vec![server.backend("p", Role::Primary)], 3);
    let (mut checker, view) = checker(&config);
    checker.probe_round();
    server.set(Answer::Silent);
    let started = Instant::now();
    checker.probe_round();
    assert!(started.elapsed() < TIMEOUT * 2, "{:?}", started.elapsed());
    assert_eq!(view.backends[0].consecutive_failures(), 1);
    assert_eq!(view.backends[0].connect_failures_total(), 0);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn roles_follow_every_probe() {
    let a = FakeServer::start(PRIMARY);
    let b = FakeServer::start(STANDBY);
    let config = config(
        vec![a.backend("a", Role::Auto), b.backend("b", Role::Auto)],
        2,
    );
    let (mut checker, view) = checker(&config);
    assert_eq!(view.primary(), None);
    checker.probe_round();
    assert_eq!(view.primary(), Some(0));
    assert!(!view.backends[1].is_primary());

    // Failover: `a` stops answering, `b` is promoted.
    a.set(Answer::Silent);
    b.set(Answer::Row("f", "0/300", None));
    checker.probe_round();
    assert!(view.backends[1].is_primary());
    assert_eq!(
        view.primary(),
        Some(0),
        "the old primary is still up until `failures` probes fail"
    );
    checker.probe_round();
    assert!(!view.backends[0].is_up());
    assert_eq!(view.primary(), Some(1));
    assert_eq!(view.primary_lsn(), 0x300);

    // The old primary comes back as a standby.
    a.set(Answer::Row("t", "0/300", None));
    checker.probe_round();
    assert!(view.backends[0].is_up());
    assert!(!view.backends[0].is_primary());
    assert_eq!(view.primary(), Some(1));
    assert_eq!(view.backends[0].replay_lag(), Some(Duration::ZERO));
}

#[test]
fn a_malformed_probe_answer_is_a_failed_probe() {
    let server = FakeServer::start(Answer::Row("maybe", "0/1", None));
    let config = config(vec![server.backend("p", Role::Primary)], 1);
    let (mut checker, view) = checker(&config);
    checker.probe_round();
    assert!(!view.backends[0].is_up());
    assert_eq!(view.backends[0].connect_failures_total(), 0);
    server.set(PRIMARY);
    checker.probe_round();
    assert!(view.backends[0].is_up());
    assert_eq!(server.accepted(), 1, "the connection itself was fine");
}

#[test]
fn set_config_keeps_connections_and_rebuilds_the_view_when_backends_change() {
    let a = FakeServer::start(PRIMARY);
    let b = FakeServer::start(STANDBY);
    let c = FakeServer::start(STANDBY);
    let first = config(
        vec![a.backend("a", Role::Primary), b.backend("b", Role::Replica)],
        1,
    );
    let (mut checker, view) = checker(&first);
    checker.probe_round();

    // Same backends, other settings: same view, same connections.
    let mut same = (*first).clone();
    same.health.interval = Duration::from_secs(7);
    checker.set_config(Arc::new(same));
    assert!(Arc::ptr_eq(&checker.view(), &view));

    // Backends reordered and one added: a new view, old connections kept.
    let second = config(
        vec![
            c.backend("c", Role::Replica),
            b.backend("b", Role::Replica),
            a.backend("a", Role::Primary),
        ],
        1,
    );
    checker.set_config(Arc::clone(&second));
    let new_view = checker.view();
    assert!(!Arc::ptr_eq(&new_view, &view));
    assert!(new_view.matches(&second));
    assert_eq!(new_view.primary(), Some(2));
    assert_eq!(new_view.primary_lsn(), 0x200, "carried over");
    checker.probe_round();
    assert_eq!((a.accepted(), b.accepted(), c.accepted()), (1, 1, 1));
    assert!(new_view.backends.iter().all(BackendState::is_up));

    // Another probe login: every connection is reopened.
    let mut other_user = (*second).clone();
    other_user.health.user = "someone_else".to_string();
    checker.set_config(Arc::new(other_user));
    checker.probe_round();
    assert_eq!((a.accepted(), b.accepted(), c.accepted()), (2, 2, 2));
}

#[test]
fn an_unresolvable_host_is_a_connect_failure() {
    let backend = BackendConfig {
        name: "nowhere".to_string(),
        host: "nonexistent.invalid".to_string(),
        port: 5432,
        role: Role::Replica,
        weight: 1,
    };
    let config = config(vec![backend], 1);
    let (mut checker, view) = checker(&config);
    checker.probe_round();
    assert!(!view.backends[0].is_up());
    assert_eq!(view.backends[0].connect_failures_total(), 1);
}

#[test]
fn the_spawned_checker_stops_when_asked() {
    let server = FakeServer::start(PRIMARY);
    let config = config(vec![server.backend("p", Role::Auto)], 1);
    let (checker, view) = checker(&config);
    let health = checker.spawn(Duration::from_secs(3600)).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(5);
    while view.primary().is_none() {
        assert!(Instant::now() < deadline, "the first round runs at once");
        thread::sleep(Duration::from_millis(10));
    }
    health.stop();
    let stopping = Instant::now();
    health.join().expect("the checker thread ends cleanly");
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "a long interval does not delay stopping"
    );
}
