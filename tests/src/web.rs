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
//! Dropping the server closes its listener and every open connection, so the
//! server is gone for the agent: new connections are refused and pooled ones
//! see end of stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The body of every response that is not a file.
pub const BODY: &[u8] = b"hello from the test web server\n";

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

    /// Requests received so far (complete request heads).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
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
                let thread = {
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let closer = stream.try_clone();
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
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let delay = Duration::from_nanos(shared.delay_nanos.load(Ordering::Relaxed));
        if !delay.is_zero() {
            std::thread::sleep(delay);
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
            response.extend_from_slice(&body);
        }
        writer.write_all(&response)?;
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
    use crate::http;
    use std::time::Instant;

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
