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
use crate::wire::{self, PlainQuery};

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

/// What [`DnsFront::answer_now`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The response is in the buffer.
    Answered,
    /// Nothing is to be sent: the bytes were not a DNS query we can answer
    /// (too short for a header, or a response).
    Nothing,
    /// The answer depends on another server (a forwarded name, a local
    /// zone's group to learn from its authority).
    Wait,
}

/// What a reply waits for.
enum Pending {
    /// The upstream's answer.
    Forward,
    /// The local zone's authority's view of this group.
    Local(Box<ZoneConfig>, AnycastName),
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
        if let Some(query) = PlainQuery::read(&bytes, SET_OPTION) {
            let mut response = Vec::new();
            if self.answer_plain(&query, src, transport, started, &mut response) {
                return Some(response);
            }
        }
        let request = match self.decode(bytes, src, transport, started) {
            Ok(request) => request,
            Err(done) => return done,
        };
        let reply = match self.reply_now(&request, src) {
            Ok(reply) => reply,
            Err(pending) => self.reply_later(&request, src, pending).await,
        };
        Some(self.finish(reply, &request, transport, started))
    }

    /// Answers one request if that needs no waiting, writing the response
    /// into `out` (reused: an anycast answer allocates nothing).
    /// [`Ready::Wait`] means the answer depends on another server: get it
    /// from [`DnsFront::answer`].
    pub fn answer_now(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Ready {
        let started = Instant::now();
        if let Some(query) = PlainQuery::read(bytes, SET_OPTION)
            && self.answer_plain(&query, src, transport, started, out)
        {
            return Ready::Answered;
        }
        self.answer_general_now(bytes, src, transport, started, out)
    }

    /// [`DnsFront::answer_now`] through hickory's codec, for any request.
    fn answer_general_now(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        started: Instant,
        out: &mut Vec<u8>,
    ) -> Ready {
        let request = match self.decode(bytes.to_vec(), src, transport, started) {
            Ok(request) => request,
            Err(Some(response)) => {
                *out = response;
                return Ready::Answered;
            }
            Err(None) => return Ready::Nothing,
        };
        match self.reply_now(&request, src) {
            Ok(reply) => {
                *out = self.finish(reply, &request, transport, started);
                Ready::Answered
            }
            Err(_) => Ready::Wait,
        }
    }

    /// Answers a plain query for the addresses of an anycast name of an
    /// authoritative zone, without hickory's codec; `false` (and nothing
    /// recorded) for any other query or answer, which the general path
    /// gives: names that are not groups, NODATA, a set too large for the
    /// client's payload.
    fn answer_plain(
        &self,
        query: &PlainQuery<'_>,
        src: SocketAddr,
        transport: Transport,
        started: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let family = match RecordType::from(query.qtype) {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            _ => return false,
        };
        let mut text = [0; wire::MAX_WIRE_NAME];
        let Some(qname) = query.name_text(&mut text) else {
            return false;
        };
        let directory = self.directory.borrow().clone();
        let mut buf = [0; name::MAX_NAME_LEN];
        let Ok(name) = name::parse_in(qname.as_bytes(), directory.zones(), &mut buf) else {
            return false;
        };
        // A local zone's group is answered once its authority's view is
        // known fresh, which waits: the general path's.
        let zone = directory
            .zone_configs()
            .iter()
            .find(|z| &z.name == name.zone());
        if !zone.is_some_and(|zone| zone.role == ZoneRole::Authoritative) {
            return false;
        }
        let Some(group) = directory.group_of(&name) else {
            return false;
        };
        let edns = query
            .edns
            .map(|theirs| theirs.payload.clamp(512, self.udp_payload));
        let max_size = usize::from(match transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => edns.unwrap_or(512),
        });
        let mode = match query.edns {
            Some(theirs) if theirs.has_option => AnswerMode::Set,
            _ => group.answer,
        };
        // The largest set there could be must fit (truncation is the
        // general path's), decided before selecting, which moves `rr` on.
        let largest = group.members.iter().filter(|m| family.admits(m));
        let largest = match mode {
            AnswerMode::One => query.answer_len(largest.take(1).map(|m| m.address)),
            AnswerMode::Set => query.answer_len(largest.map(|m| m.address)),
        };
        if largest > max_size {
            return false;
        }
        let observed = self.observations.at(started);
        let Some(choice) =
            select::select(group, name.metric(), family, &observed, &mut rand::rng())
        else {
            return false;
        };
        self.observations
            .answered(&group.name, choice.pick.endpoint(), observed.now);
        let members = match mode {
            AnswerMode::One => &choice.set.members[..1],
            AnswerMode::Set => &choice.set.members[..],
        };
        query.write_answer(
            members.iter().map(|m| m.address),
            group.ttl,
            self.may_recurse(src.ip()),
            edns,
            out,
        );
        let qtype = Some(RecordType::from(query.qtype));
        telemetry::query_answered(
            qtype,
            ResponseCode::NoError,
            Some(name.metric()),
            started.elapsed(),
        );
        true
    }

    /// Decodes a request with hickory, or answers at once what cannot be
    /// decoded (the error): nothing for a response, FORMERR for a malformed
    /// query.
    fn decode(
        &self,
        bytes: Vec<u8>,
        src: SocketAddr,
        transport: Transport,
        started: Instant,
    ) -> Result<Request, Option<Vec<u8>>> {
        let Ok(header) = Header::read(&mut BinDecoder::new(&bytes)) else {
            return Err(None);
        };
        if header.metadata.message_type == MessageType::Response {
            // Answering responses invites reflection loops.
            return Err(None);
        }
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let formerr = || {
            let reply = Reply::new(&header.metadata, ResponseCode::FormErr);
            let Ok(no_queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return Err(None);
            };
            telemetry::query_answered(None, ResponseCode::FormErr, None, started.elapsed());
            Err(Some(self.encode(reply, &no_queries, None, transport)))
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
        Ok(request)
    }

    /// Encodes the reply to a decoded request, with our EDNS if it had
    /// EDNS, and counts it.
    fn finish(
        &self,
        reply: Reply,
        request: &MessageRequest,
        transport: Transport,
        started: Instant,
    ) -> Vec<u8> {
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_version(EDNS_VERSION);
            ours.set_max_payload(theirs.max_payload().clamp(512, self.udp_payload));
            ours
        });
        let (rcode, metric) = (reply.metadata.response_code, reply.metric);
        let response = self.encode(reply, &request.queries, edns.as_ref(), transport);
        let qtype = request.queries.queries().first().map(|q| q.query_type());
        telemetry::query_answered(qtype, rcode, metric, started.elapsed());
        response
    }

    /// The reply to a decoded request, unless it has to wait for another
    /// server.
    fn reply_now(&self, request: &MessageRequest, src: SocketAddr) -> Result<Reply, Pending> {
        let meta = &request.metadata;
        if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            return Ok(Reply::new(meta, ResponseCode::BADVERS));
        }
        if meta.op_code != OpCode::Query {
            return Ok(Reply::new(meta, ResponseCode::NotImp));
        }
        let [query] = request.queries.queries() else {
            return Ok(Reply::new(meta, ResponseCode::FormErr));
        };
        let qname = query.original().name();
        if query.query_class() != DNSClass::IN {
            return Ok(Reply::new(meta, ResponseCode::Refused));
        }

        let may_recurse = self.may_recurse(src.ip());
        // One snapshot of membership for the whole answer.
        let directory = self.directory.borrow().clone();
        if let Some(zone) = zone_of(&directory, qname) {
            if let ZoneRole::Local(_) = &zone.role
                && let Ok(name) = parse_qname(qname, directory.zones())
            {
                return Err(Pending::Local(Box::new(zone.clone()), name.group_name()));
            }
            return Ok(self.anycast_reply(&directory, request, zone, may_recurse));
        }
        if !may_recurse {
            debug!(client = %src, %qname, "recursion refused");
            return Ok(Reply::new(meta, ResponseCode::Refused));
        }
        Err(Pending::Forward)
    }

    /// The reply that waits for another server: the upstream's, or the
    /// local zone's authority's view of a group.
    async fn reply_later(
        &self,
        request: &MessageRequest,
        src: SocketAddr,
        pending: Pending,
    ) -> Reply {
        let meta = &request.metadata;
        let query = &request.queries.queries()[0];
        let (qname, qtype) = (query.original().name(), query.query_type());
        match pending {
            Pending::Local(zone, group) => {
                let ZoneRole::Local(local) = &zone.role else {
                    unreachable!("only a local zone's names wait for its authority")
                };
                if self.authorities.ensure(&group, local).await == Known::Unavailable {
                    return Reply::new(meta, ResponseCode::ServFail);
                }
                // What was just learned is in the newest snapshot.
                let directory = self.directory.borrow().clone();
                self.anycast_reply(&directory, request, &zone, self.may_recurse(src.ip()))
            }
            Pending::Forward => {
                let forwarded = self.forwarder.forward(qname, qtype).await;
                let mut reply = Reply::new(meta, forwarded.rcode);
                reply.metadata.recursion_available = true;
                reply.answers = forwarded.answers;
                reply.authorities = forwarded.authorities;
                reply
            }
        }
    }

    /// The reply for a name under an anycast zone, authoritative.
    fn anycast_reply(
        &self,
        directory: &Directory,
        request: &MessageRequest,
        zone: &ZoneConfig,
        may_recurse: bool,
    ) -> Reply {
        let query = &request.queries.queries()[0];
        let wants_set = request
            .edns
            .as_ref()
            .is_some_and(|e| e.options().get(EdnsCode::from(SET_OPTION)).is_some());
        let (qname, qtype) = (query.original().name(), query.query_type());
        let mut reply = self.anycast(directory, &request.metadata, zone, qname, qtype, wants_set);
        reply.metadata.authoritative = true;
        reply.metadata.recursion_available = may_recurse;
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
    use super::*;
    use crate::membership::Membership;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;

    /// A front over `config` with nothing observed and no sockets.
    fn front(config: &str) -> DnsFront {
        let config = Config::from_toml(config, std::path::Path::new("test.toml")).unwrap();
        let membership = Membership::new(config.zones.clone(), config.group_specs(), None).unwrap();
        let observations = Observations::new(config.push.clone());
        let forwarder = Forwarder::new(&config.forward).unwrap();
        let membership = Arc::new(membership);
        let authorities = Authorities::new(
            membership.clone(),
            observations.pushes.clone(),
            forwarder.clone(),
        )
        .unwrap();
        DnsFront::new(
            &config,
            membership.subscribe(),
            observations,
            authorities,
            forwarder,
        )
    }

    const GROUPS: &str = r#"
[dns]
udp_payload = 1232
[[zone]]
name = "any.example.net"
[[group]]
service = "solo"
[[group.member]]
address = "192.0.2.1"
[[group]]
service = "dual"
answer = "set"
[[group.member]]
address = "2001:db8::1"
[[group.member]]
address = "192.0.2.2"
[[group]]
service = "many"
[[group.member]]
address = "192.0.2.10"
cost = 1
[[group.member]]
address = "192.0.2.11"
cost = 2
[[group.member]]
address = "192.0.2.12"
cost = 3
"#;

    fn request(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Message {
        let mut message = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
        // Labels as they are: `from_ascii` refuses the paper's `%`.
        let labels = name.trim_end_matches('.').split('.').map(str::as_bytes);
        let name = Name::from_labels(labels).unwrap();
        message.add_query(Query::query(name, qtype));
        if let Some((payload, set)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            if set {
                e.options_mut()
                    .insert(EdnsOption::Unknown(SET_OPTION, vec![]));
            }
            message.set_edns(e);
        }
        message
    }

    /// Each plain query the front answers without hickory's codec gets the
    /// same message as hickory's path gives it.
    #[tokio::test]
    async fn a_plain_answer_is_what_the_general_path_would_send() {
        let front = front(GROUPS);
        let clients: [SocketAddr; 2] = [
            "127.0.0.1:5300".parse().unwrap(),
            "192.0.2.99:5300".parse().unwrap(),
        ];
        let mut asked = 0;
        for name in [
            "solo.any.example.net.",
            "rt.SOLO.any.example.net.",
            "cost.solo%any.example.net.",
            "dual.any.example.net.",
            "cost.many.any.example.net.",
        ] {
            for qtype in [RecordType::A, RecordType::AAAA] {
                for edns in [
                    None,
                    Some((4096, false)),
                    Some((100, false)),
                    Some((1232, true)),
                ] {
                    for (flags, client) in [(false, clients[0]), (true, clients[1])] {
                        let mut message = request(name, qtype, edns);
                        message.metadata.recursion_desired = flags;
                        message.metadata.checking_disabled = flags;
                        let bytes = message.to_vec().unwrap();
                        let query = PlainQuery::read(&bytes, SET_OPTION).unwrap();
                        let (mut plain, mut general) = (Vec::new(), Vec::new());
                        let started = Instant::now();
                        if !front.answer_plain(&query, client, Transport::Udp, started, &mut plain)
                        {
                            continue;
                        }
                        asked += 1;
                        let ready = front.answer_general_now(
                            &bytes,
                            client,
                            Transport::Udp,
                            started,
                            &mut general,
                        );
                        assert_eq!(ready, Ready::Answered);
                        assert_eq!(
                            Message::from_vec(&plain).unwrap(),
                            Message::from_vec(&general).unwrap(),
                            "{name} {qtype} {edns:?} {flags}"
                        );
                        // The same message, the answers' name a pointer to
                        // the question's (hickory writes it out again).
                        assert!(plain.len() <= general.len());
                    }
                }
            }
        }
        // A for every name, AAAA for dual: 6 names-and-types, 4 EDNS, 2 clients.
        assert_eq!(asked, 6 * 4 * 2);
    }

    /// What the plain path leaves to hickory's: no group, NODATA, a zone's
    /// apex, other types.
    #[tokio::test]
    async fn the_plain_path_answers_only_addresses_of_a_group() {
        let front = front(GROUPS);
        let client: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        for (name, qtype) in [
            ("nothing.any.example.net.", RecordType::A),
            ("solo.any.example.net.", RecordType::AAAA),
            ("any.example.net.", RecordType::A),
            ("solo.any.example.net.", RecordType::TXT),
            ("www.example.org.", RecordType::A),
        ] {
            let bytes = request(name, qtype, None).to_vec().unwrap();
            let query = PlainQuery::read(&bytes, SET_OPTION).unwrap();
            let mut out = Vec::new();
            assert!(
                !front.answer_plain(&query, client, Transport::Udp, Instant::now(), &mut out),
                "{name} {qtype}"
            );
        }
    }

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
