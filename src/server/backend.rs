//! The backend side: opening connections, logging in (relaying a client's
//! login, or PgGate's own with the credentials file), bringing session
//! parameters to the linked client's values, passing results through to the
//! client by header only, and noticing ReadyForQuery. State changes of a
//! backend connection happen here and in `pool.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use crate::auth::{self, ScramClient, ScramCredential};
use crate::config::{AuthMode, BackendTlsMode, ReadYourWrites};
use crate::protocol::{self, auth_code, backend as tag, write};

use super::conn::{Backend, BackendState, Client, ClientState, Login, Params};
use super::extended::{self, Reply, Undo};
use super::session::write_command_complete;
use super::shared::Credential;
use super::stream::{HandshakeStep, Stream};
use super::worker::{backend_token, write_or_buffer, TimerKind, Worker, OUTPUT_HIGH_WATER};

/// Backend messages during login and resets are small; anything larger than
/// this before ReadyForQuery is a protocol violation.
const MAX_CONTROL_MESSAGE: usize = 1 << 20;

/// One complete message at the start of `buf`: (tag, frame length).
fn whole_frame(buf: &[u8]) -> Result<Option<(u8, usize)>, String> {
    match protocol::parse_header(buf, MAX_CONTROL_MESSAGE) {
        Ok(Some(h)) if buf.len() >= h.frame_len() => Ok(Some((h.tag, h.frame_len()))),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("invalid message from server: {e}")),
    }
}

impl Worker {
    /// Starts a connection to backend `index`. The startup packet is sent once
    /// the TCP connect completes.
    pub fn open_backend(
        &mut self,
        index: usize,
        pools: Arc<super::shared::UserPools>,
        login: Login,
        startup: Vec<u8>,
        for_client: Option<(usize, u64)>,
    ) -> Result<usize, String> {
        let addr = self.topo.backends[index].addr;
        let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let generation = self.generation();
        let entry = self.backends.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut sock,
                backend_token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        // With backend TLS the first bytes are an SSLRequest; the startup
        // packet waits for the handshake.
        let tls = self.shared.tls.read().connector.is_some();
        let (first, pending_startup) = if tls {
            (ssl_request().to_vec(), Some(startup))
        } else {
            (startup, None)
        };
        entry.insert(Backend {
            sock: Stream::Plain(sock),
            generation,
            state: BackendState::Connecting,
            login,
            index,
            pools,
            counted: false,
            rbuf: Vec::new(),
            wbuf: first,
            skip: 0,
            key: None,
            baseline: Params::default(),
            applied: Params::default(),
            server_params: Vec::new(),
            swallow_to_ready: false,
            pending_startup,
            pending_applied: None,
            sync_error: None,
            client: for_client,
            replies: std::collections::VecDeque::new(),
            prepared: Default::default(),
            tick: 0,
            tx_status: b'I',
            cancel_sent: false,
            dirty: false,
            created: now,
            idle_since: now,
            eof: false,
            read_paused: false,
            deferred: false,
            hup: false,
            followers: std::collections::VecDeque::new(),
            follow_ok: false,
            busy_since: now,
            read_time: std::time::Duration::ZERO,
        });
        let timeout = self.config.pool.connect_timeout;
        self.add_timer(timeout, TimerKind::Connect, key, generation);
        Ok(key)
    }

    /// Opens one of PgGate's own connections for a waiting client. The caller
    /// has reserved a pool slot.
    pub fn open_own(&mut self, ck: usize, index: usize, reserved: &Arc<super::shared::UserPools>) {
        let Some(s) = self.clients.get(ck).and_then(|c| c.session.as_ref()) else {
            reserved.per_backend[index].release_slot();
            return;
        };
        let generation = self.clients.get(ck).map(|c| c.generation).unwrap_or(0);
        let pools = s.pools.clone();
        let mut startup = Vec::new();
        write::startup_message(
            &mut startup,
            [("user", s.user.as_str()), ("database", s.database.as_str())],
        );
        match self.open_backend(
            index,
            pools.clone(),
            Login::Own { scram: None },
            startup,
            Some((ck, generation)),
        ) {
            Ok(bk) => {
                if let Some(b) = self.backends.get_mut(bk) {
                    b.counted = true;
                }
            }
            Err(e) => {
                pools.per_backend[index].release_slot();
                self.own_connect_failed_for(ck, generation, index, &e, false);
            }
        }
    }

    pub fn connect_timeout(&mut self, bk: usize, generation: u64) {
        let Some(b) = self.backends.get(bk) else {
            return;
        };
        if b.generation != generation {
            return;
        }
        if matches!(
            b.state,
            BackendState::Connecting | BackendState::TlsNegotiating | BackendState::Authenticating
        ) {
            self.backend_connect_failed(bk, "timeout expired (pool.connect_timeout)");
        }
    }

    /// Handles what a backend sent, according to its state.
    pub fn backend_input(&mut self, bk: usize) {
        let Some(b) = self.backends.get(bk) else {
            return;
        };
        let result = match b.state {
            BackendState::Connecting => Ok(()),
            BackendState::TlsNegotiating => self.tls_answer_input(bk),
            BackendState::Authenticating => match b.login {
                Login::Relay { client } => self.relay_login_input(bk, client),
                Login::Own { .. } => self.own_login_input(bk),
            },
            BackendState::Syncing => self.sync_input(bk),
            BackendState::Linked => self.linked_input(bk),
            BackendState::Idle | BackendState::Held => self.idle_input(bk),
            BackendState::Resetting { .. } => self.reset_input(bk),
        };
        if let Err(e) = result {
            self.backend_lost(bk, &e);
        }
    }

