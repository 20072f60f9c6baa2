//! The client side of a session: startup packets, the relayed login, routing
//! each statement (simple Query) or batch (extended protocol, up to Sync) to a
//! backend, forwarding the client's messages to the linked backend, and what
//! happens when the client leaves. State changes of a client happen here.

use std::sync::Arc;

use mio::Token;

use crate::config::{AuthMode, ClientTlsMode, PoolMode, ReadsTarget};
use crate::protocol::startup::{parse_options, StartupError};
use crate::protocol::{self, frontend, parse_header, parse_startup, write, StartupPacket};
use crate::sql;

use super::conn::{Backend, BackendState, ClientState, Login, Session};
use super::extended::{self, Reply, Statement, StatementId, Undo};
use super::stream::HandshakeStep;
use super::worker::{client_token, Worker, WorkerMsg, OUTPUT_HIGH_WATER};

/// Startup parameters that are not session settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// A whole Sync message.
const SYNC_FRAME: &[u8] = &[frontend::SYNC, 0, 0, 0, 4];

impl Worker {
    /// Handles whatever the client has sent, according to its state.
    pub fn client_input(&mut self, ck: usize) {
        let Some(c) = self.clients.get(ck) else {
            return;
        };
        match c.state {
            ClientState::Startup => self.client_startup(ck),
            ClientState::Authenticating { relay } => self.client_auth_input(ck, relay),
            ClientState::LocalAuth => self.local_auth_input(ck),
            ClientState::AwaitingParams | ClientState::RelayRetry => {}
            ClientState::Ready => self.client_ready_input(ck),
            ClientState::WaitingForBackend { .. } | ClientState::Following { .. } => {
                if let Some(c) = self.clients.get_mut(ck) {
                    // Keep at most one large batch queued while waiting.
                    if c.rbuf.len() > OUTPUT_HIGH_WATER {
                        c.read_paused = true;
                    }
                }
            }
            ClientState::Closing => {
                if let Some(c) = self.clients.get_mut(ck) {
                    c.rbuf.clear();
                }
            }
        }
    }

    /// Sends an ErrorResponse with severity FATAL and closes once it is written.
    pub fn fatal(&mut self, ck: usize, code: &str, message: &str) {
        self.fatal_raw(ck, code, &format!("pggate: {message}"));
    }

    /// Like `fatal`, with the message exactly as given.
    pub fn fatal_raw(&mut self, ck: usize, code: &str, message: &str) {
        let m = crate::ops::metrics();
        match code {
            "08P01" => m.errors.protocol.inc(),
            "28000" if message.contains("TLS is required") => m.clients_rejected.tls_required.inc(),
            "28000" if message.contains("replication") => m.clients_rejected.replication.inc(),
            _ => {}
        }
        let mut buf = Vec::new();
        write::error_response_as(&mut buf, "FATAL", code, message);
        self.send_client(ck, &buf);
        if let Some(c) = self.clients.get_mut(ck) {
            log::debug!("client {}: {code} {message}", ck);
            c.state = ClientState::Closing;
            c.rbuf.clear();
            c.read_paused = true;
            if c.wbuf.is_empty() || c.eof {
                self.close_client(ck, message);
            }
        }
    }

    fn client_startup(&mut self, ck: usize) {
        loop {
            let Some(c) = self.clients.get_mut(ck) else {
                return;
            };
            if c.state != ClientState::Startup || c.rbuf.len() < 4 {
                return;
            }
            let len = u32::from_be_bytes([c.rbuf[0], c.rbuf[1], c.rbuf[2], c.rbuf[3]]) as usize;
            if !(8..=protocol::MAX_STARTUP_PACKET).contains(&len) {
                self.fatal(ck, "08P01", "invalid length of startup packet");
                return;
            }
            if c.rbuf.len() < len {
                return;
            }
            let packet = parse_startup(&c.rbuf[4..len]);
            c.rbuf.drain(..len);
            match packet {
                Ok(StartupPacket::SslRequest) => {
                    self.ssl_request(ck);
                    return;
                }
                Ok(StartupPacket::GssEncRequest) => {
                    // GSS encryption is never offered: the client goes on in the clear.
                    if !self.send_client(ck, b"N") {
                        self.close_client(ck, "client gone");
                        return;
                    }
                }
                Ok(StartupPacket::CancelRequest { pid, secret }) => {
                    self.cancel_request(pid, secret);
                    self.close_client(ck, "cancel request handled");
                    return;
                }
                Ok(StartupPacket::Startup {
                    major: _,
                    minor,
                    params,
                }) => {
                    self.start_session(ck, minor, params);
                    return;
                }
                Err(StartupError::Malformed) => {
                    self.fatal(ck, "08P01", "invalid startup packet layout");
                    return;
                }
                Err(StartupError::UnsupportedProtocol(code)) => {
                    let msg = format!(
                        "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                        code >> 16,
                        code & 0xffff
                    );
                    self.fatal(ck, "0A000", &msg);
                    return;
                }
            }
        }
    }

    /// Answers an SSLRequest: 'S' and a TLS handshake when client TLS is on,
    /// 'N' otherwise.
    fn ssl_request(&mut self, ck: usize) {
        let tls = self.shared.tls.read().clone();
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let acceptor = match tls.acceptor.as_ref() {
            Some(a) if !c.sock.is_tls() => a,
            _ => {
                if !self.send_client(ck, b"N") {
                    self.close_client(ck, "client gone");
                    return;
                }
                self.client_startup(ck);
                return;
            }
        };
        if !c.rbuf.is_empty() {
            // Bytes sent before the handshake could be injected by a third
            // party (CVE-2021-23214): refuse them.
            self.fatal(ck, "08P01", "received unencrypted data after SSL request");
            return;
        }
        if !self.send_client(ck, b"S") || !c_wbuf_empty(&self.clients, ck) {
            self.close_client(ck, "could not answer SSLRequest");
            return;
        }
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let Some(tcp) = c.sock.take_plain() else {
            self.close_client(ck, "socket lost before TLS");
            return;
        };
        match c.sock.start_handshake(acceptor.accept(tcp)) {
            HandshakeStep::Done => self.read_client(ck),
            HandshakeStep::InProgress => {}
            HandshakeStep::Failed(e) => {
                log::info!("client TLS handshake failed: {e}");
                self.close_client(ck, "TLS handshake failed");
            }
        }
    }

