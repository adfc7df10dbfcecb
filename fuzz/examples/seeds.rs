//! Writes the seed corpora under `fuzz/corpus/<target>/`: small, meaningful
//! inputs from which the fuzzer mutates. The committed seeds were made with
//!
//! ```text
//! cd fuzz && cargo run --example seeds
//! ```
//!
//! (which `scripts/fuzz.sh seeds` runs). Existing files of the same names are
//! overwritten; others, such as regressions, are left alone.

use std::fs;
use std::path::{Path, PathBuf};

use anycast_fuzz::{NOW_UNIX, RESOLVER_CONFIG, WEB_MEMBERS, signed, web_push};
use anycast_proto::probe::ProbeFile;
use anycast_proto::push::{Push, ServerState};
use anycast_resolver::dns::SET_OPTION;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RecordType};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    names(&root.join("name"));
    pushes(&root.join("push"));
    probe_files(&root.join("probe_file"));
    configs(&root.join("config"));
    queries(&root.join("dns"));
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(dir).expect("corpus directory");
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).expect("seed written");
}

fn names(dir: &Path) {
    let seeds = [
        ("adn", "web.any.example.net"),
        ("adn-fqdn", "web.any.example.net."),
        ("mqadn", "load.web.any.example.net"),
        ("mqadn-alias", "responsetime.web.any.example.net"),
        ("paper-adn", "Daily-News%any.example.net"),
        ("paper-mqadn", "ServerLoad.Daily-News%any.example.net"),
        ("paper-outer-zone", "rt.any%example.net"),
        ("outer-zone", "cost.web.example.net"),
        ("underscore", "daily_news.cc.gatech.edu"),
        ("apex", "any.example.net"),
        ("unknown-metric", "fastest.web.any.example.net"),
        ("too-many-labels", "a.b.web.any.example.net"),
        ("not-in-zone", "web.example.org"),
        ("two-percent", "a%b%any.example.net"),
        ("empty-label", "web..any.example.net"),
        ("extra-zone", "svc.example\nrandom.web.svc.example"),
    ];
    for (file, text) in seeds {
        write(dir, file, text);
    }
    write(
        dir,
        "long-label",
        format!("{}.any.example.net", "a".repeat(64)),
    );
    write(dir, "non-ascii", b"w\xffb.any.example.net");
}

fn pushes(dir: &Path) {
    let framed = |push: &Push, timestamp: u64| {
        let (header, body) = signed(push, timestamp);
        let mut bytes = header.into_bytes();
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        bytes
    };
    let up = web_push(WEB_MEMBERS[0], ServerState::Up, Some(12.5), 7);
    write(dir, "up", framed(&up, NOW_UNIX));
    write(
        dir,
        "down",
        framed(
            &web_push(WEB_MEMBERS[1], ServerState::Down, None, 3),
            NOW_UNIX,
        ),
    );
    write(
        dir,
        "draining-metric-group",
        framed(
            &Push {
                groups: vec!["load.web.any.example.net".into()],
                ..web_push(WEB_MEMBERS[2], ServerState::Draining, None, 9)
            },
            NOW_UNIX + 5,
        ),
    );
    write(
        dir,
        "paper-group-v6",
        framed(
            &Push {
                server: "[2001:db8::1]:80".into(),
                groups: vec!["V6%any.example.net".into()],
                ..up.clone()
            },
            NOW_UNIX,
        ),
    );
    write(
        dir,
        "not-member",
        framed(
            &Push {
                server: "192.0.2.1:80".into(),
                ..up.clone()
            },
            NOW_UNIX,
        ),
    );
    write(dir, "stale", framed(&up, NOW_UNIX - 3600));
    let (_, body) = signed(&up, NOW_UNIX);
    let mut unsigned = b"v1 key=k1 seq=7 ts=1700000000 mac=00ff\n".to_vec();
    unsigned.extend_from_slice(&body);
    write(dir, "bad-mac", unsigned);
    let mut unknown = b"v1 key=k9 seq=7 ts=1700000000 mac=00\n".to_vec();
    unknown.extend_from_slice(&body);
    write(dir, "unknown-key", unknown);
    write(
        dir,
        "malformed-body",
        "v1 key=k1 seq=1 ts=1700000000 mac=00\n{\"server\":1}",
    );
}

fn probe_files(dir: &Path) {
    let file = ProbeFile {
        server: "127.0.1.1:8080".into(),
        state: ServerState::Up,
        tufr_ms: Some(3.25),
        seq: 42,
        at_ms: NOW_UNIX * 1000,
        pad: String::new(),
    };
    write(dir, "up", file.to_json(0));
    write(dir, "up-padded", file.to_json(256));
    write(
        dir,
        "down",
        ProbeFile {
            state: ServerState::Down,
            tufr_ms: None,
            ..file.clone()
        }
        .to_json(0),
    );
    write(
        dir,
        "draining",
        ProbeFile {
            state: ServerState::Draining,
            tufr_ms: Some(0.0),
            ..file.clone()
        }
        .to_json(0),
    );
    write(
        dir,
        "out-of-range",
        r#"{"server":"a:1","state":"up","tufr_ms":1e9,"seq":1,"at_ms":1}"#,
    );
}

