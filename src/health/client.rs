//! A small blocking PostgreSQL client for PgGate's own control connections:
//! health probes and, later, `auth_query` lookups. It logs in with trust,
//! cleartext, MD5 or SCRAM-SHA-256 (the crypto lives in `crate::auth`), runs
//! simple queries and one-shot extended-protocol queries with text
//! parameters, and returns every column as text.
//!
//! It runs off the hot path on plain `std::net::TcpStream`s. Every step has
//! a deadline: the login as a whole, and each query as a whole, must finish
//! within the connection's timeout, so a server that trickles bytes cannot
//! hold a caller longer than that. Frames are bounded before they are
//! buffered (at most [`MAX_MESSAGE_SIZE`]), and nothing a server sends can
//! make this module panic: malformed input is a [`ControlError`], after which
//! the connection refuses further use.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nom::bytes::complete::take;
use nom::number::complete::{be_i16, be_i32};

use crate::auth::{self, md5, ScramClient, ScramCredential};
use crate::protocol::{
    auth_code, backend, frontend, parse_auth_request, parse_error_fields, parse_header, write,
    FrameError, Header,
};

/// Largest message accepted from a server, length word included.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Most parameters one Bind can carry (its count is an unsigned 16-bit word).
const MAX_PARAMS: usize = u16::MAX as usize;
/// What these connections show in `pg_stat_activity.application_name`.
const APPLICATION_NAME: &str = "pggate";
/// The only SASL mechanism a control connection speaks: channel binding
/// needs TLS, which control connections do not use.
const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Backend tags of the extended protocol and COPY that `protocol::backend`
/// does not name, since the proxy forwards them by header only.
const PARSE_COMPLETE: u8 = b'1';
const BIND_COMPLETE: u8 = b'2';
const NO_DATA: u8 = b'n';
const PORTAL_SUSPENDED: u8 = b's';
const EMPTY_QUERY_RESPONSE: u8 = b'I';
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';

/// One result row, every column in text form; `None` is SQL NULL.
pub type Row = Vec<Option<String>>;

