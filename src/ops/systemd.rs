//! systemd readiness notification for a `Type=notify` unit (SPEC §8):
//! `READY=1` once PgGate listens, `RELOADING=1` then `READY=1` around a
//! reload, `STOPPING=1` on shutdown.
//!
//! Each call sends one datagram to `$NOTIFY_SOCKET` (a filesystem path, or an
//! abstract socket name written `@name`) and does nothing when the variable is
//! unset, so the same binary runs under systemd, another supervisor or a
//! terminal. A failure to notify is logged and never stops PgGate.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` assignments) to the service
/// manager. Returns whether it was sent: false when `NOTIFY_SOCKET` is unset
/// or empty, or when sending failed (logged).
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty()) else {
        return false;
    };
    match send(&socket, state) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "systemd: notifying {} of {:?} failed: {e}",
                socket.to_string_lossy(),
                state
            );
            false
        }
    }
}

/// `READY=1`: startup finished, or a reload finished.
pub fn ready() -> bool {
    notify("READY=1")
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd requires to match the
/// reload to the `READY=1` that ends it.
pub fn reloading() -> bool {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() -> bool {
    notify("STOPPING=1")
}

/// `STATUS=text`, shown by `systemctl status`. Newlines become spaces so the
/// text stays one assignment.
pub fn status(text: &str) -> bool {
    notify(&format!("STATUS={}", text.replace('\n', " ")))
}

fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    let sent = match socket.as_bytes() {
        [b'@', name @ ..] => send_abstract(&datagram, name, state.as_bytes())?,
        [b'/', ..] => datagram.send_to(state.as_bytes(), Path::new(socket))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path or an @abstract socket name",
            ))
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(datagram: &UnixDatagram, name: &[u8], buf: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    datagram.send_to_addr(buf, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload
/// timestamps against.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    fn listener_at_path() -> (UnixDatagram, std::path::PathBuf) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("pggate-notify-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (socket, dir)
    }

    // NOTIFY_SOCKET is process-wide, so every case that sets it runs here, in order.
    #[test]
    fn notifications_reach_the_socket_named_by_notify_socket() {
        let saved = std::env::var_os(NOTIFY_SOCKET);

        std::env::remove_var(NOTIFY_SOCKET);
        assert!(!ready());
        assert!(!notify("READY=1"));
        std::env::set_var(NOTIFY_SOCKET, "");
        assert!(!stopping());

        let (socket, dir) = listener_at_path();
        std::env::set_var(NOTIFY_SOCKET, dir.join("notify.sock"));
        assert!(ready());
        assert_eq!(receive(&socket), "READY=1");

        let before = monotonic_usec();
        assert!(reloading());
        let reload = receive(&socket);
        let usec = reload
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected {reload:?}"));
        assert!(!usec.is_empty() && usec.bytes().all(|b| b.is_ascii_digit()));
        let usec: u64 = usec.parse().expect("digits");
        assert!(usec >= before && usec <= monotonic_usec());

        assert!(ready());
        assert_eq!(receive(&socket), "READY=1");
        assert!(status("draining\n3 clients"));
        assert_eq!(receive(&socket), "STATUS=draining 3 clients");
        assert!(stopping());
        assert_eq!(receive(&socket), "STOPPING=1");

        // The listener is gone: sending fails, and is reported as not sent.
        drop(socket);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(!ready());

        std::env::set_var(NOTIFY_SOCKET, "relative/path");
        assert!(!ready());

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("pggate-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract address");
            let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract");
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            std::env::set_var(NOTIFY_SOCKET, format!("@{name}"));
            assert!(ready());
            assert_eq!(receive(&socket), "READY=1");
        }

        match saved {
            Some(value) => std::env::set_var(NOTIFY_SOCKET, value),
            None => std::env::remove_var(NOTIFY_SOCKET),
        }
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0 && b >= a + 1_000, "{a} {b}");
    }
}
