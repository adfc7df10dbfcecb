//! A blocking DNS client for one resolver: hickory-proto messages over a std
//! UDP socket, with a timeout per attempt, a bounded number of attempts, and
//! TCP when an answer comes back truncated.
//!
//! The resolver is an IP literal, so nothing here resolves a name (which
//! would re-enter the shim). Both questions of a lookup (A and AAAA) go out
//! at once on one socket, like glibc's stub resolver sends them.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::config::Config;
use crate::sys;

/// The UDP payload we advertise (RFC 6891; the DNS flag day's 1232).
pub const UDP_PAYLOAD: u16 = 1232;

/// EDNS option (from the local/experimental range, RFC 6891 9) that asks
/// for the whole equivalent-server set of an anycast group, with the pick
/// first. Empty payload. A resolver that does not know it ignores it.
pub const SET_OPTION: u16 = 65_350;

/// What the resolver said about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Addresses of the asked family, in the resolver's order.
    Addresses(Vec<IpAddr>),
    /// The name exists but has no address of that family.
    NoData,
    /// No such name (NXDOMAIN).
    NoName,
    /// No answer in time, the resolver unreachable, or SERVFAIL: try later.
    Again,
    /// A permanent failure (REFUSED, FORMERR, NOTIMP, a bad resolver address).
    Fail,
}

/// Asks the configured resolver `name` (DNS form, no trailing dot) for each
/// of `types` (A or AAAA) and returns one outcome per type, in order.
///
/// Bounded in time: at most `attempts` x `timeout` over UDP, plus one
/// `timeout` over TCP for answers that came back truncated.
pub fn lookup(config: &Config, name: &str, types: &[RecordType]) -> Vec<Outcome> {
    let Ok(resolver) = config.resolver else {
        return vec![Outcome::Fail; types.len()];
    };
    let Ok(qname) = Name::from_ascii(format!("{name}.")) else {
        return vec![Outcome::NoName; types.len()];
    };
    let mut questions = Vec::with_capacity(types.len());
    let first_id = (sys::random_u64() & 0xffff) as u16;
    for (i, &rtype) in types.iter().enumerate() {
        // Distinct IDs, so each answer finds its question.
        let id = first_id.wrapping_add(u16::try_from(i).unwrap_or(0).wrapping_mul(0x9e37));
        match encode_query(id, &qname, rtype, config.wants_set()) {
            Some(bytes) => questions.push(Question {
                id,
                rtype,
                bytes,
                outcome: None,
                truncated: false,
            }),
            None => return vec![Outcome::Fail; types.len()],
        }
    }
    let qctx = Context {
        resolver,
        qname: &qname,
        timeout: config.timeout,
    };
    if let Err(outcome) = udp(&qctx, &mut questions, config.attempts) {
        for q in questions.iter_mut().filter(|q| q.outcome.is_none()) {
            q.outcome = Some(outcome.clone());
        }
    }
    for q in questions.iter_mut().filter(|q| q.truncated) {
        q.outcome = Some(tcp(&qctx, q).unwrap_or(Outcome::Again));
    }
    questions
        .into_iter()
        .map(|q| q.outcome.unwrap_or(Outcome::Again))
        .collect()
}

struct Question {
    id: u16,
    rtype: RecordType,
    bytes: Vec<u8>,
    outcome: Option<Outcome>,
    /// Answered with TC: ask again over TCP.
    truncated: bool,
}

impl Question {
    fn waiting(&self) -> bool {
        self.outcome.is_none() && !self.truncated
    }
}

struct Context<'a> {
    resolver: SocketAddr,
    qname: &'a Name,
    timeout: Duration,
}

fn encode_query(id: u16, qname: &Name, rtype: RecordType, set: bool) -> Option<Vec<u8>> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD).set_version(0);
    if set {
        edns.options_mut()
            .insert(EdnsOption::Unknown(SET_OPTION, Vec::new()));
    }
    message.set_edns(edns);
    message.to_vec().ok()
}