/// Why a control connection failed. Messages never contain a password, and
/// text that came from the server is escaped and capped, so every variant is
/// safe to log as it is.
#[derive(Debug)]
pub enum ControlError {
    /// Connecting, reading or writing failed; `during` names the step.
    Io {
        during: &'static str,
        source: io::Error,
    },
    /// The step did not finish within the connection's timeout.
    Timeout { during: &'static str },
    /// The server closed the connection.
    Closed { during: &'static str },
    /// The server sent something that is not valid protocol at this point.
    Protocol(String),
    /// The login cannot proceed: a method control connections do not speak,
    /// no password for a server that wants one, or a failed SCRAM check.
    Auth(String),
    /// The server answered with an ErrorResponse. After a failed query the
    /// connection is still usable; a failed login has no connection.
    Server { code: String, message: String },
    /// The request cannot be sent as asked (a NUL byte in a text, too many
    /// parameters); nothing was sent and the connection is still usable.
    Request(String),
    /// An earlier failure left this connection unusable; open a new one.
    Broken,
}

impl ControlError {
    /// Whether the connection is still in a known state after this error.
    fn leaves_connection_usable(&self) -> bool {
        matches!(self, ControlError::Server { .. } | ControlError::Request(_))
    }

    fn from_io(during: &'static str, source: io::Error) -> ControlError {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ControlError::Timeout { during },
            io::ErrorKind::UnexpectedEof => ControlError::Closed { during },
            _ => ControlError::Io { during, source },
        }
    }

    fn server(body: &[u8]) -> ControlError {
        let fields = parse_error_fields(body);
        ControlError::Server {
            code: fields.code,
            message: fields.message,
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Io { during, source } => write!(f, "{during}: {source}"),
            ControlError::Timeout { during } => write!(f, "{during}: timed out"),
            ControlError::Closed { during } => {
                write!(f, "{during}: the server closed the connection")
            }
            ControlError::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            ControlError::Auth(reason) => write!(f, "authentication: {reason}"),
            ControlError::Server { code, message } => write!(
                f,
                "server error {}: {}",
                auth::quote_for_log(code),
                auth::quote_for_log(message)
            ),
            ControlError::Request(reason) => write!(f, "invalid request: {reason}"),
            ControlError::Broken => f.write_str("the connection failed earlier and cannot be used"),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where a login stands between Authentication requests.
enum Login {
    /// Nothing sent yet, or a password (cleartext/MD5) sent.
    Plain,
    /// SCRAM started: the client-first or client-final message is out.
    Scram(Box<ScramClient>),
    /// The server proved it knows the SCRAM secret.
    ScramVerified,
}

/// An open, logged-in control connection. Dropping it sends Terminate.
pub struct ControlConn {
    stream: TcpStream,
    /// Bytes read from the server and not yet consumed.
    buf: Vec<u8>,
    /// Deadline of each login or query, counted from its start.
    timeout: Duration,
    broken: bool,
}

impl fmt::Debug for ControlConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConn")
            .field("peer", &self.stream.peer_addr().ok())
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish()
    }
}

/// Opens a control connection to `addr` and logs in as `user` to
/// `database`. `host_for_pgpass` and `port` are the names the server was
/// configured under (and `password` looked up with); they appear in error
/// messages. `password` is needed only when the server asks for one.
/// Connecting, startup and authentication together must finish within
/// `timeout`, which also becomes the deadline of each later query (see
/// [`ControlConn::set_timeout`]).
pub fn connect(
    addr: SocketAddr,
    host_for_pgpass: &str,
    port: u16,
    user: &str,
    database: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<ControlConn, ControlError> {
    for (what, text) in [("user name", user), ("database name", database)] {
        if text.contains('\0') {
            return Err(ControlError::Request(format!(
                "the {what} contains a NUL byte"
            )));
        }
    }
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| ControlError::from_io("connecting", e))?;
    // Probes are tiny request/response exchanges: don't let Nagle delay them.
    stream
        .set_nodelay(true)
        .map_err(|e| ControlError::from_io("connecting", e))?;
    let mut conn = ControlConn {
        stream,
        buf: Vec::new(),
        timeout,
        broken: false,
    };
    let mut startup = Vec::new();
    write::startup_message(
        &mut startup,
        [
            ("user", user),
            ("database", database),
            ("application_name", APPLICATION_NAME),
            ("client_encoding", "UTF8"),
        ],
    );
    conn.send(&startup, deadline, "sending the startup message")?;
    let password = Password {
        user,
        password,
        server: format!("{host_for_pgpass}:{port}"),
    };
    conn.authenticate(&password, deadline)?;
    conn.wait_ready_after_login(deadline)?;
    Ok(conn)
}

/// What a login may need to answer a password request.
struct Password<'a> {
    user: &'a str,
    password: Option<&'a str>,
    /// `host:port` for messages.
    server: String,
}

impl Password<'_> {
    fn require(&self, method: &str) -> Result<&str, ControlError> {
        self.password.ok_or_else(|| {
            ControlError::Auth(format!(
                "{} asks for a password ({method}) for user \"{}\" and none is configured \
                 in the credentials file",
                self.server,
                auth::quote_for_log(self.user)
            ))
        })
    }
}

