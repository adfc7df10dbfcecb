//! A small blocking DNS client for the tests: hickory-proto messages or raw
//! bytes, over UDP (from any loopback address) or TCP, and [`dig`].

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// How long a query waits for its answer when one is expected.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait before concluding that no answer is coming.
pub const NO_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// A fully qualified name from text, taking each dot-separated label as raw
/// bytes, so names such as `Web%any.example.net` (with `%`) are allowed.
pub fn dns_name(text: &str) -> Name {
    let text = text.strip_suffix('.').unwrap_or(text);
    let labels: Vec<&[u8]> = text.split('.').map(str::as_bytes).collect();
    Name::from_labels(labels).unwrap_or_else(|e| panic!("{text:?} is not a DNS name: {e}"))
}

/// A recursive query for `name`/`rtype`, without EDNS.
pub fn query_message(name: &str, rtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(dns_name(name), rtype));
    message
}

/// The same query with an OPT record advertising `payload` at `version`.
pub fn with_edns(mut message: Message, payload: u16, version: u8) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload).set_version(version);
    message.set_edns(edns);
    message
}

/// Encodes a message (panics on failure: the tests build valid ones).
pub fn encode(message: &Message) -> Vec<u8> {
    message.to_vec().expect("cannot encode the query")
}

/// Decodes a response, with the bytes in the panic message if it fails.
pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("undecodable response {bytes:02x?}: {e}"))
}

/// How many bytes follow the message that the header's counts describe (0 in
/// a well-formed message). Panics if the message does not decode.
pub fn trailing_bytes(bytes: &[u8]) -> usize {
    let mut decoder = BinDecoder::new(bytes);
    Message::read(&mut decoder)
        .unwrap_or_else(|e| panic!("undecodable response {bytes:02x?}: {e}"));
    decoder.len()
}

/// Sends `bytes` in one datagram from `from` (any port) to `addr` and returns
/// the first datagram that comes back from `addr`, or `None` after `timeout`.
pub fn exchange_udp(
    addr: SocketAddr,
    from: IpAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    let socket =
        UdpSocket::bind(SocketAddr::new(from, 0)).expect("cannot bind a UDP client socket");
    socket.send_to(bytes, addr).expect("cannot send a datagram");
    receive_from(&socket, addr, timeout)
}

/// The next datagram on `socket` from `addr`, or `None` after `timeout`.
pub fn receive_from(socket: &UdpSocket, addr: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())?;
        socket
            .set_read_timeout(Some(left))
            .expect("cannot set a read timeout");
        match socket.recv_from(&mut buf) {
            Ok((len, src)) if src == addr => return Some(buf[..len].to_vec()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            // ICMP port unreachable from an earlier send, and the like.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return None,
            Err(e) => panic!("UDP receive failed: {e}"),
        }
    }
}

/// Sends `message` over UDP from `from` and decodes the answer; panics if none
/// comes or its ID differs.
pub fn send_udp_from(addr: SocketAddr, from: IpAddr, message: &Message) -> Message {
    let bytes = exchange_udp(addr, from, &encode(message), ANSWER_TIMEOUT)
        .unwrap_or_else(|| panic!("no UDP answer from {addr} within {ANSWER_TIMEOUT:?}"));
    let response = decode(&bytes);
    assert_eq!(response.metadata.id, message.metadata.id, "response ID");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    response
}

/// Sends `message` over UDP from 127.0.0.1.
pub fn send_udp(addr: SocketAddr, message: &Message) -> Message {
    send_udp_from(addr, IpAddr::V4(Ipv4Addr::LOCALHOST), message)
}

/// Asks `name`/`rtype` over UDP from 127.0.0.1, without EDNS.
pub fn query_udp(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    send_udp(addr, &query_message(name, rtype))
}

/// The A addresses of one answer for `name` (over UDP).
pub fn addresses(addr: SocketAddr, name: &str) -> Vec<IpAddr> {
    a_records(&query_udp(addr, name, RecordType::A))
}

/// The addresses of a response's A records.
pub fn a_records(response: &Message) -> Vec<IpAddr> {
    response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// How often each address appears over `n` answers for `name`.
pub fn tally(addr: SocketAddr, name: &str, n: usize) -> HashMap<IpAddr, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        for ip in addresses(addr, name) {
            *seen.entry(ip).or_insert(0) += 1;
        }
    }
    seen
}

/// How often each address appears over `n` answers for `name`, asked all at
/// once: `n` queries sent back to back on one socket before any answer is
/// read, so they reach the resolver within a moment however busy the
/// machine is (a resolver that counts its answers as load on their way
/// sees them together).
pub fn tally_burst(addr: SocketAddr, name: &str, n: usize) -> HashMap<IpAddr, usize> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .expect("cannot bind a UDP client socket");
    let mut asked = HashSet::new();
    for id in 0..n {
        let mut message = query_message(name, RecordType::A);
        message.metadata.id = u16::try_from(id).expect("at most 65536 queries");
        asked.insert(message.metadata.id);
        socket
            .send_to(&encode(&message), addr)
            .expect("cannot send a datagram");
    }
    let mut seen = HashMap::new();
    while !asked.is_empty() {
        let bytes = receive_from(&socket, addr, ANSWER_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "{} of {n} queries unanswered by {addr} within {ANSWER_TIMEOUT:?}",
                asked.len()
            )
        });
        let response = decode(&bytes);
        assert!(asked.remove(&response.metadata.id), "an answer to no query");
        for ip in a_records(&response) {
            *seen.entry(ip).or_insert(0) += 1;
        }
    }
    seen
}

