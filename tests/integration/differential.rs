//! Differential check of forwarding: for names served by a real local
//! authority (NSD), our forwarded answers equal unbound's when unbound
//! forwards to the same authority. Zero disagreements in rcode and answer
//! set.
//!
//! Both resolvers are asked each case the way a stub asks: over UDP without
//! EDNS (so at most 512 bytes), and, if the answer is truncated (TC), again
//! over TCP, whose answer is then the one compared. What is compared:
//!
//! * the response code;
//! * whether the UDP answer was truncated;
//! * the answer section as a set of (owner name lowercased, type, RDATA in
//!   DNSSEC canonical form: names uncompressed and lowercased, RFC 4034
//!   section 6.2): DNS names are case-insensitive (RFC 4343), and unbound
//!   echoes the query's case in owner names; TTLs (each resolver counts its
//!   cache down on its own clock) and record order (RRsets are unordered)
//!   are not compared.
//!
//! The authority and additional sections are not compared: what a recursive
//! resolver puts there is its own choice (unbound sends minimal responses,
//! we pass the upstream's SOA of a negative answer on).
//!
//! The authority serves every zone a case needs, child zone included, so a
//! forwarder that only ever asks that one server can answer them all as a
//! recursive resolver would. Two behaviours of a recursive resolver a
//! forwarder cannot match are left out: following a delegation to another
//! server (a referral from the authority is a dead end for a forwarder, whose
//! upstream is meant to recurse), and chasing a CNAME into a zone on another
//! server. A CNAME into a zone no server of this test serves is a case: both
//! must fail alike.
//!
//! `.test` (RFC 6761) and the documentation address 192.0.2.0/24 (RFC 5737)
//! are in unbound's built-in local zones, answered NXDOMAIN without asking
//! anyone; unbound is told to forward them like other names.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use anycast_tests::authority::{Nsd, Unbound, ZoneFile};
use anycast_tests::harness::{Resolver, TcpClient, query_message, resolver_head, send_udp};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// The zone most cases are in.
const ZONE: &str = "diff.test.";

/// The main zone: every kind of answer a forwarder passes on.
const DIFF_ZONE: &str = r#"$ORIGIN diff.test.
$TTL 300
@         SOA   ns1 hostmaster 1 3600 600 86400 60
@         NS    ns1
@         NS    ns2
@         A     192.0.2.1
@         MX    10 mail
@         CAA   0 issue "ca.example.net"
ns1       A     127.0.0.1
ns2       A     127.0.0.2
a         A     192.0.2.10
v6        AAAA  2001:db8::6
multi     A     192.0.2.21
multi     A     192.0.2.22
multi     A     192.0.2.23
MiXeD     A     192.0.2.30
alias     CNAME a
c1        CNAME c2
c2        CNAME C3
c3        CNAME multi
dangling  CNAME missing
ext       CNAME a.other.test.
out       CNAME host.unserved.test.
dn        DNAME other.test.
mail      A     192.0.2.25
mx        MX    10 mail
mx        MX    20 Mail2.Diff.Test.
txt       TXT   "hello world"
longtxt   TXT   "one" "two" "three"
longtxt   TXT   "a very long string follows" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "b"
longtxt   TXT   "with \"quotes\", a semicolon; and \\ a backslash" "" "\200\255 bytes"
_sip._udp SRV   10 60 5060 a
_sip._udp SRV   20 40 5061 mail
hinfo     HINFO "x86" "Linux"
sshfp     SSHFP 1 1 0123456789abcdef0123456789abcdef01234567
unk       TYPE65400 \# 4 0a000001
*.wild    A     192.0.2.40
*.wild    TXT   "wildcard"
explicit.wild A 192.0.2.41
*.wc      CNAME a
x.ent     A     192.0.2.50
child     NS    ns.child
ns.child  A     127.0.0.1
"#;

/// A child zone delegated from the main one, served by the same authority.
const CHILD_ZONE: &str = r#"$ORIGIN child.diff.test.
$TTL 300
@    SOA ns hostmaster.diff.test. 1 3600 600 86400 60
@    NS  ns
ns   A   127.0.0.1
host A   192.0.2.60
"#;

/// Another zone of the same authority, the target of a CNAME and a DNAME.
const OTHER_ZONE: &str = r#"$ORIGIN other.test.
$TTL 300
@ SOA ns.diff.test. hostmaster.diff.test. 1 3600 600 86400 60
@ NS  ns1.diff.test.
a A   192.0.2.70
"#;

/// A reverse zone for the documentation prefix.
const REVERSE_ZONE: &str = r#"$ORIGIN 2.0.192.in-addr.arpa.
$TTL 300
@  SOA ns1.diff.test. hostmaster.diff.test. 1 3600 600 86400 60
@  NS  ns1.diff.test.
10 PTR a.diff.test.
"#;

/// How many records the large RRsets have: too many for 512 bytes, and for
/// the 1232 of EDNS too, so both resolvers need TCP upstream as well.
const BIG_V4: u8 = 100;
const BIG_V6: u8 = 60;