impl ControlConn {
    /// Changes the deadline of each later query.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether an earlier failure left the connection unusable (every call
    /// then returns [`ControlError::Broken`]).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Runs `sql` with the simple query protocol and returns the rows of
    /// every result set it produced, in order. An ErrorResponse becomes
    /// [`ControlError::Server`] once the server is ready again, so the
    /// connection stays usable.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ControlError> {
        if sql.contains('\0') {
            return Err(ControlError::Request(
                "the statement contains a NUL byte".to_string(),
            ));
        }
        let mut message = Vec::with_capacity(sql.len() + 6);
        write::query(&mut message, sql);
        self.exchange(&message)
    }

    /// Runs one statement with the extended protocol and the unnamed
    /// statement and portal: `params` are bound as text to `$1`, `$2`, ...
    /// and every result column comes back as text.
    pub fn query_params(&mut self, sql: &str, params: &[&str]) -> Result<Vec<Row>, ControlError> {
        let message = extended_query(sql, params)?;
        self.exchange(&message)
    }

    /// Sends one request and reads its replies up to ReadyForQuery; marks
    /// the connection broken on any error that leaves its state unknown.
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<Row>, ControlError> {
        if self.broken {
            return Err(ControlError::Broken);
        }
        let deadline = Instant::now() + self.timeout;
        let result = self
            .send(request, deadline, "sending a query")
            .and_then(|()| self.read_results(deadline));
        if let Err(err) = &result {
            if !err.leaves_connection_usable() {
                self.broken = true;
            }
        }
        result
    }

    /// Answers Authentication requests until AuthenticationOk.
    fn authenticate(
        &mut self,
        password: &Password<'_>,
        deadline: Instant,
    ) -> Result<(), ControlError> {
        let mut login = Login::Plain;
        loop {
            let (tag, body) = self.read_message(deadline, "logging in")?;
            match tag {
                backend::AUTHENTICATION => {
                    let (code, payload) = parse_auth_request(&body).ok_or_else(|| {
                        ControlError::Protocol("truncated Authentication message".to_string())
                    })?;
                    if code == auth_code::OK {
                        if let Login::Scram(_) = login {
                            return Err(ControlError::Auth(format!(
                                "{} accepted the SCRAM login without proving it knows the \
                                 user's secret",
                                password.server
                            )));
                        }
                        return Ok(());
                    }
                    login = self.answer_auth(code, payload, login, password, deadline)?;
                }
                backend::ERROR_RESPONSE => return Err(ControlError::server(&body)),
                backend::NOTICE_RESPONSE | backend::NEGOTIATE_PROTOCOL_VERSION => {}
                other => return Err(unexpected(other, "during authentication")),
            }
        }
    }

    /// Answers one Authentication request other than AuthenticationOk.
    fn answer_auth(
        &mut self,
        code: u32,
        payload: &[u8],
        login: Login,
        password: &Password<'_>,
        deadline: Instant,
    ) -> Result<Login, ControlError> {
        let mut reply = Vec::new();
        let next = match (code, login) {
            (auth_code::CLEARTEXT, Login::Plain) => {
                write::password_message(&mut reply, password.require("cleartext")?);
                Login::Plain
            }
            (auth_code::MD5, Login::Plain) => {
                let salt: [u8; 4] = payload.try_into().map_err(|_| {
                    ControlError::Protocol(format!(
                        "AuthenticationMD5Password carries {} salt bytes instead of 4",
                        payload.len()
                    ))
                })?;
                let secret = password.require("md5")?;
                let response = md5::password_response(password.user, secret, salt);
                write::password_message(&mut reply, &response);
                Login::Plain
            }
            (auth_code::SASL, Login::Plain) => {
                let offered =
                    auth::mechanisms(payload).map_err(|e| ControlError::Protocol(e.to_string()))?;
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(ControlError::Auth(format!(
                        "{} offers SASL mechanisms [{}] but not {SCRAM_SHA_256}",
                        password.server,
                        auth::quote_for_log(&offered.join(", "))
                    )));
                }
                let secret = password.require(SCRAM_SHA_256)?;
                let client = ScramClient::new(ScramCredential::Password(secret.to_string()))
                    .map_err(|e| ControlError::Auth(e.to_string()))?;
                write::sasl_initial_response(
                    &mut reply,
                    SCRAM_SHA_256,
                    &client.client_first_message(),
                );
                Login::Scram(Box::new(client))
            }
            (auth_code::SASL_CONTINUE, Login::Scram(mut client)) => {
                let client_final = client
                    .handle_server_first(payload)
                    .map_err(|e| ControlError::Auth(e.to_string()))?;
                write::sasl_response(&mut reply, &client_final);
                Login::Scram(client)
            }
            (auth_code::SASL_FINAL, Login::Scram(client)) => {
                client
                    .verify_server_final(payload)
                    .map_err(|e| ControlError::Auth(e.to_string()))?;
                // Nothing to send: AuthenticationOk follows.
                return Ok(Login::ScramVerified);
            }
            (
                auth_code::CLEARTEXT
                | auth_code::MD5
                | auth_code::SASL
                | auth_code::SASL_CONTINUE
                | auth_code::SASL_FINAL,
                _,
            ) => {
                return Err(ControlError::Protocol(format!(
                    "Authentication request {code} out of order"
                )));
            }
            (other, _) => {
                return Err(ControlError::Auth(format!(
                    "{} asks for authentication method {other} ({}), which control \
                     connections do not support (use trust, password, md5 or scram-sha-256)",
                    password.server,
                    auth_method_name(other)
                )));
            }
        };
        self.send(&reply, deadline, "logging in")?;
        Ok(next)
    }

    /// After AuthenticationOk: ParameterStatus and BackendKeyData until the
    /// first ReadyForQuery.
    fn wait_ready_after_login(&mut self, deadline: Instant) -> Result<(), ControlError> {
        loop {
            let (tag, body) = self.read_message(deadline, "starting the session")?;
            match tag {
                backend::READY_FOR_QUERY => return check_ready_for_query(&body),
                backend::ERROR_RESPONSE => return Err(ControlError::server(&body)),
                backend::PARAMETER_STATUS
                | backend::BACKEND_KEY_DATA
                | backend::NOTICE_RESPONSE
                | backend::NEGOTIATE_PROTOCOL_VERSION => {}
                other => return Err(unexpected(other, "before the first ReadyForQuery")),
            }
        }
    }

    /// Reads the replies to one simple or extended query up to
    /// ReadyForQuery. The first ErrorResponse is kept and returned once the
    /// server is ready again.
    fn read_results(&mut self, deadline: Instant) -> Result<Vec<Row>, ControlError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message(deadline, "reading query results")?;
            match tag {
                backend::DATA_ROW => rows.push(
                    parse_data_row(&body)
                        .ok_or_else(|| ControlError::Protocol("malformed DataRow".to_string()))?,
                ),
                backend::ERROR_RESPONSE => {
                    error.get_or_insert_with(|| ControlError::server(&body));
                }
                backend::READY_FOR_QUERY => {
                    check_ready_for_query(&body)?;
                    return match error {
                        Some(err) => Err(err),
                        None => Ok(rows),
                    };
                }
                backend::COPY_IN_RESPONSE => {
                    // The server waits for data; refuse, and it answers with
                    // an ErrorResponse and ReadyForQuery.
                    let mut fail = Vec::new();
                    copy_fail(
                        &mut fail,
                        "pggate: COPY is not supported on control connections",
                    );
                    self.send(&fail, deadline, "refusing COPY FROM STDIN")?;
                }
                backend::COPY_OUT_RESPONSE => {
                    error.get_or_insert_with(|| {
                        ControlError::Request(
                            "COPY TO STDOUT is not supported on control connections".to_string(),
                        )
                    });
                }
                backend::ROW_DESCRIPTION
                | backend::COMMAND_COMPLETE
                | EMPTY_QUERY_RESPONSE
                | PARSE_COMPLETE
                | BIND_COMPLETE
                | NO_DATA
                | PORTAL_SUSPENDED
                | COPY_DATA
                | COPY_DONE
                | backend::NOTICE_RESPONSE
                | backend::NOTIFICATION_RESPONSE
                | backend::PARAMETER_STATUS => {}
                other => return Err(unexpected(other, "in query results")),
            }
        }
    }

    /// Reads one whole message: its tag and body. The declared length is
    /// checked before anything beyond the header is buffered.
    fn read_message(
        &mut self,
        deadline: Instant,
        during: &'static str,
    ) -> Result<(u8, Vec<u8>), ControlError> {
        loop {
            let header = parse_header(&self.buf, MAX_MESSAGE_SIZE)
                .map_err(|e: FrameError| ControlError::Protocol(format!("{e} ({during})")))?;
            if let Some(header) = header {
                let frame_len = header.frame_len();
                if self.buf.len() >= frame_len {
                    let body = self.buf[Header::SIZE..frame_len].to_vec();
                    self.buf.drain(..frame_len);
                    return Ok((header.tag, body));
                }
            }
            self.read_more(deadline, during)?;
        }
    }

    /// One read from the socket, waiting at most until `deadline`.
    fn read_more(&mut self, deadline: Instant, during: &'static str) -> Result<(), ControlError> {
        let remaining = remaining(deadline, during)?;
        self.stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| ControlError::from_io(during, e))?;
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let read = self.stream.read(&mut self.buf[start..]);
        let got = match &read {
            Ok(n) => *n,
            Err(_) => 0,
        };
        self.buf.truncate(start + got);
        match read {
            Ok(0) => Err(ControlError::Closed { during }),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(ControlError::from_io(during, e)),
        }
    }

    /// Writes `bytes` whole, waiting at most until `deadline`.
    fn send(
        &mut self,
        bytes: &[u8],
        deadline: Instant,
        during: &'static str,
    ) -> Result<(), ControlError> {
        let remaining = remaining(deadline, during)?;
        self.stream
            .set_write_timeout(Some(remaining))
            .map_err(|e| ControlError::from_io(during, e))?;
        self.stream
            .write_all(bytes)
            .map_err(|e| ControlError::from_io(during, e))
    }
}