fn configs(dir: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for name in ["resolver", "agent", "demo", "local"] {
        let text = fs::read_to_string(examples.join(format!("{name}.toml")))
            .expect("example config readable");
        write(dir, &format!("example-{name}.toml"), text);
    }
    write(dir, "fuzz-resolver.toml", RESOLVER_CONFIG);
    write(
        dir,
        "minimal-agent.toml",
        r#"server = "127.0.1.1:8080"
groups = ["web.any.example.net"]
push_urls = ["http://127.0.0.1:8053/v1/push"]

[key]
id = "k1"

[passive]
log = "/var/log/nginx/access.log"
format = "regex"
regex = 'rt=(?P<t>[0-9.]+)'
unit = "s"

[join]
env = "ANYCAST_JOIN_TOKEN"
probe_url = "http://127.0.1.1:8080/probe.json"
"#,
    );
    write(
        dir,
        "local-zone.toml",
        r#"[[zone]]
name = "any.example.net"
role = "local"
authority = "http://127.0.0.1:8053"
cache_ttl = "2s"
max_stale = "5m"

[[zone]]
name = "example.net"

[[group]]
zone = "example.net"
service = "web"
threshold = 0.5
slack = "2ms"
pick = "weighted"

[[group.member]]
address = "::1"
port = 80
probe = "http://[::1]:80/probe.json"
weight = 3
"#,
    );
    write(
        dir,
        "error-position.toml",
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_payload = 99999\n",
    );
}

fn query(id: u16, name: &str, rtype: RecordType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname(name), rtype));
    message
}

/// A query name from raw labels: hickory's parser refuses the `%` of the
/// paper form, but DNS carries any byte in a label.
fn qname(name: &str) -> Name {
    let labels = name.trim_end_matches('.').split('.').map(str::as_bytes);
    let mut name = Name::from_labels(labels).expect("seed name");
    name.set_fqdn(true);
    name
}

fn with_edns(mut message: Message, payload: u16, set: bool) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    if set {
        edns.options_mut()
            .insert(EdnsOption::Unknown(SET_OPTION, Vec::new()));
    }
    message.set_edns(edns);
    message
}

fn queries(dir: &Path) {
    let encode = |m: &Message| m.to_vec().expect("seed query encodes");
    let seeds = [
        ("adn-a", query(1, "web.any.example.net.", RecordType::A)),
        (
            "mqadn-load-a",
            query(2, "load.web.any.example.net.", RecordType::A),
        ),
        (
            "mqadn-cost-edns",
            with_edns(
                query(3, "cost.web.any.example.net.", RecordType::A),
                1232,
                false,
            ),
        ),
        (
            "paper-form-a",
            query(4, "Path.Web%any.example.net.", RecordType::A),
        ),
        (
            "adn-txt",
            query(5, "rt.web.any.example.net.", RecordType::TXT),
        ),
        ("v6-aaaa", query(6, "v6.any.example.net.", RecordType::AAAA)),
        (
            "v6-set-option",
            with_edns(
                query(7, "rr.v6.any.example.net.", RecordType::A),
                4096,
                true,
            ),
        ),
        (
            "big-set-truncated",
            query(8, "random.big.cc.gatech.edu.", RecordType::A),
        ),
        (
            "big-set-edns-truncated",
            with_edns(query(9, "big.cc.gatech.edu.", RecordType::A), 600, false),
        ),
        ("apex-soa", query(10, "any.example.net.", RecordType::SOA)),
        (
            "unknown-service",
            query(11, "nope.any.example.net.", RecordType::A),
        ),
        (
            "unknown-metric",
            query(12, "fastest.web.any.example.net.", RecordType::A),
        ),
        ("web-mx", query(13, "web.any.example.net.", RecordType::MX)),
        (
            "forward-refused",
            query(14, "www.example.org.", RecordType::A),
        ),
    ];
    for (file, message) in &seeds {
        write(dir, file, encode(message));
    }

    let mut chaos = query(15, "web.any.example.net.", RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    write(dir, "class-ch", encode(&chaos));

    let mut notify = query(16, "web.any.example.net.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    write(dir, "opcode-notify", encode(&notify));

    let mut two = query(17, "web.any.example.net.", RecordType::A);
    two.add_query(Query::query(qname("v6.any.example.net."), RecordType::AAAA));
    write(dir, "two-questions", encode(&two));

    let mut badvers = Edns::new();
    badvers.set_version(1);
    let mut v1 = query(18, "web.any.example.net.", RecordType::A);
    v1.set_edns(badvers);
    write(dir, "edns-version-1", encode(&v1));

    let mut response = query(19, "web.any.example.net.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    write(dir, "response", encode(&response));

    let adn = encode(&seeds[0].1);
    write(dir, "truncated-question", &adn[..adn.len() - 3]);
    write(dir, "header-only", &adn[..12]);
    // A question whose name is a compression pointer to itself.
    let mut looped = adn[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    write(dir, "pointer-loop", looped);
}
