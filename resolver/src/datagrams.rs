//! Datagrams read and sent many at a time: one `recvmmsg` reads up to
//! [`BATCH`] requests and one `sendmmsg` sends their answers (Linux), so
//! under load a query costs a fraction of a system call each way instead of
//! one, as in gdnsd and Knot DNS.
//!
//! [`Inbox`] and [`Outbox`] own their buffers and reuse them: nothing is
//! allocated per datagram. They only hold bytes and addresses; the caller
//! waits for the socket to be ready.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams read or sent by one system call, at most.
pub const BATCH: usize = 32;

/// A socket address as the kernel reads and writes it.
#[derive(Clone, Copy)]
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: all zeroes is a valid `sockaddr_storage` (family 0).
            storage: unsafe { mem::zeroed() },
            len: socklen::<libc::sockaddr_storage>(),
        }
    }

    fn from_socket_addr(addr: SocketAddr) -> RawAddr {
        let mut raw = RawAddr::empty();
        match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned for
                // every socket address type.
                unsafe {
                    (&raw mut raw.storage)
                        .cast::<libc::sockaddr_in>()
                        .write(sin)
                };
                raw.len = socklen::<libc::sockaddr_in>();
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above.
                unsafe {
                    (&raw mut raw.storage)
                        .cast::<libc::sockaddr_in6>()
                        .write(sin6)
                };
                raw.len = socklen::<libc::sockaddr_in6>();
            }
        }
        raw
    }

    /// The address, if it is an IPv4 or IPv6 one.
    fn to_socket_addr(self) -> Option<SocketAddr> {
        let storage = &raw const self.storage;
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if self.len >= socklen::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a `sockaddr_in`.
                let sin = unsafe { storage.cast::<libc::sockaddr_in>().read() };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
            }
            libc::AF_INET6 if self.len >= socklen::<libc::sockaddr_in6>() => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let sin6 = unsafe { storage.cast::<libc::sockaddr_in6>().read() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
            }
            _ => None,
        }
    }
}

fn socklen<T>() -> libc::socklen_t {
    mem::size_of::<T>() as libc::socklen_t
}

/// Datagrams read by [`Inbox::receive`].
pub struct Inbox {
    /// [`BATCH`] buffers of `size` bytes, one after the other.
    buffers: Vec<u8>,
    size: usize,
    lens: [usize; BATCH],
    sources: [RawAddr; BATCH],
    count: usize,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("size", &self.size)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Room for [`BATCH`] datagrams of up to `size` bytes (longer ones are
    /// cut to `size`).
    pub fn new(size: usize) -> Inbox {
        Inbox {
            buffers: vec![0; BATCH * size],
            size,
            lens: [0; BATCH],
            sources: [RawAddr::empty(); BATCH],
            count: 0,
        }
    }

    /// Reads the datagrams waiting on `socket`, up to [`BATCH`], without
    /// waiting (`WouldBlock` when there are none); how many.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.count = 0;
        let mut iovecs: [libc::iovec; BATCH] = [empty_iovec(); BATCH];
        // SAFETY: all zeroes is a valid `mmsghdr` (null pointers, zero lengths).
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, (chunk, iovec)) in self
            .buffers
            .chunks_exact_mut(self.size)
            .zip(&mut iovecs)
            .enumerate()
        {
            *iovec = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            };
            self.sources[i] = RawAddr::empty();
            let header = &mut headers[i].msg_hdr;
            header.msg_name = (&raw mut self.sources[i].storage).cast();
            header.msg_namelen = self.sources[i].len;
            header.msg_iov = iovec;
            header.msg_iovlen = 1;
        }
        let fd: RawFd = socket.as_raw_fd();
        // SAFETY: each header points at one of our buffers and address
        // storages, which outlive the call and are not otherwise borrowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, header) in headers.iter().take(n).enumerate() {
            self.lens[i] = (header.msg_len as usize).min(self.size);
            self.sources[i].len = header.msg_hdr.msg_namelen;
        }
        self.count = n;
        Ok(n)
    }

    /// The datagrams read last, with who sent each (`None` for an address
    /// that is neither IPv4 nor IPv6).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.count).map(|i| {
            let start = i * self.size;
            (
                &self.buffers[start..start + self.lens[i]],
                self.sources[i].to_socket_addr(),
            )
        })
    }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// Answers waiting to be sent by [`Outbox::send`].