    fn start_session(&mut self, ck: usize, minor: u16, params: Vec<(String, String)>) {
        let plain = self.clients.get(ck).is_some_and(|c| !c.sock.is_tls());
        if plain && self.shared.tls.read().client_mode == ClientTlsMode::Require {
            self.fatal(
                ck,
                "28000",
                "TLS is required (client_tls.mode = \"require\"); connect with sslmode=require or stronger",
            );
            return;
        }
        let mut user = None;
        let mut database = None;
        let mut settings: Vec<(String, String)> = Vec::new();
        let mut unrecognised = Vec::new();
        let mut relay_params = Vec::new();
        for (name, value) in params {
            if name.starts_with("_pq_.") {
                unrecognised.push(name);
                continue;
            }
            match name.as_str() {
                "user" => user = Some(value.clone()),
                "database" => database = Some(value.clone()),
                "replication" => {
                    let off = matches!(
                        value.to_ascii_lowercase().as_str(),
                        "false" | "off" | "no" | "0"
                    );
                    if !off {
                        self.fatal(
                            ck,
                            "28000",
                            "replication connections are not supported; connect to the primary directly",
                        );
                        return;
                    }
                    continue;
                }
                "options" => match parse_options(&value) {
                    Ok(opts) => settings.extend(opts),
                    Err(e) => {
                        self.fatal(ck, "0A000", &e);
                        return;
                    }
                },
                _ => {}
            }
            if !NOT_SETTINGS.contains(&name.as_str()) {
                settings.push((name.to_ascii_lowercase(), value.clone()));
            }
            relay_params.push((name, value));
        }
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            self.fatal(
                ck,
                "28000",
                "no PostgreSQL user name specified in startup packet",
            );
            return;
        };
        let database = database
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        let Some(primary) = self.topo.primary() else {
            self.fatal(ck, "08001", "no primary backend is configured");
            return;
        };
        // Later settings of the same name win, as in PostgreSQL.
        let mut sorted: Vec<(String, String)> = Vec::with_capacity(settings.len());
        for (n, v) in settings.into_iter().rev() {
            if !sorted.iter().any(|(m, _)| *m == n) {
                sorted.push((n, v));
            }
        }
        sorted.sort();
        if minor > 0 || !unrecognised.is_empty() {
            let mut buf = Vec::new();
            write::negotiate_protocol_version(&mut buf, 0, &unrecognised);
            self.send_client(ck, &buf);
        }
        let pools = self.shared.user_pools(&database, &user);
        let sorted_settings = Arc::new(sorted);
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let generation = c.generation;
        let key = self
            .shared
            .register_cancel_key(self.id, client_token(ck), generation);
        let hold_primary = self.config.pool.mode == PoolMode::Session;
        c.session = Some(Box::new(Session {
            user: user.clone(),
            database: database.clone(),
            params: sorted_settings.clone(),
            key,
            pools: pools.clone(),
            pinned: None,
            hold_primary,
            relay_startup: Vec::new(),
            relay_started: false,
            relay_challenged: false,
            wrote: false,
            min_lsn: 0,
            statements: Default::default(),
            unnamed: Vec::new(),
            unnamed_class: None,
            unnamed_version: 0,
        }));
        if self.config.auth.mode == AuthMode::Query {
            self.start_local_auth(ck);
            return;
        }
        let primary_up = self
            .topo
            .health
            .backends
            .get(primary)
            .is_some_and(|h| h.is_up());
        if primary_up && pools.trusted_for(primary, &sorted_settings) {
            // The primary lets this user in without a password anyway.
            self.finish_local_login(ck);
            return;
        }
        let mut startup = Vec::new();
        write::startup_message(
            &mut startup,
            relay_params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if let Some(s) = self.clients.get_mut(ck).and_then(|c| c.session.as_mut()) {
            s.relay_startup = startup.clone();
        }
        self.open_relay(ck, primary, pools, startup);
    }

    /// Opens the connection to the primary that relays the client's login.
    fn open_relay(
        &mut self,
        ck: usize,
        primary: usize,
        pools: Arc<super::shared::UserPools>,
        startup: Vec<u8>,
    ) {
        match self.open_backend(primary, pools, Login::Relay { client: ck }, startup, None) {
            Ok(bk) => {
                if let Some(c) = self.clients.get_mut(ck) {
                    c.state = ClientState::Authenticating { relay: bk };
                }
                // The client may already have sent more (a password cannot come
                // before it is asked for, but be robust).
                self.client_input(ck);
            }
            Err(e) => {
                let name = self.topo.backends[primary].name.clone();
                self.fatal(
                    ck,
                    "08001",
                    &format!("could not connect to backend \"{name}\": {e}"),
                );
            }
        }
    }

    /// The backoff after a failed relayed-login connect ended: connect again.
    pub fn relay_retry(&mut self, ck: usize, generation: u64) {
        let Some(c) = self.clients.get(ck) else {
            return;
        };
        if c.generation != generation || c.state != ClientState::RelayRetry {
            return;
        }
        let Some((startup, pools)) = c
            .session
            .as_ref()
            .map(|s| (s.relay_startup.clone(), s.pools.clone()))
        else {
            return;
        };
        let primary = self.primary_index();
        self.open_relay(ck, primary, pools, startup);
    }

    /// During the relayed login the client may only send authentication responses.
    fn client_auth_input(&mut self, ck: usize, relay: usize) {
        let max = self.config.proxy.max_message_size;
        loop {
            let Some(c) = self.clients.get_mut(ck) else {
                return;
            };
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
            match hdr.tag {
                frontend::PASSWORD => {
                    let frame: Vec<u8> = c.rbuf.drain(..hdr.frame_len()).collect();
                    if !self.send_backend(relay, &frame) {
                        self.backend_lost(relay, "could not write to server");
                        return;
                    }
                }
                frontend::TERMINATE => {
                    self.close_client(ck, "client terminated during login");
                    return;
                }
                t => {
                    self.fatal(
                        ck,
                        "08P01",
                        &format!(
                            "expected password response, got message type {}",
                            printable(t)
                        ),
                    );
                    return;
                }
            }
        }
    }

