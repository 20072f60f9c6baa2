//! A minimal PostgreSQL v3 protocol client over a plain `TcpStream`, for
//! what drivers never do on purpose: vanish mid-transaction, send garbage,
//! send hand-made CancelRequests, SSLRequest/GSSENCRequest then a startup,
//! and exact extended-protocol message sequences (Parse/Bind/Describe/
//! Execute/Close/Flush/Sync, COPY sub-protocol) written in one go.
//!
//! Authentication: only trust (AuthenticationOk) is supported; use the
//! `postgres` user. Every read has a time limit so a silent peer fails the
//! test instead of hanging it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const PROTOCOL_3_0: i32 = 196_608;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;

/// How long a read waits by default before the test fails.
pub const READ_LIMIT: Duration = Duration::from_secs(5);

/// Largest backend message this client accepts (a guard against reading a
/// garbage length as a 2 GB allocation).
const MAX_MESSAGE: usize = 256 << 20;

/// One backend message: type byte and body (without the length).
#[derive(Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// Fields of an ErrorResponse or NoticeResponse as (code, value).
    pub fn fields(&self) -> Vec<(u8, String)> {
        let mut fields = Vec::new();
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
            fields.push((code, String::from_utf8_lossy(&tail[..end]).into_owned()));
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        fields
    }

    pub fn field(&self, code: u8) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v)
    }

    /// SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// Primary message text of an ErrorResponse.
    pub fn text(&self) -> Option<String> {
        self.field(b'M')
    }

    /// Columns of a DataRow as text.
    pub fn data_row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let body = &self.body;
        let count = i16::from_be_bytes([body[0], body[1]]) as usize;
        let mut at = 2;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            at += 4;
            if len < 0 {
                columns.push(None);
            } else {
                let len = len as usize;
                columns.push(Some(
                    String::from_utf8_lossy(&body[at..at + len]).into_owned(),
                ));
                at += len;
            }
        }
        columns
    }

    /// Transaction status byte of a ReadyForQuery (`I`, `T` or `E`).
    pub fn ready_status(&self) -> u8 {
        assert_eq!(self.tag, b'Z', "not a ReadyForQuery: {self:?}");
        self.body[0]
    }

    /// The tag of a CommandComplete (e.g. `SELECT 1`, `COPY 3`).
    pub fn command_tag(&self) -> String {
        assert_eq!(self.tag, b'C', "not a CommandComplete: {self:?}");
        String::from_utf8_lossy(self.body.strip_suffix(&[0]).unwrap_or(&self.body)).into_owned()
    }

    /// Parameter type OIDs of a ParameterDescription.
    pub fn parameter_types(&self) -> Vec<u32> {
        assert_eq!(self.tag, b't', "not a ParameterDescription: {self:?}");
        let count = i16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        (0..count)
            .map(|i| {
                let at = 2 + 4 * i;
                u32::from_be_bytes([
                    self.body[at],
                    self.body[at + 1],
                    self.body[at + 2],
                    self.body[at + 3],
                ])
            })
            .collect()
    }

    /// (name, type OID) of each field of a RowDescription.
    pub fn row_fields(&self) -> Vec<(String, u32)> {
        assert_eq!(self.tag, b'T', "not a RowDescription: {self:?}");
        let body = &self.body;
        let count = i16::from_be_bytes([body[0], body[1]]) as usize;
        let mut at = 2;
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let end = at
                + body[at..]
                    .iter()
                    .position(|b| *b == 0)
                    .expect("NUL-terminated field name");
            let name = String::from_utf8_lossy(&body[at..end]).into_owned();
            at = end + 1;
            // table OID (4), column number (2), then the type OID (4).
            let oid = u32::from_be_bytes([body[at + 6], body[at + 7], body[at + 8], body[at + 9]]);
            fields.push((name, oid));
            // type OID (4), type size (2), type modifier (4), format (2).
            at += 6 + 4 + 2 + 4 + 2;
        }
        fields
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            b'E' | b'N' => {
                let fields: Vec<String> = self
                    .fields()
                    .into_iter()
                    .filter(|(c, _)| b"SCM".contains(c))
                    .map(|(c, v)| format!("{}={v}", c as char))
                    .collect();
                write!(f, "{}({})", self.tag as char, fields.join(", "))
            }
            b'D' => write!(f, "D{:?}", self.data_row()),
            b'Z' => write!(f, "Z({})", self.body[0] as char),
            b'C' => write!(
                f,
                "C({})",
                String::from_utf8_lossy(self.body.strip_suffix(&[0]).unwrap_or(&self.body))
            ),
            b'1' => write!(f, "ParseComplete"),
            b'2' => write!(f, "BindComplete"),
            b'3' => write!(f, "CloseComplete"),
            b'n' => write!(f, "NoData"),
            b's' => write!(f, "PortalSuspended"),
            b'G' => write!(f, "CopyInResponse"),
            b'H' => write!(f, "CopyOutResponse"),
            b't' => write!(f, "ParameterDescription{:?}", self.parameter_types()),
            b'T' => write!(f, "RowDescription{:?}", self.row_fields()),
            tag => write!(f, "{}[{} bytes]", tag as char, self.body.len()),
        }
    }
}

