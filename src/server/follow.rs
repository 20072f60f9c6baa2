//! Pipelining reads across clients (`pool.pipeline_window`).
//!
//! When a pool is full, a client's plain read outside a transaction would wait
//! for a connection to come back; once `pool.pipeline_after` connections are
//! busy, it would wake another server process. If a connection is running
//! another client's read of that kind (one batch, sent moments ago, that hands
//! the connection back at its ReadyForQuery), the read is sent down it
//! instead, behind the running one (and up to `pool.pipeline_depth` reads
//! queue this way). The server then finds its next query already waiting when
//! it finishes, instead of sleeping until PgGate has passed the reply on and
//! sent the next one. Reads queued during one pass of the event loop leave in
//! one write (`Backend::deferred`). While the pool has room, a read is queued
//! only where the reads ahead are expected to finish within the window
//! (`Backend::read_time`), so slow reads still spread over connections.
//!
//! The first follower takes the connection over at the running batch's
//! ReadyForQuery, with its replies queued as if it had been linked all along.
//! Nothing of one client's batch reaches another: PgGate stops reading the
//! running batch's replies at its ReadyForQuery and hands over before reading
//! on. A follower whose client left has its replies read and dropped; if the
//! connection fails or cannot be handed back clean, each follower's read is
//! routed again from its kept copy, as a read whose backend died is (SPEC §7).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::PoolMode;
use crate::protocol::{self, frontend, parse_header};
use crate::sql;

use super::conn::{Backend, BackendState, Client, ClientState, Follower, Session};
use super::extended::{self, Reply};
use super::pool::{compatible, sync_sql};
use super::worker::Worker;

/// Length of the batch at the head of the client's input, if the client may
/// follow another read with it: a whole batch of plain reads outside a
/// transaction in an unpinned transaction-mode session, either one simple
/// Query or extended-protocol messages (starting with Parse or Bind, then
/// Parse, Bind, Describe and Execute of read statements) up to a Sync. Every
/// message is checked as forwarding will read it, so forwarding takes all of
/// it.
fn followable_batch(c: &Client, max: usize, write_functions: &[String]) -> Option<usize> {
    if c.discard_until_sync || c.unsynced || c.backend.is_some() || c.held.is_some() {
        return None;
    }
    let s = c.session.as_ref()?;
    if s.pinned.is_some() || s.hold_primary {
        return None;
    }
    let read = |k: sql::Classification| k.kind == sql::Kind::Read && k.pin.is_none();
    let mut parsed_unnamed = None;
    // Statements this batch names itself: its Bind may use them.
    let mut parsed_named: Vec<(&[u8], sql::Classification)> = Vec::new();
    let mut pos = 0;
    loop {
        let hdr = parse_header(c.rbuf.get(pos..)?, max).ok()??;
        let len = hdr.frame_len();
        let body = c.rbuf.get(pos + 5..pos + len)?;
        let first = pos == 0;
        match hdr.tag {
            frontend::QUERY if first => {
                let text = protocol::query_text(body)?;
                // DEALLOCATE / DISCARD change PgGate's books for the connection.
                return (read(c.head_class?) && sql::deallocate_target(text).is_none())
                    .then_some(len);
            }
            frontend::PARSE => {
                let (name, _, text) = extended::parse_parts(body)?;
                let class = match c.head_class {
                    Some(k) if first => k,
                    _ => sql::classify(text, write_functions),
                };
                if !read(class) || sql::deallocate_target(text).is_some() {
                    return None;
                }
                if name.is_empty() {
                    parsed_unnamed = Some(class);
                } else if s.statements.contains_key(name)
                    || parsed_named.iter().any(|(n, _)| *n == name)
                {
                    return None;
                } else {
                    parsed_named.push((name, class));
                }
            }
            frontend::BIND | frontend::DESCRIBE => {
                let name = if hdr.tag == frontend::BIND {
                    extended::bind_statement(body)?
                } else {
                    match extended::target(body)? {
                        (b'S', n) if !first => n,
                        (b'P', _) if !first => {
                            pos += len;
                            continue;
                        }
                        _ => return None,
                    }
                };
                let class = if name.is_empty() {
                    parsed_unnamed.or(if s.unnamed.is_empty() {
                        None
                    } else {
                        s.unnamed_class
                    })
                } else {
                    parsed_named
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, k)| *k)
                        .or_else(|| super::session::statement_class(s, name))
                };
                if !read(class?) {
                    return None;
                }
            }
            frontend::EXECUTE if !first => {}
            frontend::SYNC if !first => return Some(pos + len),
            _ => return None,
        }
        pos += len;
    }
}

