//! Pools keyed by (backend, database, user): checkout, linking a connection to
//! a client (with the client's session parameters brought onto it), release,
//! waiters, and moving idle connections between workers. The per-key cap is
//! global (`PoolShared::total`); idle connections stay with the worker that
//! owns their socket, so the common path makes no extra syscalls.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::{Interest, Token};

use crate::protocol::write;

use super::conn::{Backend, BackendState, ClientState, Params};
use super::follow::Follow;
use super::shared::{UserPools, Waiter};
use super::worker::{backend_token, client_token, TimerKind, Worker, WorkerMsg};

/// Whether a connection whose startup parameters are `baseline` can serve a
/// client with `wanted`: RESET would return to the baseline, so every baseline
/// setting must be one the client sets itself.
pub fn compatible(baseline: &Params, wanted: &Params) -> bool {
    Arc::ptr_eq(baseline, wanted)
        || baseline
            .iter()
            .all(|(n, _)| wanted.iter().any(|(m, _)| m == n))
}

/// The statements that bring a connection from `applied` to `wanted`, or
/// None when nothing differs.
pub fn sync_sql(applied: &Params, wanted: &Params) -> Option<String> {
    if Arc::ptr_eq(applied, wanted) || applied == wanted {
        return None;
    }
    let mut sets = Vec::new();
    for (n, v) in wanted.iter() {
        let have = applied.iter().find(|(m, _)| m == n).map(|(_, w)| w);
        if have != Some(v) {
            sets.push(format!(
                "pg_catalog.set_config({}, {}, false)",
                write::quote_literal(n),
                write::quote_literal(v)
            ));
        }
    }
    let mut sql = String::new();
    if !sets.is_empty() {
        sql.push_str("SELECT ");
        sql.push_str(&sets.join(", "));
        sql.push(';');
    }
    for (n, _) in applied.iter() {
        if !wanted.iter().any(|(m, _)| m == n) {
            sql.push_str("RESET ");
            sql.push_str(&write::quote_ident(n));
            sql.push(';');
        }
    }
    (!sql.is_empty()).then_some(sql)
}

impl Worker {
    /// Finds or opens a connection to backend `index` for the client. True when
    /// linked now; otherwise the client waits (for a new connection or a waiter slot).
    pub fn checkout(&mut self, ck: usize, index: usize) -> bool {
        let Some(c) = self.clients.get(ck) else {
            return false;
        };
        let Some(s) = c.session.as_ref() else {
            return false;
        };
        let pools = s.pools.clone();
        let params = s.params.clone();
        let generation = c.generation;
        // Enough connections busy: a read goes behind one about to finish
        // rather than waking another server process.
        let follow = self.try_follow(ck, index, false);
        if follow == Follow::Sent {
            return false;
        }
        if let Some(bk) = self.take_idle(pools.id, index, Some(&params)) {
            self.link(ck, bk);
            return true;
        }
        // A full pool: a read may go behind one that is about to finish.
        if follow == Follow::No && self.try_follow(ck, index, true) == Follow::Sent {
            return false;
        }
        let cap = self.config.pool.size;
        self.set_waiting(ck, index);
        let pool = &pools.per_backend[index];
        if pool.try_reserve(cap) {
            self.open_own(ck, index, &pools);
            return false;
        }
        // Idle connections here that this client cannot use: replace one.
        if let Some(bk) = self.take_idle(pools.id, index, None) {
            self.close_backend(bk, "replaced by one with other startup parameters");
            if self.client_waits_for(ck, generation, index) && pool.try_reserve(cap) {
                self.open_own(ck, index, &pools);
                return false;
            }
        }
        if !self.client_waits_for(ck, generation, index) {
            return self.clients.get(ck).is_some_and(|c| c.backend.is_some());
        }
        pool.push_waiter(Waiter {
            worker: self.id,
            client: client_token(ck),
            generation,
            since: self.now,
        });
        // Another worker may be sitting on idle connections of this pool.
        // SeqCst, paired with put_idle: the waiter is queued before the idle
        // counts are read, and a connection is counted idle before the
        // waiters are read there, so one side always sees the other.
        for (w, n) in pool.idle_on.iter().enumerate() {
            if w != self.id && n.load(Ordering::SeqCst) > 0 {
                if let Some(h) = self.shared.workers().get(w) {
                    h.send(WorkerMsg::Poke {
                        pools: pools.clone(),
                        index,
                    });
                }
            }
        }
        false
    }

    fn set_waiting(&mut self, ck: usize, index: usize) {
        let timeout = self.config.pool.checkout_timeout;
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.state = ClientState::WaitingForBackend {
            backend_index: index,
            since: self.now,
        };
        let generation = c.generation;
        self.add_timer(timeout, TimerKind::Checkout, ck, generation);
    }