    /// The server's answer to PgGate's SSLRequest: 'S' starts the handshake,
    /// 'N' continues in the clear only with `backend_tls.mode = "prefer"`.
    fn tls_answer_input(&mut self, bk: usize) -> Result<(), String> {
        let Some(b) = self.backends.get_mut(bk) else {
            return Ok(());
        };
        let Some(&answer) = b.rbuf.first() else {
            return Ok(());
        };
        if b.rbuf.len() > 1 {
            // Nothing may follow the answer before the handshake (CVE-2021-23222).
            return Err("server sent unexpected data after its SSLRequest answer".into());
        }
        b.rbuf.clear();
        let tls = self.shared.tls.read().clone();
        match answer {
            b'S' => {
                let Some(connector) = tls.connector.as_ref() else {
                    return Err("TLS connector missing".into());
                };
                let host = self.topo.backends[b.index].host.clone();
                let Some(tcp) = b.sock.take_plain() else {
                    return Err("socket lost before TLS".into());
                };
                match b.sock.start_handshake(connector.connect(&host, tcp)) {
                    HandshakeStep::Done => self.backend_tls_ready(bk),
                    HandshakeStep::InProgress => Ok(()),
                    HandshakeStep::Failed(e) => Err(format!("TLS handshake failed: {e}")),
                }
            }
            b'N' if tls.backend_mode == BackendTlsMode::Prefer => {
                b.state = BackendState::Authenticating;
                let startup = b.pending_startup.take().unwrap_or_default();
                if self.send_backend(bk, &startup) {
                    Ok(())
                } else {
                    Err("could not write to server".into())
                }
            }
            b'N' => Err("server does not support TLS (backend_tls.mode requires it)".into()),
            other => Err(format!("unexpected answer {other} to SSLRequest")),
        }
    }

    /// The backend TLS handshake finished: the startup packet goes now.
    pub fn backend_tls_ready(&mut self, bk: usize) -> Result<(), String> {
        let Some(b) = self.backends.get_mut(bk) else {
            return Ok(());
        };
        b.state = BackendState::Authenticating;
        let startup = b.pending_startup.take().unwrap_or_default();
        if self.send_backend(bk, &startup) {
            Ok(())
        } else {
            Err("could not write to server".into())
        }
    }

    /// Relays the server's side of a client's login.
    fn relay_login_input(&mut self, bk: usize, ck: usize) -> Result<(), String> {
        loop {
            let Some(b) = self.backends.get_mut(bk) else {
                return Ok(());
            };
            let Some((t, len)) = whole_frame(&b.rbuf)? else {
                return Ok(());
            };
            let frame: Vec<u8> = b.rbuf.drain(..len).collect();
            let body = &frame[5..];
            if let Some(s) = self.clients.get_mut(ck).and_then(|c| c.session.as_mut()) {
                s.relay_started = true;
            }
            match t {
                tag::AUTHENTICATION => {
                    let (code, payload) = protocol::parse_auth_request(body)
                        .ok_or("invalid authentication request")?;
                    if code != auth_code::OK {
                        if let Some(s) = self.clients.get_mut(ck).and_then(|c| c.session.as_mut()) {
                            s.relay_challenged = true;
                        }
                    }
                    if code == auth_code::SASL {
                        // Channel binding cannot cross a proxy: never offer -PLUS.
                        let Some(list) = auth::without_plus(payload) else {
                            self.fatal(
                                ck,
                                "28000",
                                "the server offers only SASL mechanisms that need channel binding, \
                                 which cannot pass through a proxy",
                            );
                            self.close_backend(bk, "no usable SASL mechanism");
                            return Ok(());
                        };
                        let mut out = Vec::new();
                        write::authentication(&mut out, code, &list);
                        self.send_client(ck, &out);
                    } else {
                        self.send_client(ck, &frame);
                    }
                }
                tag::ERROR_RESPONSE => {
                    let code = protocol::parse_error_fields(body).code;
                    if code.starts_with("28") {
                        crate::ops::metrics().clients_rejected.auth_failed.inc();
                    }
                    // Anything but a bad startup setting (classes 22, 42) may
                    // mean the primary no longer lets this user in freely.
                    if !(code.starts_with("22") || code.starts_with("42")) {
                        b.pools.clear_trusted();
                    }
                    // PostgreSQL's own words (e.g. 28P01) reach the client unchanged.
                    self.send_client(ck, &frame);
                    self.close_backend(bk, "login refused");
                    self.finish_client_after_error(ck);
                    return Ok(());
                }
                tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE => {
                    self.send_client(ck, &frame);
                }
                tag::BACKEND_KEY_DATA => {
                    b.key = protocol::parse_backend_key_data(body);
                    let key = self
                        .clients
                        .get(ck)
                        .and_then(|c| c.session.as_ref())
                        .map(|s| s.key);
                    if let Some((pid, secret)) = key {
                        let mut out = Vec::new();
                        write::backend_key_data(&mut out, pid, secret);
                        self.send_client(ck, &out);
                    }
                }
                tag::NEGOTIATE_PROTOCOL_VERSION => {}
                tag::READY_FOR_QUERY => {
                    // In without a password, startup settings accepted: later
                    // logins like this one need no relay for a while.
                    let session = self.clients.get(ck).and_then(|c| c.session.as_ref());
                    if let Some(s) = session.filter(|s| !s.relay_challenged) {
                        s.pools
                            .set_trusted(b.index, self.config.health.interval, &s.params);
                    }
                    self.send_client(ck, &frame);
                    self.relay_login_done(bk, ck);
                    return Ok(());
                }
                t => {
                    return Err(format!(
                        "unexpected message type {t} from server during login"
                    ))
                }
            }
        }
    }

    /// Sends a final error already queued to the client and closes it.
    fn finish_client_after_error(&mut self, ck: usize) {
        if let Some(c) = self.clients.get_mut(ck) {
            c.state = ClientState::Closing;
            c.read_paused = true;
            if c.wbuf.is_empty() {
                self.close_client(ck, "login refused");
            }
        }
    }

    /// The client is logged in. Its relay connection joins the pool if there is
    /// room (logins never wait behind busy transactions), else it is closed.
    fn relay_login_done(&mut self, bk: usize, ck: usize) {
        let params = self
            .clients
            .get(ck)
            .and_then(|c| c.session.as_ref())
            .map(|s| s.params.clone());
        if let Some(c) = self.clients.get_mut(ck) {
            c.state = ClientState::Ready;
        }
        let cap = self.config.pool.size;
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        b.login = Login::Own { scram: None };
        let params = params.unwrap_or_default();
        b.baseline = params.clone();
        b.applied = params;
        b.client = None;
        b.state = BackendState::Idle;
        if b.pools.per_backend[b.index].try_reserve(cap) {
            b.counted = true;
            self.put_idle(bk);
        } else {
            self.close_backend(bk, "pool full after login");
        }
        self.client_input(ck);
    }

