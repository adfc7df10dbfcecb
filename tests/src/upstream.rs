//! A fake upstream DNS server: answers a fixed zone over UDP on loopback and
//! counts the queries it receives, so tests can see what reached it.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Records the upstream serves, by lower-case name (with trailing dot).
pub type Zone = HashMap<String, Vec<Record>>;

/// A running fake upstream; it stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Serves `zone` on a free UDP port of 127.0.0.1. Names not in the zone
    /// get NXDOMAIN; names in it without the asked type get NODATA; both with
    /// the SOA of `example.org.` in the authority section.
    pub fn start(zone: Zone) -> io::Result<Upstream> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queries, stop) = (queries.clone(), stop.clone());
            std::thread::spawn(move || serve(socket, zone, &queries, &stop))
        };
        Ok(Upstream {
            addr,
            queries,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many queries it has received.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A zone with `www.example.org` (A 192.0.2.10 and 192.0.2.11, TTL 300),
/// `v6.example.org` (AAAA 2001:db8::1) and `alias.example.org` (CNAME to
/// `www.example.org`, TTL 300): enough to tell forwarding apart.
pub fn example_zone() -> Zone {
    let mut zone = Zone::new();
    let www = name("www.example.org.");
    zone.insert(
        "www.example.org.".into(),
        vec![
            Record::from_rdata(
                www.clone(),
                300,
                RData::A(std::net::Ipv4Addr::new(192, 0, 2, 10).into()),
            ),
            Record::from_rdata(
                www,
                300,
                RData::A(std::net::Ipv4Addr::new(192, 0, 2, 11).into()),
            ),
        ],
    );
    let v6 = name("v6.example.org.");
    zone.insert(
        "v6.example.org.".into(),
        vec![Record::from_rdata(
            v6,
            300,
            RData::AAAA(
                "2001:db8::1"
                    .parse()
                    .unwrap_or(std::net::Ipv6Addr::LOCALHOST)
                    .into(),
            ),
        )],
    );
    zone.insert(
        "alias.example.org.".into(),
        vec![Record::from_rdata(
            name("alias.example.org."),
            300,
            RData::CNAME(CNAME(name("www.example.org."))),
        )],
    );
    zone
}

/// The records of `records` answering `qtype`; a CNAME (asked for another
/// type) is followed once within the zone, as an authoritative server does.
fn answer(zone: &Zone, records: &[Record], qtype: RecordType) -> Vec<Record> {
    let of_type = |records: &[Record]| -> Vec<Record> {
        records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect()
    };
    let matching = of_type(records);
    if !matching.is_empty() || qtype == RecordType::CNAME {
        return matching;
    }
    let Some(cname) = records
        .iter()
        .find(|r| r.record_type() == RecordType::CNAME)
    else {
        return matching;
    };
    let mut chain = vec![cname.clone()];
    if let RData::CNAME(CNAME(target)) = &cname.data
        && let Some(target_records) = zone.get(&target.to_lowercase().to_ascii())
    {
        chain.extend(of_type(target_records));
    }
    chain
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

fn soa() -> Record {
    let apex = name("example.org.");
    Record::from_rdata(
        apex.clone(),
        60,
        RData::SOA(SOA::new(
            name("ns.example.org."),
            name("hostmaster.example.org."),
            1,
            3600,
            600,
            86400,
            60,
        )),
    )
}

fn serve(socket: UdpSocket, zone: Zone, queries: &AtomicUsize, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, src)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(request) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        let mut response = Message::new(
            request.metadata.id,
            MessageType::Response,
            request.metadata.op_code,
        );
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        response.add_queries(request.queries.iter().cloned());
        if let Some(query) = request.queries.first() {
            let key = query.name().to_lowercase().to_ascii();
            match zone.get(&key) {
                None => {
                    response.metadata.response_code = ResponseCode::NXDomain;
                    response.add_authority(soa());
                }
                Some(records) => {
                    let matching = answer(&zone, records, query.query_type());
                    if matching.is_empty() {
                        response.add_authority(soa());
                    }
                    response.add_answers(matching);
                }
            }
        }
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, src);
        }
    }
}
