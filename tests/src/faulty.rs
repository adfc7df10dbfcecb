//! Peers that misbehave on purpose, for the fault tests, and a way to watch a
//! process's memory.
//!
//! * [`rss_kib`]: a process's resident set size, from `/proc/PID/status`.
//! * [`FaultyUpstream`]: a UDP "DNS server" that never answers, or answers
//!   every query with garbage of several kinds in turn.
//! * [`FaultyWeb`]: an HTTP listener for probe URLs that answers a byte a
//!   second, with an endless body, with garbage, or resets the connection.
//! * [`HoldingProxy`]: a TCP proxy that can hold back the server's answers,
//!   so a client can be killed while its request is in flight (the server
//!   has answered, the client has not seen it).
//! * [`SmallFs`]: a small tmpfs mounted on a directory, to be made
//!   read-only or full.
//! * [`closed_port`], [`free_port`]: loopback ports with nothing listening.
//!
//! The servers listen on loopback, stop when dropped, and count what they
//! received so tests can tell a fault was exercised; the mount is undone
//! when dropped.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often accept and receive loops look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// The resident set size of process `pid` in KiB (`VmRSS`); panics if the
/// process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A TCP port on `ip` with nothing listening: connections are refused. Bound
/// and released at once, so another process could take it meanwhile; use a
/// loopback address of the test's own (127.0.x.y) to make that unlikely.
pub fn free_port(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("cannot bind a free port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

/// A UDP address on 127.0.0.1 with nothing bound: a DNS server that is down.
pub fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket");
    socket.local_addr().expect("a bound socket has an address")
}

/// xorshift64: seeded junk without a dependency.
#[derive(Debug, Clone)]
pub struct Junk(pub u64);

impl Junk {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `len` junk bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

// ---------------------------------------------------------------------------
// A small file system that can be made read-only or full
// ---------------------------------------------------------------------------

/// A tmpfs of a fixed size mounted on a directory, so writes there can be
/// made to fail for real: `EROFS` once remounted read-only, `ENOSPC` once
/// filled. Needs root (the tests run as root; a failed mount is a failure,
/// not a skip). Unmounted when dropped, whatever the test did meanwhile.
#[derive(Debug)]
pub struct SmallFs {
    dir: std::path::PathBuf,
    filler: std::path::PathBuf,
}

impl SmallFs {
    /// Mounts a `size_kib` tmpfs on `dir` (an existing, empty directory).
    pub fn mount(dir: &std::path::Path, size_kib: u64) -> io::Result<SmallFs> {
        run_mount(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_kib}k,mode=0755"))
                .arg("tmpfs")
                .arg(dir),
        )?;
        Ok(SmallFs {
            dir: dir.to_path_buf(),
            filler: dir.join("filler"),
        })
    }

    /// Remounts it read-only (`true`) or read-write again (`false`).
    pub fn set_read_only(&self, read_only: bool) -> io::Result<()> {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        run_mount(
            std::process::Command::new("mount")
                .args(["-o", mode])
                .arg(&self.dir),
        )
    }

    /// Fills it: writes a filler file until the file system says `ENOSPC`,
    /// and returns the filler's size in bytes.
    pub fn fill(&self) -> io::Result<u64> {
        let mut file = std::fs::File::create(&self.filler)?;
        let block = [0u8; 4096];
        let mut size = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => size += n as u64,
                Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(size)
    }

    /// Removes the filler: there is room again.
    pub fn unfill(&self) -> io::Result<()> {
        std::fs::remove_file(&self.filler)
    }

    /// The filler's name in the directory (to tell it from other files).
    pub fn filler_name(&self) -> &std::ffi::OsStr {
        self.filler.file_name().unwrap_or_default()
    }
}

/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of a failed test has a file open):
            // detach it now, the kernel frees it once unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

fn run_mount(command: &mut std::process::Command) -> io::Result<()> {
    let output = command.output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

// ---------------------------------------------------------------------------
// A misbehaving upstream DNS server
// ---------------------------------------------------------------------------

/// How a [`FaultyUpstream`] treats queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    /// Receives and never answers (a black hole).
    Silent,
    /// Answers each datagram with one of [`GARBAGE_KINDS`] in turn.
    Garbage,
}