/// The main zone with its large RRsets.
fn diff_zone() -> String {
    let mut zone = DIFF_ZONE.to_owned();
    for i in 1..=BIG_V4 {
        writeln!(zone, "big  A    198.51.100.{i}").unwrap();
    }
    for i in 1..=BIG_V6 {
        writeln!(zone, "big6 AAAA 2001:db8:b16::{i:x}").unwrap();
    }
    zone
}

/// One question, with what the reference (unbound) is expected to answer,
/// so that a broken zone cannot make both resolvers agree on nothing.
struct Case {
    name: &'static str,
    rtype: RecordType,
    rcode: ResponseCode,
    answers: usize,
    /// Truncated over UDP, answered over TCP.
    tcp: bool,
}

const fn case(name: &'static str, rtype: RecordType, rcode: ResponseCode, answers: usize) -> Case {
    Case {
        name,
        rtype,
        rcode,
        answers,
        tcp: false,
    }
}

const fn large(name: &'static str, rtype: RecordType, answers: usize) -> Case {
    Case {
        name,
        rtype,
        rcode: ResponseCode::NoError,
        answers,
        tcp: true,
    }
}

const NOERROR: ResponseCode = ResponseCode::NoError;
const NXDOMAIN: ResponseCode = ResponseCode::NXDomain;
const SERVFAIL: ResponseCode = ResponseCode::ServFail;

fn cases() -> Vec<Case> {
    use RecordType::*;
    vec![
        // The apex.
        case("diff.test.", SOA, NOERROR, 1),
        case("diff.test.", NS, NOERROR, 2),
        case("diff.test.", A, NOERROR, 1),
        case("diff.test.", MX, NOERROR, 1),
        case("diff.test.", CAA, NOERROR, 1),
        // Plain records and an RRset.
        case("a.diff.test.", A, NOERROR, 1),
        case("v6.diff.test.", AAAA, NOERROR, 1),
        case("multi.diff.test.", A, NOERROR, 3),
        case("mx.diff.test.", MX, NOERROR, 2),
        case("txt.diff.test.", TXT, NOERROR, 1),
        case("longtxt.diff.test.", TXT, NOERROR, 3),
        case("_sip._udp.diff.test.", SRV, NOERROR, 2),
        case("hinfo.diff.test.", HINFO, NOERROR, 1),
        case("sshfp.diff.test.", SSHFP, NOERROR, 1),
        case("unk.diff.test.", Unknown(65400), NOERROR, 1),
        case("10.2.0.192.in-addr.arpa.", PTR, NOERROR, 1),
        // Negative answers: NODATA (also at an empty non-terminal) and
        // NXDOMAIN (also below an existing name).
        case("a.diff.test.", AAAA, NOERROR, 0),
        case("txt.diff.test.", MX, NOERROR, 0),
        case("ent.diff.test.", A, NOERROR, 0),
        case("nope.diff.test.", A, NXDOMAIN, 0),
        case("nope.diff.test.", TXT, NXDOMAIN, 0),
        case("deeper.a.diff.test.", A, NXDOMAIN, 0),
        // CNAMEs: in the zone, asked as CNAME, to a name without the type,
        // a chain, to a name that does not exist, to another zone of the
        // authority, to a zone nobody serves; and a DNAME. The negative
        // answers behind a CNAME or DNAME pin a bug: we used to drop the
        // chain, as hickory-resolver does (see resolver/src/forward.rs).
        case("alias.diff.test.", A, NOERROR, 2),
        case("alias.diff.test.", CNAME, NOERROR, 1),
        case("alias.diff.test.", AAAA, NOERROR, 1),
        case("c1.diff.test.", A, NOERROR, 6),
        case("c2.diff.test.", TXT, NOERROR, 2),
        case("dangling.diff.test.", A, NXDOMAIN, 1),
        case("ext.diff.test.", A, NOERROR, 2),
        case("out.diff.test.", A, SERVFAIL, 0),
        case("a.dn.diff.test.", A, NOERROR, 3),
        case("a.dn.diff.test.", AAAA, NOERROR, 2),
        case("nope.dn.diff.test.", A, NXDOMAIN, 2),
        // Wildcards: A, TXT, NODATA, several labels deep, a name of its own
        // under it (which the wildcard does not cover), a CNAME.
        case("foo.wild.diff.test.", A, NOERROR, 1),
        case("foo.wild.diff.test.", TXT, NOERROR, 1),
        case("foo.wild.diff.test.", AAAA, NOERROR, 0),
        case("a.b.wild.diff.test.", A, NOERROR, 1),
        case("explicit.wild.diff.test.", A, NOERROR, 1),
        case("explicit.wild.diff.test.", TXT, NOERROR, 0),
        case("x.wc.diff.test.", A, NOERROR, 2),
        // Case: a mixed-case owner asked in other cases, and a lower-case
        // owner asked in mixed case.
        case("mixed.DIFF.TEST.", A, NOERROR, 1),
        case("A.Diff.Test.", A, NOERROR, 1),
        case("mX.dIfF.tEsT.", MX, NOERROR, 2),
        // The delegated child zone (served by the same authority).
        case("child.diff.test.", SOA, NOERROR, 1),
        case("host.child.diff.test.", A, NOERROR, 1),
        case("nope.child.diff.test.", A, NXDOMAIN, 0),
        // A zone the authority does not serve (it refuses).
        case("host.unserved.test.", A, SERVFAIL, 0),
        // Too large for UDP: truncated, then over TCP.
        large("big.diff.test.", A, usize::from(BIG_V4)),
        large("big6.diff.test.", AAAA, usize::from(BIG_V6)),
    ]
}