pub struct Outbox {
    answers: Vec<Vec<u8>>,
    to: [RawAddr; BATCH],
    /// Answers queued; those before `sent` are gone.
    count: usize,
    sent: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("count", &self.count)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            answers: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            to: [RawAddr::empty(); BATCH],
            count: 0,
            sent: 0,
        }
    }
}

impl Outbox {
    /// The buffer for the next answer, emptied: write it, then
    /// [`Outbox::queue`] it. `None` when [`BATCH`] answers wait.
    pub fn blank(&mut self) -> Option<&mut Vec<u8>> {
        let answer = self.answers.get_mut(self.count)?;
        answer.clear();
        Some(answer)
    }

    /// Queues the answer written in [`Outbox::blank`]'s buffer, to `to`.
    pub fn queue(&mut self, to: SocketAddr) {
        if self.count < BATCH {
            self.to[self.count] = RawAddr::from_socket_addr(to);
            self.count += 1;
        }
    }

    /// Whether every queued answer is sent (or dropped).
    pub fn is_empty(&self) -> bool {
        self.sent == self.count
    }

    /// Sends the queued answers not sent yet, as many as the socket takes
    /// without waiting. An error is the first one's (`WouldBlock` when the
    /// socket's buffer is full): drop it with [`Outbox::drop_first`] unless
    /// waiting helps. Empties the box once all are gone.
    pub fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let pending = self.count - self.sent;
        let mut iovecs: [libc::iovec; BATCH] = [empty_iovec(); BATCH];
        // SAFETY: all zeroes is a valid `mmsghdr`.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..pending {
            let k = self.sent + i;
            let answer = &mut self.answers[k];
            iovecs[i] = libc::iovec {
                iov_base: answer.as_mut_ptr().cast(),
                iov_len: answer.len(),
            };
            let header = &mut headers[i].msg_hdr;
            header.msg_name = (&raw mut self.to[k].storage).cast();
            header.msg_namelen = self.to[k].len;
            header.msg_iov = &raw mut iovecs[i];
            header.msg_iovlen = 1;
        }
        // SAFETY: each header points at a queued answer and its address,
        // which outlive the call; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                pending as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        self.sent += n;
        self.reset_if_done();
        Ok(n)
    }

    /// Gives up on the first answer not sent yet.
    pub fn drop_first(&mut self) {
        self.sent = (self.sent + 1).min(self.count);
        self.reset_if_done();
    }

    fn reset_if_done(&mut self) {
        if self.sent == self.count {
            (self.sent, self.count) = (0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn addresses_go_to_the_kernel_and_back_unchanged() {
        for addr in ["127.0.0.1:53", "[::1]:5353", "[fe80::1%2]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(RawAddr::from_socket_addr(addr).to_socket_addr(), Some(addr));
        }
    }

    #[test]
    fn a_batch_read_and_answered_reaches_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, client) in clients.iter().enumerate() {
            client
                .send_to(&[i as u8; 3], server.local_addr().unwrap())
                .unwrap();
        }
        let mut inbox = Inbox::new(2);
        let mut outbox = Outbox::default();
        let mut seen = 0;
        while seen < clients.len() {
            match inbox.receive(&server) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
            for (request, from) in inbox.datagrams() {
                // Cut to the inbox's size.
                assert_eq!(request.len(), 2);
                let answer = outbox.blank().unwrap();
                answer.extend_from_slice(b"re:");
                answer.extend_from_slice(request);
                outbox.queue(from.unwrap());
                seen += 1;
            }
        }
        while !outbox.is_empty() {
            outbox.send(&server).unwrap();
        }
        for (i, client) in clients.iter().enumerate() {
            let mut buf = [0; 16];
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, server.local_addr().unwrap());
            assert_eq!(&buf[..len], [b'r', b'e', b':', i as u8, i as u8]);
        }
    }
}