    /// Logged in: route the next batch when unlinked, forward while linked.
    pub fn client_ready_input(&mut self, ck: usize) {
        let max = self.config.proxy.max_message_size;
        loop {
            let Some(c) = self.clients.get_mut(ck) else {
                return;
            };
            if c.state != ClientState::Ready {
                return;
            }
            if let Some(bk) = c.backend {
                self.forward_client(ck, bk);
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
            let frame_len = hdr.frame_len();
            if c.rbuf.len() < frame_len {
                return;
            }
            if c.discard_until_sync {
                c.rbuf.drain(..frame_len);
                if hdr.tag == frontend::SYNC {
                    c.discard_until_sync = false;
                    let mut buf = Vec::new();
                    write::ready_for_query(&mut buf, b'I');
                    self.send_client(ck, &buf);
                }
                continue;
            }
            let body = &c.rbuf[5..frame_len];
            let target = match hdr.tag {
                frontend::QUERY => {
                    let Some(text) = protocol::query_text(body) else {
                        self.fatal(ck, "08P01", "invalid Query message");
                        return;
                    };
                    if let Some(tag) = deallocate_locally(c.session.as_deref_mut(), text) {
                        // Only the client's own names are dropped; PgGate answers.
                        c.rbuf.drain(..frame_len);
                        let mut buf = Vec::new();
                        write_command_complete(&mut buf, tag);
                        write::ready_for_query(&mut buf, b'I');
                        self.send_client(ck, &buf);
                        continue;
                    }
                    let class = sql::classify(text, &self.config.routing.write_functions);
                    // The forwarding step needs the same verdict: keep it.
                    c.head_class = Some(class);
                    c.head_version = self.config_version;
                    self.route_statement(ck, &class)
                }
                frontend::PARSE => {
                    let Some((name, rest, text)) = extended::parse_parts(body) else {
                        self.fatal(ck, "08P01", "invalid Parse message");
                        return;
                    };
                    let known = c.session.as_ref().and_then(|s| {
                        // The unnamed statement parsed again (drivers that run
                        // a statement without preparing it send one Parse per
                        // run): its class is already known.
                        (name.is_empty()
                            && s.unnamed_version == self.config_version
                            && s.unnamed.as_slice() == rest)
                            .then_some(s.unnamed_class)
                            .flatten()
                    });
                    let class = known.unwrap_or_else(|| {
                        sql::classify(text, &self.config.routing.write_functions)
                    });
                    // A named Parse alone before its Sync (libpq's PQprepare)
                    // of a statement a server of this pool has accepted:
                    // answered here, without waiting for a connection. A later
                    // Bind prepares it on whichever connection it borrows.
                    let sync_next = c.rbuf.get(frame_len..frame_len + 5) == Some(SYNC_FRAME);
                    if sync_next && !name.is_empty() && class.pin.is_none() {
                        if let Some(s) = c.session.as_mut() {
                            let id = extended::statement_id(rest);
                            if !s.statements.contains_key(name) && s.pools.was_parsed(&id) {
                                let stmt = Arc::new(Statement::new(rest, class));
                                s.statements.insert(name.to_vec(), stmt);
                                c.rbuf.drain(..frame_len + SYNC_FRAME.len());
                                let mut buf = extended::PARSE_COMPLETE.to_vec();
                                write::ready_for_query(&mut buf, b'I');
                                self.send_client(ck, &buf);
                                continue;
                            }
                        }
                    }
                    c.head_class = Some(class);
                    c.head_version = self.config_version;
                    self.route_statement(ck, &class)
                }
                frontend::BIND | frontend::DESCRIBE => {
                    let name = if hdr.tag == frontend::BIND {
                        extended::bind_statement(body)
                    } else {
                        match extended::target(body) {
                            Some((b'S', n)) => Some(n),
                            _ => None,
                        }
                    };
                    match (hdr.tag, name) {
                        (frontend::DESCRIBE, None) if extended::target(body).is_some() => {
                            // A portal: it lived on a connection this session no longer holds.
                            self.primary_index()
                        }
                        (_, None) => {
                            self.fatal(ck, "08P01", "invalid Bind or Describe message");
                            return;
                        }
                        (_, Some(name)) => {
                            let class = c.session.as_ref().and_then(|s| statement_class(s, name));
                            match class {
                                Some(class) => self.route_statement(ck, &class),
                                None if name.is_empty() => self.primary_index(),
                                None => {
                                    // The server would say the same, and skip to Sync.
                                    let msg = format!(
                                        "prepared statement \"{}\" does not exist",
                                        String::from_utf8_lossy(name)
                                    );
                                    c.rbuf.drain(..frame_len);
                                    c.discard_until_sync = true;
                                    let mut buf = Vec::new();
                                    write::error_response(&mut buf, "ERROR", "26000", &msg);
                                    self.send_client(ck, &buf);
                                    continue;
                                }
                            }
                        }
                    }
                }
                frontend::CLOSE => {
                    // Statement names are PgGate's to drop, and a portal cannot
                    // outlive the connection it was on: answered here.
                    if let Some((b'S', name)) = extended::target(body) {
                        let name = name.to_vec();
                        if let Some(s) = c.session.as_mut() {
                            s.statements.remove(&name);
                        }
                    }
                    c.rbuf.drain(..frame_len);
                    self.send_client(ck, extended::CLOSE_COMPLETE);
                    continue;
                }
                frontend::SYNC => {
                    // Nothing in flight: PgGate answers the Sync itself.
                    c.rbuf.drain(..frame_len);
                    let mut buf = Vec::new();
                    write::ready_for_query(&mut buf, b'I');
                    self.send_client(ck, &buf);
                    continue;
                }
                frontend::FLUSH
                | frontend::COPY_DATA
                | frontend::COPY_DONE
                | frontend::COPY_FAIL => {
                    // Outside COPY these are ignored, as PostgreSQL does.
                    c.rbuf.drain(..frame_len);
                    continue;
                }
                frontend::EXECUTE | frontend::FUNCTION_CALL => self.primary_index(),
                frontend::TERMINATE => {
                    self.close_client(ck, "client terminated");
                    return;
                }
                t => {
                    self.fatal(
                        ck,
                        "08P01",
                        &format!("invalid frontend message type {}", printable(t)),
                    );
                    return;
                }
            };
            if !self.acquire(ck, target) {
                return;
            }
        }
    }

    pub fn primary_index(&self) -> usize {
        self.topo.primary().unwrap_or(0)
    }

    /// Classifies one statement text and picks the backend for it; records a pin.
    fn route_statement(&mut self, ck: usize, class: &sql::Classification) -> usize {
        let primary = self.primary_index();
        let Some(session) = self.clients.get_mut(ck).and_then(|c| c.session.as_mut()) else {
            return primary;
        };
        if let Some(reason) = class.pin {
            if session.pinned.is_none() {
                count_pin(reason);
                log::debug!(
                    "session of {}@{} pinned to the primary ({})",
                    session.user,
                    session.database,
                    reason.as_str()
                );
                session.pinned = Some(reason);
            }
            return primary;
        }
        if session.pinned.is_some() {
            return primary;
        }
        let Some(c) = self.clients.get_mut(ck) else {
            return primary;
        };
        if std::mem::take(&mut c.force_primary) {
            return primary;
        }
        let tried = c.tried;
        let Some(session) = c.session.as_mut() else {
            return primary;
        };
        let min_lsn = session.min_lsn;
        let reads_to_primary = self.config.routing.reads == ReadsTarget::Primary;
        if !class.wants_replica(reads_to_primary) {
            return primary;
        }
        if session
            .pools
            .no_replica_password
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return primary;
        }
        if min_lsn > 0 {
            // Read your writes: only replicas that have replayed the session's
            // last write; once every replica has, the note is dropped.
            return match self.pick_replica_at(tried, min_lsn) {
                Some(i) => i,
                None => primary,
            };
        }
        self.pick_replica(tried).unwrap_or(primary)
    }

