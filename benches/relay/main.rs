//! `bench-relay LISTEN UPSTREAM`: the floor for the benchmark. A single-
//! threaded mio relay that opens one upstream connection per client and
//! forwards bytes both ways without reading them: what any epoll proxy on
//! this machine pays in syscalls and wake-ups before it does anything useful.
//! `benches/run` measures it beside PgGate and PgBouncer.
//!
//! Each readiness event reads once from the ready socket (a short read means
//! the socket is drained) and writes what it got to the other side at once,
//! keeping whatever the peer did not take for its next writable event.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

const LISTENER: Token = Token(usize::MAX);
const BUF: usize = 64 * 1024;

struct Pair {
    client: TcpStream,
    server: TcpStream,
    /// Bytes read from the client that the server has not taken yet.
    to_server: Vec<u8>,
    /// Bytes read from the server that the client has not taken yet.
    to_client: Vec<u8>,
}

/// Writes what is pending, then relays reads from `from` until a short read.
/// `Ok(false)` when either side is closed.
fn pump(
    from: &mut TcpStream,
    to: &mut TcpStream,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
) -> io::Result<bool> {
    if !flush(to, pending)? {
        return Ok(true);
    }
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&buf[..n]);
        if !flush(to, pending)? || n < buf.len() {
            return Ok(true);
        }
    }
}

/// Writes `pending` to `to`; false if some of it is still pending.
fn flush(to: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    while !pending.is_empty() {
        match to.write(pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn accept(
    poll: &Poll,
    pairs: &mut slab::Slab<Pair>,
    client: TcpStream,
    upstream: SocketAddr,
) -> io::Result<()> {
    let server = std::net::TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    server.set_nonblocking(true)?;
    client.set_nodelay(true)?;
    let entry = pairs.vacant_entry();
    let key = entry.key();
    let pair = entry.insert(Pair {
        client,
        server: TcpStream::from_std(server),
        to_server: Vec::new(),
        to_client: Vec::new(),
    });
    let both = Interest::READABLE | Interest::WRITABLE;
    poll.registry()
        .register(&mut pair.client, Token(key * 2), both)?;
    poll.registry()
        .register(&mut pair.server, Token(key * 2 + 1), both)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!("usage: bench-relay LISTEN_ADDR:PORT UPSTREAM_ADDR:PORT");
        std::process::exit(2);
    };
    if let Err(e) = serve(listen, upstream) {
        eprintln!("bench-relay: {e}");
        std::process::exit(1);
    }
}

fn serve(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("bench-relay: {listen} -> {upstream}");
    let mut pairs = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; BUF];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if let Err(e) = accept(&poll, &mut pairs, client, upstream) {
                                eprintln!("bench-relay: upstream: {e}");
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = ev.token().0 / 2;
            let Some(p) = pairs.get_mut(key) else {
                continue;
            };
            let Pair {
                client,
                server,
                to_server,
                to_client,
            } = p;
            // A writable event on one side may be the chance to flush what
            // the other direction left pending.
            let open = if ev.token().0 % 2 == 0 {
                pump(client, server, to_server, &mut buf).and_then(|open| {
                    flush(client, to_client)?;
                    Ok(open)
                })
            } else {
                pump(server, client, to_client, &mut buf).and_then(|open| {
                    flush(server, to_server)?;
                    Ok(open)
                })
            };
            if !matches!(open, Ok(true)) {
                pairs.remove(key);
            }
        }
    }
}
