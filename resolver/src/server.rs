//! DNS transports: UDP and TCP listeners feeding the [`DnsFront`].
//!
//! Each listening address has one UDP socket per core (`SO_REUSEPORT`), and
//! each socket a task that reads datagrams in batches as they come
//! ([`crate::datagrams`]) and answers at once what needs no waiting (every
//! anycast name), into reused buffers: no task and no allocation per query. A query whose answer waits on another
//! server (forwarding, a local zone's authority) gets a task of its own.
//!
//! hickory-server's own `Server` spawns a task per UDP datagram and per TCP
//! connection without bound, so we own these loops: UDP requests waiting in
//! their own task and open TCP connections are each capped by a semaphore,
//! and past a cap the excess is shed (datagram dropped, connection closed)
//! instead of queued, so memory stays bounded under any load. A TCP connection that sends no
//! complete request within the idle timeout is closed, whether it is silent or
//! trickles bytes (the deadline covers a whole message, not each read), and so
//! is one that does not take an answer within the same time (a client that
//! never reads would otherwise hold its slot for good, its answer stuck on a
//! full send buffer).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::DnsConfig;
use crate::datagrams::{BATCH, Inbox, Outbox};
use crate::dns::{DnsFront, Ready, Transport};

/// Largest datagram we read; a DNS query is far smaller.
const MAX_DATAGRAM: usize = 4096;

/// Datagrams a UDP task answers in a row (in batches of [`BATCH`]) before
/// it lets the other tasks of its thread run.
const BURST: usize = 4 * BATCH;

/// UDP sockets sharing an address, and a TCP listener on it.
#[derive(Debug)]
pub struct Listener {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
}

impl Listener {
    /// Binds TCP and one UDP socket per core on `addr`. With port 0 the
    /// kernel picks a UDP port and TCP takes the same number, retrying if TCP
    /// finds it taken ([`anycast_listen::bind_shared`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (udp, tcp) = anycast_listen::bind_shared(addr, cores)?;
        tcp.set_nonblocking(true)?;
        let udp = udp
            .into_iter()
            .map(|socket| {
                socket.set_nonblocking(true)?;
                UdpSocket::from_std(socket)
            })
            .collect::<io::Result<_>>()?;
        Ok(Listener {
            udp,
            tcp: TcpListener::from_std(tcp)?,
        })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
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
        for socket in listener.udp {
            tasks.spawn(
                udp_loop(
                    Arc::new(socket),
                    front.clone(),
                    udp_permits.clone(),
                    shutdown.clone(),
                    tasks.clone(),
                )
                .instrument(info_span!("udp", %addr)),
            );
        }
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
    let mut inbox = Inbox::new(MAX_DATAGRAM);
    let mut outbox = Outbox::default();
    loop {
        let readable = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.readable() => r,
        };
        if let Err(error) = readable {
            warn!(%error, "udp socket failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut drained = false;
        for _ in 0..BURST / BATCH {
            match socket.try_io(Interest::READABLE, || inbox.receive(&*socket)) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(error) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    debug!(%error, "udp receive failed");
                    continue;
                }
            }
            for (request, src) in inbox.datagrams() {
                let Some(src) = src.filter(|src| src.port() != 0) else {
                    continue;
                };
                let Some(response) = outbox.blank() else {
                    break;
                };
                match front.answer_now(request, src, Transport::Udp, response) {
                    Ready::Answered => outbox.queue(src),
                    Ready::Nothing => {}
                    Ready::Wait => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            debug!(client = %src, "udp request shed: too many waiting");
                            continue;
                        };
                        let request = request.to_vec();
                        let (socket, front) = (socket.clone(), front.clone());
                        tasks.spawn(async move {
                            let _permit = permit;
                            if let Some(response) = front.answer(request, src, Transport::Udp).await
                            {
                                send(&socket, &response, src).await;
                            }
                        });
                    }
                }
            }
            flush(&socket, &mut outbox).await;
        }
        if !drained {
            // A burst answered and more waiting: let the thread's other
            // tasks run before reading on.
            tokio::task::yield_now().await;
        }
    }
}

/// Sends the answers in `outbox`, waiting for room in the socket's buffer
/// when it is full; an answer the kernel refuses is dropped.
async fn flush(socket: &UdpSocket, outbox: &mut Outbox) {
    while !outbox.is_empty() {
        match socket.try_io(Interest::WRITABLE, || outbox.send(socket)) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if let Err(error) = socket.writable().await {
                    debug!(%error, "udp socket failed");
                    outbox.drop_first();
                }
            }
            Err(error) => {
                debug!(%error, "udp send failed");
                outbox.drop_first();
            }
        }
    }
}

/// Sends one response, waiting for room in the socket's buffer if it is full.
async fn send(socket: &UdpSocket, response: &[u8], to: SocketAddr) {
    let sent = match socket.try_send_to(response, to) {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
            socket.send_to(response, to).await
        }
        sent => sent,
    };
    if let Err(error) = sent {
        debug!(client = %to, %error, "udp send failed");
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