/// Notes how long the plain read that just ended on `b` took.
pub fn note_read_time(b: &mut Backend, now: Instant) {
    let took = now.saturating_duration_since(b.busy_since);
    b.read_time = if b.read_time.is_zero() {
        took
    } else {
        b.read_time.saturating_mul(7).saturating_add(took) / 8
    };
}

/// How long a read sent down `b` now would wait for the reads ahead of it,
/// going by how long reads take there.
fn expected_wait(b: &Backend, now: Instant) -> Duration {
    let running_for = now.saturating_duration_since(b.busy_since);
    let queued = u32::try_from(b.followers.len()).unwrap_or(u32::MAX);
    b.read_time
        .saturating_sub(running_for)
        .saturating_add(b.read_time.saturating_mul(queued))
}

/// Whether a read of `s` may be sent down `b` behind its running batch.
fn can_follow(
    b: &Backend,
    s: &Session,
    now: std::time::Instant,
    window: std::time::Duration,
    depth: usize,
) -> bool {
    b.state == BackendState::Linked
        && b.follow_ok
        && b.followers.len() < depth
        // Its batch is still running (its ReadyForQuery is what hands over).
        && matches!(b.replies.back(), Some(Reply::Ready(_)))
        && b.counted
        && !b.read_paused
        && !b.cancel_sent
        && !b.dirty
        && !b.eof
        && !b.swallow_to_ready
        && b.tx_status == b'I'
        && (b.wbuf.is_empty() || b.deferred)
        && now.saturating_duration_since(b.busy_since) < window
        && Arc::ptr_eq(&b.pools, &s.pools)
        && compatible(&b.baseline, &s.params)
        && sync_sql(&b.applied, &s.params).is_none()
}

/// What `Worker::try_follow` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// The read was sent behind another; the client is `Following`.
    Sent,
    /// Not now: clients are queued, too few connections are busy, or the
    /// reads ahead would take longer than the window (a full pool may still
    /// take it).
    No,
    /// Nothing running here can take this client's read (nor will, until
    /// something else happens).
    Nowhere,
}

impl Worker {
    fn pipelining(&self) -> bool {
        !self.config.pool.pipeline_window.is_zero()
            && self.config.pool.mode == PoolMode::Transaction
    }

