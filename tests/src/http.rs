//! A tiny blocking HTTP/1.1 client for the resolver's HTTP API (and the test
//! web server): one request per connection (`Connection: close`), std only.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, read and write timeout of one request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status and body (chunked transfer coding removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} with a body that is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response.
///
/// The request is written in full even if the server answers early (a body
/// over its limit, say): a failed write is ignored as long as a response can
/// still be read.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let written = stream.write_all(&bytes);
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    match parse_response(&raw) {
        Some(response) => Ok(response),
        None => {
            written?;
            read?;
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "incomplete HTTP response: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            ))
        }
    }
}

/// Parses a complete response read up to the end of the connection.
fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        rest.get(..length)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `GET path`; panics if the exchange fails.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], &[])
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"))
}

/// `GET path`, expecting `200` and a JSON body.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let response = get(addr, path);
    assert_eq!(
        response.status,
        200,
        "GET http://{addr}{path}: {}",
        response.text()
    );
    response.json()
}

/// `POST path` with `headers` and `body`; panics if the exchange fails.
pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(addr, "POST", path, headers, body)
        .unwrap_or_else(|e| panic!("POST http://{addr}{path} failed: {e}"))
}

/// The members of a group as the admin API shows it
/// (`GET /v1/admin/groups/{adn}`): endpoint → drained.
pub fn spec_members(group: &serde_json::Value) -> BTreeMap<String, bool> {
    group["spec"]["members"]
        .as_array()
        .expect("spec.members is an array")
        .iter()
        .map(|m| {
            (
                format!(
                    "{}:{}",
                    m["address"].as_str().expect("a member address"),
                    m["port"]
                ),
                m["drained"].as_bool().expect("a drained flag"),
            )
        })
        .collect()
}

/// Whether the answers a resolver handed out have left every member of a
/// group as `GET /v1/groups/{adn}` shows it: what it has handed out since
/// each member's latest push is back to (all but) nothing, so its choice is
/// the one its estimates make at rest. Answers asked back to back are load
/// on its way, and rightly spill over from the best member once it is
/// taken; tests of the choice at rest wait for this before each query.
pub fn handouts_left(group: &serde_json::Value) -> bool {
    group["members"]
        .as_array()
        .expect("members is an array")
        .iter()
        .all(|m| {
            m["estimate"]["queue"]["since_push"]
                .as_f64()
                .is_none_or(|n| n < 0.05)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_length_chunks_or_neither() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        assert_eq!(r.header("content-length"), Some("2"));
        let r = parse_response(
            b"HTTP/1.1 413 Payload Too Large\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (413, &b"abcde"[..]));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\ngone").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"gone"[..]));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi"),
            None
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
