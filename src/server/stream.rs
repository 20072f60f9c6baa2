//! A connection's byte stream: plain TCP, or TLS over it (native-tls), with
//! the handshake driven by readiness events like everything else, so a slow
//! TLS peer never stalls a worker. The socket under it is always a
//! `mio::net::TcpStream`, registered once.

use std::io::{self, Read, Write};

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use native_tls::{HandshakeError, MidHandshakeTlsStream, TlsStream};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A TLS handshake in progress (either side). `None` only transiently.
    Handshake(Option<Box<MidHandshakeTlsStream<TcpStream>>>),
}

/// Where a handshake stands after a step.
pub enum HandshakeStep {
    Done,
    InProgress,
    Failed(String),
}

impl Stream {
    /// The TCP socket under the stream (for registration and socket options).
    pub fn tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_mut()),
            Stream::Handshake(Some(m)) => Some(m.get_mut()),
            Stream::Handshake(None) => None,
        }
    }

    pub fn tcp_ref(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref()),
            Stream::Handshake(Some(m)) => Some(m.get_ref()),
            Stream::Handshake(None) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    pub fn handshaking(&self) -> bool {
        matches!(self, Stream::Handshake(_))
    }

    /// Takes the plain socket out to start TLS on it; leaves a placeholder.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Handshake(None)) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Records the first step of a handshake (`acceptor.accept(tcp)` or
    /// `connector.connect(host, tcp)`).
    pub fn start_handshake(
        &mut self,
        result: Result<TlsStream<TcpStream>, HandshakeError<TcpStream>>,
    ) -> HandshakeStep {
        match result {
            Ok(s) => {
                *self = Stream::Tls(Box::new(s));
                HandshakeStep::Done
            }
            Err(HandshakeError::WouldBlock(m)) => {
                *self = Stream::Handshake(Some(Box::new(m)));
                HandshakeStep::InProgress
            }
            Err(HandshakeError::Failure(e)) => HandshakeStep::Failed(e.to_string()),
        }
    }

    /// Continues a handshake after a readiness event.
    pub fn continue_handshake(&mut self) -> HandshakeStep {
        let Stream::Handshake(slot) = self else {
            return HandshakeStep::Done;
        };
        let Some(mid) = slot.take() else {
            return HandshakeStep::Failed("TLS handshake lost its socket".into());
        };
        match mid.handshake() {
            Ok(s) => {
                *self = Stream::Tls(Box::new(s));
                HandshakeStep::Done
            }
            Err(HandshakeError::WouldBlock(m)) => {
                *slot = Some(Box::new(m));
                HandshakeStep::InProgress
            }
            Err(HandshakeError::Failure(e)) => HandshakeStep::Failed(e.to_string()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Handshake(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Handshake(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Handshake(_) => Ok(()),
        }
    }
}

fn no_socket() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream has no socket")
}

/// Registration goes to the TCP socket under the stream.
impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp()
            .ok_or_else(no_socket)?
            .register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp()
            .ok_or_else(no_socket)?
            .reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp().ok_or_else(no_socket)?.deregister(registry)
    }
}