    /// Sends the client's read behind a running one on this worker, if one
    /// may take it, when either `pool.pipeline_after` of this worker's
    /// connections to backend `index` are running batches or (`full`) the pool
    /// is full and nothing here is idle. In the first case only connections
    /// whose reads ahead are expected to finish within the window qualify.
    /// Among those that may take it, the one with the fewest reads queued
    /// wins, then the one whose read was sent longest ago (likely to finish
    /// first).
    pub fn try_follow(&mut self, ck: usize, index: usize, full: bool) -> Follow {
        if !self.pipelining() {
            return Follow::No;
        }
        let window = self.config.pool.pipeline_window;
        let depth = self.config.pool.pipeline_depth;
        let Some(c) = self.clients.get(ck) else {
            return Follow::No;
        };
        let Some(s) = c.session.as_ref() else {
            return Follow::No;
        };
        let Some(pool) = s.pools.per_backend.get(index) else {
            return Follow::No;
        };
        // Clients already queued for a connection go first.
        if pool.n_waiters.load(Ordering::Acquire) > 0 {
            return Follow::No;
        }
        let total = pool.total.load(Ordering::Acquire);
        let full = full && total >= self.config.pool.size;
        if !full && total < self.config.pool.pipeline_after {
            // Too few connections open for enough of them to be busy.
            return Follow::No;
        }
        let now = self.now;
        let mut busy = 0;
        // The best connection to follow, and the best one whose queue is
        // expected to finish within the window (the only kind followed while
        // idle connections remain).
        let mut best: Option<(usize, usize, Instant)> = None;
        let mut best_soon: Option<(usize, usize, Instant)> = None;
        let better = |b: &Backend, than: Option<(usize, usize, Instant)>| {
            than.is_none_or(|(_, n, t)| (b.followers.len(), b.busy_since) < (n, t))
        };
        for (bk, b) in self.backends.iter() {
            if b.index != index
                || b.state != BackendState::Linked
                || !Arc::ptr_eq(&b.pools, &s.pools)
            {
                continue;
            }
            busy += 1;
            if !can_follow(b, s, now, window, depth) {
                continue;
            }
            let entry = Some((bk, b.followers.len(), b.busy_since));
            if better(b, best) {
                best = entry;
            }
            if expected_wait(b, now) < window && better(b, best_soon) {
                best_soon = entry;
            }
        }
        if best.is_none() {
            return Follow::Nowhere;
        }
        let target = if full {
            best
        } else if busy >= self.config.pool.pipeline_after {
            best_soon
        } else {
            None
        };
        let Some((bk, _, _)) = target else {
            return Follow::No;
        };
        let max = self.config.proxy.max_message_size;
        let Some(len) = followable_batch(c, max, &self.config.routing.write_functions) else {
            return Follow::Nowhere;
        };
        self.follow(ck, bk, len);
        Follow::Sent
    }

    /// Sends the client's head batch, `len` bytes that `followable_batch`
    /// passed, down `bk` behind its running batch.
    fn follow(&mut self, ck: usize, bk: usize, len: usize) {
        let (Some(c), Some(b)) = (self.clients.get_mut(ck), self.backends.get_mut(bk)) else {
            return;
        };
        // Forwarding keeps the copy that is routed again if this connection
        // fails first, and queues the replies, apart from the running batch's.
        c.retry.clear();
        c.retry_armed = false;
        c.retry_collecting = false;
        let running = std::mem::take(&mut b.replies);
        let sent = self.forward_messages(ck, bk, Some(len));
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        let replies = std::mem::replace(&mut b.replies, running);
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.head_class = None;
        c.state = ClientState::Following { backend: bk };
        b.followers.push_back(Follower {
            client: ck,
            generation: c.generation,
            replies,
            cancel: false,
        });
        crate::ops::metrics().pipelined_reads.inc();
        if !sent {
            self.backend_lost(bk, "could not write to server");
        }
    }

