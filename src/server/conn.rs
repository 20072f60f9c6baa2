//! The two kinds of connection a worker owns, with their state-machine enums:
//! client sessions and backend connections. Data only; the transitions live in
//! `session.rs` (client side), `backend.rs` (backend side) and `pool.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::scram::ScramClient;
use crate::sql::PinReason;

use super::extended::{Registry, Reply, StatementId};
use super::shared::UserPools;
use super::stream::Stream;

/// Session parameters (GUC name lower-cased, value), sorted by name: what a
/// client asked for at startup, or what a backend connection currently has.
pub type Params = Arc<Vec<(String, String)>>;

/// Where a client session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Reading SSLRequest / GSSENCRequest / StartupMessage / CancelRequest.
    Startup,
    /// Relaying the authentication exchange with the primary (backend key).
    Authenticating { relay: usize },
    /// `auth.mode = "query"`: PgGate authenticates the client itself
    /// (`Client::local_auth` says how far).
    LocalAuth,
    /// Authenticated; waiting for the server's ParameterStatus values to show.
    AwaitingParams,
    /// The relayed login's connection to the primary failed before anything
    /// reached the client: waiting out the backoff before trying again.
    RelayRetry,
    /// Logged in; linked to a backend when `Client::backend` is set.
    Ready,
    /// Waiting for a backend connection for the message at the head of `rbuf`.
    WaitingForBackend {
        backend_index: usize,
        since: Instant,
    },
    /// The read at the head of `rbuf` was sent down a connection that is
    /// finishing another client's read (`pool.pipeline_window`); the
    /// connection passes to this client at that read's ReadyForQuery.
    Following { backend: usize },
    /// Flushing a final error, then closing.
    Closing,
}

/// What the client asked for at login, fixed for the session.
pub struct Session {
    pub user: String,
    pub database: String,
    pub params: Params,
    /// The BackendKeyData PgGate gave this client.
    pub key: (i32, i32),
    pub pools: Arc<UserPools>,
    /// Set once a session-state statement ran: all later work on the linked primary connection.
    pub pinned: Option<PinReason>,
    /// Session pool mode: the primary connection is kept for the whole session.
    pub hold_primary: bool,
    /// The startup packet the relayed login sends (kept to retry the connect).
    pub relay_startup: Vec<u8>,
    /// The relayed login has passed something to the client: no retry any more.
    pub relay_started: bool,
    /// The server asked the relayed login for a password (no `trust`).
    pub relay_challenged: bool,
    /// Read your writes: something other than a read ran on the primary
    /// since the session last noted the primary's WAL position.
    pub wrote: bool,
    /// Read your writes: the primary's WAL position after the session's last
    /// write; only replicas that have replayed it serve its reads.
    pub min_lsn: u64,
    /// Protocol-level named statements, by the client's names.
    pub statements: Registry,
    /// Body of the client's last unnamed Parse (text and types), and its class,
    /// so a later Bind of the unnamed statement works on any connection.
    pub unnamed: Vec<u8>,
    pub unnamed_class: Option<crate::sql::Classification>,
    /// The configuration version `unnamed_class` was made under: the same
    /// unnamed statement parsed again keeps its class until a reload (which
    /// may change `routing.write_functions`).
    pub unnamed_version: u64,
}

pub struct Client {
    pub sock: Stream,
    pub generation: u64,
    pub state: ClientState,
    /// Bytes received and not yet handled or forwarded.
    pub rbuf: Vec<u8>,
    /// Bytes to send that the socket did not take yet.
    pub wbuf: Vec<u8>,
    pub session: Option<Box<Session>>,
    /// The linked backend connection (slab key).
    pub backend: Option<usize>,
    /// Session pool mode: the primary connection kept for this session while
    /// the client works elsewhere (a replica) or is idle.
    pub held: Option<usize>,
    /// A copy of the simple Query now running outside a transaction, kept
    /// until its first result reaches the client, to send it again elsewhere
    /// if the backend dies first (SPEC §7) or a replica refuses it as a write
    /// (25006, SPEC §4.1).
    pub retry: Vec<u8>,
    pub retry_armed: bool,
    /// The extended batch being kept has not reached its Sync yet.
    pub retry_collecting: bool,
    /// Route the next statement to the primary (a read-only retry).
    pub force_primary: bool,
    /// Backends (a bit per index) whose connect failed for the waiting batch.
    pub tried: u64,
    /// Failed connects to the primary for the waiting batch.
    pub connect_attempts: u32,
    /// Query-mode authentication in progress.
    pub local_auth: Option<Box<LocalAuth>>,
    /// A batch failed before reaching a backend: drop messages up to its Sync.
    pub discard_until_sync: bool,
    /// Extended-protocol messages were forwarded with no Sync after them yet
    /// (e.g. Execute + Flush): the backend is busy for this client.
    pub unsynced: bool,
    /// The routing verdict of the message at the head of `rbuf`, so that
    /// forwarding it does not classify it again.
    pub head_class: Option<crate::sql::Classification>,
    /// The configuration version `head_class` was made under.
    pub head_version: u64,
    /// The current batch parsed the unnamed statement itself.
    pub batch_parsed_unnamed: bool,
    /// The current batch parsed a DEALLOCATE ALL / DISCARD ALL; its Execute
    /// drops every prepared statement.
    pub dealloc_pending: bool,
    /// The peer has closed or failed; nothing more is read.
    pub eof: bool,
    /// Reading is paused because the output side is full.
    pub read_paused: bool,
    /// Last time the client sent something (kept only with client_idle_timeout).
    pub last_active: Instant,
    /// The peer hung up (its end of stream may sit behind the last data).
    pub hup: bool,
}