    /// PgGate's own login with the credentials file.
    fn own_login_input(&mut self, bk: usize) -> Result<(), String> {
        loop {
            let Some(b) = self.backends.get_mut(bk) else {
                return Ok(());
            };
            let Some((t, len)) = whole_frame(&b.rbuf)? else {
                return Ok(());
            };
            let frame: Vec<u8> = b.rbuf.drain(..len).collect();
            let body = &frame[5..];
            match t {
                tag::AUTHENTICATION => {
                    let (code, payload) = protocol::parse_auth_request(body)
                        .ok_or("invalid authentication request")?;
                    if code == auth_code::OK {
                        continue;
                    }
                    let info = &self.topo.backends[b.index];
                    let user = b.pools.user.clone();
                    // Query mode: what the client's own login gave PgGate;
                    // otherwise the credentials file.
                    let secret = match self.config.auth.mode {
                        AuthMode::Query => b.pools.credential.read().clone(),
                        AuthMode::Passthrough => self
                            .shared
                            .password_for(info, &b.pools.database, &user)
                            .map(Credential::Password),
                    };
                    let mut out = Vec::new();
                    let missing = match (code, &secret) {
                        (auth_code::CLEARTEXT, Some(Credential::Password(_))) => false,
                        (auth_code::MD5, Some(Credential::Password(_) | Credential::Md5(_))) => {
                            false
                        }
                        (
                            auth_code::SASL,
                            Some(Credential::Password(_) | Credential::ScramKeys { .. }),
                        ) => false,
                        (auth_code::CLEARTEXT | auth_code::MD5 | auth_code::SASL, _) => true,
                        _ => false,
                    };
                    if missing {
                        let what = match self.config.auth.mode {
                            AuthMode::Query => "no matching secret from the client's login",
                            AuthMode::Passthrough => "no password in auth.credentials_file",
                        };
                        self.own_login_failed(bk, &format!("{what} for user \"{user}\""), true);
                        return Ok(());
                    }
                    match code {
                        auth_code::CLEARTEXT => {
                            if let Some(Credential::Password(p)) = &secret {
                                write::password_message(&mut out, p);
                            }
                        }
                        auth_code::MD5 => {
                            let salt: [u8; 4] = payload
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or("invalid MD5 salt")?;
                            let resp = match &secret {
                                Some(Credential::Password(p)) => {
                                    auth::md5::password_response(&user, p, salt)
                                }
                                Some(Credential::Md5(stored)) => {
                                    auth::md5::response_from_stored(stored, salt)
                                        .ok_or("invalid stored MD5 hash")?
                                }
                                _ => return Err("no MD5 credential".into()),
                            };
                            write::password_message(&mut out, &resp);
                        }
                        auth_code::SASL => {
                            let mechs = auth::mechanisms(payload).map_err(|e| e.to_string())?;
                            if !mechs.iter().any(|m| m == auth::sasl::SCRAM_SHA_256) {
                                return Err(format!(
                                    "server offers no supported SASL mechanism: {mechs:?}"
                                ));
                            }
                            let cred = match secret {
                                Some(Credential::Password(p)) => ScramCredential::Password(p),
                                Some(Credential::ScramKeys {
                                    client_key,
                                    server_key,
                                }) => ScramCredential::Keys {
                                    client_key,
                                    server_key,
                                },
                                _ => return Err("no SCRAM credential".into()),
                            };
                            let scram = ScramClient::new(cred).map_err(|e| e.to_string())?;
                            write::sasl_initial_response(
                                &mut out,
                                auth::sasl::SCRAM_SHA_256,
                                &scram.client_first_message(),
                            );
                            b.login = Login::Own {
                                scram: Some(Box::new(scram)),
                            };
                        }
                        auth_code::SASL_CONTINUE => {
                            let Login::Own { scram: Some(scram) } = &mut b.login else {
                                return Err("unexpected SASL continue".into());
                            };
                            let reply = scram
                                .handle_server_first(payload)
                                .map_err(|e| format!("SCRAM: {e}"))?;
                            write::sasl_response(&mut out, &reply);
                        }
                        auth_code::SASL_FINAL => {
                            let Login::Own { scram: Some(scram) } = &b.login else {
                                return Err("unexpected SASL final".into());
                            };
                            scram
                                .verify_server_final(payload)
                                .map_err(|e| format!("SCRAM: {e}"))?;
                        }
                        other => {
                            return Err(format!("unsupported authentication request {other}"));
                        }
                    }
                    if !out.is_empty() && !self.send_backend(bk, &out) {
                        return Err("could not write to server".into());
                    }
                }
                tag::ERROR_RESPONSE => {
                    let f = protocol::parse_error_fields(body);
                    self.own_login_failed(bk, &f.message, false);
                    return Ok(());
                }
                tag::BACKEND_KEY_DATA => b.key = protocol::parse_backend_key_data(body),
                tag::PARAMETER_STATUS => {
                    if let Some(p) = protocol::parse_parameter_status(body) {
                        b.server_params.push(p);
                    }
                }
                tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
                tag::READY_FOR_QUERY => {
                    self.own_login_done(bk);
                    return Ok(());
                }
                t => {
                    return Err(format!(
                        "unexpected message type {t} from server during login"
                    ))
                }
            }
        }
    }

    fn own_login_done(&mut self, bk: usize) {
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        b.state = BackendState::Idle;
        b.login = Login::Own { scram: None };
        let waiting = b.client.take();
        let index = b.index;
        if Some(index) == self.topo.primary() && !b.server_params.is_empty() {
            // What a client logging in by query mode is shown of the server.
            let params = Arc::new(std::mem::take(&mut b.server_params));
            *b.pools.server_params.write() = Some(params);
            let pools = b.pools.clone();
            self.serve_param_waiters(&pools, None);
        }
        if let Some(b) = self.backends.get_mut(bk) {
            if !b.counted {
                // Opened only to learn the server's parameters.
                if !b.pools.per_backend[index].try_reserve(self.config.pool.size) {
                    self.close_backend(bk, "pool full after login");
                    return;
                }
                b.counted = true;
            }
        }
        if let Some((ck, generation)) = waiting {
            if self.client_waits_for(ck, generation, index) {
                self.link_and_go(ck, bk);
                return;
            }
        }
        self.put_idle(bk);
    }

    /// Whether client `ck` (of this generation) is waiting for backend `index`.
    pub fn client_waits_for(&self, ck: usize, generation: u64, index: usize) -> bool {
        self.clients.get(ck).is_some_and(|c| {
            c.generation == generation
                && matches!(c.state, ClientState::WaitingForBackend { backend_index, .. } if backend_index == index)
        })
    }

