//! `auth.mode = "query"`: PgGate authenticates clients itself against the
//! role's stored secret (SCRAM-SHA-256 or MD5), keeps what the exchange gives
//! it (the ClientKey, or the MD5 hash) to log in to backends as that user, and
//! answers a role that does not exist exactly like a wrong password.

use std::sync::Arc;

use mio::Token;

use crate::auth::scram_server::{self, ScramFailure, ScramServer};
use crate::auth::{md5, parse_scram_secret};
use crate::protocol::{self, auth_code, frontend, parse_header, write};

use super::conn::{BackendState, ClientState, LocalAuth, Login};
use super::lookup::{LookupRequest, LookupResult};
use super::shared::{Credential, UserPools};
use super::worker::{client_token, Worker};

impl Worker {
    /// Asks the lookup thread for the role's secret.
    pub fn start_local_auth(&mut self, ck: usize) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let Some(s) = c.session.as_ref() else {
            return;
        };
        let Some(tx) = self.shared.lookup.get() else {
            self.fatal(ck, "08001", "authentication lookups are not running");
            return;
        };
        let req = LookupRequest {
            database: s.database.clone(),
            user: s.user.clone(),
            worker: self.id,
            client: client_token(ck),
            generation: c.generation,
        };
        c.state = ClientState::LocalAuth;
        c.local_auth = Some(Box::new(LocalAuth::Lookup));
        if tx.send(req).is_err() {
            self.fatal(ck, "08001", "authentication lookups are not running");
        }
    }

    /// The role's secret arrived: start the exchange it calls for.
    pub fn auth_secret(&mut self, client: Token, generation: u64, result: LookupResult) {
        let ck = (client.0 - 1) / 2;
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        if c.generation != generation || !matches!(c.local_auth.as_deref(), Some(LocalAuth::Lookup))
        {
            return;
        }
        let user = c
            .session
            .as_ref()
            .map(|s| s.user.clone())
            .unwrap_or_default();
        let secret = match result {
            Ok(s) => s,
            Err(e) => {
                log::warn!("auth_query for \"{user}\" failed: {e}");
                self.fatal(ck, "08001", "could not look up the role's credentials");
                return;
            }
        };
        let mut out = Vec::new();
        let auth = match secret.as_deref() {
            Some(s) if s.starts_with("md5") && md5::response_from_stored(s, [0; 4]).is_some() => {
                let salt = scram_server::md5_salt();
                write::authentication(&mut out, auth_code::MD5, &salt);
                LocalAuth::Md5 {
                    salt,
                    stored: s.to_string(),
                }
            }
            other => {
                // A role without a SCRAM secret (missing, no password, or a
                // format PgGate cannot check) gets the mock exchange.
                let parsed = other.and_then(parse_scram_secret);
                let server_key = parsed.as_ref().map(|p| p.server_key).unwrap_or([0; 32]);
                let server = ScramServer::new(&user, parsed, &self.shared.mock_key);
                write::authentication(&mut out, auth_code::SASL, &ScramServer::mechanisms());
                LocalAuth::Scram {
                    server,
                    server_key,
                    first_done: false,
                }
            }
        };
        c.local_auth = Some(Box::new(auth));
        self.send_client(ck, &out);
        self.client_input(ck);
    }

    /// The client's answers during PgGate's own authentication.
    pub fn local_auth_input(&mut self, ck: usize) {
        let max = self.config.proxy.max_message_size;
        loop {
            let Some(c) = self.clients.get_mut(ck) else {
                return;
            };
            if c.state != ClientState::LocalAuth {
                return;
            }
            let hdr = match parse_header(&c.rbuf, max) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    self.fatal(ck, "08P01", &format!("invalid message: {e}"));
                    return;
                }
            };
            if c.rbuf.len() < hdr.frame_len() {
                return;
            }
            if hdr.tag == frontend::TERMINATE {
                self.close_client(ck, "client terminated during login");
                return;
            }
            if hdr.tag != frontend::PASSWORD {
                self.fatal(ck, "08P01", "expected password response");
                return;
            }
            let frame: Vec<u8> = c.rbuf.drain(..hdr.frame_len()).collect();
            let body = &frame[5..];
            let user = c
                .session
                .as_ref()
                .map(|s| s.user.clone())
                .unwrap_or_default();
            let Some(auth) = c.local_auth.as_deref_mut() else {
                return;
            };
            let mut out = Vec::new();
            let outcome: Result<Option<Credential>, ScramFailure> = match auth {
                LocalAuth::Lookup => Err(ScramFailure::Protocol(
                    "password sent before it was asked for".into(),
                )),
                LocalAuth::Md5 { salt, stored } => {
                    let response = protocol::cstr(body)
                        .and_then(|(r, _)| std::str::from_utf8(r).ok())
                        .unwrap_or("");
                    if md5::verify_response(stored, *salt, response) {
                        Ok(Some(Credential::Md5(stored.clone())))
                    } else {
                        Err(ScramFailure::AuthFailed)
                    }
                }
                LocalAuth::Scram {
                    server,
                    server_key,
                    first_done,
                } => {
                    if !*first_done {
                        match scram_server::parse_initial_response(body) {
                            None => Err(ScramFailure::Protocol(
                                "malformed SASLInitialResponse".into(),
                            )),
                            Some((mechanism, data)) => {
                                server.client_first(mechanism, data).map(|server_first| {
                                    *first_done = true;
                                    write::authentication(
                                        &mut out,
                                        auth_code::SASL_CONTINUE,
                                        &server_first,
                                    );
                                    None
                                })
                            }
                        }
                    } else {
                        server.client_final(body).map(|(server_final, client_key)| {
                            write::authentication(&mut out, auth_code::SASL_FINAL, &server_final);
                            Some(Credential::ScramKeys {
                                client_key,
                                server_key: *server_key,
                            })
                        })
                    }
                }
            };
            match outcome {
                Ok(None) => {
                    self.send_client(ck, &out);
                }
                Ok(Some(credential)) => {
                    self.send_client(ck, &out);
                    self.local_login_done(ck, credential);
                    return;
                }
                Err(failure) => {
                    crate::ops::metrics().clients_rejected.auth_failed.inc();
                    log::info!("authentication of \"{user}\" failed: {failure}");
                    let msg = failure.message(&user);
                    self.fatal_raw(ck, failure.sqlstate(), &msg);
                    return;
                }
            }
        }
    }

    /// The client proved who it is: remember how to log in as it, then show
    /// it the server's parameters.
    fn local_login_done(&mut self, ck: usize, credential: Credential) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.local_auth = None;
        if let Some(s) = c.session.as_ref() {
            *s.pools.credential.write() = Some(credential);
        }
        self.finish_local_login(ck);
    }

    /// PgGate let the client in itself (query mode, or a user the primary
    /// trusts): AuthenticationOk, then the server's parameters as a primary
    /// connection of the pool reported them.
    pub fn finish_local_login(&mut self, ck: usize) {
        let Some(pools) = self
            .clients
            .get(ck)
            .and_then(|c| c.session.as_ref())
            .map(|s| s.pools.clone())
        else {
            return;
        };
        let mut out = Vec::new();
        write::authentication(&mut out, auth_code::OK, &[]);
        self.send_client(ck, &out);
        let known = pools.server_params.read().clone();
        if let Some(params) = known {
            self.send_login_tail(ck, &params);
            return;
        }
        // No primary connection of this pool has reported its parameters yet:
        // open one on this worker unless one is on its way. It joins the pool
        // when there is room.
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.state = ClientState::AwaitingParams;
        let generation = c.generation;
        self.param_waiters.push((ck, generation));
        let primary = self.primary_index();
        // (A relayed login's connection reports nothing to the pool.)
        let opening = self.backends.iter().any(|(_, b)| {
            b.index == primary
                && matches!(b.login, Login::Own { .. })
                && Arc::ptr_eq(&b.pools, &pools)
                && matches!(
                    b.state,
                    BackendState::Connecting
                        | BackendState::TlsNegotiating
                        | BackendState::Authenticating
                )
        });
        if !opening {
            let counted = pools.per_backend[primary].try_reserve(self.config.pool.size);
            self.open_pool_connection(primary, &pools, counted);
        }
    }

    /// Opens a connection for the pool itself (no client waits for it).
    /// `counted`: it holds a slot of the pool's cap; if not, it takes one
    /// when it has logged in, or is closed.
    pub fn open_pool_connection(&mut self, index: usize, pools: &Arc<UserPools>, counted: bool) {
        let mut startup = Vec::new();
        write::startup_message(
            &mut startup,
            [
                ("user", pools.user.as_str()),
                ("database", pools.database.as_str()),
            ],
        );
        match self.open_backend(
            index,
            pools.clone(),
            super::conn::Login::Own { scram: None },
            startup,
            None,
        ) {
            Ok(bk) => {
                if let Some(b) = self.backends.get_mut(bk) {
                    b.counted = counted;
                }
            }
            Err(e) => {
                if counted {
                    pools.per_backend[index].release_slot();
                }
                self.serve_param_waiters(pools, Some(&e));
            }
        }
    }

    /// A primary connection of `pools` logged in (or failed to): the clients
    /// waiting for its parameters finish logging in (or are refused).
    pub fn serve_param_waiters(&mut self, pools: &Arc<UserPools>, error: Option<&str>) {
        let waiting: Vec<(usize, u64)> = std::mem::take(&mut self.param_waiters);
        let params = pools.server_params.read().clone();
        for (ck, generation) in waiting {
            let mine = self.clients.get(ck).is_some_and(|c| {
                c.generation == generation
                    && c.state == ClientState::AwaitingParams
                    && c.session
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(&s.pools, pools))
            });
            if !mine {
                if self
                    .clients
                    .get(ck)
                    .is_some_and(|c| c.generation == generation)
                {
                    self.param_waiters.push((ck, generation));
                }
                continue;
            }
            match (&params, error) {
                (Some(p), _) => self.send_login_tail(ck, p),
                (None, Some(e)) => {
                    let name = self.topo.backends[self.primary_index()].name.clone();
                    self.fatal(
                        ck,
                        "08001",
                        &format!("could not connect to backend \"{name}\": {e}"),
                    );
                }
                (None, None) => self.param_waiters.push((ck, generation)),
            }
        }
    }

    /// ParameterStatus (the server's, with the client's own settings shown
    /// as it asked), BackendKeyData and ReadyForQuery: the client is in.
    fn send_login_tail(&mut self, ck: usize, server: &[(String, String)]) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let Some(s) = c.session.as_ref() else {
            return;
        };
        let mut out = Vec::new();
        for (name, value) in server {
            let lower = name.to_ascii_lowercase();
            let value = s
                .params
                .iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, v)| v.as_str())
                .unwrap_or(value);
            write::parameter_status(&mut out, name, value);
        }
        write::backend_key_data(&mut out, s.key.0, s.key.1);
        write::ready_for_query(&mut out, b'I');
        c.state = ClientState::Ready;
        self.send_client(ck, &out);
        self.client_input(ck);
    }
}