/// Asks over UDP with EDNS (`payload`, `version`); returns the response and
/// its size on the wire.
pub fn query_udp_edns(
    addr: SocketAddr,
    name: &str,
    rtype: RecordType,
    payload: u16,
    version: u8,
) -> (Message, usize) {
    let message = with_edns(query_message(name, rtype), payload, version);
    let bytes = exchange_udp(
        addr,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &encode(&message),
        ANSWER_TIMEOUT,
    )
    .unwrap_or_else(|| panic!("no UDP answer from {addr} within {ANSWER_TIMEOUT:?}"));
    let response = decode(&bytes);
    assert_eq!(response.metadata.id, message.metadata.id, "response ID");
    (response, bytes.len())
}

/// Asks `name`/`rtype` over a new TCP connection.
pub fn query_tcp(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    TcpClient::connect(addr).send(&query_message(name, rtype))
}

/// One TCP connection to a DNS server, for several length-prefixed exchanges.
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
}

impl TcpClient {
    /// Connects (panics if it cannot).
    pub fn connect(addr: SocketAddr) -> TcpClient {
        let stream = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr} over TCP: {e}"));
        stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
        TcpClient { stream }
    }

    /// The underlying stream, for tests that misbehave on purpose.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes one length-prefixed message.
    pub fn write_frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u16::try_from(bytes.len()).expect("a DNS message fits 16 bits");
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        self.stream.write_all(&framed)
    }

    /// Reads one length-prefixed message; `Ok(None)` at end of stream.
    pub fn read_frame(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut len = [0u8; 2];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.stream.read_exact(&mut message)?;
        Ok(Some(message))
    }

    /// Sends raw bytes as one message and returns the raw answer.
    pub fn exchange(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.write_frame(bytes)
            .expect("cannot write to the TCP connection");
        self.read_frame(ANSWER_TIMEOUT)
            .expect("cannot read from the TCP connection")
            .expect("the server closed the TCP connection instead of answering")
    }

    /// Sends a message and decodes the answer; panics if none comes or its ID differs.
    pub fn send(&mut self, message: &Message) -> Message {
        let response = decode(&self.exchange(&encode(message)));
        assert_eq!(response.metadata.id, message.metadata.id, "response ID");
        assert_eq!(response.metadata.message_type, MessageType::Response);
        response
    }

    /// Asks `name`/`rtype` on this connection.
    pub fn query(&mut self, name: &str, rtype: RecordType) -> Message {
        self.send(&query_message(name, rtype))
    }

    /// Waits for the server to close the connection: `Some(elapsed)` once a
    /// read returns end of stream or a reset, `None` if the deadline passes
    /// first. Panics if the server sends data instead.
    pub fn wait_closed(&mut self, deadline: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            let left = deadline
                .checked_sub(start.elapsed())
                .filter(|d| !d.is_zero())?;
            self.stream
                .set_read_timeout(Some(left))
                .expect("cannot set a read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(n) => panic!("expected the server to close the connection, got {n} bytes"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A reset is a close too.
                Err(_) => return Some(start.elapsed()),
            }
        }
    }
}

/// A DNS header with the given ID, flags word and section counts.
pub fn raw_header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        bytes.extend_from_slice(&count.to_be_bytes());
    }
    bytes
}

/// Sets the opcode of an encoded message.
pub fn set_opcode(bytes: &mut [u8], op_code: OpCode) {
    let code = u8::from(op_code) & 0x0f;
    bytes[2] = (bytes[2] & !0x78) | (code << 3);
}

// ---------------------------------------------------------------------------
// dig
// ---------------------------------------------------------------------------

/// Runs `dig @IP -p PORT +time=2 +tries=1 ARGS...` against `addr` and returns
/// its standard output. Panics if dig is missing or fails.
pub fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new("dig");
    command
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .stdin(Stdio::null());
    let output = match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "dig is not installed (package dnsutils / bind9-dnsutils): run scripts/install-test-deps.sh"
        ),
        Err(e) => panic!("cannot run dig: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_take_percent_labels_raw() {
        let name = dns_name("Web%any.example.net");
        assert_eq!(name.num_labels(), 3);
        assert!(name.is_fqdn());
        assert_eq!(name, dns_name("web%ANY.example.net."));
    }

    #[test]
    fn opcodes_are_set_in_place() {
        let mut bytes = encode(&query_message("a.example", RecordType::A));
        set_opcode(&mut bytes, OpCode::Update);
        assert_eq!(decode(&bytes).metadata.op_code, OpCode::Update);
        assert_eq!(bytes[2] & 0x01, 0x01, "RD kept");
    }
}
