//! DNS transports: UDP and TCP listeners feeding the [`DnsFront`].
//!
//! hickory-server's own `Server` spawns a task per UDP datagram and per TCP
//! connection without bound, so we own these loops: UDP requests in flight and
//! open TCP connections are each capped by a semaphore, and past a cap the
//! excess is shed (datagram dropped, connection closed) instead of queued, so
//! memory stays bounded under any load. A TCP connection that sends no
//! complete request within the idle timeout is closed, whether it is silent or
//! trickles bytes (the deadline covers a whole message, not each read), and so
//! is one that does not take an answer within the same time (a client that
//! never reads would otherwise hold its slot for good, its answer stuck on a
//! full send buffer).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::DnsConfig;
use crate::dns::{DnsFront, Transport};

/// Largest datagram we read; a DNS query is far smaller.
const MAX_DATAGRAM: usize = 4096;

/// A UDP socket and a TCP listener on the same address.
#[derive(Debug)]
pub struct Listener {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Listener {
    /// Binds UDP and TCP on `addr`. With port 0 the kernel picks a UDP port and
    /// TCP takes the same number, retrying if TCP finds it taken
    /// ([`anycast_listen::bind`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let pair = anycast_listen::bind(addr)?;
        pair.udp.set_nonblocking(true)?;
        pair.tcp.set_nonblocking(true)?;
        Ok(Listener {
            udp: UdpSocket::from_std(pair.udp)?,
            tcp: TcpListener::from_std(pair.tcp)?,
        })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Serves every listener until `shutdown` is cancelled. Tasks are spawned on
/// `tasks` so the caller can wait for in-flight answers to drain.
pub fn serve(
    listeners: Vec<Listener>,
    front: Arc<DnsFront>,
    config: &DnsConfig,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> io::Result<()> {
    let udp_permits = Arc::new(Semaphore::new(config.max_inflight_udp));
    let tcp_permits = Arc::new(Semaphore::new(config.max_tcp_connections));
    for listener in listeners {
        let addr = listener.local_addr()?;
        info!(listener = "dns-udp", "listening on {addr}");
        info!(listener = "dns-tcp", "listening on {addr}");
        tasks.spawn(
            udp_loop(
                Arc::new(listener.udp),
                front.clone(),
                udp_permits.clone(),
                shutdown.clone(),
                tasks.clone(),
            )
            .instrument(info_span!("udp", %addr)),
        );
        tasks.spawn(
            tcp_loop(
                listener.tcp,
                front.clone(),
                tcp_permits.clone(),
                config.tcp_idle_timeout,
                shutdown.clone(),
                tasks.clone(),
            )
            .instrument(info_span!("tcp", %addr)),
        );
    }
    Ok(())
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    front: Arc<DnsFront>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (len, src) = match received {
            Ok(r) => r,
            Err(error) => {
                // ICMP errors from earlier sends surface here; keep serving.
                debug!(%error, "udp receive failed");
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(client = %src, "udp request shed: too many in flight");
            continue;
        };
        let request = buf[..len].to_vec();
        let (socket, front) = (socket.clone(), front.clone());
        tasks.spawn(async move {
            let _permit = permit;
            if let Some(response) = front.answer(request, src, Transport::Udp).await
                && let Err(error) = socket.send_to(&response, src).await
            {
                debug!(client = %src, %error, "udp send failed");
            }
        });
    }
}

async fn tcp_loop(
    listener: TcpListener,
    front: Arc<DnsFront>,
    permits: Arc<Semaphore>,
    idle: Duration,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, src) = match accepted {
            Ok(r) => r,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(%error, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(client = %src, "tcp connection refused: too many open");
            drop(stream);
            continue;
        };
        tasks.spawn(
            tcp_connection(stream, src, front.clone(), idle, shutdown.clone(), permit)
                .instrument(info_span!("tcp-conn", client = %src)),
        );
    }
}

/// Serves one TCP connection: length-prefixed requests answered in order.
async fn tcp_connection(
    mut stream: TcpStream,
    src: SocketAddr,
    front: Arc<DnsFront>,
    idle: Duration,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(idle, read_frame(&mut stream)) => r,
        };
        let request = match request {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                debug!(%error, "tcp read failed");
                return;
            }
            Err(_) => {
                debug!("tcp connection idle: closing");
                return;
            }
        };
        let Some(response) = front.answer(request, src, Transport::Tcp).await else {
            continue;
        };
        let Ok(len) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        let written = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(idle, stream.write_all(&framed)) => r,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                debug!(%error, "tcp write failed");
                return;
            }
            Err(_) => {
                debug!("tcp client does not read its answers: closing");
                return;
            }
        }
    }
}

/// Reads one length-prefixed message; `None` at a clean end of stream.
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}
