//! idle-clients: opens N PostgreSQL client connections to 127.0.0.1:PORT,
//! completes the startup and login of each (trust authentication: the server
//! must answer AuthenticationOk without asking for a password), then holds
//! them all open, idle, until its standard input reaches end of file.
//!
//! Once every login has finished (or failed) it prints one JSON line on
//! stdout: {"connected": N, "failed": F, "seconds": S, "first_error": "..."}
//! where S is the wall time from the first connect to the last
//! ReadyForQuery. The caller measures what it wants (for example the proxy's
//! RSS) while the connections are held, then closes our stdin.
//!
//! Connections are opened by `--threads` threads; each keeps up to
//! `--inflight` logins in progress at once (connect all of a window, send all
//! the startup packets, then read each reply to ReadyForQuery), so up to
//! threads x inflight logins are in progress at any moment.
//!
//! Only the loopback address is ever connected to. Uses std alone.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Options {
    port: u16,
    count: usize,
    threads: usize,
    inflight: usize,
    user: String,
    database: String,
    timeout: Duration,
}

fn usage() -> String {
    "usage: idle-clients --port PORT [--count 10000] [--threads 8] [--inflight 32] \
     [--user postgres] [--database postgres] [--timeout-secs 60]\n\
     Connects to 127.0.0.1:PORT only."
        .to_string()
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        port: 0,
        count: 10_000,
        threads: 8,
        inflight: 32,
        user: "postgres".into(),
        database: "postgres".into(),
        timeout: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--port" => o.port = value("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--count" => {
                o.count = value("--count")?.parse().map_err(|e| format!("--count: {e}"))?
            }
            "--threads" => {
                o.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--inflight" => {
                o.inflight = value("--inflight")?
                    .parse()
                    .map_err(|e| format!("--inflight: {e}"))?
            }
            "--user" => o.user = value("--user")?,
            "--database" => o.database = value("--database")?,
            "--timeout-secs" => {
                let s: u64 = value("--timeout-secs")?
                    .parse()
                    .map_err(|e| format!("--timeout-secs: {e}"))?;
                o.timeout = Duration::from_secs(s);
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if o.port == 0 {
        return Err(format!("--port is required\n{}", usage()));
    }
    o.threads = o.threads.clamp(1, o.count.max(1));
    o.inflight = o.inflight.max(1);
    Ok(o)
}

/// Raises the soft open-files limit to the hard limit.
fn raise_nofile_limit() {
    #[repr(C)]
    struct RLimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut r = RLimit { cur: 0, max: 0 };
    // SAFETY: plain libc calls with a valid pointer to a struct laid out as
    // struct rlimit (two rlim_t, 64-bit on Linux).
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut r) == 0 && r.cur < r.max {
            r.cur = r.max;
            setrlimit(RLIMIT_NOFILE, &r);
        }
    }
}

fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for (k, v) in [
        ("user", user),
        ("database", database),
        ("application_name", "idle-clients"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// Reads server messages until ReadyForQuery.
fn finish_login(stream: &mut TcpStream) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Parse every complete message in buf.
        let mut pos = 0;
        while buf.len() - pos >= 5 {
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]])
                as usize;
            if len < 4 {
                return Err(format!("invalid message length {len} (tag {:?})", tag as char));
            }
            if buf.len() - pos < 1 + len {
                break;
            }
            let body = &buf[pos + 5..pos + 1 + len];
            match tag {
                b'R' => {
                    let code = body
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or("short authentication message")?;
                    if code != 0 {
                        return Err(format!(
                            "server asked for authentication (request {code}); trust authentication is required"
                        ));
                    }
                }
                b'E' => return Err(format!("login refused: {}", error_text(body))),
                b'Z' => return Ok(()),
                _ => {}
            }
            pos += 1 + len;
        }
        buf.drain(..pos);
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("read during login: {e}"))?;
        if n == 0 {
            return Err("connection closed during login".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn error_text(body: &[u8]) -> String {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        if let Some((&t, rest)) = field.split_first() {
            match t {
                b'C' => code = String::from_utf8_lossy(rest).into_owned(),
                b'M' => message = String::from_utf8_lossy(rest).into_owned(),
                _ => {}
            }
        }
    }
    format!("{code} {message}")
}

struct ThreadResult {
    streams: Vec<TcpStream>,
    failed: usize,
    first_error: Option<String>,
}

fn run_thread(o: &Options, n: usize, packet: &[u8]) -> ThreadResult {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, o.port));
    let mut result = ThreadResult {
        streams: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    let fail = |result: &mut ThreadResult, e: String| {
        result.failed += 1;
        if result.first_error.is_none() {
            result.first_error = Some(e);
        }
    };
    let mut left = n;
    while left > 0 {
        let window = left.min(o.inflight);
        left -= window;
        let mut pending = Vec::with_capacity(window);
        for _ in 0..window {
            match TcpStream::connect_timeout(&addr, o.timeout) {
                Ok(mut s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(o.timeout));
                    let _ = s.set_write_timeout(Some(o.timeout));
                    match s.write_all(packet) {
                        Ok(()) => pending.push(s),
                        Err(e) => fail(&mut result, format!("send startup: {e}")),
                    }
                }
                Err(e) => fail(&mut result, format!("connect: {e}")),
            }
        }
        for mut s in pending {
            match finish_login(&mut s) {
                Ok(()) => result.streams.push(s),
                Err(e) => fail(&mut result, e),
            }
        }
    }
    result
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("idle-clients: {e}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let packet = startup_packet(&o.user, &o.database);

    let started = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let share = o.count / o.threads + usize::from(t < o.count % o.threads);
                let (o, packet) = (&o, &packet);
                scope.spawn(move || run_thread(o, share, packet))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();

    let connected: usize = results.iter().map(|r| r.streams.len()).sum();
    let failed: usize = results.iter().map(|r| r.failed).sum();
    let first_error = results
        .iter()
        .find_map(|r| r.first_error.clone())
        .unwrap_or_default();
    println!(
        "{{\"connected\": {connected}, \"failed\": {failed}, \"seconds\": {seconds:.4}, \"first_error\": {}}}",
        json_string(&first_error)
    );
    let _ = io::stdout().flush();

    // Hold every connection until stdin is closed.
    let mut sink = Vec::new();
    let _ = io::stdin().read_to_end(&mut sink);
    drop(results);
    ExitCode::SUCCESS
}