/// The garbage a [`UpstreamFault::Garbage`] upstream sends, in turn, one per
/// datagram received.
pub const GARBAGE_KINDS: [&str; 6] = [
    "random bytes",
    "the query's ID with the response bit and an undecodable body",
    "the query echoed back unchanged (not a response)",
    "a well-formed response to another ID",
    "a response with the query's ID for another question",
    "the query's ID, truncated (TC) and empty: TCP, which nobody serves",
];

/// A UDP server on 127.0.0.1 that misbehaves as told; stops when dropped.
#[derive(Debug)]
pub struct FaultyUpstream {
    addr: SocketAddr,
    datagrams: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyUpstream {
    /// Starts on a free port of 127.0.0.1.
    pub fn start(fault: UpstreamFault) -> io::Result<FaultyUpstream> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(POLL))?;
        let addr = socket.local_addr()?;
        let datagrams = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (datagrams, stop) = (datagrams.clone(), stop.clone());
            std::thread::spawn(move || serve_udp(&socket, fault, &datagrams, &stop))
        };
        Ok(FaultyUpstream {
            addr,
            datagrams,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_udp(socket: &UdpSocket, fault: UpstreamFault, datagrams: &AtomicU64, stop: &AtomicBool) {
    let mut junk = Junk(0x0bad_5eed_dead_beef);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, src)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let n = datagrams.fetch_add(1, Ordering::Relaxed);
        if fault == UpstreamFault::Silent || len < 12 {
            continue;
        }
        let query = &buf[..len];
        let kind = usize::try_from(n).unwrap_or(0) % GARBAGE_KINDS.len();
        let reply = garbage_reply(kind, query, &mut junk);
        let _ = socket.send_to(&reply, src);
    }
}

/// Garbage of kind `kind` (an index of [`GARBAGE_KINDS`]) for `query` (at
/// least a 12-byte header).
fn garbage_reply(kind: usize, query: &[u8], junk: &mut Junk) -> Vec<u8> {
    // Header flags: QR, opcode QUERY, RD and RA.
    const RESPONSE: [u8; 2] = [0x81, 0x80];
    // The same with TC.
    const TRUNCATED: [u8; 2] = [0x83, 0x80];
    let id = [query[0], query[1]];
    match kind {
        0 => {
            let len = usize::try_from(junk.next_u64() % 200).unwrap_or(0);
            junk.bytes(len)
        }
        1 => {
            // Counts promise a question and an answer the body cannot hold.
            let mut reply = id.to_vec();
            reply.extend_from_slice(&RESPONSE);
            reply.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
            reply.extend(junk.bytes(40));
            reply
        }
        2 => query.to_vec(),
        3 => {
            let mut reply = query.to_vec();
            reply[0] ^= 0x5a;
            reply[1] ^= 0xa5;
            reply[2..4].copy_from_slice(&RESPONSE);
            reply
        }
        4 => {
            // The query's header as a response with no question and no
            // records: it answers nothing that was asked.
            let mut reply = id.to_vec();
            reply.extend_from_slice(&RESPONSE);
            reply.extend_from_slice(&[0; 8]);
            reply
        }
        _ => {
            let mut reply = query.to_vec();
            reply[2..4].copy_from_slice(&TRUNCATED);
            reply
        }
    }
}

// ---------------------------------------------------------------------------
// A misbehaving web server for probe URLs
// ---------------------------------------------------------------------------

/// How a [`FaultyWeb`] answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFault {
    /// The whole response, status line first, a byte a second.
    DripHead,
    /// A `200` head at once (promising a small body), then the body a byte
    /// a second.
    DripBody,
    /// A `200` promising 1 GiB; the first [`FLOOD_BYTES`] of it at once.
    HugeBody,
    /// A `200` with no length, chunked, chunks without end; the first
    /// [`FLOOD_BYTES`] at once.
    EndlessChunks,
    /// Random bytes instead of HTTP, then the connection closed.
    Garbage,
    /// A well-formed `200` whose body is random bytes, not a probe file.
    NotAProbeFile,
    /// The request is left unread and the connection closed: a reset.
    Reset,
}

/// The size `HugeBody` promises.
pub const HUGE_BODY: u64 = 1 << 30;

/// How much of a huge or endless body is sent before the server waits for
/// the client to give up: four times the resolver's 256 KiB probe cap, so a
/// client that does not stop at its cap is still flooded, while loopback
/// socket buffers (megabytes) do not turn every probe into a copy of many
/// megabytes on the test machine.
pub const FLOOD_BYTES: u64 = 1 << 20;

