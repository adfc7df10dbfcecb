//! The emulated path: a TCP proxy that delays every byte.
//!
//! Each server's member address (127.0.1.N, the one in DNS answers and in
//! the resolver's configuration) is this proxy, forwarding to the server's
//! own address (127.0.2.N). Clients and the resolver's probes cross it and
//! see the path; the server's agent, beside the server, does not. That is
//! the split the hybrid technique relies on: the agent measures the server,
//! the probe measures the path.
//!
//! Emulation, per connection, for a round-trip time `rtt`:
//!
//! * Each chunk read from one side is timestamped and released to the other
//!   side `rtt / 2` later, in order. Each direction has its own reader and
//!   writer tasks joined by a bounded queue, so a slow reader on one side
//!   never holds up the other direction, and the delay does not slow the
//!   reading (up to the queue's bound: 256 chunks).
//! * Connection setup costs a round trip, as TCP's handshake does: a client
//!   on loopback is connected at once and sends its request immediately, so
//!   client-to-server data is held until one `rtt` after the connection was
//!   accepted, then travels its `rtt / 2`. A fresh connection's request and
//!   response therefore take two round trips plus the server's time, as on
//!   a real path.
//! * A close (end of stream) travels like data, after the bytes before it.
//! * The RTT is read as each chunk is, so a path whose RTT changes during a
//!   run delays what crosses it from then on (never reordering a stream).
//! * The proxy is the server's address as the world sees it, so it follows
//!   the server's condition: refusing connections while the server is dead
//!   (and resetting those open when it died), swallowing them while it is
//!   black-holed (those open stop moving), through the server's [`Gate`].
//!
//! Bandwidth is not limited: loopback's, shared by every path, is far above
//! what the scenarios move, so file size matters little; path delay and
//! server load are what the experiment varies.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::scenario::Condition;
use crate::server::{Gate, Server};

/// Chunks in flight per direction before the reader waits.
const QUEUE: usize = 256;

/// Bytes read at once.
const CHUNK: usize = 16 * 1024;

/// Accepts through `gate` and forwards every connection to `server`'s own
/// address over its emulated path, until `shutdown`.
pub fn start(
    mut gate: Gate,
    server: Arc<Server>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let tracker = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (client, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = gate.accept() => accepted,
            };
            let stop = shutdown.clone();
            let server = server.clone();
            tracker.spawn(async move {
                let mut condition = server.watch_condition();
                let relay = relay(client, &server);
                tokio::pin!(relay);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = &mut relay => {}
                    // Dead: the connection is dropped (reset). Black-holed:
                    // nothing moves on it any more; the client waits.
                    _ = condition.wait_for(|c| *c != Condition::Up) => {}
                }
            });
        }
    });
}

async fn relay(client: TcpStream, server: &Server) {
    let accepted = Instant::now();
    let Ok(upstream) = TcpStream::connect(server.own).await else {
        // The client sees the connection close, as with a refused one.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = upstream.into_split();
    let handshake_done = accepted + server.rtt();
    tokio::join!(
        direction(client_read, server_write, server, Some(handshake_done)),
        direction(server_read, client_write, server, None),
    );
}

/// Copies `from` to `to`, each chunk half the path's RTT after it was read
/// (and not before `not_before` plus that), never before the chunk ahead.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    server: &Server,
    not_before: Option<Instant>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut last_release = Instant::now();
        loop {
            let read = from.read(&mut buf).await;
            let now = Instant::now();
            let sent = not_before.map_or(now, |nb| now.max(nb));
            let chunk = match read {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            let release = (sent + server.rtt() / 2).max(last_release);
            last_release = release;
            if tx.send((release, chunk)).await.is_err() || end {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((release, chunk)) = rx.recv().await {
            tokio::time::sleep_until(release).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scenario::{Dist, Schedule, ServerSpec};
    use std::time::Duration;
    use tokio::net::TcpListener;

    /// A server record for `own`, with a 100 ms path, and a gated proxy
    /// listener in front of it.
    async fn proxied(
        own: std::net::SocketAddr,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> (Arc<Server>, std::net::SocketAddr) {
        let spec = ServerSpec {
            name: "s1".into(),
            rtt: Schedule::constant(Duration::from_millis(100)),
            capacity: 1,
            service: Dist::Const(Duration::ZERO),
            load: Schedule::constant(0.0),
            condition: Schedule::constant(Condition::Up),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = Arc::new(Server::new(spec, at, own, Default::default(), 0));
        let gate = Gate::new(listener, &server, shutdown.clone(), tasks).unwrap();
        start(gate, server.clone(), shutdown.clone(), tasks);
        (server, at)
    }

    async fn echo_world() -> std::net::SocketAddr {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(b"world").await;
                    }
                });
            }
        });
        upstream
    }

    /// On tokio's paused clock the emulated delays are exact: the
    /// connection's first bytes wait one RTT (the handshake), then each way
    /// takes half of one.
    #[tokio::test(start_paused = true)]
    async fn a_fresh_request_takes_two_round_trips() {
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (_server, at) = proxied(echo_world().await, &shutdown, &tasks).await;

        let t0 = Instant::now();
        let mut c = TcpStream::connect(at).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        let took = t0.elapsed();
        assert_eq!(&buf, b"world");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(201),
            "{took:?}"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_dead_server_refuses_and_a_black_hole_swallows() {
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (server, at) = proxied(echo_world().await, &shutdown, &tasks).await;
        let exchange = || async move {
            let mut c = TcpStream::connect(at).await?;
            c.write_all(b"hello").await?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        assert_eq!(&exchange().await.unwrap(), b"world");

        // An exchange in progress when the server dies is cut off...
        let mut open = TcpStream::connect(at).await.unwrap();
        open.write_all(b"hel").await.unwrap();
        server.set_condition(Condition::Dead);
        let mut rest = Vec::new();
        let _ = open.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        // ... and new connections are refused once the gate has closed.
        let refused = async {
            loop {
                match TcpStream::connect(at).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                    _ => tokio::task::yield_now().await,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), refused)
            .await
            .expect("refused within 10 s");

        // Black-holed: connected, but no answer (within far more than 2 RTT).
        server.set_condition(Condition::Blackhole);
        let swallowed = async {
            loop {
                if let Ok(mut c) = TcpStream::connect(at).await {
                    c.write_all(b"hello").await.unwrap();
                    let mut buf = [0u8; 5];
                    let answer =
                        tokio::time::timeout(Duration::from_secs(1), c.read_exact(&mut buf)).await;
                    assert!(answer.is_err(), "a black hole answered");
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), swallowed)
            .await
            .expect("accepted within 10 s");

        // Up again: served.
        server.set_condition(Condition::Up);
        assert_eq!(&exchange().await.unwrap(), b"world");
        shutdown.cancel();
    }
}
