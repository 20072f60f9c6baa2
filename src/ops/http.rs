//! The operations HTTP endpoint on `metrics.listen` (SPEC §8): `GET /metrics`
//! answers the Prometheus scrape from [`metrics()`], `GET /healthz` answers
//! 200 when the caller's health check says the primary is up and 503
//! otherwise; every other path is 404 (405 for another method on those two).
//!
//! It runs on one thread of its own, away from the proxy's event loops: a
//! scrape never delays a client. It knows nothing about backends; whether the
//! primary is up is the `health` closure's business.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, Server};

use super::metrics::metrics;

/// `Content-Type` of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// A running endpoint. Keep it for as long as the endpoint should answer:
/// [`HttpServer::stop`], or dropping it, stops the thread and closes the
/// listening socket.
pub struct HttpServer {
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// The address actually bound (useful when listening on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the serving thread to finish the request
    /// in hand; the listening socket is closed when this returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.server.unblock();
            if thread.join().is_err() {
                log::error!("metrics endpoint {}: serving thread panicked", self.addr);
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `listen` (`host:port`) and serves `/metrics` and `/healthz` on a
/// thread named `pggate-http`. `health` is called once per `/healthz`
/// request, on that thread. Binding errors are returned with the address.
pub fn serve(listen: &str, health: impl Fn() -> bool + Send + 'static) -> io::Result<HttpServer> {
    let server = Server::http(listen).map_err(|e| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("metrics endpoint {listen}: {e}"),
        )
    })?;
    let addr = server.server_addr().to_ip().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("metrics endpoint {listen}: not an IP address"),
        )
    })?;
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("pggate-http".into())
        .spawn(move || {
            // Ends when `unblock` is called: `incoming_requests` then yields None.
            for request in serving.incoming_requests() {
                answer(request, &health);
            }
        })?;
    log::info!("metrics endpoint listening on http://{addr}");
    Ok(HttpServer {
        server,
        addr,
        thread: Some(thread),
    })
}

fn answer(request: Request, health: &dyn Fn() -> bool) {
    let url = request.url();
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let readable = matches!(request.method(), Method::Get | Method::Head);
    let response = match (path, readable) {
        ("/metrics", true) => text(200, metrics().render(), METRICS_CONTENT_TYPE),
        ("/healthz", true) if health() => text(200, "ok\n".into(), TEXT_CONTENT_TYPE),
        ("/healthz", true) => text(503, "primary down\n".into(), TEXT_CONTENT_TYPE),
        ("/metrics" | "/healthz", false) => {
            let response = text(405, "method not allowed\n".into(), TEXT_CONTENT_TYPE);
            match Header::from_bytes("Allow", "GET, HEAD") {
                Ok(allow) => response.with_header(allow),
                Err(()) => response,
            }
        }
        _ => text(404, "not found\n".into(), TEXT_CONTENT_TYPE),
    };
    // The scraper may already have gone; nothing to do about it but note it.
    if let Err(e) = request.respond(response) {
        log::debug!("metrics endpoint: writing a response failed: {e}");
    }
}

fn text(status: u16, body: String, content_type: &str) -> Response<io::Cursor<Vec<u8>>> {
    let response = Response::from_string(body).with_status_code(status);
    match Header::from_bytes("Content-Type", content_type) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// One HTTP/1.0 exchange; returns the status code, the headers and the body.
    fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(stream, "{method} {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        (status, head.to_owned(), body.to_owned())
    }

    fn start(up: &Arc<AtomicBool>) -> HttpServer {
        let up = Arc::clone(up);
        serve("127.0.0.1:0", move || up.load(Ordering::SeqCst)).expect("serve")
    }

    #[test]
    fn metrics_are_served_in_the_prometheus_text_format() {
        let server = start(&Arc::new(AtomicBool::new(true)));
        let (status, head, body) = request(server.addr(), "GET", "/metrics");
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.contains("# TYPE pggate_queries_total counter"),
            "{body}"
        );
        assert!(body.contains("pggate_build_info{version="), "{body}");

        let (status, _, body) = request(server.addr(), "GET", "/metrics?name=x");
        assert_eq!(status, 200);
        assert!(body.contains("pggate_clients_connected"));
        server.stop();
    }

    #[test]
    fn healthz_follows_the_primary() {
        let up = Arc::new(AtomicBool::new(true));
        let server = start(&up);
        let (status, _, body) = request(server.addr(), "GET", "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        up.store(false, Ordering::SeqCst);
        let (status, _, body) = request(server.addr(), "GET", "/healthz");
        assert_eq!((status, body.as_str()), (503, "primary down\n"));

        up.store(true, Ordering::SeqCst);
        assert_eq!(request(server.addr(), "GET", "/healthz").0, 200);
        server.stop();
    }

    #[test]
    fn other_paths_are_not_found_and_other_methods_not_allowed() {
        let server = start(&Arc::new(AtomicBool::new(true)));
        assert_eq!(request(server.addr(), "GET", "/nope").0, 404);
        assert_eq!(request(server.addr(), "GET", "/").0, 404);
        let (status, head, _) = request(server.addr(), "POST", "/metrics");
        assert_eq!(status, 405);
        assert!(head.contains("GET, HEAD"), "{head}");
        server.stop();
    }

    #[test]
    fn a_busy_address_is_an_error_not_a_panic() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let err = serve(&addr, || true).err().expect("bind must fail");
        assert!(err.to_string().contains(&addr), "{err}");
        assert!(serve("not an address", || true).is_err());
    }

    #[test]
    fn stop_closes_the_listening_socket() {
        let server = start(&Arc::new(AtomicBool::new(true)));
        let addr = server.addr();
        assert_eq!(request(addr, "GET", "/healthz").0, 200);
        server.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "still accepting after stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