/// How a connection that was sent something bad ended.
#[derive(Debug)]
pub enum Ending {
    Error(Message),
    Closed,
}

/// A raw protocol connection.
pub struct RawConn {
    pub stream: TcpStream,
    /// BackendKeyData (process id, secret key) received at login.
    pub backend_key: Option<(i32, i32)>,
    /// ParameterStatus values received at login.
    pub parameters: Vec<(String, String)>,
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(READ_LIMIT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(READ_LIMIT))
            .expect("set write timeout");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawConn {
            stream,
            backend_key: None,
            parameters: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one byte (the answer to SSLRequest/GSSENCRequest); `None` at EOF.
    pub fn read_byte(&mut self) -> io::Result<Option<u8>> {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte)? {
            0 => Ok(None),
            _ => Ok(Some(byte[0])),
        }
    }

    /// Reads one message; `None` at a clean EOF before its first byte.
    pub fn read_message(&mut self) -> io::Result<Option<Message>> {
        let mut tag = [0u8; 1];
        if self.stream.read(&mut tag)? == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize - 4 > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message {:?} with length {len}", tag[0] as char),
            ));
        }
        let mut body = vec![0u8; len as usize - 4];
        self.stream.read_exact(&mut body)?;
        Ok(Some(Message { tag: tag[0], body }))
    }

    /// Sends a StartupMessage for `user`/`database` and reads until
    /// ReadyForQuery. Panics on anything but trust authentication.
    pub fn login(&mut self, user: &str, database: &str) -> Vec<Message> {
        self.login_with(&[("user", user), ("database", database)])
    }

    /// [`RawConn::login`] with any startup parameters.
    pub fn login_with(&mut self, params: &[(&str, &str)]) -> Vec<Message> {
        self.send(&startup_message(params))
            .expect("send StartupMessage");
        let messages = self.read_until_ready();
        for m in &messages {
            match m.tag {
                b'R' => {
                    let code = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    assert_eq!(
                        code, 0,
                        "the raw client only does trust logins, got authentication request {code}"
                    );
                }
                b'K' => {
                    let pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    let key = i32::from_be_bytes([m.body[4], m.body[5], m.body[6], m.body[7]]);
                    self.backend_key = Some((pid, key));
                }
                b'S' => {
                    let mut parts = m.body.split(|b| *b == 0);
                    let name = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
                    let value = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
                    self.parameters.push((name, value));
                }
                b'E' => panic!("login failed: {m:?}"),
                _ => {}
            }
        }
        messages
    }

    /// Reads messages up to and including ReadyForQuery. Panics on EOF,
    /// a read error or [`READ_LIMIT`] of silence.
    pub fn read_until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            match self.read_message() {
                Ok(Some(m)) => {
                    let done = m.tag == b'Z';
                    messages.push(m);
                    if done {
                        return messages;
                    }
                }
                Ok(None) => panic!("connection closed before ReadyForQuery; got {messages:?}"),
                Err(e) => panic!("reading until ReadyForQuery: {e}; got {messages:?}"),
            }
        }
    }

    /// Reads messages up to and including the `count`-th ReadyForQuery
    /// (one per Sync or simple Query of a pipeline). Panics on EOF, a read
    /// error or [`READ_LIMIT`] of silence, showing what did arrive.
    pub fn read_until_readies(&mut self, count: usize) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut seen = 0;
        while seen < count {
            match self.read_message() {
                Ok(Some(m)) => {
                    if m.tag == b'Z' {
                        seen += 1;
                    }
                    messages.push(m);
                }
                Ok(None) => panic!(
                    "connection closed after {seen} of {count} ReadyForQuery; got {messages:?}"
                ),
                Err(e) => panic!(
                    "reading until ReadyForQuery {} of {count}: {e}; got {messages:?}",
                    seen + 1
                ),
            }
        }
        messages
    }

    /// Like [`RawConn::read_until_readies`], but when `limit` passes first
    /// it returns what did arrive instead of panicking (for comparing a
    /// stalled answer with the expected one). Panics on EOF or a read error.
    pub fn read_until_readies_within(&mut self, count: usize, limit: Duration) -> Vec<Message> {
        let deadline = Instant::now() + limit;
        let mut messages = Vec::new();
        let mut seen = 0;
        while seen < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.read_message() {
                Ok(Some(m)) => {
                    if m.tag == b'Z' {
                        seen += 1;
                    }
                    messages.push(m);
                }
                Ok(None) => panic!(
                    "connection closed after {seen} of {count} ReadyForQuery; got {messages:?}"
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => panic!(
                    "reading until ReadyForQuery {} of {count}: {e}; got {messages:?}",
                    seen + 1
                ),
            }
        }
        self.stream
            .set_read_timeout(Some(READ_LIMIT))
            .expect("set read timeout");
        messages
    }

    /// Reads exactly `count` messages. Panics on EOF, a read error or
    /// [`READ_LIMIT`] of silence, showing what did arrive.
    pub fn read_count(&mut self, count: usize) -> Vec<Message> {
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            match self.read_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => panic!(
                    "connection closed after {} of {count} messages; got {messages:?}",
                    messages.len()
                ),
                Err(e) => panic!(
                    "reading message {} of {count}: {e}; got {messages:?}",
                    messages.len() + 1
                ),
            }
        }
        messages
    }

    /// Reads messages up to and including the first whose type is one of
    /// `tags` (e.g. `b"sCE"` after an Execute with a row limit and Flush).
    pub fn read_until_any(&mut self, tags: &[u8]) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            match self.read_message() {
                Ok(Some(m)) => {
                    let done = tags.contains(&m.tag);
                    messages.push(m);
                    if done {
                        return messages;
                    }
                }
                Ok(None) => panic!(
                    "connection closed before any of {:?}; got {messages:?}",
                    String::from_utf8_lossy(tags)
                ),
                Err(e) => panic!(
                    "reading until any of {:?}: {e}; got {messages:?}",
                    String::from_utf8_lossy(tags)
                ),
            }
        }
    }

    /// Whatever arrives within `wait` (nothing, on a quiet connection).
    /// Panics on EOF or an error other than the time running out.
    pub fn read_for(&mut self, wait: Duration) -> Vec<Message> {
        let deadline = Instant::now() + wait;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.read_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => panic!("connection closed; got {messages:?}"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => panic!("reading: {e}; got {messages:?}"),
            }
        }
        self.stream
            .set_read_timeout(Some(READ_LIMIT))
            .expect("set read timeout");
        messages
    }

    /// Sends `bytes` (a pipeline of messages) and reads the replies up to
    /// and including the `readies`-th ReadyForQuery.
    pub fn exchange(&mut self, bytes: &[u8], readies: usize) -> Vec<Message> {
        self.send(bytes).expect("send a pipeline of messages");
        self.read_until_readies(readies)
    }

    /// Sends a simple Query without reading the answer.
    pub fn send_query(&mut self, sql: &str) {
        self.send(&query_message(sql)).expect("send Query");
    }

    /// Runs a simple Query and returns everything up to ReadyForQuery.
    pub fn query(&mut self, sql: &str) -> Vec<Message> {
        self.send_query(sql);
        self.read_until_ready()
    }

    /// Reads until an ErrorResponse or the end of the connection (EOF or
    /// reset), skipping anything else. Panics if neither comes within
    /// `limit`: the peer is hanging.
    pub fn error_or_close_within(&mut self, limit: Duration) -> Ending {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("neither an ErrorResponse nor a close within {limit:?}; got {seen:?}");
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.read_message() {
                Ok(None) => return Ending::Closed,
                Ok(Some(m)) if m.tag == b'E' => return Ending::Error(m),
                Ok(Some(m)) => seen.push(m),
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof => return Ending::Closed,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => panic!(
                        "neither an ErrorResponse nor a close within {limit:?}; got {seen:?}"
                    ),
                    _ => panic!("reading the answer to a bad message: {e}; got {seen:?}"),
                },
            }
        }
    }

    /// Drops the connection abruptly: no Terminate, both directions shut.
    pub fn vanish(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A StartupMessage (protocol 3.0) with `params`.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    with_length(None, body)
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    with_length(Some(b'Q'), body)
}

