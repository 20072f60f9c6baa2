//! One event-loop thread: a mio `Poll`, the client sessions and backend
//! connections it owns (two slabs), its share of the pools' idle connections,
//! its timers (a heap, with a timerfd set for the earliest: the poll waits
//! without a timeout), and its mailbox. Sockets are registered once,
//! edge-triggered, for both directions; nothing is reregistered per
//! transaction.
//!
//! This file owns the loop, socket I/O and the mailbox. What a byte means is
//! decided in `session.rs` (client side), `backend.rs` (backend side) and
//! `pool.rs` (checkout and release).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::Config;

use super::conn::{Backend, Client};
use super::shared::{Shared, UserPools};
use super::stream::{HandshakeStep, Stream};
use super::timer_fd::TimerFd;

pub const WAKER: Token = Token(0);
/// The worker's timerfd (client and backend tokens are small slab keys).
const TIMER: Token = Token(usize::MAX - 1);

/// Stop reading a peer while the other side has this much unsent output.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Buffers larger than this are given back once empty, so idle sessions stay small.
const KEEP_BUFFER: usize = 16 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// What other threads ask of a worker.
pub enum WorkerMsg {
    NewClient(std::net::TcpStream),
    /// A CancelRequest named a client of this worker.
    Cancel {
        client: Token,
        generation: u64,
    },
    /// A backend connection moved here from another worker, for a waiting client.
    Transfer {
        backend: Box<Backend>,
        for_client: Option<(Token, u64)>,
    },
    /// A pool this worker has idle connections (or waiters) for has waiters.
    Poke {
        pools: Arc<UserPools>,
        index: usize,
    },
    /// The answer to an `auth_query` lookup for a client of this worker.
    AuthSecret {
        client: Token,
        generation: u64,
        result: super::lookup::LookupResult,
    },
    /// Drain: close idle clients now, the others when their transaction ends.
    Shutdown,
    /// The drain time is over: close everyone.
    ShutdownNow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    Login,
    Checkout,
    Connect,
    Retry,
    RelayRetry,
    DrainClose,
    Maintenance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Instant,
    pub kind: TimerKind,
    pub key: usize,
    pub generation: u64,
}

pub struct Worker {
    pub id: usize,
    pub poll: Poll,
    pub rx: Receiver<WorkerMsg>,
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    /// Backends and health as of the last reload.
    pub topo: Arc<super::shared::Topology>,
    pub clients: Slab<Client>,
    pub backends: Slab<Backend>,
    /// Idle connections of this worker by (pool id, backend index).
    pub idle: foldhash::HashMap<(usize, usize), Vec<usize>>,
    pub timers: BinaryHeap<Reverse<Timer>>,
    /// Goes off at the earliest timer, so the poll waits without a timeout
    /// (none if the system refused one: the poll's timeout does it then).
    timer_fd: Option<TimerFd>,
    /// When the event loop's current pass began (poll returned), or when the
    /// last timers were fired: one clock read per pass serves every
    /// timestamp taken while handling its events.
    pub now: Instant,
    pub scratch: Vec<u8>,
    /// Reused for assembling output to one peer; empty between uses.
    pub out: Vec<u8>,
    pub next_generation: u64,
    pub rng: u64,
    pub stopping: bool,
    /// `proxy.client_idle_timeout` is set: clients' activity is timed.
    client_idle_checked: bool,
    pub config_version: u64,
    /// Query-mode clients waiting for a primary connection's ParameterStatus values.
    pub param_waiters: Vec<(usize, u64)>,
    /// Backends whose `wbuf` waits for the end of this pass (`Backend::deferred`).
    pub deferred: Vec<usize>,
}

pub fn client_token(key: usize) -> Token {
    Token(1 + 2 * key)
}

pub fn backend_token(key: usize) -> Token {
    Token(2 + 2 * key)
}

/// Result of reading a socket into a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Some bytes (maybe none) arrived; the socket may still be open.
    Open,
    /// The peer closed its side or the socket failed.
    Closed,
    /// One pass's worth arrived and the socket may hold more: handle it, then
    /// read again (edge-triggered: no new event will say so).
    More,
}

