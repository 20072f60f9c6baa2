//! A stand-in PostgreSQL server for protocol corners a real server cannot be
//! made (or timed) to produce. It accepts any number of connections, declines
//! SSL and GSS encryption, logs every role in without a password, answers
//! PgGate's health probe as a standby that is fully caught up, and passes
//! every other simple Query to the test's handler, which says what to send.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the stand-in does with one Query.
pub struct Answer {
    /// Waits this long first.
    pub delay: Duration,
    /// Then sends these bytes in one write.
    pub bytes: Vec<u8>,
    /// Then closes the connection.
    pub close: bool,
}

impl Answer {
    /// `bytes` at once, the connection kept.
    pub fn now(bytes: Vec<u8>) -> Answer {
        Answer {
            delay: Duration::ZERO,
            bytes,
            close: false,
        }
    }
}

/// The running stand-in: its port and the statements it was sent.
pub struct FakeServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeServer {
    /// Starts a stand-in whose `handler` answers each Query (except probes).
    pub fn start(handler: impl Fn(&str) -> Answer + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in server");
        let port = listener.local_addr().expect("its address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { continue };
                let (log, handler) = (log.clone(), handler.clone());
                std::thread::spawn(move || serve(sock, &log, &*handler));
            }
        });
        FakeServer { port, seen }
    }

    /// Whether a statement containing `text` was sent to it.
    pub fn was_sent(&self, text: &str) -> bool {
        self.seen
            .lock()
            .expect("the stand-in's log")
            .iter()
            .any(|s| s.contains(text))
    }
}

fn read_exact(sock: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; n];
    sock.read_exact(&mut buf).ok().map(|_| buf)
}

fn serve(mut sock: TcpStream, log: &Mutex<Vec<String>>, handler: &dyn Fn(&str) -> Answer) {
    // Startup, after declining any SSLRequest or GSSENCRequest.
    loop {
        let Some(len) = read_exact(&mut sock, 4) else {
            return;
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(body) = read_exact(&mut sock, len.saturating_sub(4)) else {
            return;
        };
        let Some(code) = body.get(..4) else { return };
        match u32::from_be_bytes([code[0], code[1], code[2], code[3]]) {
            80877103 | 80877104 => {
                if sock.write_all(b"N").is_err() {
                    return;
                }
            }
            196608 => break,
            _ => return,
        }
    }
    let mut hello = message(b'R', &0u32.to_be_bytes());
    for (k, v) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        hello.extend(message(b'S', format!("{k}\0{v}\0").as_bytes()));
    }
    let mut key = 4242u32.to_be_bytes().to_vec();
    key.extend_from_slice(&7u32.to_be_bytes());
    hello.extend(message(b'K', &key));
    hello.extend(ready(b'I'));
    if sock.write_all(&hello).is_err() {
        return;
    }
    loop {
        let Some(head) = read_exact(&mut sock, 5) else {
            return;
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some(body) = read_exact(&mut sock, len.saturating_sub(4)) else {
            return;
        };
        if head[0] != b'Q' {
            return;
        }
        let sql = String::from_utf8_lossy(&body)
            .trim_end_matches('\0')
            .to_string();
        log.lock().expect("the stand-in's log").push(sql.clone());
        let answer = if sql.starts_with("SELECT pg_is_in_recovery()") {
            let mut bytes = one_row(&[Some("t"), Some("FFFFFFFF/0"), None]);
            bytes.extend(ready(b'I'));
            Answer::now(bytes)
        } else {
            handler(&sql)
        };
        std::thread::sleep(answer.delay);
        if sock.write_all(&answer.bytes).is_err() || answer.close {
            return;
        }
    }
}

/// One backend message: tag, then length and body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// ReadyForQuery with transaction status `status`.
pub fn ready(status: u8) -> Vec<u8> {
    message(b'Z', &[status])
}

/// CommandComplete with `tag`.
pub fn complete(tag: &str) -> Vec<u8> {
    message(b'C', format!("{tag}\0").as_bytes())
}

/// An ErrorResponse with severity, SQLSTATE and message.
pub fn error(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// RowDescription, one DataRow of `values` (text columns) and
/// CommandComplete.
pub fn one_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut desc = (values.len() as u16).to_be_bytes().to_vec();
    let mut row = (values.len() as u16).to_be_bytes().to_vec();
    for (i, v) in values.iter().enumerate() {
        desc.extend_from_slice(format!("c{i}\0").as_bytes());
        desc.extend_from_slice(&0u32.to_be_bytes()); // table
        desc.extend_from_slice(&0u16.to_be_bytes()); // column
        desc.extend_from_slice(&25u32.to_be_bytes()); // text
        desc.extend_from_slice(&(-1i16).to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&0u16.to_be_bytes());
        match v {
            Some(s) => {
                row.extend_from_slice(&(s.len() as i32).to_be_bytes());
                row.extend_from_slice(s.as_bytes());
            }
            None => row.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = message(b'T', &desc);
    out.extend(message(b'D', &row));
    out.extend(complete("SELECT 1"));
    out
}
