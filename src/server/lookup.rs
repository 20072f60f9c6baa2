//! `auth.mode = "query"`: fetching a role's stored secret with `auth_query`,
//! run on the primary as `auth_user`, from a thread of its own (blocking
//! sockets are fine there; workers never wait on it). Results are cached for
//! `health.interval`, so a changed password takes effect within it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::Token;

use crate::health::client::{self, ControlConn};

use super::shared::Shared;
use super::worker::WorkerMsg;

/// A worker asks for a role's secret on behalf of a client.
pub struct LookupRequest {
    pub database: String,
    pub user: String,
    pub worker: usize,
    pub client: Token,
    pub generation: u64,
}

/// The answer: `Ok(None)` for a role that does not exist or cannot log in.
pub type LookupResult = Result<Option<String>, String>;

pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Sender<LookupRequest>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("pggate-auth".into())
        .spawn(move || run(shared, rx))?;
    Ok(tx)
}

fn run(shared: Arc<Shared>, rx: Receiver<LookupRequest>) {
    let mut conns: HashMap<String, ControlConn> = HashMap::new();
    let mut cache: HashMap<(String, String), (Instant, Option<String>)> = HashMap::new();
    while let Ok(req) = rx.recv() {
        let ttl = shared.config().health.interval;
        let key = (req.database.clone(), req.user.clone());
        let result = match cache.get(&key) {
            Some((at, secret)) if at.elapsed() < ttl => Ok(secret.clone()),
            _ => {
                let r = fetch(&shared, &mut conns, &req.database, &req.user);
                if let Ok(secret) = &r {
                    cache.insert(key, (Instant::now(), secret.clone()));
                }
                r
            }
        };
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if let Some(w) = shared.workers().get(req.worker) {
            w.send(WorkerMsg::AuthSecret {
                client: req.client,
                generation: req.generation,
                result,
            });
        }
    }
}

/// Runs `auth_query` for `user` in `database` on the primary, reconnecting once
/// if a cached connection has gone bad.
fn fetch(
    shared: &Shared,
    conns: &mut HashMap<String, ControlConn>,
    database: &str,
    user: &str,
) -> LookupResult {
    let config = shared.config();
    let topo = shared.topology();
    let Some(primary) = topo.primary().and_then(|i| topo.backends.get(i)) else {
        return Err("no primary backend".into());
    };
    for attempt in 0..2 {
        if !conns.contains_key(database) {
            let password = shared.password_for(primary, database, &config.auth.auth_user);
            let password = password.as_deref();
            let timeout = config.pool.connect_timeout.max(Duration::from_millis(100));
            let conn = client::connect(
                primary.addr,
                &primary.host,
                primary.port,
                &config.auth.auth_user,
                database,
                password,
                timeout,
            )
            .map_err(|e| {
                format!(
                    "auth_user \"{}\" could not log in to backend \"{}\": {e}",
                    config.auth.auth_user, primary.name
                )
            })?;
            conns.insert(database.to_string(), conn);
        }
        let Some(conn) = conns.get_mut(database) else {
            continue;
        };
        match conn.query_params(&config.auth.auth_query, &[user]) {
            Ok(rows) => {
                // First row, second column: the stored secret (NULL: no password).
                let secret = rows
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().nth(1).flatten());
                return Ok(secret);
            }
            Err(e) if conn.is_broken() && attempt == 0 => {
                log::debug!("auth_query connection lost ({e}); reconnecting");
                conns.remove(database);
            }
            Err(e) => {
                conns.remove(database);
                return Err(format!("auth_query failed: {e}"));
            }
        }
    }
    Err("auth_query failed".into())
}