/// The UDP exchange: every waiting question is (re)sent each attempt, and
/// answers are read until all are in or the attempt's time is up. `Err`
/// ends the lookup early with that outcome for the questions still waiting.
fn udp(ctx: &Context<'_>, questions: &mut [Question], attempts: u32) -> Result<(), Outcome> {
    let local: SocketAddr = match ctx.resolver {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|_| Outcome::Again)?;
    // Connected: only the resolver's datagrams are received, and an ICMP
    // port unreachable comes back as ECONNREFUSED at once.
    socket.connect(ctx.resolver).map_err(|_| Outcome::Again)?;
    let mut buf = vec![0u8; 65_535];
    for _ in 0..attempts {
        for q in questions.iter().filter(|q| q.waiting()) {
            // Refused, unreachable, out of buffers...: all temporary.
            socket.send(&q.bytes).map_err(|_| Outcome::Again)?;
        }
        let deadline = Instant::now() + ctx.timeout;
        while questions.iter().any(Question::waiting) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|_| Outcome::Again)?;
            let len = match socket.recv(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                // ECONNREFUSED: nothing listens there; no use waiting.
                Err(_) => return Err(Outcome::Again),
            };
            let Ok(message) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(q) = questions
                .iter_mut()
                .find(|q| q.waiting() && answers(&message, q.id, ctx.qname, q.rtype))
            else {
                // Late, spoofed or for another question: not ours.
                continue;
            };
            if message.metadata.truncation {
                q.truncated = true;
            } else {
                q.outcome = Some(outcome(&message, ctx.qname, q.rtype));
            }
        }
        if !questions.iter().any(Question::waiting) {
            break;
        }
    }
    Ok(())
}

/// One question over a new TCP connection, within one `timeout`.
fn tcp(ctx: &Context<'_>, q: &Question) -> Option<Outcome> {
    let deadline = Instant::now() + ctx.timeout;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    };
    let mut stream = TcpStream::connect_timeout(&ctx.resolver, left()?).ok()?;
    stream.set_nodelay(true).ok()?;
    let len = u16::try_from(q.bytes.len()).ok()?;
    let mut framed = Vec::with_capacity(q.bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&q.bytes);
    stream.set_write_timeout(Some(left()?)).ok()?;
    stream.write_all(&framed).ok()?;
    loop {
        stream.set_read_timeout(Some(left()?)).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.set_read_timeout(Some(left()?)).ok()?;
        stream.read_exact(&mut bytes).ok()?;
        let Ok(message) = Message::from_vec(&bytes) else {
            return Some(Outcome::Fail);
        };
        if answers(&message, q.id, ctx.qname, q.rtype) {
            return Some(outcome(&message, ctx.qname, q.rtype));
        }
    }
}

/// Whether `message` is the response to our question `id`/`qname`/`rtype`.
fn answers(message: &Message, id: u16, qname: &Name, rtype: RecordType) -> bool {
    message.metadata.id == id
        && message.metadata.message_type == MessageType::Response
        && match message.queries.as_slice() {
            [query] => query.name() == qname && query.query_type() == rtype,
            // FORMERR and the like may come without the question.
            [] => message.metadata.response_code != ResponseCode::NoError,
            _ => false,
        }
}

