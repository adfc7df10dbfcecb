//! The DNS front: one request's bytes in, the response's bytes out.
//!
//! It decodes with hickory-server's `MessageRequest`, routes the question
//! (anycast zone → answer from the group; any other name → forward, for
//! allowed clients only), handles EDNS itself (we do not use hickory's
//! `Catalog`, which would otherwise do it) and encodes with hickory's
//! `MessageResponseBuilder`, which truncates to the client's UDP payload and
//! sets TC. It knows nothing of sockets: `server` feeds it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::time::Instant;
use tokio::sync::watch;

use anycast_proto::name::{self, NameError};
use anycast_proto::{AnycastName, Metric, Zone};
use hickory_net::xfer::Protocol;
use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageRequest, MessageResponseBuilder, Queries};
use ipnet::IpNet;
use tracing::debug;

use crate::authority::{Authorities, Known};
use crate::config::Config;
use crate::forward::Forwarder;
use crate::groups::{AnswerMode, Directory, ZoneConfig, ZoneRole};
use crate::observe::Observations;
use crate::select::{self, Family};
use crate::telemetry;
use crate::view::GroupView;

/// EDNS option (from the local/experimental range, RFC 6891 9) with which a
/// client asks for the whole equivalent set, the pick first, whatever the
/// group's answer mode: the paper's client-side filters choose among it.
pub const SET_OPTION: u16 = 65350;

/// The EDNS version we speak (RFC 6891).
const EDNS_VERSION: u8 = 0;

/// How a request reached us; it bounds the response size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Bounded by the client's EDNS payload (512 without EDNS).
    Udp,
    /// Bounded by the 16-bit length prefix.
    Tcp,
}

/// The DNS request handler.
#[derive(Debug)]
pub struct DnsFront {
    directory: watch::Receiver<Arc<Directory>>,
    observations: Observations,
    authorities: Arc<Authorities>,
    forwarder: Forwarder,
    allow: Vec<IpNet>,
    udp_payload: u16,
}

/// The response being built, before encoding.
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    /// The metric of an anycast name, for the query counters.
    metric: Option<Metric>,
}

impl Reply {
    fn new(request: &Metadata, rcode: ResponseCode) -> Self {
        let mut metadata = Metadata::response_from_request(request);
        metadata.response_code = rcode;
        Self {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            metric: None,
        }
    }
}

impl DnsFront {
    /// Builds the front from the configuration, the current membership
    /// (followed as it changes), what is observed of members, and a forwarder.
    pub fn new(
        config: &Config,
        directory: watch::Receiver<Arc<Directory>>,
        observations: Observations,
        authorities: Arc<Authorities>,
        forwarder: Forwarder,
    ) -> Self {
        Self {
            directory,
            observations,
            authorities,
            forwarder,
            allow: config.forward.allow.clone(),
            udp_payload: config.dns.udp_payload,
        }
    }

