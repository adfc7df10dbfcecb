//! A UDP socket and a TCP listener on the same address.
//!
//! A DNS server listens on one address for both transports: a client that
//! gets a truncated answer over UDP asks again over TCP at the same address.
//! With port 0 the kernel picks the UDP port, and TCP must take the same
//! number, which another socket of the machine may already hold (an
//! outgoing connection's local port, another test's listener). Binding the
//! pair once and failing on that is a race with whatever else the machine
//! runs, so [`bind`] draws a new UDP port and tries again.
//!
//! The resolver's listeners, the lab's baseline DNS server and every test
//! fake that pairs the two transports bind through here: one way to do it,
//! retried the same way everywhere. The sockets are blocking `std` sockets;
//! async callers convert them (`set_nonblocking`, then `from_std`).

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel completes and queues for the TCP listener. The
/// usual 128 overflows when a burst of clients connects faster than the
/// accept loop takes them (each excess one then waits a second for its SYN
/// to be sent again); a larger queue costs only kernel memory for
/// connections being made.
pub const TCP_BACKLOG: i32 = 1024;

/// The receive buffer asked for each UDP socket, in bytes.
pub const UDP_RECEIVE_BUFFER: usize = 1 << 20;

/// Fresh UDP ports tried, with port 0, before giving up. Each try fails only
/// if TCP finds the port the kernel gave UDP taken, which is rare; twenty in a
/// row means something is wrong with the machine, not bad luck.
const TRIES: usize = 20;

/// A UDP socket and a TCP listener bound on the same address.
#[derive(Debug)]
pub struct Pair {
    /// The datagram socket.
    pub udp: UdpSocket,
    /// The stream listener, already listening with [`TCP_BACKLOG`].
    pub tcp: TcpListener,
}

impl Pair {
    /// The address both are bound on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Binds UDP and TCP on `addr`. With port 0 the kernel picks a UDP port and
/// TCP takes the same number; if TCP finds it taken, the pair is released and
/// another port drawn, up to [`TRIES`] times. With a fixed port there is
/// nothing to retry: the error is returned as it is.
pub fn bind(addr: SocketAddr) -> io::Result<Pair> {
    let (mut udp, tcp) = bind_shared(addr, 1)?;
    let udp = udp.pop().expect("one UDP socket asked for");
    Ok(Pair { udp, tcp })
}

/// Like [`bind`], with `udp_sockets` UDP sockets (at least one) on the same
/// address that share its datagrams (`SO_REUSEPORT`: the kernel gives each
/// client's datagrams to one of them), so as many threads can each read
/// their own. Only sockets of the same user can join them.
pub fn bind_shared(
    addr: SocketAddr,
    udp_sockets: usize,
) -> io::Result<(Vec<UdpSocket>, TcpListener)> {
    let shared = udp_sockets > 1;
    for _ in 0..TRIES {
        let first = bind_udp(addr, shared)?;
        let bound = first.local_addr()?;
        let mut udp = vec![first];
        for _ in 1..udp_sockets {
            udp.push(bind_udp(bound, true)?);
        }
        match listen_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no port free for both UDP and TCP on {} in {TRIES} tries",
            addr.ip()
        ),
    ))
}

/// A UDP socket bound on `addr`, sharing it (`SO_REUSEPORT`) if `shared`.
fn bind_udp(addr: SocketAddr, shared: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    // Room for bursts: the default (about 200 KiB, some 200 small
    // datagrams) overflows when a burst arrives while a batch is being
    // answered. The kernel caps it at net.core.rmem_max; a failure leaves
    // the default.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP listener as `TcpListener::bind` makes it (`SO_REUSEADDR`, so a port
/// whose last connections are in TIME_WAIT can be listened on again), with a
/// longer accept queue.
fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn both_transports_share_the_port_the_kernel_picked() {
        let pair = bind(loopback()).unwrap();
        let addr = pair.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(pair.tcp.local_addr().unwrap(), addr);
        std::net::TcpStream::connect(addr).unwrap();
        let client = UdpSocket::bind(loopback()).unwrap();
        client.send_to(b"ping", addr).unwrap();
        let mut buf = [0; 8];
        let (len, from) = pair.udp.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..len], from),
            (&b"ping"[..], client.local_addr().unwrap())
        );
    }

    /// The race of issue 16: the port the kernel gives UDP is already a TCP
    /// listener's. With 500 TCP ports held (about 2 % of the ephemeral
    /// range), 500 binds meet such a port about ten times; a single
    /// UDP-then-TCP bind would fail there, `bind` must draw another.
    #[test]
    fn a_port_taken_for_tcp_is_skipped_not_failed_on() {
        let taken: Vec<TcpListener> = (0..500)
            .map(|_| TcpListener::bind(loopback()).unwrap())
            .collect();
        let held: std::collections::HashSet<u16> = taken
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        for _ in 0..500 {
            let pair = bind(loopback()).expect("bind draws past taken ports");
            assert!(!held.contains(&pair.local_addr().unwrap().port()));
        }
    }

    #[test]
    fn a_fixed_port_that_is_taken_is_an_error_not_a_retry() {
        let tcp = TcpListener::bind(loopback()).unwrap();
        let addr = tcp.local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