/// A Terminate message.
pub fn terminate_message() -> Vec<u8> {
    with_length(Some(b'X'), Vec::new())
}

/// An 8-byte untagged request: SSLRequest, GSSENCRequest or any `code`.
pub fn request_message(code: i32) -> Vec<u8> {
    with_length(None, code.to_be_bytes().to_vec())
}

/// A CancelRequest for (pid, key).
pub fn cancel_request_message(pid: i32, key: i32) -> Vec<u8> {
    let mut body = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(&key.to_be_bytes());
    with_length(None, body)
}

/// Sends a CancelRequest on a new connection to `port` and waits (briefly)
/// for the server to close it, as libpq does.
pub fn send_cancel_request(port: u16, pid: i32, key: i32) {
    let mut conn = RawConn::connect(port);
    conn.send(&cancel_request_message(pid, key))
        .expect("send CancelRequest");
    let _ = conn.stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 64];
    let _ = conn.stream.read(&mut sink);
}

/// A Parse of statement `name` (empty: the unnamed statement) with
/// parameter type OIDs `param_types` (0, or fewer than the text uses: the
/// server infers them).
pub fn parse_message(name: &str, sql: &str, param_types: &[u32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + sql.len() + 4 + 4 * param_types.len());
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(&(param_types.len() as i16).to_be_bytes());
    for oid in param_types {
        body.extend_from_slice(&oid.to_be_bytes());
    }
    with_length(Some(b'P'), body)
}