    /// Answers one request. `None` means send nothing: the bytes were not a
    /// DNS query we can answer (too short for a header, or a response).
    pub async fn answer(
        &self,
        bytes: Vec<u8>,
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
        let header = Header::read(&mut BinDecoder::new(&bytes)).ok()?;
        if header.metadata.message_type == MessageType::Response {
            // Answering responses invites reflection loops.
            return None;
        }
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let formerr = || {
            let reply = Reply::new(&header.metadata, ResponseCode::FormErr);
            let no_queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            telemetry::query_answered(None, ResponseCode::FormErr, None, started.elapsed());
            Some(self.encode(reply, &no_queries, None, transport))
        };
        // More than one question is FORMERR whatever follows (see `reply`).
        // Answered before decoding, because the decoder reserves room for
        // as many questions as the header claims: up to 65,535, megabytes
        // for a 12-byte datagram, which under a stream of garbage left the
        // allocator's heap tens of megabytes larger.
        if header.counts.queries > 1 {
            debug!(client = %src, questions = header.counts.queries, "more than one question");
            return formerr();
        }
        let request = match Request::from_bytes(bytes, src, protocol) {
            Ok(request) => request,
            Err(error) => {
                debug!(client = %src, %error, "malformed request");
                return formerr();
            }
        };
        if question_is_compressed(request.queries.as_bytes()) {
            debug!(client = %src, "question name compressed into the header");
            return formerr();
        }

        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_version(EDNS_VERSION);
            ours.set_max_payload(theirs.max_payload().clamp(512, self.udp_payload));
            ours
        });
        let reply = self.reply(&request, src).await;
        let (rcode, metric) = (reply.metadata.response_code, reply.metric);
        let response = self.encode(reply, &request.queries, edns.as_ref(), transport);
        let qtype = request.queries.queries().first().map(|q| q.query_type());
        telemetry::query_answered(qtype, rcode, metric, started.elapsed());
        Some(response)
    }

    async fn reply(&self, request: &MessageRequest, src: SocketAddr) -> Reply {
        let meta = &request.metadata;
        if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            return Reply::new(meta, ResponseCode::BADVERS);
        }
        if meta.op_code != OpCode::Query {
            return Reply::new(meta, ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::new(meta, ResponseCode::FormErr);
        };
        let qname = query.original().name();
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN {
            return Reply::new(meta, ResponseCode::Refused);
        }

        let may_recurse = self.may_recurse(src.ip());
        // One snapshot of membership for the whole answer.
        let mut directory = self.directory.borrow().clone();
        if let Some(zone) = zone_of(&directory, qname).cloned() {
            if let ZoneRole::Local(local) = &zone.role
                && let Ok(name) = parse_qname(qname, directory.zones())
            {
                match self.authorities.ensure(&name.group_name(), local).await {
                    Known::Unavailable => return Reply::new(meta, ResponseCode::ServFail),
                    // What was just learned is in the newest snapshot.
                    Known::Group | Known::NoGroup => directory = self.directory.borrow().clone(),
                }
            }
            let wants_set = request
                .edns
                .as_ref()
                .is_some_and(|e| e.options().get(EdnsCode::from(SET_OPTION)).is_some());
            let mut reply = self.anycast(&directory, meta, &zone, qname, qtype, wants_set);
            reply.metadata.authoritative = true;
            reply.metadata.recursion_available = may_recurse;
            return reply;
        }

        if !may_recurse {
            debug!(client = %src, %qname, "recursion refused");
            return Reply::new(meta, ResponseCode::Refused);
        }
        let forwarded = self.forwarder.forward(qname, qtype).await;
        let mut reply = Reply::new(meta, forwarded.rcode);
        reply.metadata.recursion_available = true;
        reply.answers = forwarded.answers;
        reply.authorities = forwarded.authorities;
        reply
    }

    fn may_recurse(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Answers a name under an anycast zone.
    fn anycast(
        &self,
        directory: &Directory,
        meta: &Metadata,
        zone: &ZoneConfig,
        qname: &Name,
        qtype: RecordType,
        wants_set: bool,
    ) -> Reply {
        let negative = |rcode| {
            let mut reply = Reply::new(meta, rcode);
            reply.authorities.extend(soa(zone));
            reply
        };
        let name = match parse_qname(qname, directory.zones()) {
            Ok(name) => name,
            Err(NameError::ZoneApex { .. }) => {
                return match qtype {
                    RecordType::SOA => {
                        let mut reply = Reply::new(meta, ResponseCode::NoError);
                        reply.answers.extend(soa(zone));
                        reply
                    }
                    _ => negative(ResponseCode::NoError),
                };
            }
            Err(error) => {
                debug!(%qname, %error, "not an anycast name");
                return negative(ResponseCode::NXDomain);
            }
        };
        let Some(group) = directory.group(&name) else {
            debug!(%qname, "no such anycast group");
            return negative(ResponseCode::NXDomain);
        };

        let family = match qtype {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            RecordType::TXT => Family::Any,
            _ => return negative(ResponseCode::NoError),
        };
        let mut rng = rand::rng();
        let observed = self.observations.at(Instant::now());
        let Some(choice) = select::select(group, name.metric(), family, &observed, &mut rng) else {
            return negative(ResponseCode::NoError);
        };

        let mut reply = Reply::new(meta, ResponseCode::NoError);
        reply.metric = Some(name.metric());
        if qtype != RecordType::TXT {
            self.observations
                .answered(&group.name, choice.pick.endpoint(), observed.now);
        }
        reply.answers = if qtype == RecordType::TXT {
            GroupView::build(group, name.metric(), Some(&choice.set), &observed)
                .txt_lines()
                .into_iter()
                .map(|line| {
                    let strings = character_strings(&line);
                    Record::from_rdata(qname.clone(), group.ttl, RData::TXT(TXT::new(strings)))
                })
                .collect()
        } else {
            let mode = if wants_set {
                AnswerMode::Set
            } else {
                group.answer
            };
            let members = match mode {
                AnswerMode::One => &choice.set.members[..1],
                AnswerMode::Set => &choice.set.members[..],
            };
            members
                .iter()
                .map(|m| {
                    let rdata = match m.address {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    Record::from_rdata(qname.clone(), group.ttl, rdata)
                })
                .collect()
        };
        reply
    }

    fn encode(
        &self,
        reply: Reply,
        queries: &Queries,
        edns: Option<&Edns>,
        transport: Transport,
    ) -> Vec<u8> {
        let max_size = match (transport, edns) {
            (Transport::Tcp, _) => u16::MAX,
            (Transport::Udp, Some(edns)) => edns.max_payload(),
            (Transport::Udp, None) => 512,
        };
        let encoded = emit(&reply, queries, edns, max_size).and_then(|(bytes, header)| {
            match edns {
                // The answers filled the payload and the OPT record no longer
                // fit; RFC 6891 section 7 wants it even in a truncated
                // response, so encode again leaving room for it.
                Some(edns) if header.metadata.truncation && header.counts.additionals == 0 => {
                    with_opt_appended(&reply, queries, edns, max_size)
                }
                _ => Ok(bytes),
            }
        });
        encoded.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot encode response; answering SERVFAIL");
            let mut metadata = reply.metadata;
            metadata.response_code = ResponseCode::ServFail;
            let header = Header {
                metadata,
                counts: HeaderCounts::default(),
            };
            let mut bytes = Vec::with_capacity(12);
            // A bare header always fits.
            let _ = header.emit(&mut BinEncoder::new(&mut bytes));
            bytes
        })
    }
}