    /// PgGate's own login failed (`no_password`: the server wanted a password
    /// PgGate does not have).
    fn own_login_failed(&mut self, bk: usize, reason: &str, no_password: bool) {
        let Some(b) = self.backends.get(bk) else {
            return;
        };
        let index = b.index;
        let waiting = b.client;
        let name = self.topo.backends[index].name.clone();
        log::warn!(
            "login to backend \"{name}\" as \"{}\" failed: {reason}",
            b.pools.user
        );
        if no_password && Some(index) != self.topo.primary() {
            b.pools.no_replica_password.store(true, Ordering::Relaxed);
            self.shared.warn_no_password(&b.pools.user, &name);
        }
        let pools = b.pools.clone();
        pools.clear_trusted();
        if let Some(b) = self.backends.get_mut(bk) {
            b.client = None;
        }
        self.close_backend(bk, "login failed");
        if Some(index) == self.topo.primary() {
            self.serve_param_waiters(&pools, Some(reason));
        }
        if let Some((ck, generation)) = waiting {
            self.own_connect_failed_for(ck, generation, index, reason, no_password);
        }
    }

    /// A connection opened for a waiting client could not be made: reads try
    /// the primary, everything else gets 08001 naming the backend.
    fn own_connect_failed_for(
        &mut self,
        ck: usize,
        generation: u64,
        index: usize,
        reason: &str,
        no_password: bool,
    ) {
        if !self.client_waits_for(ck, generation, index) {
            return;
        }
        let primary = self.primary_index();
        if index != primary {
            // A read: another replica, then the primary.
            let tried = match self.clients.get_mut(ck) {
                Some(c) => {
                    c.state = ClientState::Ready;
                    if index < 64 {
                        c.tried |= 1 << index;
                    }
                    c.tried
                }
                None => return,
            };
            let next = self.pick_replica(tried).unwrap_or(primary);
            if self.checkout(ck, next) {
                self.client_input(ck);
            }
            return;
        }
        let retries = self.config.pool.connect_retries;
        let attempts = self
            .clients
            .get(ck)
            .map(|c| c.connect_attempts)
            .unwrap_or(u32::MAX);
        if !no_password && attempts < retries {
            // Doubling backoff, then the same checkout again.
            let backoff = self
                .config
                .pool
                .retry_backoff
                .saturating_mul(1u32 << attempts.min(16));
            if let Some(c) = self.clients.get_mut(ck) {
                c.connect_attempts += 1;
            }
            log::debug!("backend connect failed ({reason}); retrying in {backoff:?}");
            self.add_timer(backoff, TimerKind::Retry, ck, generation);
            if backoff.is_zero() {
                self.retry_checkout(ck, generation);
            }
            return;
        }
        let name = self.topo.backends[index].name.clone();
        self.fail_pending(
            ck,
            "08001",
            &format!("could not connect to backend \"{name}\": {reason}"),
        );
    }

    /// A backoff after a failed connect ended: try the checkout again.
    pub fn retry_checkout(&mut self, ck: usize, generation: u64) {
        let Some(c) = self.clients.get(ck) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let ClientState::WaitingForBackend { backend_index, .. } = c.state else {
            return;
        };
        if let Some(c) = self.clients.get_mut(ck) {
            c.state = ClientState::Ready;
        }
        if self.checkout(ck, backend_index) {
            self.client_input(ck);
        }
    }

    pub fn backend_connect_failed(&mut self, bk: usize, reason: &str) {
        let Some(b) = self.backends.get(bk) else {
            return;
        };
        crate::ops::metrics().errors.backend_connect.inc();
        let name = self.topo.backends[b.index].name.clone();
        match b.login {
            Login::Relay { client } => {
                self.close_backend(bk, "connect failed");
                let retries = self.config.pool.connect_retries;
                let retry = self.clients.get_mut(client).and_then(|c| {
                    let started = c.session.as_ref().is_none_or(|s| s.relay_started);
                    if started || c.connect_attempts >= retries {
                        return None;
                    }
                    c.connect_attempts += 1;
                    c.state = ClientState::RelayRetry;
                    Some((c.connect_attempts - 1, c.generation))
                });
                match retry {
                    Some((attempt, generation)) => {
                        let backoff = self
                            .config
                            .pool
                            .retry_backoff
                            .saturating_mul(1u32 << attempt.min(16));
                        log::warn!(
                            "login connection to backend \"{name}\" failed ({reason}); retrying in {backoff:?}"
                        );
                        if backoff.is_zero() {
                            self.relay_retry(client, generation);
                        } else {
                            self.add_timer(backoff, TimerKind::RelayRetry, client, generation);
                        }
                    }
                    None => {
                        log::warn!("login connection to backend \"{name}\" failed: {reason}");
                        self.fatal(
                            client,
                            "08001",
                            &format!("could not connect to backend \"{name}\": {reason}"),
                        );
                    }
                }
            }
            Login::Own { .. } => {
                let index = b.index;
                self.suspect_replica(index, &name, reason);
                self.own_login_failed(bk, reason, false)
            }
        }
    }

    /// A replica a new connection could not reach leaves the read rotation at
    /// once, instead of every read trying it first until the probes notice
    /// (up to `health.failures` intervals); its next good probe brings it
    /// back. The primary is left to the probes.
    fn suspect_replica(&self, index: usize, name: &str, reason: &str) {
        if Some(index) == self.topo.primary() {
            return;
        }
        if self
            .topo
            .health
            .backends
            .get(index)
            .is_some_and(|state| state.suspect())
        {
            log::warn!(
                "backend \"{name}\" marked down: a connection to it failed ({reason}); \
                 the next good health check brings it back"
            );
        }
    }

    /// Swallows the replies to the parameter SETs; then the client's batch goes.
    fn sync_input(&mut self, bk: usize) -> Result<(), String> {
        loop {
            let Some(b) = self.backends.get_mut(bk) else {
                return Ok(());
            };
            let Some((t, len)) = whole_frame(&b.rbuf)? else {
                return Ok(());
            };
            if t == tag::ERROR_RESPONSE && b.sync_error.is_none() {
                let f = protocol::parse_error_fields(&b.rbuf[5..len]);
                b.sync_error = Some(f.message);
            }
            let status = b.rbuf.get(5).copied();
            b.rbuf.drain(..len);
            if t != tag::READY_FOR_QUERY {
                continue;
            }
            let Some((ck, _)) = b.client else {
                self.release(bk);
                return Ok(());
            };
            if let Some(err) = b.sync_error.take() {
                b.dirty = true;
                if let Some(c) = self.clients.get_mut(ck) {
                    c.backend = None;
                }
                b.client = None;
                self.close_backend(bk, "could not apply session parameters");
                self.fail_pending(
                    ck,
                    "08P01",
                    &format!("could not apply the session's startup parameters: {err}"),
                );
                return Ok(());
            }
            if status != Some(b'I') {
                return Err("server not idle after applying parameters".into());
            }
            if let Some(p) = b.pending_applied.take() {
                b.applied = p;
            }
            b.state = BackendState::Linked;
            self.client_ready_input(ck);
            return Ok(());
        }
    }

