//! The plain query on the wire: one question, perhaps an EDNS OPT record,
//! nothing else, read in place; and the answer to it written straight into
//! the response buffer.
//!
//! Nearly every query is of this shape, and reading and writing it needs no
//! allocation and none of hickory's general codec (whose decoder builds the
//! whole message and whose encoder keeps a table of names to compress). The
//! DNS front answers such a query here when the answer is a plain list of
//! addresses, and hands everything else (other shapes, negative answers,
//! truncation) to hickory, whose output this one matches (a test compares
//! them).

use std::net::IpAddr;

/// The fixed header's length (RFC 1035 4.1.1).
const HEADER_LEN: usize = 12;
/// The longest name on the wire (RFC 1035 3.1).
pub const MAX_WIRE_NAME: usize = 255;
/// `TYPE` of the OPT pseudo-record (RFC 6891).
const OPT: u16 = 41;
/// `CLASS` IN.
const CLASS_IN: u16 = 1;
/// TTL, class, type, length: what follows a record's name.
const RECORD_FIXED: usize = 10;
/// The OPT record we send: root name, fixed part, no options.
const OPT_LEN: usize = 1 + RECORD_FIXED;
/// A pointer to the question's name, which starts right after the header.
const NAME_POINTER: [u8; 2] = [0xC0, HEADER_LEN as u8];

/// A query with one question and at most an OPT record, read in place.
#[derive(Debug, Clone, Copy)]
pub struct PlainQuery<'a> {
    request: &'a [u8],
    /// Where the question (name, type, class) ends.
    question_end: usize,
    /// The question's type.
    pub qtype: u16,
    /// The client's EDNS, if it sent an OPT record.
    pub edns: Option<ClientEdns>,
}

/// What a client's OPT record said that an answer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// The UDP payload it can take.
    pub payload: u16,
    /// Whether it carried the option `option` given to [`PlainQuery::read`].
    pub has_option: bool,
}

impl<'a> PlainQuery<'a> {
    /// Reads `request` as a standard query (QR 0, opcode QUERY) with one
    /// question of class IN whose name is not compressed, no answer or
    /// authority records, and at most one additional record, an OPT record
    /// of EDNS version 0, ending where the datagram ends. `None` for
    /// anything else, which is not an error: the general decoder takes it.
    pub fn read(request: &'a [u8], option: u16) -> Option<Self> {
        let header = request.get(..HEADER_LEN)?;
        let (flags, counts) = (header[2], &header[4..]);
        let is_query = flags & 0x80 == 0 && (flags >> 3) & 0x0F == 0;
        if !is_query || counts[..6] != [0, 1, 0, 0, 0, 0] || counts[6] != 0 || counts[7] > 1 {
            return None;
        }
        let mut at = HEADER_LEN;
        loop {
            let len = usize::from(*request.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            if len & 0xC0 != 0 {
                return None;
            }
            at += len;
            if at - HEADER_LEN > MAX_WIRE_NAME {
                return None;
            }
        }
        let qtype = u16_at(request, at)?;
        if u16_at(request, at + 2)? != CLASS_IN {
            return None;
        }
        let question_end = at + 4;
        let edns = match counts[7] {
            0 => None,
            _ => Some(read_opt(request, question_end, option)?),
        };
        if edns.is_none() && question_end != request.len() {
            return None;
        }
        Some(PlainQuery {
            request,
            question_end,
            qtype,
            edns,
        })
    }

    /// The question's name as on the wire: length-prefixed labels, the
    /// root's empty label last.
    pub fn wire_name(&self) -> &'a [u8] {
        &self.request[HEADER_LEN..self.question_end - 4]
    }

    /// The question's name as text (`label.label`, without the root's dot)
    /// written into `buf`; `None` if a label holds a dot or a byte that is
    /// not ASCII, which no name we answer here does.
    pub fn name_text<'b>(&self, buf: &'b mut [u8; MAX_WIRE_NAME]) -> Option<&'b str> {
        let mut len = 0;
        let mut labels = self.wire_name();
        while let [n, rest @ ..] = labels {
            let label = rest.get(..usize::from(*n))?;
            if label.is_empty() {
                break;
            }
            if label.contains(&b'.') || !label.is_ascii() {
                return None;
            }
            if len > 0 {
                *buf.get_mut(len)? = b'.';
                len += 1;
            }
            buf.get_mut(len..len + label.len())?.copy_from_slice(label);
            len += label.len();
            labels = &rest[label.len()..];
        }
        std::str::from_utf8(&buf[..len]).ok()
    }

    /// The length of a response with `addresses` address records (and an
    /// OPT record if the query had one).
    pub fn answer_len(&self, addresses: impl Iterator<Item = IpAddr>) -> usize {
        let records: usize = addresses.map(|a| 2 + RECORD_FIXED + rdata_len(&a)).sum();
        self.question_end + records + if self.edns.is_some() { OPT_LEN } else { 0 }
    }

    /// Writes into `out` (cleared first) an authoritative NOERROR response
    /// that answers with `addresses` in order, each an A or AAAA record with
    /// `ttl`: the question as asked, the header's RD and CD echoed, RA as
    /// `ra` says, and an OPT record offering `payload` if there is one.
    pub fn write_answer(
        &self,
        addresses: impl ExactSizeIterator<Item = IpAddr>,
        ttl: u32,
        ra: bool,
        payload: Option<u16>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let request = self.request;
        let echoed = |byte: u8, mask: u8| byte & mask;
        out.extend_from_slice(&request[..2]);
        out.push(0x80 | 0x04 | echoed(request[2], 0x01));
        out.push(if ra { 0x80 } else { 0 } | echoed(request[3], 0x10));
        let answers = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&answers.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&u16::from(payload.is_some()).to_be_bytes());
        out.extend_from_slice(&request[HEADER_LEN..self.question_end]);
        for address in addresses.take(usize::from(answers)) {
            out.extend_from_slice(&NAME_POINTER);
            let rtype: u16 = if address.is_ipv4() { 1 } else { 28 };
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&(rdata_len(&address) as u16).to_be_bytes());
            match address {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
            }
        }
        if let Some(payload) = payload {
            out.push(0);
            out.extend_from_slice(&OPT.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            // Extended RCODE, version 0, no flags, no options.
            out.extend_from_slice(&[0; 6]);
        }
    }
}

