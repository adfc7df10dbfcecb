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
//!
//! Bandwidth is not limited: loopback's, shared by every path, is far above
//! what the scenarios move, so file size matters little; path delay and
//! server load are what the experiment varies.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Chunks in flight per direction before the reader waits.
const QUEUE: usize = 256;

/// Bytes read at once.
const CHUNK: usize = 16 * 1024;

/// Accepts on `listener` and forwards every connection to `upstream` with
/// `rtt` of emulated path, until `shutdown`.
pub fn start(
    listener: TcpListener,
    upstream: SocketAddr,
    rtt: Duration,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let tracker = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((client, _)) = accepted else {
                // Out of descriptors or similar: back off a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let stop = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = relay(client, upstream, rtt) => {}
                }
            });
        }
    });
}

async fn relay(client: TcpStream, upstream: SocketAddr, rtt: Duration) {
    let accepted = Instant::now();
    let Ok(server) = TcpStream::connect(upstream).await else {
        // The client sees the connection close, as with a refused one.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let one_way = rtt / 2;
    let handshake_done = accepted + rtt;
    tokio::join!(
        direction(client_read, server_write, one_way, Some(handshake_done)),
        direction(server_read, client_write, one_way, None),
    );
}

/// Copies `from` to `to`, each chunk `delay` after it was read (and not
/// before `not_before + delay`).
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    not_before: Option<Instant>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let read = from.read(&mut buf).await;
            let now = Instant::now();
            let sent = not_before.map_or(now, |nb| now.max(nb));
            let chunk = match read {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            if tx.send((sent + delay, chunk)).await.is_err() || end {
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

    #[tokio::test]
    async fn a_fresh_request_takes_two_round_trips() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"world").await.unwrap();
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = proxy.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let rtt = Duration::from_millis(100);
        start(proxy, upstream, rtt, shutdown.clone(), &tasks);

        let t0 = std::time::Instant::now();
        let mut c = TcpStream::connect(at).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).await.unwrap();
        let took = t0.elapsed();
        assert_eq!(buf, b"world");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(320),
            "{took:?}"
        );
        shutdown.cancel();
    }
}