    /// Takes an idle connection of this worker (most recently used first);
    /// with `params`, only one compatible with them.
    fn take_idle(
        &mut self,
        pool_id: usize,
        index: usize,
        params: Option<&Params>,
    ) -> Option<usize> {
        let list = self.idle.get_mut(&(pool_id, index))?;
        let pos = match params {
            Some(p) => list.iter().rposition(|&bk| {
                self.backends
                    .get(bk)
                    .is_some_and(|b| compatible(&b.baseline, p))
            })?,
            None => list.len().checked_sub(1)?,
        };
        let bk = list.remove(pos);
        if let Some(b) = self.backends.get(bk) {
            b.pools.per_backend[index].idle_on[self.id].fetch_sub(1, Ordering::Relaxed);
        }
        Some(bk)
    }

    /// Removes a closing idle connection from the idle list.
    pub fn forget_idle(&mut self, b: &Backend, bk: usize) {
        if let Some(list) = self.idle.get_mut(&(b.pools.id, b.index)) {
            if let Some(pos) = list.iter().position(|&k| k == bk) {
                list.remove(pos);
                b.pools.per_backend[b.index].idle_on[self.id].fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Links a connection to a client, bringing it to the client's session
    /// parameters first when they differ.
    pub fn link(&mut self, ck: usize, bk: usize) {
        let Some(c) = self.clients.get_mut(ck) else {
            self.put_idle(bk);
            return;
        };
        let Some(params) = c.session.as_ref().map(|s| s.params.clone()) else {
            self.put_idle(bk);
            return;
        };
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        c.backend = Some(bk);
        c.state = ClientState::Ready;
        c.tried = 0;
        c.connect_attempts = 0;
        b.client = Some((ck, c.generation));
        b.follow_ok = false;
        match sync_sql(&b.applied, &params) {
            None => b.state = BackendState::Linked,
            Some(sql) => {
                b.state = BackendState::Syncing;
                b.pending_applied = Some(params);
                let mut buf = Vec::new();
                write::query(&mut buf, &sql);
                if !self.send_backend(bk, &buf) {
                    self.backend_lost(bk, "could not write to server");
                }
            }
        }
    }

    /// Links and lets the client's waiting input flow.
    pub fn link_and_go(&mut self, ck: usize, bk: usize) {
        let compatible_here = match (
            self.clients.get(ck).and_then(|c| c.session.as_ref()),
            self.backends.get(bk),
        ) {
            (Some(s), Some(b)) => compatible(&b.baseline, &s.params),
            _ => true,
        };
        if !compatible_here {
            // Keep the client waiting and give it a fresh connection instead.
            let index = self.backends.get(bk).map(|b| b.index).unwrap_or(0);
            let pools = self.backends.get(bk).map(|b| b.pools.clone());
            self.close_backend(bk, "startup parameters differ");
            if let Some(pools) = pools {
                if pools.per_backend[index].try_reserve(self.config.pool.size) {
                    self.open_own(ck, index, &pools);
                }
            }
            return;
        }
        self.link(ck, bk);
        self.client_input(ck);
    }

    /// A connection is done with its client: clean ones go back to the pool.
    pub fn release(&mut self, bk: usize) {
        let Some(b) = self.backends.get(bk) else {
            return;
        };
        let removed = self.topo.backends.get(b.index).is_none_or(|i| i.removed);
        if removed || b.dirty || b.cancel_sent || b.eof || !b.counted || b.tx_status != b'I' {
            self.close_backend(bk, "not clean enough to reuse");
            return;
        }
        if let Some(b) = self.backends.get_mut(bk) {
            if b.follow_ok {
                super::follow::note_read_time(b, self.now);
            }
        }
        if self.hand_over(bk) {
            return;
        }
        self.put_idle(bk);
    }

    /// Puts a clean connection in the pool, or straight into a waiter's hands.
    pub fn put_idle(&mut self, bk: usize) {
        let Some(b) = self.backends.get_mut(bk) else {
            return;
        };
        b.state = BackendState::Idle;
        b.client = None;
        b.follow_ok = false;
        // A pause for a client's backed-up output ends with that client.
        b.read_paused = false;
        b.idle_since = self.now;
        let pools = b.pools.clone();
        let index = b.index;
        if self.give_to_waiter(bk, &pools, index) {
            return;
        }
        self.idle.entry((pools.id, index)).or_default().push(bk);
        let pool = &pools.per_backend[index];
        pool.idle_on[self.id].fetch_add(1, Ordering::SeqCst);
        // A client on another worker may have queued after the look above
        // and before this count went up, and found no idle connection
        // anywhere: without this second look it would wait until
        // pool.checkout_timeout.
        if pool.n_waiters.load(Ordering::SeqCst) > 0 {
            self.serve_waiters(&pools, index);
        }
    }

    /// Hands an idle connection to the first live waiter of its pool; true if taken.
    fn give_to_waiter(&mut self, bk: usize, pools: &Arc<UserPools>, index: usize) -> bool {
        let pool = &pools.per_backend[index];
        while let Some(w) = pool.pop_waiter_for(self.id) {
            if w.worker == self.id {
                let ck = (w.client.0 - 1) / 2;
                if self.client_waits_for(ck, w.generation, index) {
                    self.link_and_go(ck, bk);
                    return true;
                }
            } else {
                self.transfer(bk, w);
                return true;
            }
        }
        false
    }

    /// Moves a connection to another worker for one of its waiting clients.
    fn transfer(&mut self, bk: usize, w: Waiter) {
        let mut b = self.backends.remove(bk);
        let _ = self.poll.registry().deregister(&mut b.sock);
        match self.shared.workers().get(w.worker) {
            Some(h) => h.send(WorkerMsg::Transfer {
                backend: Box::new(b),
                for_client: Some((w.client, w.generation)),
            }),
            None => {
                if b.counted {
                    b.pools.per_backend[b.index].release_slot();
                }
            }
        }
    }

    /// A connection arrived from another worker.
    pub fn receive_backend(&mut self, mut b: Backend, for_client: Option<(Token, u64)>) {
        let entry = self.backends.vacant_entry();
        let bk = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut b.sock,
            backend_token(bk),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("could not take over a backend connection: {e}");
            if b.counted {
                b.pools.per_backend[b.index].release_slot();
            }
            return;
        }
        let index = b.index;
        entry.insert(b);
        if let Some((token, generation)) = for_client {
            let ck = (token.0 - 1) / 2;
            if self.client_waits_for(ck, generation, index) {
                self.link_and_go(ck, bk);
                return;
            }
        }
        // Bytes may have arrived while it moved; look before pooling it.
        self.read_backend(bk);
        if self.backends.contains(bk) {
            self.put_idle(bk);
        }
    }

    /// Serves a pool's waiters with this worker's idle connections, or opens
    /// new ones for this worker's waiters while the cap allows.
    pub fn serve_waiters(&mut self, pools: &Arc<UserPools>, index: usize) {
        let pool = &pools.per_backend[index];
        let cap = self.config.pool.size;
        loop {
            if pool.n_waiters.load(Ordering::Acquire) == 0 {
                return;
            }
            if let Some(bk) = self.take_idle(pools.id, index, None) {
                if !self.give_to_waiter(bk, pools, index) {
                    self.put_idle(bk);
                    return;
                }
                continue;
            }
            let front = pool.waiters.lock().front().copied();
            let Some(w) = front else {
                return;
            };
            if w.worker != self.id {
                if pool.total.load(Ordering::Acquire) < cap {
                    if let Some(h) = self.shared.workers().get(w.worker) {
                        h.send(WorkerMsg::Poke {
                            pools: pools.clone(),
                            index,
                        });
                    }
                }
                return;
            }
            let ck = (w.client.0 - 1) / 2;
            if !self.client_waits_for(ck, w.generation, index) {
                pool.remove_waiter(w.worker, w.client, w.generation);
                continue;
            }
            if !pool.try_reserve(cap) {
                return;
            }
            pool.remove_waiter(w.worker, w.client, w.generation);
            self.open_own(ck, index, pools);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[(&str, &str)]) -> Params {
        Arc::new(
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn nothing_to_sync_when_parameters_match() {
        let a = p(&[("application_name", "x")]);
        assert_eq!(sync_sql(&a, &p(&[("application_name", "x")])), None);
        assert_eq!(sync_sql(&a, &a), None);
    }

    #[test]
    fn differing_parameters_are_set_and_extra_ones_reset() {
        let have = p(&[("application_name", "x"), ("search_path", "a")]);
        let want = p(&[("application_name", "y"), ("timezone", "UTC")]);
        assert_eq!(
            sync_sql(&have, &want).unwrap(),
            "SELECT pg_catalog.set_config('application_name', 'y', false), \
             pg_catalog.set_config('timezone', 'UTC', false);RESET \"search_path\";"
        );
    }

    #[test]
    fn values_are_quoted() {
        let sql = sync_sql(&p(&[]), &p(&[("search_path", "it's, \"b\"")])).unwrap();
        assert!(sql.contains("'it''s, \"b\"'"), "{sql}");
    }

    #[test]
    fn a_connection_started_with_settings_serves_only_clients_that_set_them() {
        let baseline = p(&[("application_name", "psql")]);
        assert!(compatible(&baseline, &p(&[("application_name", "other")])));
        assert!(!compatible(&baseline, &p(&[])));
        assert!(compatible(&p(&[]), &p(&[("a", "b")])));
    }
}