/// An answer record as compared: owner lowercased, type, canonical RDATA.
type Key = (String, RecordType, Vec<u8>);

/// What a resolver answered to one case.
#[derive(Debug, Clone)]
struct Outcome {
    rcode: ResponseCode,
    truncated: bool,
    /// Compared by key; the value is the record's text, for the report.
    answers: BTreeMap<Key, String>,
}

impl Outcome {
    fn agrees_with(&self, other: &Outcome) -> bool {
        self.rcode == other.rcode
            && self.truncated == other.truncated
            && self.answers.keys().eq(other.answers.keys())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rcode)?;
        if self.truncated {
            write!(f, ", truncated over UDP (answer over TCP)")?;
        }
        write!(f, ", {} answers", self.answers.len())?;
        for text in self.answers.values() {
            write!(f, "\n      {text}")?;
        }
        Ok(())
    }
}

/// Asks `resolver` as a stub does: UDP without EDNS, then TCP if truncated.
fn ask(resolver: SocketAddr, case: &Case) -> Outcome {
    let query = query_message(case.name, case.rtype);
    let udp = send_udp(resolver, &query);
    let truncated = udp.metadata.truncation;
    let response = if truncated {
        TcpClient::connect(resolver).send(&query)
    } else {
        udp
    };
    Outcome {
        rcode: response.metadata.response_code,
        truncated,
        answers: answer_set(&response),
    }
}

fn answer_set(response: &Message) -> BTreeMap<Key, String> {
    response
        .answers
        .iter()
        .map(|record| (key(record), text(record)))
        .collect()
}

fn key(record: &Record) -> Key {
    let mut rdata = Vec::new();
    let mut encoder = BinEncoder::new(&mut rdata);
    encoder.set_canonical_form(true);
    record
        .data
        .emit(&mut encoder)
        .unwrap_or_else(|e| panic!("cannot encode the RDATA of {record}: {e}"));
    (
        record.name.to_lowercase().to_ascii(),
        record.record_type(),
        rdata,
    )
}

/// The record as text, TTL left out; TXT strings one by one (hickory's
/// display joins them).
fn text(record: &Record) -> String {
    let data = match &record.data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| format!("\"{}\"", s.escape_ascii()))
            .collect::<Vec<_>>()
            .join(" "),
        // Types hickory does not know (DNAME among them), as RFC 3597 writes them.
        RData::Unknown { rdata, .. } => {
            let hex: String = rdata.anything.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\# {} {hex}", rdata.anything.len())
        }
        other => other.to_string(),
    };
    format!("{} {} {data}", record.name, record.record_type())
}

fn resolver_config(upstream: SocketAddr) -> String {
    let head = resolver_head(upstream, "");
    format!(
        r#"{head}
allow = ["127.0.0.0/8"]
timeout = "2s"
"#
    )
}

#[test]
fn forwarded_answers_equal_unbounds_for_the_same_authority() {
    let diff = diff_zone();
    let nsd = Nsd::start(&[
        ZoneFile {
            origin: ZONE,
            text: &diff,
        },
        ZoneFile {
            origin: "child.diff.test.",
            text: CHILD_ZONE,
        },
        ZoneFile {
            origin: "other.test.",
            text: OTHER_ZONE,
        },
        ZoneFile {
            origin: "2.0.192.in-addr.arpa.",
            text: REVERSE_ZONE,
        },
    ]);
    let unbound = Unbound::start(nsd.addr(), ZONE, &["test.", "2.0.192.in-addr.arpa."]);
    let ours = Resolver::start(&resolver_config(nsd.addr()));

    let cases = cases();
    let mut unexpected = Vec::new();
    let mut disagreements = Vec::new();
    for case in &cases {
        let reference = ask(unbound.addr(), case);
        let forwarded = ask(ours.addr(), case);
        let label = format!("{} {}", case.name, case.rtype);
        if reference.rcode != case.rcode
            || reference.answers.len() != case.answers
            || reference.truncated != case.tcp
        {
            unexpected.push(format!(
                "{label}: expected {} with {} answers{}; unbound answered {reference}",
                case.rcode,
                case.answers,
                if case.tcp { ", truncated over UDP" } else { "" },
            ));
        }
        if !forwarded.agrees_with(&reference) {
            disagreements.push(format!(
                "{label}:\n  ours:    {forwarded}\n  unbound: {reference}"
            ));
        }
    }
    assert!(
        unexpected.is_empty() && disagreements.is_empty(),
        "{} of {} cases disagree:\n{}\n\nthe reference did not answer as the zone says in {} cases (a broken zone or setup):\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n"),
        unexpected.len(),
        unexpected.join("\n")
    );
}