impl Drop for ControlConn {
    fn drop(&mut self) {
        // Best effort and never blocking: five bytes fit any send buffer,
        // and a peer that is gone makes this fail quietly.
        let mut terminate = Vec::with_capacity(5);
        write::terminate(&mut terminate);
        let _ = self.stream.set_nonblocking(true);
        let _ = self.stream.write_all(&terminate);
    }
}

/// Time left before `deadline`; none left is a timeout.
fn remaining(deadline: Instant, during: &'static str) -> Result<Duration, ControlError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(ControlError::Timeout { during })
}

fn unexpected(tag: u8, context: &str) -> ControlError {
    ControlError::Protocol(format!(
        "unexpected message '{}' {context}",
        char::from(tag).escape_default()
    ))
}

fn check_ready_for_query(body: &[u8]) -> Result<(), ControlError> {
    match body {
        [b'I' | b'T' | b'E'] => Ok(()),
        _ => Err(ControlError::Protocol(
            "malformed ReadyForQuery".to_string(),
        )),
    }
}

/// The name PostgreSQL gives an Authentication request code.
fn auth_method_name(code: u32) -> &'static str {
    match code {
        2 => "Kerberos V5",
        6 => "SCM credentials",
        7 => "GSSAPI",
        8 => "GSSAPI continue",
        9 => "SSPI",
        _ => "unknown",
    }
}