/// What a response says about `qname`/`rtype`. Address records count when
/// they belong to the name or to a name it is a CNAME of (in the answer).
fn outcome(message: &Message, qname: &Name, rtype: RecordType) -> Outcome {
    match message.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Outcome::NoName,
        ResponseCode::ServFail => return Outcome::Again,
        _ => return Outcome::Fail,
    }
    let mut owners = vec![qname.clone()];
    // CNAME chains are short; a few passes find them in any order.
    for _ in 0..8 {
        let before = owners.len();
        for record in &message.answers {
            if let RData::CNAME(target) = &record.data
                && owners.contains(&record.name)
                && !owners.contains(&target.0)
            {
                owners.push(target.0.clone());
            }
        }
        if owners.len() == before {
            break;
        }
    }
    let addresses: Vec<IpAddr> = message
        .answers
        .iter()
        .filter(|r| owners.contains(&r.name))
        .filter_map(|r| match (&r.data, rtype) {
            (RData::A(a), RecordType::A) => Some(IpAddr::V4(a.0)),
            (RData::AAAA(aaaa), RecordType::AAAA) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    if addresses.is_empty() {
        Outcome::NoData
    } else {
        Outcome::Addresses(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use std::sync::mpsc;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn response(query: &[u8], rcode: ResponseCode, answers: Vec<Record>, tc: bool) -> Vec<u8> {
        let request = Message::from_vec(query).unwrap();
        let mut m = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.metadata.truncation = tc;
        for q in &request.queries {
            m.add_query(q.clone());
        }
        m.answers = answers;
        m.to_vec().unwrap()
    }

    fn a(owner: &str, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), 5, RData::A(A(Ipv4Addr::from(ip))))
    }

    #[test]
    fn outcomes_from_responses() {
        let q = name("web.any.example.net.");
        let query = encode_query(7, &q, RecordType::A, false).unwrap();
        let decode = |bytes: Vec<u8>| Message::from_vec(&bytes).unwrap();

        let m = decode(response(
            &query,
            ResponseCode::NoError,
            vec![
                a("web.any.example.net.", [127, 0, 1, 1]),
                a("WEB.any.example.net.", [127, 0, 1, 2]),
                a("other.example.net.", [10, 0, 0, 1]),
            ],
            false,
        ));
        assert!(answers(&m, 7, &q, RecordType::A));
        assert!(!answers(&m, 8, &q, RecordType::A));
        assert!(!answers(&m, 7, &q, RecordType::AAAA));
        assert_eq!(
            outcome(&m, &q, RecordType::A),
            Outcome::Addresses(vec![
                "127.0.1.1".parse().unwrap(),
                "127.0.1.2".parse().unwrap()
            ])
        );
        assert_eq!(outcome(&m, &q, RecordType::AAAA), Outcome::NoData);

        let cname =
            Record::from_rdata(q.clone(), 5, RData::CNAME(CNAME(name("real.example.net."))));
        let m = decode(response(
            &query,
            ResponseCode::NoError,
            vec![a("real.example.net.", [10, 1, 1, 1]), cname],
            false,
        ));
        assert_eq!(
            outcome(&m, &q, RecordType::A),
            Outcome::Addresses(vec!["10.1.1.1".parse().unwrap()])
        );

        for (rcode, expected) in [
            (ResponseCode::NXDomain, Outcome::NoName),
            (ResponseCode::ServFail, Outcome::Again),
            (ResponseCode::Refused, Outcome::Fail),
            (ResponseCode::NoError, Outcome::NoData),
        ] {
            let m = decode(response(&query, rcode, vec![], false));
            assert_eq!(outcome(&m, &q, RecordType::A), expected, "{rcode:?}");
        }
    }

    #[test]
    fn queries_carry_edns_and_the_set_option_when_asked() {
        let q = name("web.any.example.net.");
        let plain =
            Message::from_vec(&encode_query(1, &q, RecordType::AAAA, false).unwrap()).unwrap();
        let edns = plain.edns.as_ref().unwrap();
        assert_eq!(edns.max_payload(), UDP_PAYLOAD);
        assert!(edns.options().as_ref().is_empty());
        assert!(plain.metadata.recursion_desired);
        let set = Message::from_vec(&encode_query(1, &q, RecordType::A, true).unwrap()).unwrap();
        let options = set.edns.as_ref().unwrap().options();
        assert!(
            options
                .as_ref()
                .iter()
                .any(|(code, _)| u16::from(*code) == SET_OPTION),
            "{options:?}"
        );
    }

    /// A fake resolver on loopback: answers each query with `respond`, which
    /// sees the request bytes and the transport (`true` for TCP).
    fn fake(
        respond: impl Fn(&[u8], bool) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> (SocketAddr, mpsc::Receiver<(RecordType, bool)>) {
        let anycast_listen::Pair { udp, tcp } =
            anycast_listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = udp.local_addr().unwrap();
        let respond = std::sync::Arc::new(respond);
        let (tx, rx) = mpsc::channel();
        {
            let respond = respond.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((len, src)) = udp.recv_from(&mut buf) {
                    let m = Message::from_vec(&buf[..len]).unwrap();
                    let _ = tx.send((m.queries[0].query_type(), false));
                    if let Some(bytes) = respond(&buf[..len], false) {
                        udp.send_to(&bytes, src).unwrap();
                    }
                }
            });
        }
        std::thread::spawn(move || {
            for stream in tcp.incoming() {
                let mut stream = stream.unwrap();
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).unwrap();
                let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut bytes).unwrap();
                let m = Message::from_vec(&bytes).unwrap();
                let _ = tx.send((m.queries[0].query_type(), true));
                if let Some(answer) = respond(&bytes, true) {
                    let len = u16::try_from(answer.len()).unwrap().to_be_bytes();
                    stream.write_all(&len).unwrap();
                    stream.write_all(&answer).unwrap();
                }
            }
        });
        (addr, rx)
    }

    fn config(resolver: SocketAddr) -> Config {
        Config {
            resolver: Ok(resolver),
            timeout: Duration::from_millis(200),
            attempts: 2,
            ..Config::default()
        }
    }

    #[test]
    fn both_families_at_once_and_tcp_on_truncation() {
        let (addr, rx) = fake(|bytes, tcp| {
            let m = Message::from_vec(bytes).unwrap();
            let qname = m.queries[0].name().clone();
            Some(match m.queries[0].query_type() {
                RecordType::A if !tcp => response(bytes, ResponseCode::NoError, vec![], true),
                RecordType::A => response(
                    bytes,
                    ResponseCode::NoError,
                    vec![Record::from_rdata(
                        qname,
                        5,
                        RData::A(A(Ipv4Addr::new(127, 0, 9, 1))),
                    )],
                    false,
                ),
                _ => response(
                    bytes,
                    ResponseCode::NoError,
                    vec![Record::from_rdata(
                        qname,
                        5,
                        RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
                    )],
                    false,
                ),
            })
        });
        let outcomes = lookup(
            &config(addr),
            "web.any.example.net",
            &[RecordType::A, RecordType::AAAA],
        );
        assert_eq!(
            outcomes,
            [
                Outcome::Addresses(vec!["127.0.9.1".parse().unwrap()]),
                Outcome::Addresses(vec!["::1".parse().unwrap()]),
            ]
        );
        let seen: Vec<_> = rx.try_iter().collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.contains(&(RecordType::A, true)));
    }

    #[test]
    fn silence_is_again_within_the_bound_and_retries() {
        let (addr, rx) = fake(|_, _| None);
        let start = Instant::now();
        let outcomes = lookup(&config(addr), "web.any.example.net", &[RecordType::A]);
        let elapsed = start.elapsed();
        assert_eq!(outcomes, [Outcome::Again]);
        assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        assert_eq!(rx.try_iter().count(), 2, "one query per attempt");
    }

    #[test]
    fn a_closed_port_is_again() {
        // Bound then dropped: nothing listens there.
        let addr = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let start = Instant::now();
        assert_eq!(
            lookup(
                &config(addr),
                "web.any.example.net",
                &[RecordType::A, RecordType::AAAA]
            ),
            [Outcome::Again, Outcome::Again]
        );
        assert!(start.elapsed() < Duration::from_millis(1500));
    }

    #[test]
    fn a_bad_resolver_address_fails_without_sending() {
        let config = Config {
            resolver: Err("bad".into()),
            ..Config::default()
        };
        assert_eq!(
            lookup(&config, "web.any.example.net", &[RecordType::A]),
            [Outcome::Fail]
        );
    }
}
