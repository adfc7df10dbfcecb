//! A small test web server on loopback, standing in for the replicated server
//! the agent measures.
//!
//! HTTP/1.1 with keep-alive (the agent's client reuses connections), one
//! thread per connection. The test sets, at runtime, how long the server waits
//! before writing a response head ([`WebServer::set_delay`]): that delay is the
//! server's time until first read as the agent measures it. Any path gets a
//! small `200` body, except that a file under the docroot (if one was given)
//! is served as it is on disk at request time, so the probe file the agent
//! writes there can be fetched like a client would. Requests are counted.
//!
//! Like nginx, it has a `stub_status` page ([`STUB_STATUS_PATH`]), answered
//! at once (outside any delay), whose `Writing` is the requests it is
//! handling plus one (the status request itself, as nginx counts it). And
//! the test can hold requests open: while [`WebServer::hold`] is in force,
//! requests for [`HOLD_PATH`] wait (after the delay) until
//! [`WebServer::release`].
//!
//! Dropping the server closes its listener and every open connection, so the
//! server is gone for the agent: new connections are refused and pooled ones
//! see end of stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The body of every response that is not a file.
pub const BODY: &[u8] = b"hello from the test web server\n";

/// The path of the nginx-style `stub_status` page.
pub const STUB_STATUS_PATH: &str = "/nginx_status";

/// Requests for this path wait while the server holds them.
pub const HOLD_PATH: &str = "/hold";

/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Longest request head accepted (bytes); longer ones close the connection.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Shared {
    delay_nanos: AtomicU64,
    requests: AtomicU64,
    /// Requests for files under the docroot (the probe file, in practice).
    file_requests: AtomicU64,
    /// Reads of the status page (not in `requests`).
    status_requests: AtomicU64,
    /// Requests being handled now (read, not yet answered), status reads
    /// not counted.
    in_flight: AtomicU64,
    /// Connections accepted, and open now (for the status page).
    accepted: AtomicU64,
    open: AtomicU64,
    /// Whether requests for [`HOLD_PATH`] wait; `released` wakes them.
    holding: Mutex<bool>,
    released: Condvar,
    stop: AtomicBool,
    docroot: Option<PathBuf>,
    /// Open connections (a clone of each stream, to shut it down) and their threads.
    connections: Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
}

/// A running test web server; stops when dropped.
#[derive(Debug)]
pub struct WebServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Serves on `addr` (port 0 picks a free port) with no delay.
    pub fn start(addr: impl ToSocketAddrs) -> io::Result<WebServer> {
        WebServer::serve(addr, None)
    }

    /// Serves on `addr`, with the files under `docroot` served as they are.
    pub fn with_docroot(addr: impl ToSocketAddrs, docroot: &Path) -> io::Result<WebServer> {
        WebServer::serve(addr, Some(docroot.to_path_buf()))
    }

    fn serve(addr: impl ToSocketAddrs, docroot: Option<PathBuf>) -> io::Result<WebServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            docroot,
            ..Shared::default()
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Ok(WebServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Sets the delay before each response head from now on.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.shared.delay_nanos.load(Ordering::Relaxed))
    }

    /// Requests received so far (complete request heads), status reads not
    /// counted.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Requests being handled now (waiting out the delay or a hold, or
    /// being answered), status reads not counted.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Reads of the status page so far.
    pub fn status_requests(&self) -> u64 {
        self.shared.status_requests.load(Ordering::Relaxed)
    }

    /// `http://ADDR/nginx_status`.
    pub fn stub_status_url(&self) -> String {
        format!("http://{}{STUB_STATUS_PATH}", self.addr)
    }

    /// From now on, requests for [`HOLD_PATH`] wait until [`release`].
    ///
    /// [`release`]: WebServer::release
    pub fn hold(&self) {
        *self
            .shared
            .holding
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Lets every held request go on, and later ones through.
    pub fn release(&self) {
        *self
            .shared
            .holding
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = false;
        self.shared.released.notify_all();
    }

    /// Requests so far that named a file under the docroot: probes of the
    /// probe file, as opposed to the agent's measurements of `/`.
    pub fn file_requests(&self) -> u64 {
        self.shared.file_requests.load(Ordering::Relaxed)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Held requests wake and see the stop flag.
        self.release();
        // The accept thread owns the listener: once joined, the port is closed.
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (stream, _) in &connections {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for (_, thread) in connections {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let thread = {
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let closer = stream.try_clone();
                        let _open = Count::enter(&shared.open);
                        let _ = serve_connection(stream, &shared);
                        // The accept loop holds a clone of the socket (to
                        // shut it down on drop): close it for the client now.
                        if let Ok(closer) = closer {
                            let _ = closer.shutdown(std::net::Shutdown::Both);
                        }
                    })
                };
                let mut connections = shared.connections.lock().unwrap_or_else(|p| p.into_inner());
                connections.retain(|(_, thread)| !thread.is_finished());
                connections.push((clone, thread));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors and the like: back off, keep serving.
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// One request head, as much as the server cares about.
struct Head {
    method: String,
    path: String,
    content_length: u64,
    close: bool,
}

/// Reads one request head; `Ok(None)` at a clean end of stream.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut line = String::new();
    // Tolerate empty lines before a request (RFC 9112, 2.2).
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut head = Head {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length: 0,
        close: version == "HTTP/1.0",
    };
    let mut size = line.len();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        size += n;
        if n == 0 || size > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request head",
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                head.close = true;
            } else if value.contains("keep-alive") {
                head.close = false;
            }
        }
    }
}