    /// Weighted random choice among the replicas.
    /// Weighted random choice among the replicas that may serve reads now
    /// (up, not the primary, lag within `routing.max_replica_lag`), leaving
    /// out those in `tried` (a bit per backend index).
    pub fn pick_replica(&mut self, tried: u64) -> Option<usize> {
        self.pick_replica_at(tried, 0)
    }

    /// `pick_replica` among replicas whose replay position is at least `min_lsn`.
    pub fn pick_replica_at(&mut self, tried: u64, min_lsn: u64) -> Option<usize> {
        let primary = self.topo.primary();
        let max_lag = self.config.routing.max_replica_lag;
        let roll = self.random();
        let shared = &self.topo;
        let usable = |i: usize| {
            Some(i) != primary
                && (i >= 64 || tried & (1 << i) == 0)
                && !shared.backends[i].removed
                && shared.health.replica_usable(i, max_lag)
                && shared
                    .health
                    .backends
                    .get(i)
                    .is_some_and(|h| min_lsn == 0 || h.replay_lsn() >= min_lsn)
        };
        let total: u64 = (0..shared.backends.len())
            .filter(|&i| usable(i))
            .map(|i| shared.backends[i].weight as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = roll % total;
        for i in 0..shared.backends.len() {
            if !usable(i) {
                continue;
            }
            let w = shared.backends[i].weight as u64;
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// Finds a backend connection for the client's next batch. True when the
    /// client is linked now (its input can be forwarded).
    fn acquire(&mut self, ck: usize, index: usize) -> bool {
        let Some(c) = self.clients.get_mut(ck) else {
            return false;
        };
        if index == self.topo.primary().unwrap_or(usize::MAX) {
            if let Some(held) = c.held.take() {
                self.link(ck, held);
                return self.clients.get(ck).is_some_and(|c| c.backend.is_some());
            }
        }
        self.checkout(ck, index)
    }

    /// Forwards the client's complete messages to the linked backend, keeping
    /// the extended protocol's books: named statements are prepared on this
    /// connection under PgGate's names where missing, Close of a statement is
    /// answered here, and each message's reply is queued so replies come back
    /// in order. A new batch is pipelined onto the same connection only where
    /// it may run there; otherwise it waits for the connection to come free.
    fn forward_client(&mut self, ck: usize, bk: usize) {
        self.forward_messages(ck, bk, None);
    }

    /// `forward_client`; with `behind = Some(len)`, forwards only the first
    /// `len` bytes of the client's input (one whole batch of reads) to a
    /// connection running another client's batch, queuing the replies in
    /// `Backend::replies` as usual (the caller moves them to the follower)
    /// and leaving the connection's own client and books alone; those bytes
    /// are written at the end of the event-loop pass (`flush_deferred`). False
    /// when the batch was not taken whole or the write failed (the caller
    /// declares the connection lost).
    pub(super) fn forward_messages(&mut self, ck: usize, bk: usize, behind: Option<usize>) -> bool {
        let max = self.config.proxy.max_message_size;
        let max_prepared = self.config.pool.max_prepared_statements.max(1);
        let reads_to_primary = self.config.routing.reads == ReadsTarget::Primary;
        let primary = self.topo.primary();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let Some(b) = self.backends.get_mut(bk) else {
            self.out = out;
            return true;
        };
        if b.state != BackendState::Linked || (behind.is_none() && !b.followers.is_empty()) {
            // Other clients' reads are queued behind this batch: the client's
            // next one goes wherever routing sends it once this one ends.
            self.out = out;
            return true;
        }
        let Some(c) = self.clients.get_mut(ck) else {
            self.out = out;
            return true;
        };
        let end = behind.unwrap_or(usize::MAX).min(c.rbuf.len());
        // Whether this call starts a batch on an idle, unpinned connection,
        // and forwards nothing but reads (for `Backend::follow_ok`).
        let mut plain = b.replies.is_empty()
            && b.tx_status == b'I'
            && !c.unsynced
            && !c.discard_until_sync
            && c.session
                .as_ref()
                .is_some_and(|s| s.pinned.is_none() && !s.hold_primary);
        let on_primary = Some(b.index) == primary;
        let now = self.now;
        let write_functions = &self.config.routing.write_functions;
        let mut terminate = false;
        let mut invalid = None;
        let mut newly_pinned = None;
        let mut head_class = c.head_class.take();
        // A verdict made before a reload is kept for its own message only.
        let head_version = c.head_version;
        let config_version = self.config_version;
        let mut pos = 0;
        while pos < end {
            let hdr = match parse_header(&c.rbuf[pos..end], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    invalid = Some(format!("invalid message: {e}"));
                    break;
                }
            };
            let frame_len = hdr.frame_len();
            if end - pos < frame_len {
                break;
            }
            let t = hdr.tag;
            let frame = &c.rbuf[pos..pos + frame_len];
            let body = &frame[5..];
            // Only the message routing looked at (the first one) may use it.
            let cached = head_class.take();
            let class_version = if cached.is_some() {
                head_version
            } else {
                config_version
            };
            let Some(session) = c.session.as_mut() else {
                break;
            };
            if c.discard_until_sync {
                plain = false;
                // An error PgGate raised itself: skip to Sync as the server would.
                if t == frontend::SYNC {
                    c.discard_until_sync = false;
                    c.unsynced = false;
                    c.batch_parsed_unnamed = false;
                    out.extend_from_slice(frame);
                    b.replies.push_back(Reply::Ready(now));
                }
                pos += frame_len;
                continue;
            }
            let copy = matches!(
                t,
                frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL
            );
            // Classify what starts a statement: for pins, and to decide
            // whether a new batch may be pipelined onto this connection.
            let class = match t {
                frontend::QUERY | frontend::PARSE if cached.is_some() => cached,
                frontend::QUERY => {
                    protocol::query_text(body).map(|q| sql::classify(q, write_functions))
                }
                frontend::PARSE => {
                    extended::parse_parts(body).map(|(_, _, q)| sql::classify(q, write_functions))
                }
                frontend::BIND => {
                    extended::bind_statement(body).and_then(|n| statement_class(session, n))
                }
                frontend::DESCRIBE => match extended::target(body) {
                    Some((b'S', n)) => statement_class(session, n),
                    _ => None,
                },
                _ => None,
            };
            if !copy
                && !c.unsynced
                && !b.replies.is_empty()
                && b.tx_status == b'I'
                && session.pinned.is_none()
            {
                // A new batch while the last one is still running outside a
                // transaction: pipeline it here only if it would be routed
                // here anyway; otherwise it waits for ReadyForQuery (which may
                // yet open a transaction that it then joins).
                let wants_replica =
                    class.is_some_and(|k| k.pin.is_none() && k.wants_replica(reads_to_primary));
                if wants_replica == on_primary {
                    break;
                }
            }
            if let Some(reason) = class.and_then(|k| k.pin) {
                if session.pinned.is_none() {
                    session.pinned = Some(reason);
                    newly_pinned = Some(reason);
                    count_pin(reason);
                }
            }
            if on_primary && class.is_some_and(|k| k.kind != sql::Kind::Read || k.pin.is_some()) {
                session.wrote = true;
            }
            // An extended-protocol batch of reads outside a transaction is kept
            // (as the client sent it) until its first result reaches the
            // client, to be sent again elsewhere if its backend dies.
            if matches!(
                t,
                frontend::PARSE
                    | frontend::BIND
                    | frontend::DESCRIBE
                    | frontend::EXECUTE
                    | frontend::CLOSE
                    | frontend::FLUSH
                    | frontend::SYNC
            ) {
                let read = class.is_some_and(|k| k.kind == sql::Kind::Read && k.pin.is_none());
                if !c.unsynced
                    && t != frontend::SYNC
                    && b.replies.is_empty()
                    && b.tx_status == b'I'
                    && session.pinned.is_none()
                {
                    c.retry_armed = read && matches!(t, frontend::PARSE | frontend::BIND);
                    c.retry_collecting = c.retry_armed;
                    c.retry.clear();
                }
                if c.retry_collecting {
                    if matches!(t, frontend::PARSE | frontend::BIND) && !read {
                        c.retry_armed = false;
                        c.retry_collecting = false;
                    } else {
                        c.retry.extend_from_slice(frame);
                        if t == frontend::SYNC {
                            c.retry_collecting = false;
                        }
                    }
                }
            }
            if matches!(
                t,
                frontend::COPY_DATA
                    | frontend::COPY_DONE
                    | frontend::COPY_FAIL
                    | frontend::FLUSH
                    | frontend::FUNCTION_CALL
                    | frontend::TERMINATE
            ) {
                plain = false;
            }
            match t {
                frontend::COPY_DATA => out.extend_from_slice(frame),
                frontend::COPY_DONE | frontend::COPY_FAIL => {
                    out.extend_from_slice(frame);
                    b.replies.push_back(Reply::CopyEnd);
                }
                frontend::TERMINATE => {
                    terminate = true;
                    break;
                }
                frontend::QUERY => {
                    let text = protocol::query_text(body).unwrap_or("");
                    match sql::deallocate_target(text) {
                        Some(sql::Deallocate::Name(n))
                            if session.statements.contains_key(n.as_bytes()) =>
                        {
                            session.statements.remove(n.as_bytes());
                            b.replies.push_back(Reply::LocalReady { tag: "DEALLOCATE" });
                        }
                        Some(sql::Deallocate::All) => {
                            plain = false;
                            // The server's own statements go too: forget what it had.
                            session.statements.clear();
                            b.prepared.clear();
                            out.extend_from_slice(frame);
                            b.replies.push_back(Reply::Ready(now));
                        }
                        _ => {
                            // A read outside a transaction can be sent again
                            // until its first result reaches the client.
                            let retryable = b.replies.is_empty()
                                && b.tx_status == b'I'
                                && session.pinned.is_none()
                                && class
                                    .is_some_and(|k| k.kind == sql::Kind::Read && k.pin.is_none());
                            c.retry_armed = retryable;
                            c.retry_collecting = false;
                            if retryable {
                                c.retry.clear();
                                c.retry.extend_from_slice(frame);
                            }
                            out.extend_from_slice(frame);
                            b.replies.push_back(Reply::Ready(now));
                        }
                    }
                }
                frontend::PARSE => {
                    let Some((name, rest, text)) = extended::parse_parts(body) else {
                        invalid = Some("invalid Parse message".into());
                        break;
                    };
                    c.unsynced = true;
                    if matches!(sql::deallocate_target(text), Some(sql::Deallocate::All)) {
                        c.dealloc_pending = true;
                    }
                    if name.is_empty() {
                        if session.unnamed.as_slice() != rest {
                            session.unnamed.clear();
                            session.unnamed.extend_from_slice(rest);
                        }
                        session.unnamed_class = class;
                        session.unnamed_version = class_version;
                        c.batch_parsed_unnamed = true;
                        out.extend_from_slice(frame);
                        b.replies.push_back(Reply::forward(extended::ENDS_PARSE));
                    } else if session.statements.contains_key(name) {
                        let msg = format!(
                            "prepared statement \"{}\" already exists",
                            String::from_utf8_lossy(name)
                        );
                        local_error(b, "42P05", &msg);
                        c.discard_until_sync = true;
                    } else {
                        let Some(class) = class else {
                            invalid = Some("invalid Parse message".into());
                            break;
                        };
                        let stmt = Arc::new(Statement::new(rest, class));
                        session.statements.insert(name.to_vec(), stmt.clone());
                        let unregister = Some((name.to_vec(), stmt.clone()));
                        if touch_prepared(b, &stmt.id) {
                            b.replies.push_back(Reply::Local {
                                bytes: extended::PARSE_COMPLETE.to_vec(),
                                undo: Some(Box::new(Undo {
                                    unregister,
                                    ..Undo::default()
                                })),
                            });
                        } else {
                            make_room(b, &mut out, max_prepared);
                            extended::write_parse(&mut out, &stmt.server_name, &stmt.body);
                            b.tick += 1;
                            b.prepared.insert(stmt.id, b.tick);
                            b.replies.push_back(Reply::Forward {
                                ends: extended::ENDS_PARSE,
                                undo: Some(Box::new(Undo {
                                    unregister,
                                    unprepared: Some(stmt.id),
                                    ..Undo::default()
                                })),
                            });
                        }
                    }
                }
                frontend::BIND | frontend::DESCRIBE => {
                    c.unsynced = true;
                    let (is_statement, name) = if t == frontend::BIND {
                        match extended::bind_statement(body) {
                            Some(n) => (true, n),
                            None => {
                                invalid = Some("invalid Bind message".into());
                                break;
                            }
                        }
                    } else {
                        match extended::target(body) {
                            Some((kind, n)) => (kind == b'S', n),
                            None => {
                                invalid = Some("invalid Describe message".into());
                                break;
                            }
                        }
                    };
                    let ends = if t == frontend::BIND {
                        extended::ENDS_BIND
                    } else {
                        extended::ENDS_DESCRIBE
                    };
                    if !is_statement {
                        out.extend_from_slice(frame);
                    } else if name.is_empty() {
                        if !c.batch_parsed_unnamed && !session.unnamed.is_empty() {
                            // The unnamed statement was parsed in an earlier batch,
                            // maybe on another connection: parse it again here.
                            extended::write_parse(&mut out, "", &session.unnamed);
                            b.replies.push_back(Reply::Swallow {
                                ends: extended::ENDS_PARSE,
                                undo: None,
                            });
                            c.batch_parsed_unnamed = true;
                        }
                        out.extend_from_slice(frame);
                    } else {
                        let Some(stmt) = session.statements.get(name).cloned() else {
                            let msg = format!(
                                "prepared statement \"{}\" does not exist",
                                String::from_utf8_lossy(name)
                            );
                            local_error(b, "26000", &msg);
                            c.discard_until_sync = true;
                            pos += frame_len;
                            continue;
                        };
                        if !touch_prepared(b, &stmt.id) {
                            make_room(b, &mut out, max_prepared);
                            extended::write_parse(&mut out, &stmt.server_name, &stmt.body);
                            b.tick += 1;
                            b.prepared.insert(stmt.id, b.tick);
                            b.replies.push_back(Reply::Swallow {
                                ends: extended::ENDS_PARSE,
                                undo: Some(Box::new(Undo {
                                    unprepared: Some(stmt.id),
                                    ..Undo::default()
                                })),
                            });
                        }
                        if t == frontend::BIND {
                            if extended::write_bind_renamed(&mut out, body, &stmt.server_name)
                                .is_none()
                            {
                                invalid = Some("invalid Bind message".into());
                                break;
                            }
                        } else {
                            extended::write_statement_message(
                                &mut out,
                                frontend::DESCRIBE,
                                &stmt.server_name,
                            );
                        }
                    }
                    b.replies.push_back(Reply::forward(ends));
                }
                frontend::CLOSE => {
                    c.unsynced = true;
                    match extended::target(body) {
                        Some((b'S', name)) if !name.is_empty() => {
                            // Other clients may share the server-side statement:
                            // only the client's name goes; the server's stays cached.
                            let reregister =
                                session.statements.remove(name).map(|s| (name.to_vec(), s));
                            b.replies.push_back(Reply::Local {
                                bytes: extended::CLOSE_COMPLETE.to_vec(),
                                undo: reregister.map(|r| {
                                    Box::new(Undo {
                                        reregister: Some(r),
                                        ..Undo::default()
                                    })
                                }),
                            });
                        }
                        Some(_) => {
                            out.extend_from_slice(frame);
                            b.replies.push_back(Reply::forward(extended::ENDS_CLOSE));
                        }
                        None => {
                            invalid = Some("invalid Close message".into());
                            break;
                        }
                    }
                }
                frontend::EXECUTE => {
                    c.unsynced = true;
                    if std::mem::take(&mut c.dealloc_pending) {
                        // DEALLOCATE ALL / DISCARD ALL through the extended
                        // protocol: the server forgets its statements, and the
                        // client's names go too.
                        session.statements.clear();
                        b.prepared.clear();
                    }
                    out.extend_from_slice(frame);
                    b.replies.push_back(Reply::forward(extended::ENDS_EXECUTE));
                }
                frontend::FLUSH => {
                    c.unsynced = true;
                    out.extend_from_slice(frame);
                }
                frontend::SYNC => {
                    c.unsynced = false;
                    c.batch_parsed_unnamed = false;
                    c.dealloc_pending = false;
                    out.extend_from_slice(frame);
                    b.replies.push_back(Reply::Ready(now));
                }
                frontend::FUNCTION_CALL => {
                    out.extend_from_slice(frame);
                    b.replies.push_back(Reply::Ready(now));
                }
                t => {
                    invalid = Some(format!("invalid frontend message type {}", printable(t)));
                    break;
                }
            }
            pos += frame_len;
        }
        let mut resume_read = false;
        let mut follow_ok = false;
        let mut ok = true;
        if !out.is_empty() {
            if behind.is_some() && b.wbuf.is_empty() {
                // Behind a running read: it goes out at the end of this pass,
                // with any other read that follows this one meanwhile.
                b.wbuf.extend_from_slice(&out);
                b.deferred = true;
                self.deferred.push(bk);
            } else if behind.is_some() && b.deferred {
                b.wbuf.extend_from_slice(&out);
            } else {
                ok = super::worker::write_or_buffer(&mut b.sock, &mut b.wbuf, &out);
            }
        }
        if behind.is_some() {
            // Sent behind another client's batch: that client's books stay.
            // Anything short of the whole batch counts as a failure.
            c.rbuf.drain(..pos);
            out.clear();
            self.out = out;
            return ok && invalid.is_none() && pos == end;
        }
        let full = b.wbuf.len() > OUTPUT_HIGH_WATER;
        if pos > 0 {
            // One whole batch of reads, kept for a retry, from an idle
            // connection: another client's read may follow it.
            follow_ok = plain
                && c.retry_armed
                && !c.retry_collecting
                && !c.unsynced
                && matches!(b.replies.back(), Some(Reply::Ready(_)))
                && b.replies
                    .iter()
                    .filter(|r| matches!(r, Reply::Ready(_) | Reply::LocalReady { .. }))
                    .count()
                    == 1;
            b.follow_ok = follow_ok;
            b.busy_since = now;
            // Edge-triggered: a client paused while it waited must be read again.
            resume_read = c.read_paused && !full && !c.eof;
            c.rbuf.drain(..pos);
            super::worker::shrink(&mut c.rbuf);
        }
        c.read_paused = full;
        let local_head = matches!(
            b.replies.front(),
            Some(Reply::Local { .. } | Reply::LocalReady { .. })
        );
        out.clear();
        self.out = out;
        if !ok {
            self.backend_lost(bk, "could not write to server");
            return true;
        }
        if let Some(reason) = newly_pinned {
            if !on_primary {
                // A session setting made inside a read-only transaction on a
                // replica cannot follow the session to the primary.
                log::warn!(
                    "session-state statement ({}) inside a transaction on a replica; \
                     the connection will not be reused",
                    reason.as_str()
                );
                if let Some(b) = self.backends.get_mut(bk) {
                    b.dirty = true;
                }
            }
        }
        if let Some(msg) = invalid {
            self.fatal(ck, "08P01", &msg);
            return true;
        }
        if terminate {
            self.close_client(ck, "client terminated");
            return true;
        }
        if local_head {
            // PgGate's own replies are due now.
            self.backend_input(bk);
        }
        if follow_ok {
            // A queued client's read may go behind this one now.
            self.follow_from_queue(bk);
        }
        if resume_read {
            self.read_client(ck);
        }
        true
    }

    /// The batch at the head of the client's input cannot be served: answer it
    /// with an error and a ReadyForQuery at the point the client expects one.
    pub fn fail_pending(&mut self, ck: usize, code: &str, message: &str) {
        let max = self.config.proxy.max_message_size;
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.state = ClientState::Ready;
        c.head_class = None;
        let mut buf = Vec::new();
        write::error_response(&mut buf, "ERROR", code, message);
        match parse_header(&c.rbuf, max) {
            Ok(Some(h)) if h.tag == frontend::QUERY && c.rbuf.len() >= h.frame_len() => {
                c.rbuf.drain(..h.frame_len());
                write::ready_for_query(&mut buf, b'I');
            }
            _ => c.discard_until_sync = true,
        }
        self.send_client(ck, &buf);
        self.client_input(ck);
    }

    pub fn login_timeout_expired(&mut self, ck: usize) {
        crate::ops::metrics().clients_rejected.login_timeout.inc();
        self.fatal(ck, "08P01", "login timeout expired");
    }

    pub fn login_timeout(&mut self, ck: usize, generation: u64) {
        let Some(c) = self.clients.get(ck) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        if matches!(
            c.state,
            ClientState::Startup
                | ClientState::Authenticating { .. }
                | ClientState::LocalAuth
                | ClientState::AwaitingParams
                | ClientState::RelayRetry
        ) {
            self.login_timeout_expired(ck);
        }
    }

    pub fn checkout_timeout(&mut self, ck: usize, generation: u64) {
        let Some(c) = self.clients.get(ck) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let ClientState::WaitingForBackend {
            backend_index,
            since,
        } = c.state
        else {
            return;
        };
        // The timer may belong to an earlier wait of this client.
        if since.elapsed() < self.config.pool.checkout_timeout {
            return;
        }
        if let Some(s) = c.session.as_ref() {
            if let Some(p) = s.pools.per_backend.get(backend_index) {
                p.remove_waiter(self.id, client_token(ck), generation);
            }
        }
        let name = self
            .topo
            .backends
            .get(backend_index)
            .map(|b| b.name.clone())
            .unwrap_or_default();
        crate::ops::metrics().errors.checkout_timeout.inc();
        self.fail_pending(
            ck,
            "53300",
            &format!(
                "no connection to backend \"{name}\" became free within pool.checkout_timeout"
            ),
        );
    }

    /// A CancelRequest arrived (on any worker): hand it to the client's worker.
    fn cancel_request(&mut self, pid: i32, secret: i32) {
        let Some(target) = self.shared.cancel_target(pid, secret) else {
            log::debug!("cancel request with an unknown key dropped");
            return;
        };
        if target.worker == self.id {
            self.cancel_for(target.client, target.generation);
        } else if let Some(w) = self.shared.workers().get(target.worker) {
            w.send(WorkerMsg::Cancel {
                client: target.client,
                generation: target.generation,
            });
        }
    }

    /// Cancels what this client is running, if it is running something now.
    pub fn cancel_for(&mut self, client: Token, generation: u64) {
        let ck = (client.0 - 1) / 2;
        let Some(c) = self.clients.get(ck) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        if let ClientState::Following { backend } = c.state {
            self.cancel_follower(ck, generation, backend);
            return;
        }
        let Some(bk) = c.backend else {
            return;
        };
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        if b.replies.is_empty() && !c.unsynced {
            // Nothing running: a late cancel must not hit a later statement.
            return;
        }
        let Some((pid, secret)) = b.key else {
            return;
        };
        // The connection is never pooled again, so a cancel that arrives late
        // cannot hit another client's query.
        b.cancel_sent = true;
        let addr = self.topo.backends[b.index].addr;
        let timeout = self.config.pool.connect_timeout;
        spawn_cancel(addr, pid, secret, timeout);
    }

    /// Removes a client: its backend goes back to the pool only if clean.
    pub fn close_client(&mut self, ck: usize, why: &str) {
        if !self.clients.contains(ck) {
            return;
        }
        let mut c = self.clients.remove(ck);
        log::trace!("client {ck} closed: {why}");
        crate::ops::metrics().clients_connected.dec();
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.shared.release_client_slot();
        let session = c.session.take();
        if let Some(s) = session.as_ref() {
            self.shared.unregister_cancel_key(s.key.0);
        }
        match c.state {
            ClientState::Authenticating { relay } => {
                self.close_backend(relay, "client left during login");
            }
            ClientState::WaitingForBackend { backend_index, .. } => {
                if let Some(s) = session.as_ref() {
                    if let Some(p) = s.pools.per_backend.get(backend_index) {
                        p.remove_waiter(self.id, client_token(ck), c.generation);
                    }
                }
            }
            _ => {}
        }
        let pinned = session.as_ref().is_some_and(|s| s.pinned.is_some());
        if let Some(bk) = c.backend.take() {
            let busy = c.unsynced || self.backends.get(bk).is_some_and(|b| !b.replies.is_empty());
            self.abandon_backend(bk, busy, pinned);
        }
        if let Some(bk) = c.held.take() {
            self.abandon_backend(bk, false, pinned);
        }
    }

    /// A client left while linked to `bk`: make the connection clean or close it.
    fn abandon_backend(&mut self, bk: usize, in_flight: bool, pinned: bool) {
        let session_mode = self.config.pool.mode == PoolMode::Session;
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        b.client = None;
        // Its output no longer waits for anyone: the replies to a ROLLBACK or
        // DISCARD ALL sent below must be read.
        b.read_paused = false;
        if in_flight {
            // Stop the statement rather than let it run on for nobody.
            if let Some((pid, secret)) = b.key {
                let addr = self.topo.backends[b.index].addr;
                let timeout = self.config.pool.connect_timeout;
                spawn_cancel(addr, pid, secret, timeout);
            }
        }
        if in_flight
            || pinned
            || b.dirty
            || b.cancel_sent
            || !matches!(b.state, BackendState::Linked | BackendState::Held)
        {
            self.close_backend(bk, "client left with session state or a running statement");
            return;
        }
        let mut sql = String::new();
        let mut rfq = 0u8;
        if b.tx_status != b'I' {
            sql.push_str("ROLLBACK");
            rfq += 1;
        }
        if session_mode {
            rfq += 1;
        }
        if rfq == 0 {
            self.release(bk);
            return;
        }
        let mut buf = Vec::new();
        if b.tx_status != b'I' {
            write::query(&mut buf, "ROLLBACK");
        }
        if session_mode {
            write::query(&mut buf, "DISCARD ALL");
        }
        b.state = BackendState::Resetting { rfq_left: rfq };
        if !self.send_backend(bk, &buf) {
            self.close_backend(bk, "could not write to server");
        }
    }
}

/// Sends a CancelRequest from a short-lived thread, so no worker ever blocks.
pub(super) fn spawn_cancel(
    addr: std::net::SocketAddr,
    pid: i32,
    secret: i32,
    timeout: std::time::Duration,
) {
    let spawned = std::thread::Builder::new()
        .name("pggate-cancel".into())
        .spawn(move || send_cancel(addr, pid, secret, timeout));
    if let Err(e) = spawned {
        log::warn!("could not start a thread to send a cancel request: {e}");
    }
}

/// Connects to the backend and sends a CancelRequest (blocking; own thread).
fn send_cancel(addr: std::net::SocketAddr, pid: i32, secret: i32, timeout: std::time::Duration) {
    use std::io::{Read, Write};
    let timeout = if timeout.is_zero() {
        std::time::Duration::from_secs(3)
    } else {
        timeout
    };
    match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(timeout));
            if let Err(e) = s.write_all(&write::cancel_request(pid, secret)) {
                log::warn!("could not send cancel request to {addr}: {e}");
                return;
            }
            // The server closes the connection once it has processed the request.
            let mut sink = [0u8; 16];
            let _ = s.read(&mut sink);
        }
        Err(e) => log::warn!("could not connect to {addr} to cancel a query: {e}"),
    }
}