#[derive(Debug, Default)]
struct WebShared {
    stop: AtomicBool,
    connections: AtomicU64,
    /// Bytes of response written, over every connection.
    written: AtomicU64,
    /// Open connections (a clone, to shut it down; none for resets) and
    /// their threads.
    open: Mutex<Vec<(Option<TcpStream>, JoinHandle<()>)>>,
}

/// An HTTP listener whose every answer is `fault`; stops when dropped.
#[derive(Debug)]
pub struct FaultyWeb {
    addr: SocketAddr,
    fault: ProbeFault,
    shared: Arc<WebShared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultyWeb {
    /// Listens on a free port of `ip`.
    pub fn start(ip: IpAddr, fault: ProbeFault) -> io::Result<FaultyWeb> {
        let listener = TcpListener::bind((ip, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(WebShared::default());
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_web(&listener, fault, &shared))
        };
        Ok(FaultyWeb {
            addr,
            fault,
            shared,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it does.
    pub fn fault(&self) -> ProbeFault {
        self.fault
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Response bytes written so far, over every connection.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }
}

impl Drop for FaultyWeb {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|p| p.into_inner()));
        for (stream, _) in &open {
            if let Some(stream) = stream {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        for (_, thread) in open {
            let _ = thread.join();
        }
    }
}

fn accept_web(listener: &TcpListener, fault: ProbeFault, shared: &Arc<WebShared>) {
    let mut seed = 0x5eed_0000_0000_0001_u64;
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                // A reset needs the thread's descriptor to be the only one:
                // the kernel resets a socket closed with unread data, and a
                // clone kept here would keep it open.
                let clone = if fault == ProbeFault::Reset {
                    None
                } else {
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    Some(clone)
                };
                seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let thread = {
                    let shared = shared.clone();
                    let junk = Junk(seed | 1);
                    std::thread::spawn(move || {
                        if fault == ProbeFault::Reset {
                            // Closing a socket with unread data makes the
                            // kernel send RST.
                            if await_request(&stream).is_ok() {
                                drop(stream);
                            }
                            return;
                        }
                        let closer = stream.try_clone();
                        let _ = answer(stream, fault, &shared, junk);
                        // Done (or failed): closed for the client now, clone or not.
                        if let Ok(closer) = closer {
                            let _ = closer.shutdown(Shutdown::Both);
                        }
                    })
                };
                let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
                open.retain(|(_, thread)| !thread.is_finished());
                open.push((clone, thread));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 4),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits (up to a few seconds) until the request's first bytes are there.
fn await_request(stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Reads the request head (up to its blank line, at most 16 KiB).
fn read_request_head(stream: &mut TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Waits until the client closes the connection (or `stopped` says the
/// server stops, checked every `poll`), discarding whatever it sends.
pub fn await_close(stream: &mut TcpStream, poll: Duration, stopped: &impl Fn() -> bool) {
    let _ = stream.set_read_timeout(Some(poll));
    let mut buf = [0u8; 1024];
    while !stopped() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn answer(
    mut stream: TcpStream,
    fault: ProbeFault,
    shared: &WebShared,
    mut junk: Junk,
) -> io::Result<()> {
    read_request_head(&mut stream)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let stopped = || shared.stop.load(Ordering::Relaxed);
    let write = |stream: &mut TcpStream, bytes: &[u8]| -> io::Result<()> {
        stream.write_all(bytes)?;
        shared
            .written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    };
    let body = br#"{"server":"127.0.0.1:80","state":"up","tufr_ms":1.0,"seq":1,"at_ms":1}"#;
    match fault {
        ProbeFault::DripHead | ProbeFault::DripBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let dripped = if fault == ProbeFault::DripBody {
                write(&mut stream, head.as_bytes())?;
                body.to_vec()
            } else {
                [head.as_bytes(), body].concat()
            };
            for byte in dripped {
                // A byte a second, until the client gives up (a write fails)
                // or the server stops.
                write(&mut stream, &[byte])?;
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until {
                    if stopped() {
                        return Ok(());
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
        ProbeFault::HugeBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUGE_BODY}\r\nconnection: close\r\n\r\n{{\"pad\":\""
            );
            write(&mut stream, head.as_bytes())?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0u64;
            while sent < FLOOD_BYTES {
                write(&mut stream, &chunk)?;
                sent += chunk.len() as u64;
            }
            await_close(&mut stream, POLL, &stopped);
        }
        ProbeFault::EndlessChunks => {
            write(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            )?;
            let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b' ', 16 * 1024));
            chunk.extend_from_slice(b"\r\n");
            let mut sent = 0u64;
            while sent < FLOOD_BYTES {
                write(&mut stream, &chunk)?;
                sent += chunk.len() as u64;
            }
            await_close(&mut stream, POLL, &stopped);
        }
        ProbeFault::Garbage => {
            let len = 512 + usize::try_from(junk.next_u64() % 2048).unwrap_or(0);
            write(&mut stream, &junk.bytes(len))?;
        }
        ProbeFault::NotAProbeFile => {
            let body = junk.bytes(300);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            write(&mut stream, head.as_bytes())?;
            write(&mut stream, &body)?;
        }
        // Answered where it was accepted.
        ProbeFault::Reset => {}
    }
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------
// A proxy that can hold the server's answers back
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ProxyShared {
    stop: AtomicBool,
    hold: AtomicBool,
    /// Reads from the server whose bytes are held back, not yet delivered.
    held: AtomicU64,
    /// What was held back, and every byte clients sent (both in arrival
    /// order, over every connection).
    held_bytes: Mutex<Vec<u8>>,
    sent: Mutex<Vec<u8>>,
    /// Connection threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A TCP proxy on loopback to one server. Requests always go through; while
/// [`HoldingProxy::hold`] is on, the server's answers are kept from the
/// client (and dropped with it). Stops when dropped.
#[derive(Debug)]
pub struct HoldingProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

impl HoldingProxy {
    /// Listens on a free port of `ip`, forwarding to `server`.
    pub fn start(ip: IpAddr, server: SocketAddr) -> io::Result<HoldingProxy> {
        let listener = TcpListener::bind((ip, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ProxyShared::default());
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_proxy(&listener, server, &shared))
        };
        Ok(HoldingProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds the server's answers back from now on (`true`), or lets the
    /// later ones through again (`false`; what was held stays held).
    pub fn hold(&self, hold: bool) {
        self.shared.hold.store(hold, Ordering::SeqCst);
    }

    /// How many reads of server answers have been held back so far.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// The answers held back so far, as the server sent them.
    pub fn held_bytes(&self) -> Vec<u8> {
        lock(&self.shared.held_bytes).clone()
    }

    /// Everything clients sent (and the server got) so far, over every
    /// connection in arrival order: for requests made one at a time, the
    /// last one is at the end.
    pub fn sent(&self) -> Vec<u8> {
        lock(&self.shared.sent).clone()
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_proxy(listener: &TcpListener, server: SocketAddr, shared: &Arc<ProxyShared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let pair = (client.try_clone(), upstream.try_clone(), client, upstream);
                let (Ok(client_reader), Ok(upstream_reader), client, upstream) = pair else {
                    continue;
                };
                let up = {
                    let shared = shared.clone();
                    std::thread::spawn(move || relay(client_reader, upstream, &shared, false))
                };
                let down = {
                    let shared = shared.clone();
                    std::thread::spawn(move || relay(upstream_reader, client, &shared, true))
                };
                let mut threads = shared.threads.lock().unwrap_or_else(|p| p.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.extend([up, down]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 4),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Copies `from` to `to` until either ends or the proxy stops; answers
/// (`holdable`) are dropped while the proxy holds.
fn relay(mut from: TcpStream, mut to: TcpStream, shared: &ProxyShared, holdable: bool) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !holdable {
                    lock(&shared.sent).extend_from_slice(&buf[..n]);
                } else if shared.hold.load(Ordering::SeqCst) {
                    lock(&shared.held_bytes).extend_from_slice(&buf[..n]);
                    shared.held.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn rss_of_this_process_is_plausible() {
        let kib = rss_kib(std::process::id());
        assert!(kib > 100 && kib < 64 * 1024 * 1024, "{kib} KiB");
    }

    #[test]
    fn small_fs_turns_read_only_and_full() {
        let dir = tempfile::tempdir().unwrap();
        let fs = SmallFs::mount(dir.path(), 64).expect("tmpfs mount (the tests run as root)");
        let file = dir.path().join("f");
        std::fs::write(&file, b"one").unwrap();
        fs.set_read_only(true).unwrap();
        let e = std::fs::write(dir.path().join("g"), b"two").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(30), "EROFS: {e}");
        fs.set_read_only(false).unwrap();
        let filled = fs.fill().unwrap();
        assert!(filled > 0 && filled <= 64 * 1024, "{filled}");
        let e = std::fs::write(dir.path().join("g"), [0u8; 8192]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC), "{e}");
        fs.unfill().unwrap();
        std::fs::write(dir.path().join("g"), [0u8; 8192]).unwrap();
        drop(fs);
        // Unmounted: the directory shows what was under the mount (nothing).
        assert!(!file.exists());
    }

    #[test]
    fn garbage_upstream_sends_every_kind_in_turn() {
        let upstream = FaultyUpstream::start(UpstreamFault::Garbage).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
        ];
        let mut replies = Vec::new();
        for _ in 0..GARBAGE_KINDS.len() {
            socket.send_to(&query, upstream.addr()).unwrap();
            let mut buf = [0u8; 512];
            let (n, _) = socket.recv_from(&mut buf).unwrap();
            replies.push(buf[..n].to_vec());
        }
        assert_eq!(upstream.datagrams(), GARBAGE_KINDS.len() as u64);
        assert_eq!(replies[1][..4], [0x12, 0x34, 0x81, 0x80]);
        assert_eq!(replies[2], query);
        assert_ne!(replies[3][..2], [0x12, 0x34]);
        assert_eq!(replies[4].len(), 12);
        assert_eq!(replies[5][2] & 0x02, 0x02, "TC");
    }

    #[test]
    fn silent_upstream_counts_and_says_nothing() {
        let upstream = FaultyUpstream::start(UpstreamFault::Silent).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        socket.send_to(&[0; 17], upstream.addr()).unwrap();
        let mut buf = [0u8; 512];
        assert!(socket.recv_from(&mut buf).is_err());
        assert_eq!(upstream.datagrams(), 1);
    }

    fn get(addr: SocketAddr) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_millis(300)))?;
        stream.write_all(b"GET /p HTTP/1.1\r\nhost: x\r\n\r\n")?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        // Whatever came within 1.5 s, however slowly.
        while start.elapsed() < Duration::from_millis(1500) {
            match stream.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.len() > 4 << 20 {
                        return Ok(got);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if got.is_empty() => return Err(e),
                Err(_) => return Ok(got),
            }
        }
        Ok(got)
    }

    #[test]
    fn faulty_web_misbehaves_as_told() {
        let drip = FaultyWeb::start(LOCALHOST, ProbeFault::DripHead).unwrap();
        let got = get(drip.addr()).unwrap();
        assert!((1..=3).contains(&got.len()), "{} bytes in 1.5 s", got.len());
        let drip = FaultyWeb::start(LOCALHOST, ProbeFault::DripBody).unwrap();
        let got = String::from_utf8(get(drip.addr()).unwrap()).unwrap();
        let (_, body) = got.split_once("\r\n\r\n").unwrap();
        assert!((1..=3).contains(&body.len()), "{got:?}");
        for fault in [ProbeFault::HugeBody, ProbeFault::EndlessChunks] {
            let huge = FaultyWeb::start(LOCALHOST, fault).unwrap();
            let got = get(huge.addr()).unwrap().len() as u64;
            assert!(
                got > FLOOD_BYTES && got < FLOOD_BYTES + 1024,
                "{fault:?}: {got}"
            );
        }
        let garbage = FaultyWeb::start(LOCALHOST, ProbeFault::Garbage).unwrap();
        assert!(!get(garbage.addr()).unwrap().starts_with(b"HTTP/"));
        let not_probe = FaultyWeb::start(LOCALHOST, ProbeFault::NotAProbeFile).unwrap();
        assert!(get(not_probe.addr()).unwrap().starts_with(b"HTTP/1.1 200"));
        let reset = FaultyWeb::start(LOCALHOST, ProbeFault::Reset).unwrap();
        let err = get(reset.addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(reset.connections(), 1);
    }

    #[test]
    fn holding_proxy_relays_then_holds() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in echo.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = HoldingProxy::start(LOCALHOST, server).unwrap();
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        proxy.hold(true);
        client.write_all(b"pong").unwrap();
        assert!(client.read(&mut buf).is_err(), "held back");
        assert_eq!(proxy.held(), 1);
        assert_eq!(proxy.held_bytes(), b"pong");
        assert_eq!(proxy.sent(), b"pingpong");
    }
}