/// One more in a counter while alive.
struct Count<'a>(&'a AtomicU64);

impl<'a> Count<'a> {
    fn enter(counter: &'a AtomicU64) -> Count<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Count(counter)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// nginx's `stub_status` page, as nginx writes it (trailing spaces
/// included): `Writing` counts the status request itself, `Waiting` the
/// idle keep-alive connections.
fn stub_status(shared: &Shared) -> String {
    let writing = shared.in_flight.load(Ordering::Relaxed) + 1;
    let active = shared.open.load(Ordering::Relaxed).max(writing);
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let requests =
        shared.requests.load(Ordering::Relaxed) + shared.status_requests.load(Ordering::Relaxed);
    format!(
        "Active connections: {active} \nserver accepts handled requests\n {accepted} {accepted} {requests} \nReading: 0 Writing: {writing} Waiting: {} \n",
        active - writing
    )
}

/// Waits while the server holds requests (or until it stops).
fn wait_while_held(shared: &Shared) {
    let mut holding = shared.holding.lock().unwrap_or_else(|p| p.into_inner());
    while *holding && !shared.stop.load(Ordering::Relaxed) {
        holding = shared
            .released
            .wait(holding)
            .unwrap_or_else(|p| p.into_inner());
    }
}

fn write_response(
    writer: &mut TcpStream,
    head: &Head,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\n{}\r\n",
        body.len(),
        if head.close {
            "connection: close\r\n"
        } else {
            ""
        }
    )
    .into_bytes();
    if head.method != "HEAD" {
        response.extend_from_slice(body);
    }
    writer.write_all(&response)
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(head) = read_head(&mut reader)? {
        // The body (a client's POST, say) is read and ignored.
        io::copy(
            &mut reader.by_ref().take(head.content_length),
            &mut io::sink(),
        )?;
        let path = head.path.split(['?', '#']).next().unwrap_or("");
        if path == STUB_STATUS_PATH {
            // At once, outside any delay, like nginx's own page.
            shared.status_requests.fetch_add(1, Ordering::Relaxed);
            write_response(
                &mut writer,
                &head,
                "text/plain",
                stub_status(shared).as_bytes(),
            )?;
            if head.close {
                return Ok(());
            }
            continue;
        }
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let _handling = Count::enter(&shared.in_flight);
        let delay = Duration::from_nanos(shared.delay_nanos.load(Ordering::Relaxed));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if path == HOLD_PATH {
            wait_while_held(shared);
        }
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let file = file_for(shared.docroot.as_deref(), &head.path);
        if file.is_some() {
            shared.file_requests.fetch_add(1, Ordering::Relaxed);
        }
        let (content_type, body) = match file {
            Some(path) => match std::fs::read(&path) {
                Ok(bytes) => (content_type_of(&path), bytes),
                Err(_) => ("text/plain", BODY.to_vec()),
            },
            None => ("text/plain", BODY.to_vec()),
        };
        write_response(&mut writer, &head, content_type, &body)?;
        if head.close {
            return Ok(());
        }
    }
    Ok(())
}

/// The file under `docroot` that `path` names, if it is a regular file (no
/// `..`, query ignored).
fn file_for(docroot: Option<&Path>, path: &str) -> Option<PathBuf> {
    let docroot = docroot?;
    let path = path.split(['?', '#']).next()?.trim_start_matches('/');
    let relative = Path::new(path);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let full = docroot.join(relative);
    full.is_file().then_some(full)
}

fn content_type_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("html") => "text/html",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::wait_until;
    use crate::http;
    use std::time::Instant;

    /// `Writing` of the server's status page.
    fn writing(server: &WebServer) -> u64 {
        let page = http::get(server.addr(), STUB_STATUS_PATH).text();
        page.split_whitespace()
            .skip_while(|w| *w != "Writing:")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no Writing in {page:?}"))
    }

    #[test]
    fn stub_status_counts_the_requests_in_hand_and_held_ones_wait() {
        let server = WebServer::start("127.0.0.1:0").unwrap();
        // The status request itself, and nothing else.
        let page = http::get(server.addr(), STUB_STATUS_PATH).text();
        assert!(
            page.starts_with("Active connections: 1 \nserver accepts handled requests\n")
                && page.ends_with("Reading: 0 Writing: 1 Waiting: 0 \n"),
            "{page:?}"
        );
        // Answered at once whatever the delay; not a request for requests().
        server.set_delay(Duration::from_secs(3));
        let start = Instant::now();
        assert_eq!(writing(&server), 1);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        server.set_delay(Duration::ZERO);
        assert_eq!((server.requests(), server.status_requests()), (0, 2));

        // Three held requests are in hand until released.
        server.hold();
        let addr = server.addr();
        let held: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || http::get(addr, HOLD_PATH).status))
            .collect();
        assert!(
            wait_until(Duration::from_secs(5), || server.in_flight() == 3),
            "{} in flight",
            server.in_flight()
        );
        assert_eq!(writing(&server), 4);
        // Other paths are not held.
        assert_eq!(http::get(addr, "/").status, 200);
        server.release();
        for h in held {
            assert_eq!(h.join().unwrap(), 200);
        }
        assert!(wait_until(Duration::from_secs(5), || server.in_flight() == 0));
        assert_eq!(writing(&server), 1);
        assert_eq!(server.requests(), 4);
    }

    #[test]
    fn a_held_request_ends_when_the_server_is_dropped() {
        let server = WebServer::start("127.0.0.1:0").unwrap();
        server.hold();
        let addr = server.addr();
        let held = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            rest
        });
        assert!(wait_until(Duration::from_secs(5), || server.in_flight() == 1));
        drop(server);
        assert_eq!(held.join().unwrap(), b"", "closed without an answer");
    }

    #[test]
    fn serves_with_keep_alive_the_delay_and_files() {
        let docroot = tempfile::tempdir().unwrap();
        std::fs::create_dir(docroot.path().join("sub")).unwrap();
        std::fs::write(docroot.path().join("sub/f.json"), b"{\"a\":1}").unwrap();
        let server = WebServer::with_docroot("127.0.0.1:0", docroot.path()).unwrap();
        let start = Instant::now();
        let response = http::get(server.addr(), "/anything");
        assert_eq!((response.status, response.body.as_slice()), (200, BODY));
        let response = http::get(server.addr(), "/sub/f.json");
        assert_eq!(response.body, b"{\"a\":1}");
        assert_eq!(http::get(server.addr(), "/../etc/passwd").body, BODY);
        // Each answered and closed at once (`connection: close`).
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );

        // Two requests on one connection, the second delayed.
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let read_response = |reader: &mut BufReader<TcpStream>| {
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length: ") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            body
        };
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader), BODY);
        server.set_delay(Duration::from_millis(150));
        let start = Instant::now();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader), BODY);
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!(server.requests(), 5);

        // Dropped: the pooled connection ends and new ones are refused.
        let addr = server.addr();
        drop(server);
        let mut rest = Vec::new();
        assert!(matches!(reader.read_to_end(&mut rest), Ok(0) | Err(_)));
        assert!(TcpStream::connect(addr).is_err());
    }
}