    /// The running batch of `bk` ended clean with followers queued: the first
    /// follower takes the connection over. False when there are none.
    pub fn hand_over(&mut self, bk: usize) -> bool {
        let Some(b) = self.backends.get_mut(bk) else {
            return false;
        };
        let Some(f) = b.followers.pop_front() else {
            return false;
        };
        if !b.replies.is_empty() {
            // Cannot happen: the batch ended. Refuse to guess whose replies follow.
            b.followers.push_front(f);
            self.close_backend(bk, "replies out of step with its queued reads");
            return true;
        }
        b.follow_ok = false;
        b.read_paused = false;
        let live = self.clients.get(f.client).is_some_and(|c| {
            c.generation == f.generation && c.state == (ClientState::Following { backend: bk })
        });
        if !live {
            // Its client left; its read still runs: drop its replies, then
            // hand on to the next follower or the pool.
            let rfq = f
                .replies
                .iter()
                .filter(|r| matches!(r, Reply::Ready(_)))
                .count();
            b.client = None;
            b.state = BackendState::Resetting {
                rfq_left: u8::try_from(rfq.max(1)).unwrap_or(u8::MAX),
            };
            if !b.rbuf.is_empty() {
                self.backend_input(bk);
            }
            return true;
        }
        b.client = Some((f.client, f.generation));
        b.state = BackendState::Linked;
        b.replies = f.replies;
        b.follow_ok = true;
        b.busy_since = self.now;
        if f.cancel {
            b.cancel_sent = true;
            if let Some((pid, secret)) = b.key {
                let addr = self.topo.backends[b.index].addr;
                super::session::spawn_cancel(addr, pid, secret, self.config.pool.connect_timeout);
            }
        }
        if let Some(c) = self.clients.get_mut(f.client) {
            c.state = ClientState::Ready;
            c.backend = Some(bk);
            c.tried = 0;
            c.connect_attempts = 0;
        }
        self.follow_from_queue(bk);
        if self.backends.get(bk).is_some_and(|b| !b.rbuf.is_empty()) {
            self.backend_input(bk);
        }
        self.client_input(f.client);
        true
    }

    /// A read started on `bk`: the clients at the front of the pool's queue,
    /// while they are on this worker with a read and there is room, follow it.
    pub fn follow_from_queue(&mut self, bk: usize) {
        while self.follow_one_from_queue(bk) {}
    }

    /// Moves the front waiter behind the reads on `bk`; false when it cannot.
    fn follow_one_from_queue(&mut self, bk: usize) -> bool {
        let max = self.config.proxy.max_message_size;
        let window = self.config.pool.pipeline_window;
        let depth = self.config.pool.pipeline_depth;
        let Some(b) = self.backends.get(bk) else {
            return false;
        };
        let pools = b.pools.clone();
        let index = b.index;
        let pool = &pools.per_backend[index];
        if pool.n_waiters.load(Ordering::Acquire) == 0 {
            return false;
        }
        let Some(w) = pool.waiters.lock().front().copied() else {
            return false;
        };
        if w.worker != self.id {
            return false;
        }
        let ck = (w.client.0 - 1) / 2;
        if !self.client_waits_for(ck, w.generation, index) {
            return false;
        }
        let (Some(c), Some(b)) = (self.clients.get(ck), self.backends.get(bk)) else {
            return false;
        };
        if !c
            .session
            .as_ref()
            .is_some_and(|s| can_follow(b, s, self.now, window, depth))
        {
            return false;
        }
        let Some(len) = followable_batch(c, max, &self.config.routing.write_functions) else {
            return false;
        };
        pool.remove_waiter(w.worker, w.client, w.generation);
        self.follow(ck, bk, len);
        true
    }

    /// A connection with followers is gone: each live follower's read is
    /// routed again from its kept copy.
    pub fn requeue_followers(&mut self, bk: usize, followers: VecDeque<Follower>) {
        for f in followers {
            let Some(c) = self.clients.get_mut(f.client) else {
                continue;
            };
            if c.generation != f.generation || c.state != (ClientState::Following { backend: bk }) {
                continue;
            }
            c.state = ClientState::Ready;
            // Its bookkeeping is undone as if the server had skipped it
            // (a name its Parse registered goes again).
            let mut replies = f.replies;
            for r in replies.iter_mut() {
                if let Some(u) = r.take_undo() {
                    super::backend::undo_client_side(c, *u);
                }
            }
            super::backend::requeue_retry(c);
            self.client_input(f.client);
        }
    }

    /// A CancelRequest for a client whose read waits behind another: it is
    /// sent once that read runs.
    pub fn cancel_follower(&mut self, ck: usize, generation: u64, bk: usize) {
        if let Some(b) = self.backends.get_mut(bk) {
            if let Some(f) = b
                .followers
                .iter_mut()
                .find(|f| f.client == ck && f.generation == generation)
            {
                f.cancel = true;
            }
        }
    }
}