/// Reads what the socket has into `buf`. A short read means the socket is
/// drained (edge-triggered: the next arrival raises a new event), so no extra
/// read is spent just to see WouldBlock.
pub fn read_into(
    sock: &mut Stream,
    buf: &mut Vec<u8>,
    scratch: &mut [u8],
    hup: bool,
) -> ReadOutcome {
    // TLS may hold decrypted bytes the socket no longer signals, and a peer
    // that hung up sends no further event for its end of stream: read those dry.
    let short_read_drains = !sock.is_tls() && !hup;
    loop {
        match sock.read(scratch) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                if short_read_drains && n < scratch.len() {
                    return ReadOutcome::Open;
                }
                if buf.len() > OUTPUT_HIGH_WATER * 4 {
                    return ReadOutcome::More;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

/// Writes `data` to the socket, keeping what it does not take in `pending`.
/// Data already pending goes first. Returns false when the socket failed.
pub fn write_or_buffer(sock: &mut impl Write, pending: &mut Vec<u8>, data: &[u8]) -> bool {
    if !pending.is_empty() {
        pending.extend_from_slice(data);
        return flush(sock, pending);
    }
    let mut off = 0;
    while off < data.len() {
        match sock.write(&data[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    if off < data.len() {
        pending.extend_from_slice(&data[off..]);
    }
    true
}

/// Writes as much of `pending` as the socket takes. False when the socket failed.
pub fn flush(sock: &mut impl Write, pending: &mut Vec<u8>) -> bool {
    let mut off = 0;
    while off < pending.len() {
        match sock.write(&pending[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    pending.drain(..off);
    shrink(pending);
    true
}

/// Gives back a large buffer once it is empty.
pub fn shrink(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
        *buf = Vec::new();
    }
}

impl Worker {
    pub fn new(id: usize, poll: Poll, rx: Receiver<WorkerMsg>, shared: Arc<Shared>) -> Worker {
        let config = shared.config();
        let topo = shared.topology();
        let shared_idle_timeout = config.proxy.client_idle_timeout;
        let timer_fd = TimerFd::new(poll.registry(), TIMER)
            .map_err(|e| log::warn!("worker {id}: no timerfd ({e}); timing by the poll timeout"))
            .ok();
        Worker {
            id,
            poll,
            rx,
            shared,
            config,
            topo,
            clients: Slab::new(),
            backends: Slab::new(),
            idle: Default::default(),
            timers: BinaryHeap::new(),
            timer_fd,
            scratch: vec![0; READ_CHUNK],
            now: Instant::now(),
            out: Vec::new(),
            next_generation: 1,
            rng: 0x9e37_79b9_7f4a_7c15
                ^ ((id as u64 + 1) << 32)
                ^ super::shared::random_u32() as u64,
            stopping: false,
            client_idle_checked: !shared_idle_timeout.is_zero(),
            config_version: 0,
            param_waiters: Vec::new(),
            deferred: Vec::new(),
        }
    }

    pub fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// xorshift64*: cheap randomness for weighted replica choice.
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn add_timer(&mut self, after: Duration, kind: TimerKind, key: usize, generation: u64) {
        if after.is_zero() {
            return;
        }
        self.timers.push(Reverse(Timer {
            at: self.now + after,
            kind,
            key,
            generation,
        }));
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        self.add_timer(Duration::from_secs(1), TimerKind::Maintenance, 0, 0);
        loop {
            self.arm_timer_fd();
            let timeout = match self.timer_fd {
                Some(_) => None,
                None => self
                    .timers
                    .peek()
                    .map(|Reverse(t)| t.at.saturating_duration_since(self.now)),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("worker {}: poll failed: {e}", self.id);
                return;
            }
            self.now = Instant::now();
            let version = self
                .shared
                .config_version
                .load(std::sync::atomic::Ordering::Acquire);
            if version != self.config_version {
                // A reload: new sessions and new checkouts use the new values.
                self.config_version = version;
                self.config = self.shared.config();
                self.topo = self.shared.topology();
                self.client_idle_checked = !self.config.proxy.client_idle_timeout.is_zero();
            }
            for ev in events.iter() {
                self.dispatch(ev);
            }
            self.fire_timers();
            self.flush_deferred();
            if self.stopping && self.clients.is_empty() {
                log::debug!("worker {} stopped", self.id);
                return;
            }
        }
    }

    fn dispatch(&mut self, ev: &Event) {
        let t = ev.token();
        if t == WAKER {
            self.drain_mailbox();
            return;
        }
        if t == TIMER {
            // Due timers fire after this pass's events.
            if let Some(fd) = self.timer_fd.as_mut() {
                fd.went_off();
            }
            return;
        }
        let n = t.0 - 1;
        let key = n / 2;
        let hup = ev.is_read_closed() || ev.is_error();
        if n % 2 == 0 {
            if let Some(c) = self.clients.get_mut(key) {
                c.hup |= hup;
            }
            if self.clients.contains(key) {
                self.client_event(
                    key,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable(),
                );
            }
        } else if self.backends.contains(key) {
            if let Some(b) = self.backends.get_mut(key) {
                b.hup |= hup;
            }
            self.backend_event(
                key,
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable(),
            );
        }
    }

    fn drain_mailbox(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                WorkerMsg::NewClient(sock) => self.accept_client(sock),
                WorkerMsg::Cancel { client, generation } => self.cancel_for(client, generation),
                WorkerMsg::Transfer {
                    backend,
                    for_client,
                } => self.receive_backend(*backend, for_client),
                WorkerMsg::Poke { pools, index } => self.serve_waiters(&pools, index),
                WorkerMsg::AuthSecret {
                    client,
                    generation,
                    result,
                } => self.auth_secret(client, generation, result),
                WorkerMsg::Shutdown => self.drain(false),
                WorkerMsg::ShutdownNow => self.drain(true),
            }
        }
    }

    /// Sets the timerfd for the earliest timer, if that changed.
    fn arm_timer_fd(&mut self) {
        let Some(fd) = self.timer_fd.as_mut() else {
            return;
        };
        let next = self.timers.peek().map(|Reverse(t)| t.at);
        if let Err(e) = fd.arm(next) {
            log::warn!(
                "worker {}: timerfd failed ({e}); timing by the poll timeout",
                self.id
            );
            self.timer_fd = None;
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        self.now = now;
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.timers.pop();
            match t.kind {
                TimerKind::Login => self.login_timeout(t.key, t.generation),
                TimerKind::Checkout => self.checkout_timeout(t.key, t.generation),
                TimerKind::Connect => self.connect_timeout(t.key, t.generation),
                TimerKind::Retry => self.retry_checkout(t.key, t.generation),
                TimerKind::RelayRetry => self.relay_retry(t.key, t.generation),
                TimerKind::DrainClose => {
                    let live = self
                        .clients
                        .get(t.key)
                        .is_some_and(|c| c.generation == t.generation);
                    if live && !self.client_busy(t.key) {
                        self.shutdown_client(t.key);
                    }
                }
                TimerKind::Maintenance => {
                    self.maintenance();
                    self.add_timer(Duration::from_secs(1), TimerKind::Maintenance, 0, 0);
                }
            }
        }
    }

    fn accept_client(&mut self, sock: std::net::TcpStream) {
        if let Err(e) = sock.set_nonblocking(true) {
            log::warn!("could not make client socket non-blocking: {e}");
            self.shared.release_client_slot();
            return;
        }
        let _ = sock.set_nodelay(true);
        let mut sock = TcpStream::from_std(sock);
        let generation = self.generation();
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            client_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("could not register client socket: {e}");
            self.shared.release_client_slot();
            return;
        }
        entry.insert(Client {
            sock: Stream::Plain(sock),
            generation,
            state: super::conn::ClientState::Startup,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            session: None,
            backend: None,
            held: None,
            local_auth: None,
            tried: 0,
            connect_attempts: 0,
            retry: Vec::new(),
            retry_armed: false,
            retry_collecting: false,
            force_primary: false,
            unsynced: false,
            head_class: None,
            head_version: 0,
            batch_parsed_unnamed: false,
            dealloc_pending: false,
            discard_until_sync: false,
            last_active: Instant::now(),
            hup: false,
            eof: false,
            read_paused: false,
        });
        let login = self.config.proxy.login_timeout;
        self.add_timer(login, TimerKind::Login, key, generation);
        let m = crate::ops::metrics();
        m.clients_accepted.inc();
        m.clients_connected.inc();
    }

    fn client_event(&mut self, key: usize, readable: bool, writable: bool) {
        if self.clients.get(key).is_some_and(|c| c.sock.handshaking()) {
            self.client_handshake(key);
            return;
        }
        if writable {
            self.flush_client(key);
            if !self.clients.contains(key) {
                return;
            }
        }
        if readable {
            self.read_client(key);
        }
    }

    fn backend_event(&mut self, key: usize, readable: bool, writable: bool) {
        if self.backends.get(key).is_some_and(|b| b.sock.handshaking()) {
            let step = match self.backends.get_mut(key) {
                Some(b) => b.sock.continue_handshake(),
                None => return,
            };
            match step {
                HandshakeStep::InProgress => {}
                HandshakeStep::Done => {
                    if let Err(e) = self.backend_tls_ready(key) {
                        self.backend_lost(key, &e);
                    }
                }
                HandshakeStep::Failed(e) => {
                    self.backend_lost(key, &format!("TLS handshake failed: {e}"));
                }
            }
            return;
        }
        if writable {
            self.backend_writable(key);
            if !self.backends.contains(key) {
                return;
            }
        }
        if readable {
            self.read_backend(key);
        }
    }

    /// Drives a client's TLS handshake; once done, reads what came with it.
    fn client_handshake(&mut self, key: usize) {
        let step = match self.clients.get_mut(key) {
            Some(c) => c.sock.continue_handshake(),
            None => return,
        };
        match step {
            HandshakeStep::InProgress => {}
            HandshakeStep::Done => self.read_client(key),
            HandshakeStep::Failed(e) => {
                log::info!("client TLS handshake failed: {e}");
                self.close_client(key, "TLS handshake failed");
            }
        }
    }

    /// Reads the client socket unless paused, then handles what arrived.
    pub fn read_client(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.read_paused || c.eof {
            return;
        }
        loop {
            let Some(c) = self.clients.get_mut(key) else {
                return;
            };
            if c.read_paused || c.eof {
                break;
            }
            let outcome = read_into(&mut c.sock, &mut c.rbuf, &mut self.scratch, c.hup);
            if outcome == ReadOutcome::Closed {
                c.eof = true;
            }
            if self.client_idle_checked {
                c.last_active = self.now;
            }
            self.client_input(key);
            if outcome != ReadOutcome::More {
                break;
            }
        }
        if let Some(c) = self.clients.get(key) {
            if c.eof {
                self.close_client(key, "client closed the connection");
            }
        }
    }

    /// Reads the backend socket unless paused, then handles what arrived.
    pub fn read_backend(&mut self, key: usize) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if b.read_paused || b.eof {
            return;
        }
        if b.state == super::conn::BackendState::Connecting {
            // A readable event while connecting is a failed connect.
            self.backend_writable(key);
            return;
        }
        loop {
            let Some(b) = self.backends.get_mut(key) else {
                return;
            };
            if b.read_paused || b.eof {
                break;
            }
            let outcome = read_into(&mut b.sock, &mut b.rbuf, &mut self.scratch, b.hup);
            if outcome == ReadOutcome::Closed {
                b.eof = true;
            }
            self.backend_input(key);
            if outcome != ReadOutcome::More {
                break;
            }
        }
        if let Some(b) = self.backends.get(key) {
            if b.eof {
                self.backend_lost(key, "server closed the connection");
            }
        }
    }

    /// Sends bytes to a client; false if the client is gone or failed.
    pub fn send_client(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(c) = self.clients.get_mut(key) else {
            return false;
        };
        if !write_or_buffer(&mut c.sock, &mut c.wbuf, data) {
            c.eof = true;
            return false;
        }
        true
    }

    /// Sends bytes to a backend; false if it failed.
    pub fn send_backend(&mut self, key: usize, data: &[u8]) -> bool {
        let Some(b) = self.backends.get_mut(key) else {
            return false;
        };
        if b.state == super::conn::BackendState::Connecting {
            b.wbuf.extend_from_slice(data);
            return true;
        }
        if !write_or_buffer(&mut b.sock, &mut b.wbuf, data) {
            b.eof = true;
            return false;
        }
        true
    }

    /// Writes what this pass queued behind running reads: reads that arrived
    /// together reach the server in one write.
    fn flush_deferred(&mut self) {
        while let Some(bk) = self.deferred.pop() {
            let Some(b) = self.backends.get_mut(bk) else {
                continue;
            };
            if !std::mem::take(&mut b.deferred) {
                continue;
            }
            if !flush(&mut b.sock, &mut b.wbuf) {
                self.backend_lost(bk, "could not write to server");
            }
        }
    }

    /// The client's socket can take more: flush, then resume whoever was paused on it.
    pub fn flush_client(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.wbuf.is_empty() && !flush(&mut c.sock, &mut c.wbuf) {
            self.close_client(key, "could not write to client");
            return;
        }
        let drained = c.wbuf.len() < OUTPUT_HIGH_WATER;
        if c.state == super::conn::ClientState::Closing && c.wbuf.is_empty() {
            self.close_client(key, "closing after error");
            return;
        }
        if drained {
            if let Some(bk) = c.backend {
                if self.backends.get(bk).is_some_and(|b| b.read_paused) {
                    if let Some(b) = self.backends.get_mut(bk) {
                        b.read_paused = false;
                    }
                    // Edge-triggered: data that waited will not raise a new event.
                    self.backend_input(bk);
                    self.read_backend(bk);
                }
            }
        }
    }

    /// The backend's socket can take more (or a connect finished).
    pub fn backend_writable(&mut self, key: usize) {
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if b.state == super::conn::BackendState::Connecting {
            let Some(tcp) = b.sock.tcp_ref() else {
                self.backend_connect_failed(key, "socket lost");
                return;
            };
            match tcp.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    let msg = e.to_string();
                    self.backend_connect_failed(key, &msg);
                    return;
                }
            }
            match tcp.peer_addr() {
                Ok(_) => {
                    let _ = tcp.set_nodelay(true);
                    b.state = if b.pending_startup.is_some() {
                        super::conn::BackendState::TlsNegotiating
                    } else {
                        super::conn::BackendState::Authenticating
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    let msg = e.to_string();
                    self.backend_connect_failed(key, &msg);
                    return;
                }
            }
        }
        let Some(b) = self.backends.get_mut(key) else {
            return;
        };
        if !b.wbuf.is_empty() && !flush(&mut b.sock, &mut b.wbuf) {
            self.backend_lost(key, "could not write to server");
            return;
        }
        let drained = b.wbuf.len() < OUTPUT_HIGH_WATER;
        if drained {
            if let Some((ck, generation)) = b.client {
                if self
                    .clients
                    .get(ck)
                    .is_some_and(|c| c.generation == generation && c.read_paused)
                {
                    if let Some(c) = self.clients.get_mut(ck) {
                        c.read_paused = false;
                    }
                    self.client_input(ck);
                    self.read_client(ck);
                }
            }
        }
    }

    /// `pool.min_idle`: tops every known pool up to that many idle connections
    /// (within `pool.size`), one new connection per pool and backend per tick.
    fn keep_min_idle(&mut self) {
        let min = self.config.pool.min_idle;
        let cap = self.config.pool.size;
        let topo = self.topo.clone();
        for pools in self.shared.all_pools() {
            if self.config.auth.mode == crate::config::AuthMode::Query
                && pools.credential.read().is_none()
            {
                continue;
            }
            for (i, b) in topo.backends.iter().enumerate() {
                if b.removed || !topo.health.backends.get(i).is_some_and(|h| h.is_up()) {
                    continue;
                }
                let pool = &pools.per_backend[i];
                let idle: usize = pool
                    .idle_on
                    .iter()
                    .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                let opening = self
                    .backends
                    .iter()
                    .filter(|(_, c)| {
                        c.index == i
                            && Arc::ptr_eq(&c.pools, &pools)
                            && matches!(
                                c.state,
                                super::conn::BackendState::Connecting
                                    | super::conn::BackendState::TlsNegotiating
                                    | super::conn::BackendState::Authenticating
                            )
                    })
                    .count();
                if idle + opening < min && pool.try_reserve(cap) {
                    self.open_pool_connection(i, &pools, true);
                }
            }
        }
    }

    /// Shutting down: clients with nothing running are told and closed; with
    /// `now`, all of them.
    fn drain(&mut self, now: bool) {
        self.stopping = true;
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for ck in keys {
            if now || !self.client_busy(ck) {
                self.shutdown_client(ck);
            }
        }
    }

    /// Whether a client has a transaction or statement under way.
    pub fn client_busy(&self, ck: usize) -> bool {
        let Some(c) = self.clients.get(ck) else {
            return false;
        };
        if matches!(
            c.state,
            super::conn::ClientState::WaitingForBackend { .. }
                | super::conn::ClientState::Following { .. }
        ) || c.unsynced
        {
            return true;
        }
        c.backend
            .and_then(|bk| self.backends.get(bk))
            .is_some_and(|b| b.tx_status != b'I' || !b.replies.is_empty())
    }

    pub fn shutdown_client(&mut self, ck: usize) {
        crate::ops::metrics().clients_rejected.shutting_down.inc();
        self.fatal(
            ck,
            "57P01",
            "terminating connection because PgGate is shutting down",
        );
    }

    /// Once a second: idle backend connections past their lifetime or idle
    /// timeout are closed, and this worker's numbers published for the metrics.
    fn maintenance(&mut self) {
        let now = Instant::now();
        if let Some(stats) = self.shared.stats.get().and_then(|s| s.get(self.id)) {
            let n = self.topo.backends.len().min(super::shared::MAX_BACKENDS);
            let mut idle = vec![0i64; n];
            let mut active = vec![0i64; n];
            for (_, b) in self.backends.iter() {
                if b.index < n {
                    if b.state == super::conn::BackendState::Idle {
                        idle[b.index] += 1;
                    } else {
                        active[b.index] += 1;
                    }
                }
            }
            for i in 0..n {
                stats.idle[i].store(idle[i], std::sync::atomic::Ordering::Relaxed);
                stats.active[i].store(active[i], std::sync::atomic::Ordering::Relaxed);
            }
            let (mut waiting, mut queued) = (0i64, 0i64);
            for (_, c) in self.clients.iter() {
                match c.state {
                    super::conn::ClientState::WaitingForBackend { .. } => waiting += 1,
                    super::conn::ClientState::Following { .. } => queued += 1,
                    _ => {}
                }
            }
            stats
                .waiting
                .store(waiting, std::sync::atomic::Ordering::Relaxed);
            stats
                .queued
                .store(queued, std::sync::atomic::Ordering::Relaxed);
        }
        if self.id == 0 && self.config.pool.min_idle > 0 && !self.stopping {
            self.keep_min_idle();
        }
        let client_idle = self.config.proxy.client_idle_timeout;
        if !client_idle.is_zero() {
            let idle: Vec<usize> = self
                .clients
                .iter()
                .filter(|(_, c)| {
                    c.state == super::conn::ClientState::Ready
                        && now.duration_since(c.last_active) > client_idle
                })
                .map(|(k, _)| k)
                .collect();
            for ck in idle {
                if !self.client_busy(ck) {
                    self.fatal(
                        ck,
                        "57P05",
                        "terminating connection due to idle timeout (proxy.client_idle_timeout)",
                    );
                }
            }
        }
        let idle_timeout = self.config.pool.idle_timeout;
        let max_lifetime = self.config.pool.max_lifetime;
        let mut expired = Vec::new();
        for (_, list) in self.idle.iter() {
            for &bk in list {
                if let Some(b) = self.backends.get(bk) {
                    let idle_too_long =
                        !idle_timeout.is_zero() && now.duration_since(b.idle_since) > idle_timeout;
                    let too_old =
                        !max_lifetime.is_zero() && now.duration_since(b.created) > max_lifetime;
                    let removed = self.topo.backends.get(b.index).is_none_or(|i| i.removed);
                    if idle_too_long || too_old || removed {
                        expired.push(bk);
                    }
                }
            }
        }
        for bk in expired {
            self.close_backend(bk, "idle timeout or lifetime reached");
        }
    }
}
