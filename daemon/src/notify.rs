//! systemd's service notifications (`sd_notify(3)`), without libsystemd: a
//! datagram of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`.
//!
//! With `Type=notify`, systemd counts the service started when it says
//! `READY=1` (every listener bound), and with `WatchdogSec=` it restarts a
//! service that stops saying `WATCHDOG=1` within the interval it passes in
//! `$WATCHDOG_USEC`. Outside systemd the variable is unset and every call
//! here does nothing.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The service is up: every listener is bound.
pub fn ready() {
    send("READY=1\nSTATUS=running");
}

/// A configuration reload begins; [`ready`] says it ended.
pub fn reloading() {
    send(&reloading_message());
}

fn reloading_message() -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
        monotonic_usec()
    )
}

/// Shutdown has begun.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

/// The watchdog interval systemd asks for, if it asks this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    // WATCHDOG_PID, when set, names the process the watchdog is for.
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Says `WATCHDOG=1` at half the interval systemd asks for, until
/// `shutdown`. The pings come from the async runtime itself, so a runtime
/// that stops making progress stops them and systemd restarts the service.
pub async fn keep_watchdog(interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => send("WATCHDOG=1"),
        }
    }
}

/// Sends `state` to `$NOTIFY_SOCKET`, if set. A failure is logged, never
/// fatal.
fn send(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_to(&target, state) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Sends `state` to the socket `target` names: a path, or an abstract
/// socket name written with a leading `@`.
fn send_to(target: &std::ffi::OsStr, state: &str) -> std::io::Result<usize> {
    let socket = UnixDatagram::unbound()?;
    let target = target.as_encoded_bytes();
    match target.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        }
        None => socket.send_to(state.as_bytes(), std::ffi::OsStr::from_bytes(target)),
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` wants it.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_socket_by_path_or_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), &reloading_message()).unwrap();
        let reloading = received(&socket);
        let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(
            reloading.starts_with("RELOADING=1\n") && usec > 0,
            "{reloading}"
        );

        use std::os::linux::net::SocketAddrExt;
        let name = format!("anycast-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_socket = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(received(&abstract_socket), "READY=1");
    }
}