fn rdata_len(address: &IpAddr) -> usize {
    match address {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

/// Reads the OPT record at `at`, which must end the datagram: root name,
/// EDNS version 0, well-formed options.
fn read_opt(request: &[u8], at: usize, option: u16) -> Option<ClientEdns> {
    if *request.get(at)? != 0 || u16_at(request, at + 1)? != OPT {
        return None;
    }
    let payload = u16_at(request, at + 3)?;
    let version = *request.get(at + 6)?;
    let rdlen = usize::from(u16_at(request, at + 9)?);
    let rdata_start = at + OPT_LEN;
    if version != 0 || rdata_start + rdlen != request.len() {
        return None;
    }
    let mut has_option = false;
    let mut options = &request[rdata_start..];
    while !options.is_empty() {
        let code = u16_at(options, 0)?;
        let len = usize::from(u16_at(options, 2)?);
        options = options.get(4 + len..)?;
        has_option |= code == option;
    }
    Some(ClientEdns {
        payload,
        has_option,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, extra: &[u8], arcount: u8) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, arcount];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q.extend_from_slice(extra);
        q
    }

    const WEB: &[u8] = b"\x03web\x03any\x07example\x03net\x00";

    #[test]
    fn a_plain_query_is_read_in_place() {
        let q = query(WEB, 1, &[], 0);
        let plain = PlainQuery::read(&q, 65350).unwrap();
        assert_eq!(plain.qtype, 1);
        assert_eq!(plain.edns, None);
        let mut buf = [0; MAX_WIRE_NAME];
        assert_eq!(plain.name_text(&mut buf), Some("web.any.example.net"));
    }

    #[test]
    fn an_opt_record_and_its_options_are_read() {
        let opt = [
            0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 8, 0xFF, 0x46, 0, 0, 0, 10, 0, 0,
        ];
        let q = query(WEB, 28, &opt, 1);
        let plain = PlainQuery::read(&q, 65350).unwrap();
        assert_eq!(
            plain.edns,
            Some(ClientEdns {
                payload: 1232,
                has_option: true
            })
        );
        let edns = |option| PlainQuery::read(&q, option).unwrap().edns.unwrap();
        assert!(edns(10).has_option);
        assert!(!edns(11).has_option);
    }

    #[test]
    fn other_shapes_are_left_to_the_general_decoder() {
        let opt_v1 = [0, 0, 41, 0x04, 0xD0, 0, 1, 0, 0, 0, 0];
        let compressed = b"\x03web\xC0\x0C";
        let mut response = query(WEB, 1, &[], 0);
        response[2] |= 0x80;
        let mut notify = query(WEB, 1, &[], 0);
        notify[2] = 4 << 3;
        let mut two_questions = query(WEB, 1, &[], 0);
        two_questions[5] = 2;
        let mut chaos = query(WEB, 1, &[], 0);
        let len = chaos.len();
        chaos[len - 1] = 3;
        for (what, bytes) in [
            ("short", vec![0x12, 0x34, 0x01]),
            ("a response", response),
            ("another opcode", notify),
            ("two questions", two_questions),
            ("class CH", chaos),
            ("EDNS version 1", query(WEB, 1, &opt_v1, 1)),
            ("a compressed name", query(compressed, 1, &[], 0)),
            ("trailing bytes", query(WEB, 1, &[0], 0)),
            ("a truncated OPT record", query(WEB, 1, &opt_v1[..5], 1)),
            ("a name without its end", query(b"\x03web", 1, &[], 0)),
        ] {
            assert!(PlainQuery::read(&bytes, 65350).is_none(), "{what}");
        }
    }

    #[test]
    fn a_label_with_a_dot_has_no_text_form() {
        let q = query(b"\x07web.any\x07example\x03net\x00", 1, &[], 0);
        let plain = PlainQuery::read(&q, 65350).unwrap();
        assert_eq!(plain.name_text(&mut [0; MAX_WIRE_NAME]), None);
    }
}