/// A Bind of `statement` into `portal` with text-format parameters (`None`
/// for NULL) and text-format results.
pub fn bind_message(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let params: Vec<Option<&[u8]>> = params.iter().map(|p| p.map(str::as_bytes)).collect();
    bind_message_with_formats(portal, statement, &[], &params, &[])
}

/// A Bind with explicit parameter and result format codes (0 text, 1
/// binary; empty: all text; one code: for all).
pub fn bind_message_with_formats(
    portal: &str,
    statement: &str,
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(portal.as_bytes());
    body.push(0);
    body.extend_from_slice(statement.as_bytes());
    body.push(0);
    body.extend_from_slice(&(param_formats.len() as i16).to_be_bytes());
    for format in param_formats {
        body.extend_from_slice(&format.to_be_bytes());
    }
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for param in params {
        match param {
            Some(value) => {
                body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                body.extend_from_slice(value);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.extend_from_slice(&(result_formats.len() as i16).to_be_bytes());
    for format in result_formats {
        body.extend_from_slice(&format.to_be_bytes());
    }
    with_length(Some(b'B'), body)
}

/// A Describe of a statement (`kind` `b'S'`) or portal (`b'P'`).
pub fn describe_message(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    with_length(Some(b'D'), body)
}

/// An Execute of `portal`, returning at most `max_rows` rows (0: all).
pub fn execute_message(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = portal.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&max_rows.to_be_bytes());
    with_length(Some(b'E'), body)
}

/// A Close of a statement (`kind` `b'S'`) or portal (`b'P'`).
pub fn close_message(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    with_length(Some(b'C'), body)
}

/// A Sync message.
pub fn sync_message() -> Vec<u8> {
    with_length(Some(b'S'), Vec::new())
}

/// A Flush message.
pub fn flush_message() -> Vec<u8> {
    with_length(Some(b'H'), Vec::new())
}

/// A CopyData message carrying `data`.
pub fn copy_data_message(data: &[u8]) -> Vec<u8> {
    with_length(Some(b'd'), data.to_vec())
}

/// A CopyDone message.
pub fn copy_done_message() -> Vec<u8> {
    with_length(Some(b'c'), Vec::new())
}

/// A CopyFail message with `reason`.
pub fn copy_fail_message(reason: &str) -> Vec<u8> {
    let mut body = reason.as_bytes().to_vec();
    body.push(0);
    with_length(Some(b'f'), body)
}

/// Parse (unnamed) + Bind (unnamed portal, text parameters) + Execute (all
/// rows) of `sql`, without a Sync: one statement of a pipeline.
pub fn unnamed_statement(sql: &str, params: &[Option<&str>]) -> Vec<u8> {
    [
        parse_message("", sql, &[]),
        bind_message("", "", params),
        execute_message("", 0),
    ]
    .concat()
}

/// The type bytes of `messages` as a string, e.g. `"12DCZ"`, for
/// assertions on the shape of a reply.
pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

/// Text of the first column of each DataRow among `messages`.
pub fn first_column(messages: &[Message]) -> Vec<Option<String>> {
    rows(messages)
        .into_iter()
        .map(|row| row.into_iter().next().flatten())
        .collect()
}

fn with_length(tag: Option<u8>, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// DataRows among `messages`, as text columns.
pub fn rows(messages: &[Message]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter(|m| m.tag == b'D')
        .map(Message::data_row)
        .collect()
}

/// ErrorResponses among `messages`.
pub fn errors(messages: &[Message]) -> Vec<&Message> {
    messages.iter().filter(|m| m.tag == b'E').collect()
}