/// A message type byte as PostgreSQL prints it in errors.
fn printable(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("\"{}\"", tag as char)
    } else {
        format!("{tag}")
    }
}

/// The class a Bind or Describe of statement `name` routes by.
pub(super) fn statement_class(session: &Session, name: &[u8]) -> Option<sql::Classification> {
    if name.is_empty() {
        session.unnamed_class
    } else {
        session.statements.get(name).map(|s| s.class)
    }
}

/// Marks a statement used on this connection; false if the server lacks it.
fn touch_prepared(b: &mut Backend, id: &StatementId) -> bool {
    b.tick += 1;
    let tick = b.tick;
    match b.prepared.get_mut(id) {
        Some(t) => {
            *t = tick;
            true
        }
        None => false,
    }
}

/// Closes the least recently used statement when the connection holds
/// `pool.max_prepared_statements` already.
fn make_room(b: &mut Backend, out: &mut Vec<u8>, max: usize) {
    while b.prepared.len() >= max {
        let Some((&old, _)) = b.prepared.iter().min_by_key(|(_, &t)| t) else {
            return;
        };
        b.prepared.remove(&old);
        extended::write_statement_message(out, frontend::CLOSE, &extended::server_name(&old));
        b.replies.push_back(Reply::Swallow {
            ends: extended::ENDS_CLOSE,
            // Skipped after an error, the statement would stay on the server
            // while PgGate believes it gone: a later Parse of it would fail.
            undo: Some(Box::new(Undo {
                uncertain: true,
                ..Undo::default()
            })),
        });
    }
}