/// Parses a DataRow body into text columns. `None` on a truncated body, a
/// negative length other than -1 (NULL), trailing bytes or invalid UTF-8
/// (the connection asked for `client_encoding` UTF8).
fn parse_data_row(body: &[u8]) -> Option<Row> {
    let (mut rest, count) = be_i16::<_, nom::error::Error<&[u8]>>(body).ok()?;
    let count = usize::try_from(count).ok()?;
    // Every column takes at least its four length bytes.
    let mut row = Vec::with_capacity(count.min(rest.len() / 4));
    for _ in 0..count {
        let (after_len, len) = be_i32::<_, nom::error::Error<&[u8]>>(rest).ok()?;
        if len == -1 {
            row.push(None);
            rest = after_len;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let (after_value, value) = take::<_, _, nom::error::Error<&[u8]>>(len)(after_len).ok()?;
        row.push(Some(std::str::from_utf8(value).ok()?.to_owned()));
        rest = after_value;
    }
    rest.is_empty().then_some(row)
}

/// Parse, Bind, Describe (portal), Execute and Sync for one statement with
/// text parameters and text results, using the unnamed statement and portal.
fn extended_query(sql: &str, params: &[&str]) -> Result<Vec<u8>, ControlError> {
    if sql.contains('\0') {
        return Err(ControlError::Request(
            "the statement contains a NUL byte".to_string(),
        ));
    }
    if params.len() > MAX_PARAMS {
        return Err(ControlError::Request(format!(
            "{} parameters; at most {MAX_PARAMS} fit in one Bind",
            params.len()
        )));
    }
    let params_len: usize = params.iter().map(|p| p.len() + 4).sum();
    if sql.len() + params_len > MAX_MESSAGE_SIZE {
        return Err(ControlError::Request(format!(
            "the statement and its parameters exceed {MAX_MESSAGE_SIZE} bytes"
        )));
    }
    let mut buf = Vec::with_capacity(sql.len() + params_len + 64);

    // Parse: unnamed statement, no parameter types (the server infers them).
    let at = begin(&mut buf, frontend::PARSE);
    buf.push(0);
    buf.extend_from_slice(sql.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&0u16.to_be_bytes());
    finish(&mut buf, at);

    // Bind: unnamed portal and statement, all parameters and results text.
    let at = begin(&mut buf, frontend::BIND);
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&0u16.to_be_bytes());
    // Both bounded above: at most u16::MAX parameters of at most 64 MiB.
    buf.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for param in params {
        buf.extend_from_slice(&(param.len() as i32).to_be_bytes());
        buf.extend_from_slice(param.as_bytes());
    }
    buf.extend_from_slice(&0u16.to_be_bytes());
    finish(&mut buf, at);

    let at = begin(&mut buf, frontend::DESCRIBE);
    buf.extend_from_slice(b"P\0");
    finish(&mut buf, at);

    // Execute: unnamed portal, no row limit.
    let at = begin(&mut buf, frontend::EXECUTE);
    buf.push(0);
    buf.extend_from_slice(&0u32.to_be_bytes());
    finish(&mut buf, at);

    buf.extend_from_slice(&[frontend::SYNC, 0, 0, 0, 4]);
    Ok(buf)
}

/// CopyFail with a reason.
fn copy_fail(buf: &mut Vec<u8>, reason: &str) {
    let at = begin(buf, frontend::COPY_FAIL);
    buf.extend_from_slice(reason.as_bytes());
    buf.push(0);
    finish(buf, at);
}

/// Starts a tagged message; returns the offset of its length word.
fn begin(buf: &mut Vec<u8>, tag: u8) -> usize {
    buf.push(tag);
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    at
}

/// Patches the length word at `at` to cover everything after it. Callers
/// bound their messages to [`MAX_MESSAGE_SIZE`], far below `u32::MAX`.
fn finish(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