/// Where PgGate's own authentication of a client stands.
pub enum LocalAuth {
    /// Waiting for `auth_query`.
    Lookup,
    /// SCRAM-SHA-256 exchange; `first_done` once the client-first was answered.
    Scram {
        server: crate::auth::ScramServer,
        server_key: [u8; 32],
        first_done: bool,
    },
    Md5 {
        salt: [u8; 4],
        stored: String,
    },
}

/// How a backend connection logs in.
pub enum Login {
    /// Relaying a client's own authentication exchange (client slab key).
    Relay { client: usize },
    /// PgGate's own login with the credentials file.
    Own { scram: Option<Box<ScramClient>> },
}

/// Where a backend connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// TCP connect in progress.
    Connecting,
    /// SSLRequest sent; waiting for the server's one-byte answer, then the
    /// TLS handshake (the stream says when it is done).
    TlsNegotiating,
    /// Startup and authentication.
    Authenticating,
    /// Bringing session parameters to the linked client's values; replies swallowed.
    Syncing,
    /// In the pool.
    Idle,
    /// Serving a client (`Backend::client`).
    Linked,
    /// Kept aside for its session (session pool mode) while the client is idle
    /// or working on a replica.
    Held,
    /// Rolling back or discarding a departed client's state; `rfq_left` ReadyForQuery to go.
    Resetting { rfq_left: u8 },
}

/// A client whose read was sent down a busy connection behind the running
/// batch; it takes the connection over when that batch ends.
pub struct Follower {
    pub client: usize,
    pub generation: u64,
    /// The replies its batch is owed, in order (as `Backend::replies`).
    pub replies: VecDeque<Reply>,
    /// A CancelRequest came while it waited: sent once its read runs.
    pub cancel: bool,
}

pub struct Backend {
    pub sock: Stream,
    pub generation: u64,
    pub state: BackendState,
    pub login: Login,
    /// Index into `Shared::backends`.
    pub index: usize,
    pub pools: Arc<UserPools>,
    /// Counts against `pool.size` (false for a relay connection not yet adopted).
    pub counted: bool,
    pub rbuf: Vec<u8>,
    pub wbuf: Vec<u8>,
    /// `wbuf` holds reads sent behind the running one that go out together
    /// at the end of the event-loop pass (`Worker::flush_deferred`).
    pub deferred: bool,
    /// Body bytes of the current backend message still to pass through unread.
    pub skip: usize,
    /// The server's own BackendKeyData.
    pub key: Option<(i32, i32)>,
    /// Parameters set at startup (RESET returns to these).
    pub baseline: Params,
    /// Parameters as they are now on the server.
    pub applied: Params,
    /// ParameterStatus values the server reported at login.
    pub server_params: Vec<(String, String)>,
    /// The startup packet, held back while TLS is negotiated.
    pub pending_startup: Option<Vec<u8>>,
    /// What `applied` becomes once the running parameter sync succeeds.
    pub pending_applied: Option<Params>,
    /// The first error the parameter sync met.
    pub sync_error: Option<String>,
    /// The linked (or waiting) client: slab key and generation.
    pub client: Option<(usize, u64)>,
    pub tx_status: u8,
    /// Replies the server owes, in order (see `extended.rs`).
    pub replies: VecDeque<Reply>,
    /// Statements prepared on this connection under PgGate's names, with the
    /// tick of their last use (least recently used are closed first).
    pub prepared: foldhash::HashMap<StatementId, u64>,
    pub tick: u64,
    /// A cancel was sent while linked: never pool this connection again.
    pub cancel_sent: bool,
    /// Drop replies up to ReadyForQuery: a replica refused a read-only retry
    /// candidate, which goes to the primary instead.
    pub swallow_to_ready: bool,
    /// Session state changed on it (pin): close instead of pooling.
    pub dirty: bool,
    pub created: Instant,
    pub idle_since: Instant,
    pub eof: bool,
    pub read_paused: bool,
    /// The peer hung up (its end of stream may sit behind the last data).
    pub hup: bool,
    /// Clients whose reads were sent behind the running batch, in order.
    pub followers: VecDeque<Follower>,
    /// The running batch is one read outside a transaction that hands the
    /// connection back at its ReadyForQuery: another client's read may
    /// follow it. `busy_since` is when it was sent.
    pub follow_ok: bool,
    pub busy_since: Instant,
    /// How long this connection's plain reads take, from being sent (or
    /// handed over) to their ReadyForQuery: a moving average, zero until the
    /// first one ends.
    pub read_time: Duration,
}