/// Queues an error PgGate raises itself, in its place among the replies.
fn local_error(b: &mut Backend, code: &str, message: &str) {
    let mut bytes = Vec::new();
    write::error_response(&mut bytes, "ERROR", code, message);
    b.replies.push_back(Reply::Local { bytes, undo: None });
}

/// A simple Query that drops protocol-level statements only, answered by
/// PgGate for an unlinked, unpinned session: the tag to reply with.
fn deallocate_locally(session: Option<&mut Session>, text: &str) -> Option<&'static str> {
    let session = session?;
    if session.pinned.is_some() {
        // SQL PREPAREs may exist on the server: it must see DEALLOCATE ALL too.
        return None;
    }
    match sql::deallocate_target(text)? {
        sql::Deallocate::Name(n) => {
            session.statements.remove(n.as_bytes())?;
            Some("DEALLOCATE")
        }
        sql::Deallocate::All => {
            session.statements.clear();
            let discard = sql::Lexer::new(text)
                .find(|t| !t.is_comment())
                .is_some_and(|t| t.is_keyword("discard"));
            Some(if discard {
                "DISCARD ALL"
            } else {
                "DEALLOCATE ALL"
            })
        }
    }
}

/// CommandComplete with the given tag.
pub fn write_command_complete(out: &mut Vec<u8>, tag: &str) {
    out.push(b'C');
    out.extend_from_slice(&((4 + tag.len() + 1) as u32).to_be_bytes());
    out.extend_from_slice(tag.as_bytes());
    out.push(0);
}

fn c_wbuf_empty(clients: &slab::Slab<super::conn::Client>, ck: usize) -> bool {
    clients.get(ck).is_some_and(|c| c.wbuf.is_empty())
}

/// Counts a pinned session by reason (a field, not a label lookup).
fn count_pin(reason: sql::PinReason) {
    let p = &crate::ops::metrics().sessions_pinned;
    let counter = match reason {
        sql::PinReason::Set => &p.set,
        sql::PinReason::Reset => &p.reset,
        sql::PinReason::SetConfig => &p.set_config,
        sql::PinReason::Prepare => &p.prepare,
        sql::PinReason::Listen => &p.listen,
        sql::PinReason::DeclareWithHold => &p.declare_with_hold,
        sql::PinReason::TempObject => &p.temp_object,
        sql::PinReason::AdvisoryLock => &p.advisory_lock,
        sql::PinReason::Load => &p.load,
    };
    counter.inc();
}