    /// Passes the server's replies to the client by header only, in runs;
    /// swallows the replies to messages PgGate injected, sends PgGate's own
    /// replies in their turn, and follows ReadyForQuery to decide when the
    /// connection is released.
    fn linked_input(&mut self, bk: usize) -> Result<(), String> {
        let now = self.now;
        let Some(b) = self.backends.get_mut(bk) else {
            return Ok(());
        };
        let Some((ck, generation)) = b.client else {
            return Ok(());
        };
        let Some(c) = self.clients.get_mut(ck) else {
            return Ok(());
        };
        if c.generation != generation || c.backend != Some(bk) {
            return Err("linked to a client that moved on".into());
        }
        if matches!(b.replies.front(), Some(Reply::CaptureLsn)) {
            return self.capture_lsn(ck, bk);
        }
        if c.retry_armed && c.retry_collecting {
            // Replies before the batch's Sync (the client flushed): they go to
            // the client now, so the batch can no longer be sent again.
            c.retry_armed = false;
            c.retry_collecting = false;
        }
        if c.retry_armed || b.swallow_to_ready {
            let on_primary = Some(b.index) == self.topo.primary();
            match hold_for_retry(
                c,
                b,
                on_primary && !b.swallow_to_ready,
                self.config.routing.retry_read_only_errors,
            )? {
                Held::Waiting => return Ok(()),
                Held::Forward => {}
                Held::RetryOnPrimary => {
                    self.retry_on_primary(ck, bk);
                    return Ok(());
                }
            }
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mut pos = 0;
        let mut run = 0;
        let mut ready = None;
        let mut result = Ok(());
        let len = b.rbuf.len();
        loop {
            if b.skip > 0 {
                let n = b.skip.min(len - pos);
                pos += n;
                b.skip -= n;
                if b.skip > 0 {
                    break;
                }
                continue;
            }
            // PgGate's own replies go out when their turn comes.
            match b.replies.front_mut() {
                Some(Reply::CopyEnd) => {
                    b.replies.pop_front();
                    continue;
                }
                Some(Reply::Local { bytes, .. }) => {
                    out.extend_from_slice(&b.rbuf[run..pos]);
                    out.extend_from_slice(bytes);
                    run = pos;
                    b.replies.pop_front();
                    continue;
                }
                Some(Reply::LocalReady { tag }) => {
                    out.extend_from_slice(&b.rbuf[run..pos]);
                    write_command_complete(&mut out, tag);
                    write::ready_for_query(&mut out, b.tx_status);
                    run = pos;
                    ready = Some(b.tx_status);
                    b.replies.pop_front();
                    continue;
                }
                _ => {}
            }
            if len - pos < 5 {
                break;
            }
            let t = b.rbuf[pos];
            let mlen = u32::from_be_bytes([
                b.rbuf[pos + 1],
                b.rbuf[pos + 2],
                b.rbuf[pos + 3],
                b.rbuf[pos + 4],
            ]) as usize;
            if mlen < 4 {
                result = Err(format!("invalid message length {mlen} from server"));
                break;
            }
            match t {
                tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS | tag::NOTIFICATION_RESPONSE => {}
                tag::READY_FOR_QUERY => {
                    if mlen != 5 {
                        result = Err("invalid ReadyForQuery from server".into());
                        break;
                    }
                    if len - pos < 6 {
                        break;
                    }
                    if !matches!(b.replies.front(), Some(Reply::Ready(_))) {
                        result =
                            Err("ReadyForQuery out of turn: the connection is out of step".into());
                        break;
                    }
                    if let Some(Reply::Ready(started)) = b.replies.pop_front() {
                        let m = crate::ops::metrics();
                        let replica = Some(b.index) != self.topo.primary();
                        let (queries, duration, transactions) = if replica {
                            (
                                &m.queries.replica,
                                &m.query_duration.replica,
                                &m.transactions.replica,
                            )
                        } else {
                            (
                                &m.queries.primary,
                                &m.query_duration.primary,
                                &m.transactions.primary,
                            )
                        };
                        queries.inc();
                        duration.observe(now.saturating_duration_since(started).as_secs_f64());
                        if b.rbuf[pos + 5] == b'I' {
                            transactions.inc();
                        }
                    }
                    b.tx_status = b.rbuf[pos + 5];
                    ready = Some(b.tx_status);
                    pos += 6;
                    if b.replies.is_empty() && !b.followers.is_empty() {
                        // What comes next is a follower's: hand over first.
                        break;
                    }
                    continue;
                }
                tag::ERROR_RESPONSE => {
                    // The message failed; the server skips to Sync. Whatever
                    // PgGate expected for the skipped messages will not come.
                    if let Some(Reply::Forward { .. } | Reply::Swallow { .. }) = b.replies.front() {
                        let mut failed = b.replies.pop_front();
                        if let Some(u) = failed.as_mut().and_then(Reply::take_undo) {
                            apply_undo(c, b, *u);
                        }
                        while !matches!(b.replies.front(), Some(Reply::Ready(_)) | None) {
                            if let Some(mut skipped) = b.replies.pop_front() {
                                if let Some(u) = skipped.take_undo() {
                                    apply_undo(c, b, *u);
                                }
                            }
                        }
                        if b.replies.is_empty() {
                            // The client has not sent its Sync yet: the server
                            // ignores everything up to it, and so does PgGate.
                            c.discard_until_sync = true;
                        }
                    }
                }
                _ => match b.replies.front() {
                    Some(Reply::Forward { ends, .. }) => {
                        let ends: &'static [u8] = ends;
                        if t == tag::COPY_IN_RESPONSE && ends == extended::ENDS_EXECUTE {
                            // COPY FROM STDIN by Execute: the server ignores
                            // every Sync until the COPY ends.
                            let mut i = 1;
                            while i < b.replies.len() {
                                match b.replies.get(i) {
                                    Some(Reply::CopyEnd) => break,
                                    Some(Reply::Ready(_)) => {
                                        b.replies.remove(i);
                                    }
                                    _ => i += 1,
                                }
                            }
                        }
                        if ends.contains(&t) {
                            let done = b.replies.pop_front();
                            note_parsed(b, t, done);
                        }
                    }
                    Some(Reply::Swallow { ends, .. }) => {
                        if !ends.contains(&t) {
                            result = Err(format!(
                                "unexpected message type {t} for an injected message"
                            ));
                            break;
                        }
                        if len - pos < 1 + mlen {
                            break;
                        }
                        out.extend_from_slice(&b.rbuf[run..pos]);
                        pos += 1 + mlen;
                        run = pos;
                        let done = b.replies.pop_front();
                        note_parsed(b, t, done);
                        continue;
                    }
                    Some(Reply::Ready(_)) => {}
                    _ => {
                        result = Err(format!("unexpected message type {t} from server"));
                        break;
                    }
                },
            }
            pos += 5;
            b.skip = mlen - 4;
        }
        out.extend_from_slice(&b.rbuf[run..pos]);
        if !out.is_empty() && !write_or_buffer(&mut c.sock, &mut c.wbuf, &out) {
            c.eof = true;
        }
        b.rbuf.drain(..pos);
        super::worker::shrink(&mut b.rbuf);
        if c.wbuf.len() > OUTPUT_HIGH_WATER {
            b.read_paused = true;
        }
        let done = ready.is_some() && b.replies.is_empty();
        out.clear();
        self.out = out;
        result?;
        if let Some(status) = ready {
            if done {
                self.batch_done(ck, bk, status);
            }
        }
        Ok(())
    }

    /// Reads the reply to PgGate's `pg_current_wal_lsn()` and notes it.
    fn capture_lsn(&mut self, ck: usize, bk: usize) -> Result<(), String> {
        let Some(b) = self.backends.get_mut(bk) else {
            return Ok(());
        };
        loop {
            let Some((t, len)) = whole_frame(&b.rbuf)? else {
                return Ok(());
            };
            let frame: Vec<u8> = b.rbuf.drain(..len).collect();
            match t {
                tag::DATA_ROW => {
                    let lsn = data_row_text(&frame[5..])
                        .and_then(crate::health::parse_lsn)
                        .unwrap_or(0);
                    if let Some(s) = self.clients.get_mut(ck).and_then(|c| c.session.as_mut()) {
                        s.min_lsn = lsn;
                    }
                }
                tag::READY_FOR_QUERY => {
                    b.replies.pop_front();
                    b.tx_status = frame.get(5).copied().unwrap_or(b'E');
                    let status = b.tx_status;
                    if b.replies.is_empty() {
                        self.batch_done(ck, bk, status);
                        return Ok(());
                    }
                    // The client pipelined more onto this connection meanwhile.
                    return self.linked_input(bk);
                }
                tag::ERROR_RESPONSE => {
                    // Cannot know the position: read from the primary for now.
                    if let Some(s) = self.clients.get_mut(ck).and_then(|c| c.session.as_mut()) {
                        s.min_lsn = u64::MAX;
                    }
                }
                _ => {}
            }
        }
    }

    /// A replica refused a read as a write (25006) before anything reached
    /// the client: the connection goes back, the statement goes to the primary.
    fn retry_on_primary(&mut self, ck: usize, bk: usize) {
        crate::ops::metrics().read_only_retries.inc();
        if let Some(b) = self.backends.get_mut(bk) {
            b.client = None;
        }
        let Some(c) = self.clients.get_mut(ck) else {
            self.release(bk);
            return;
        };
        c.backend = None;
        requeue_retry(c);
        c.force_primary = true;
        log::debug!("read refused by a replica as a write (25006); sent to the primary");
        self.release(bk);
        self.client_input(ck);
    }

    /// A batch finished: outside a transaction and unpinned, the connection goes
    /// back (or, in session mode, the primary connection is kept aside).
    fn batch_done(&mut self, ck: usize, bk: usize, status: u8) {
        let primary = self.topo.primary();
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        let (pinned, hold) = c
            .session
            .as_ref()
            .map(|s| (s.pinned.is_some(), s.hold_primary))
            .unwrap_or((false, false));
        let on_primary = Some(b.index) == primary;
        let note_lsn = self.config.routing.read_your_writes == ReadYourWrites::Lsn
            && on_primary
            && status == b'I'
            && !c.unsynced
            && c.session.as_ref().is_some_and(|s| s.wrote);
        let followed = !b.followers.is_empty();
        if note_lsn && followed {
            // Reads are queued behind on this connection: the position cannot
            // be asked for here. Reads go to the primary until the next write notes it.
            if let Some(s) = c.session.as_mut() {
                s.wrote = false;
                s.min_lsn = u64::MAX;
            }
        } else if note_lsn {
            // One more round trip, only after writes: where the primary's WAL is now.
            if let Some(s) = c.session.as_mut() {
                s.wrote = false;
            }
            b.replies.push_back(Reply::CaptureLsn);
            let mut q = Vec::new();
            write::query(&mut q, "SELECT pg_catalog.pg_current_wal_insert_lsn()");
            if !self.send_backend(bk, &q) {
                self.backend_lost(bk, "could not write to server");
            }
            return;
        }
        let was_paused = b.read_paused;
        let gives_back = status == b'I' && !c.unsynced && !(pinned && on_primary);
        if followed && !gives_back {
            // Cannot happen: only a read outside a transaction is followed.
            // The queued reads must not run in this client's transaction.
            self.backend_lost(bk, "a followed read left its connection in a transaction");
            return;
        }
        if gives_back {
            c.backend = None;
            // Reading was paused for this client's output, which may still be
            // queued; it no longer waits on this connection. Left paused, the
            // connection would never read its next client's replies.
            b.read_paused = false;
            if hold && on_primary && !b.dirty && !b.cancel_sent {
                b.state = BackendState::Held;
                c.held = Some(bk);
            } else {
                b.client = None;
                self.release(bk);
            }
            if was_paused {
                // Edge-triggered: what a follower's read sent while reading
                // was paused raises no new event.
                self.read_backend(bk);
            }
        }
        if self.stopping && !self.client_busy(ck) {
            // Give the client a moment to take in its last result before the
            // goodbye arrives (some drivers fail a request when a FATAL
            // follows its ReadyForQuery at once).
            let generation = self.clients.get(ck).map(|c| c.generation).unwrap_or(0);
            self.add_timer(
                std::time::Duration::from_millis(200),
                TimerKind::DrainClose,
                ck,
                generation,
            );
        }
        self.client_input(ck);
    }

    /// An idle or held connection spoke: notices are dropped, errors and
    /// anything else end it.
    fn idle_input(&mut self, bk: usize) -> Result<(), String> {
        loop {
            let Some(b) = self.backends.get_mut(bk) else {
                return Ok(());
            };
            let Some((t, len)) = whole_frame(&b.rbuf)? else {
                return Ok(());
            };
            b.rbuf.drain(..len);
            match t {
                tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS => {}
                _ => return Err(format!("unexpected message type {t} from an idle server")),
            }
        }
    }

    /// Waits for the ROLLBACK / DISCARD ALL of a departed client to finish.
    fn reset_input(&mut self, bk: usize) -> Result<(), String> {
        loop {
            let Some(b) = self.backends.get_mut(bk) else {
                return Ok(());
            };
            let Some((t, len)) = whole_frame(&b.rbuf)? else {
                return Ok(());
            };
            let status = b.rbuf.get(5).copied();
            b.rbuf.drain(..len);
            match t {
                tag::ERROR_RESPONSE => return Err("reset failed".into()),
                tag::READY_FOR_QUERY => {
                    let BackendState::Resetting { rfq_left } = b.state else {
                        return Ok(());
                    };
                    b.tx_status = status.unwrap_or(b'E');
                    if rfq_left > 1 {
                        b.state = BackendState::Resetting {
                            rfq_left: rfq_left - 1,
                        };
                        continue;
                    }
                    if b.tx_status != b'I' {
                        return Err("server still in a transaction after reset".into());
                    }
                    if self.config.pool.mode == crate::config::PoolMode::Session {
                        // DISCARD ALL returned the session to its startup values
                        // and dropped every prepared statement.
                        b.applied = b.baseline.clone();
                        b.prepared.clear();
                    }
                    self.release(bk);
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    /// A backend connection failed or closed. Its client hears about it in
    /// the way SPEC §7 describes.
    pub fn backend_lost(&mut self, bk: usize, why: &str) {
        let Some(b) = self.backends.get(bk) else {
            return;
        };
        if matches!(b.state, BackendState::Linked | BackendState::Syncing) {
            crate::ops::metrics().errors.backend_lost.inc();
        }
        let name = self.topo.backends[b.index].name.clone();
        log::debug!("backend \"{name}\" connection lost: {why}");
        match (b.state, &b.login) {
            (
                BackendState::Connecting
                | BackendState::TlsNegotiating
                | BackendState::Authenticating,
                _,
            ) => {
                self.backend_connect_failed(bk, why);
            }
            (BackendState::Linked | BackendState::Syncing, _) => {
                let client = b.client;
                let tx = b.tx_status;
                let index = b.index;
                let pending_ready = b
                    .replies
                    .iter()
                    .filter(|r| matches!(r, Reply::Ready(_) | Reply::LocalReady { .. }))
                    .count();
                let mut lost_replies = self
                    .backends
                    .get_mut(bk)
                    .map(|b| std::mem::take(&mut b.replies));
                self.close_backend(bk, why);
                let Some((ck, generation)) = client else {
                    return;
                };
                let Some(c) = self.clients.get_mut(ck) else {
                    return;
                };
                if c.generation != generation {
                    return;
                }
                let pinned = c.session.as_ref().is_some_and(|s| s.pinned.is_some());
                if c.retry_armed
                    && !c.retry_collecting
                    && tx == b'I'
                    && !pinned
                    && pending_ready == 1
                {
                    // Nothing of the read reached the client: send it again elsewhere.
                    c.retry_armed = false;
                    c.unsynced = false;
                    c.batch_parsed_unnamed = false;
                    c.dealloc_pending = false;
                    c.discard_until_sync = false;
                    // Its bookkeeping is undone as if the server had skipped it.
                    if let Some(mut lost) = lost_replies.take() {
                        for r in lost.iter_mut() {
                            if let Some(u) = r.take_undo() {
                                undo_client_side(c, *u);
                            }
                        }
                    }
                    if index < 64 {
                        c.tried |= 1 << index;
                    }
                    requeue_retry(c);
                    log::info!("backend \"{name}\" lost during a read; sending it again elsewhere");
                    self.client_input(ck);
                    self.resume_client(ck);
                    return;
                }
                if tx != b'I' || pinned {
                    self.fatal(
                        ck,
                        "08006",
                        &format!(
                            "lost connection to backend \"{name}\"; the transaction or session state is gone"
                        ),
                    );
                    return;
                }
                // Outside a transaction the session stays usable: every batch
                // that was waiting gets an error and its ReadyForQuery; a batch
                // still being sent gets its error now and its ReadyForQuery at Sync.
                let message = format!("lost connection to backend \"{name}\" during the statement");
                let mut out = Vec::new();
                for _ in 0..pending_ready {
                    write::error_response(&mut out, "ERROR", "08006", &message);
                    write::ready_for_query(&mut out, b'I');
                }
                if c.unsynced {
                    write::error_response(&mut out, "ERROR", "08006", &message);
                    c.unsynced = false;
                    c.batch_parsed_unnamed = false;
                    c.discard_until_sync = true;
                }
                if !out.is_empty() {
                    self.send_client(ck, &out);
                }
                self.client_input(ck);
                self.resume_client(ck);
            }
            _ => self.close_backend(bk, why),
        }
    }

    /// Reading a client was paused while its lost backend could not take
    /// more: nothing else resumes it now, and the rest of its batch (up to
    /// the Sync that gets its ReadyForQuery) and the batches after it are
    /// still to be read. Edge-triggered: read at once.
    fn resume_client(&mut self, ck: usize) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        if c.read_paused && c.backend.is_none() {
            c.read_paused = false;
            self.read_client(ck);
        }
    }

    /// Removes a backend connection, giving its pool slot back.
    pub fn close_backend(&mut self, bk: usize, why: &str) {
        if !self.backends.contains(bk) {
            return;
        }
        let mut b = self.backends.remove(bk);
        log::trace!("backend connection {bk} closed: {why}");
        if b.state == BackendState::Idle {
            self.forget_idle(&b, bk);
        }
        if matches!(b.state, BackendState::Idle | BackendState::Held) && !b.eof {
            let mut bye = Vec::new();
            write::terminate(&mut bye);
            let _ = std::io::Write::write(&mut b.sock, &bye);
        }
        let _ = self.poll.registry().deregister(&mut b.sock);
        if let Some((ck, _)) = b.client {
            if let Some(c) = self.clients.get_mut(ck) {
                if c.backend == Some(bk) {
                    c.backend = None;
                }
                if c.held == Some(bk) {
                    c.held = None;
                }
            }
        }
        if b.counted {
            b.pools.per_backend[b.index].release_slot();
        }
        // Reads queued behind go first: they were sent before any waiter asked.
        let followers = std::mem::take(&mut b.followers);
        if !followers.is_empty() {
            self.requeue_followers(bk, followers);
        }
        if b.counted {
            let pools = b.pools.clone();
            self.serve_waiters(&pools, b.index);
        }
    }
}

/// Puts PgGate's books right for a message whose reply will never come.
/// A reply ended with message `t`: if it was the ParseComplete of a Parse
/// PgGate sent, the pool learns that its servers accept that statement.
fn note_parsed(b: &Backend, t: u8, done: Option<Reply>) {
    if t == tag::PARSE_COMPLETE {
        if let Some(id) = done.and_then(|r| r.parsed_statement()) {
            b.pools.statement_parsed(id);
        }
    }
}

fn apply_undo(c: &mut Client, b: &mut Backend, undo: Undo) {
    if let Some(id) = undo.unprepared {
        b.prepared.remove(&id);
    }
    if undo.uncertain {
        b.dirty = true;
    }
    undo_client_side(c, undo);
}

/// The client's share of an undo (its statement names).
pub(super) fn undo_client_side(c: &mut Client, undo: Undo) {
    if let Some(session) = c.session.as_mut() {
        if let Some((name, stmt)) = undo.unregister {
            if session
                .statements
                .get(&name)
                .is_some_and(|s| std::sync::Arc::ptr_eq(s, &stmt))
            {
                session.statements.remove(&name);
            }
        }
        if let Some((name, stmt)) = undo.reregister {
            session.statements.entry(name).or_insert(stmt);
        }
    }
}

/// SSLRequest (untagged, 8 bytes).
fn ssl_request() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&8u32.to_be_bytes());
    b[4..8].copy_from_slice(&protocol::SSL_REQUEST.to_be_bytes());
    b
}

/// What to do with a read that may still be sent again.
enum Held {
    /// Its first reply is not complete yet: nothing goes to the client.
    Waiting,
    /// A real result started: forward as usual (no retry any more).
    Forward,
    /// The replica refused it as a write and it has ended: send it to the primary.
    RetryOnPrimary,
}

/// Looks at the replies of a retryable read without forwarding them: a
/// RowDescription (and notices) may come before a 25006 error, so they are
/// held until the first row, completion or another error decides.
fn hold_for_retry(
    c: &mut Client,
    b: &mut Backend,
    on_primary: bool,
    retry_read_only: bool,
) -> Result<Held, String> {
    let mut p = 0;
    if b.swallow_to_ready {
        // Drop everything up to and including ReadyForQuery.
        loop {
            let Some((t, len)) = whole_frame(&b.rbuf[p..])? else {
                b.rbuf.drain(..p);
                return Ok(Held::Waiting);
            };
            if t == tag::READY_FOR_QUERY {
                b.tx_status = b.rbuf.get(p + 5).copied().unwrap_or(b'E');
                b.rbuf.drain(..p + len);
                b.replies.pop_front();
                b.swallow_to_ready = false;
                // Nothing of the refused read reached the client, so it goes
                // to the primary whatever follows. Anything after its
                // ReadyForQuery belongs to a read queued behind; a server
                // left in a transaction, or that sent more with no read
                // queued (a FATAL as it shuts down), is not reused.
                if b.tx_status != b'I' || (!b.rbuf.is_empty() && b.followers.is_empty()) {
                    b.dirty = true;
                }
                return Ok(Held::RetryOnPrimary);
            }
            p += len;
        }
    }
    loop {
        // A result (a row, completion, COPY, ...) decides at its header: it
        // is never buffered whole, however large.
        let Some(&t) = b.rbuf.get(p) else {
            return Ok(Held::Waiting);
        };
        if !comes_before_result(t) && t != tag::ERROR_RESPONSE {
            c.retry_armed = false;
            return Ok(Held::Forward);
        }
        let Some((t, len)) = whole_frame(&b.rbuf[p..])? else {
            return Ok(Held::Waiting);
        };
        if comes_before_result(t) {
            p += len;
            continue;
        }
        // An ErrorResponse.
        let fields = protocol::parse_error_fields(&b.rbuf[p + 5..p + len]);
        let one_batch = b
            .replies
            .iter()
            .filter(|r| matches!(r, Reply::Ready(_) | Reply::LocalReady { .. }))
            .count()
            == 1;
        if (fields.severity == "FATAL" || fields.code.starts_with("57P")) && one_batch {
            // The server is going away (shutdown, crash, terminated):
            // keep the read for another backend once the socket closes.
            b.rbuf.drain(..p + len);
            return Ok(Held::Waiting);
        }
        c.retry_armed = false;
        // Only when nothing else is queued behind it on this connection.
        if fields.code == "25006" && retry_read_only && !on_primary && b.replies.len() == 1 {
            b.swallow_to_ready = true;
            return hold_for_retry(c, b, on_primary, retry_read_only);
        }
        return Ok(Held::Forward);
    }
}

/// Messages a server may send before a statement's result (or its error):
/// a held read waits past them.
fn comes_before_result(t: u8) -> bool {
    matches!(
        t,
        tag::ROW_DESCRIPTION
            | tag::NOTICE_RESPONSE
            | tag::PARAMETER_STATUS
            | tag::PARSE_COMPLETE
            | tag::BIND_COMPLETE
            | tag::PARAMETER_DESCRIPTION
            | tag::NO_DATA
    )
}

/// The first column of a DataRow body as text.
fn data_row_text(body: &[u8]) -> Option<&str> {
    let count = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    if count == 0 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(body.get(6..6 + len)?).ok()
}

/// Puts the kept copy of a read back at the head of the client's input, to
/// be routed again (its buffer is kept for the next one).
pub(super) fn requeue_retry(c: &mut Client) {
    let query = std::mem::take(&mut c.retry);
    c.head_class = None;
    c.rbuf.splice(0..0, query.iter().copied());
    c.retry = query;
    c.retry.clear();
}