/// Encodes a reply within `max_size` bytes; records that do not fit are left
/// out and TC is set.
fn emit(
    reply: &Reply,
    queries: &Queries,
    edns: Option<&Edns>,
    max_size: u16,
) -> Result<(Vec<u8>, Header), ProtoError> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let response = MessageResponseBuilder::new(queries, edns).build(
        reply.metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        std::iter::empty(),
    );
    let info = response.destructive_emit(&mut encoder)?;
    // A record that did not fit was rolled back in the encoder's offset but
    // its bytes stay in the buffer: cut them off.
    let len = encoder.offset();
    bytes.truncate(len);
    let header = Header {
        metadata: *info,
        counts: info.counts(),
    };
    Ok((bytes, header))
}

/// Encodes without EDNS in `max_size` less the OPT record's size, then appends
/// the OPT record and counts it in ARCOUNT.
fn with_opt_appended(
    reply: &Reply,
    queries: &Queries,
    edns: &Edns,
    max_size: u16,
) -> Result<Vec<u8>, ProtoError> {
    let mut opt = Vec::with_capacity(16);
    Record::from(edns).emit(&mut BinEncoder::new(&mut opt))?;
    let room = max_size.saturating_sub(u16::try_from(opt.len()).unwrap_or(u16::MAX));
    let (mut bytes, header) = emit(reply, queries, None, room)?;
    let additionals = header.counts.additionals.saturating_add(1);
    if bytes.len() < 12 {
        return Err(ProtoError::Message("response shorter than a header"));
    }
    bytes[10..12].copy_from_slice(&additionals.to_be_bytes());
    bytes.extend_from_slice(&opt);
    Ok(bytes)
}

/// The anycast zone `qname` is in or under, if any.
fn zone_of<'d>(directory: &'d Directory, qname: &Name) -> Option<&'d ZoneConfig> {
    let text = qname.to_ascii();
    let zone = name::zone_of(&text, directory.zones())?;
    directory.zone_configs().iter().find(|z| &z.name == zone)
}

/// The zone's synthesised SOA: `ns.<zone>`, `hostmaster.<zone>`, serial 1,
/// minimum and TTL the zone's negative TTL (RFC 2308).
fn soa(zone: &ZoneConfig) -> Option<Record> {
    let apex = Name::from_ascii(format!("{}.", zone.name)).ok()?;
    let rdata = SOA::new(
        Name::from_ascii("ns").ok()?.append_domain(&apex).ok()?,
        Name::from_ascii("hostmaster")
            .ok()?
            .append_domain(&apex)
            .ok()?,
        1,
        3600,
        600,
        86400,
        zone.negative_ttl,
    );
    Some(Record::from_rdata(
        apex,
        zone.negative_ttl,
        RData::SOA(rdata),
    ))
}

/// Whether the (single) question's name is compressed. Its pointer can
/// only reach into the request's header (hickory follows pointers to
/// earlier bytes only), so the name means nothing; and hickory echoes the
/// question's bytes as they came, so the response would point into our own
/// header and not decode (found by the `dns` fuzz target).
fn question_is_compressed(question: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&len) = question.get(at) {
        match len {
            0 => return false,
            len if len & 0xC0 == 0xC0 => return true,
            len => at += 1 + usize::from(len),
        }
    }
    false
}

/// Reads a query name as an anycast name. Labels are joined raw: a label that
/// itself holds a `.` cannot be an anycast label, so it is refused outright.
fn parse_qname(qname: &Name, zones: &[Zone]) -> Result<AnycastName, NameError> {
    let mut text = Vec::with_capacity(qname.len());
    for label in qname.iter() {
        if label.contains(&b'.') {
            return Err(NameError::InvalidChar { ch: '.' });
        }
        if !text.is_empty() {
            text.push(b'.');
        }
        text.extend_from_slice(label);
    }
    name::parse_bytes(&text, zones)
}

/// `line` as the character-strings of a TXT record: at most 255 bytes each
/// (RFC 1035), cut at character boundaries. A client shows them one after
/// the other, so a long line of the view reads whole.
fn character_strings(line: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let mut cut = rest.len().min(255);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        strings.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    strings
}

#[cfg(test)]
mod tests {
    use super::character_strings;

    #[test]
    fn long_txt_lines_become_several_character_strings() {
        assert_eq!(character_strings("short"), ["short"]);
        let long = "é".repeat(200);
        let strings = character_strings(&long);
        assert_eq!(strings.concat(), long);
        assert!(strings.iter().all(|s| s.len() <= 255), "{strings:?}");
        assert_eq!(strings.len(), 2);
    }
}
