//! Fixtures the fuzz targets share: the zones names are parsed against, the
//! push key, a resolver configuration with a few groups, and a DNS front
//! built from it that answers in process.
//!
//! Every target under `fuzz_targets/` is one libFuzzer binary; `scripts/fuzz.sh`
//! runs them, and replays the committed corpus in CI.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anycast_proto::Zone;
use anycast_proto::push::{Push, PushKey, ServerState};
use anycast_resolver::authority::Authorities;
use anycast_resolver::config::Config;
use anycast_resolver::dns::{DnsFront, Transport};
use anycast_resolver::forward::Forwarder;
use anycast_selection::groups::Directory;
use anycast_resolver::membership::Membership;
use anycast_resolver::observe::Observations;

/// The secret of [`push_key`]; also what [`env`] returns for every
/// `ANYCAST_*` variable a configuration names.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// The clock the push targets run at (seconds since the Unix epoch); seeds
/// are signed at it.
pub const NOW_UNIX: u64 = 1_700_000_000;

/// The zones of the name grammar target: nested (`any.example.net` is under
/// `example.net`), so the longest-zone rule is exercised.
pub fn zones() -> Vec<Zone> {
    ["any.example.net", "example.net", "cc.gatech.edu"]
        .into_iter()
        .map(|z| Zone::new(z).expect("fixture zone is valid"))
        .collect()
}

/// The key agents sign with, known to [`RESOLVER_CONFIG`] as `k1`.
pub fn push_key() -> PushKey {
    PushKey::new("k1", SECRET.as_bytes()).expect("fixture key is valid")
}

/// Environment lookup for config parsing: `ANYCAST_*` variables hold
/// [`SECRET`], others are unset. The process environment is never read.
pub fn env(name: &str) -> Option<OsString> {
    name.starts_with("ANYCAST").then(|| OsString::from(SECRET))
}

/// The resolver the push and DNS targets run against. Clients other than
/// loopback may not recurse, and the fuzzed client is not loopback, so no
/// query ever leaves the process.
pub const RESOLVER_CONFIG: &str = r#"
[forward]
upstreams = ["127.0.0.1:9"]
allow = ["127.0.0.0/8"]
timeout = "100ms"

[push]
window = "30s"

[[push.key]]
id = "k1"
env = "ANYCAST_PUSH_KEY"

[[zone]]
name = "any.example.net"
negative_ttl = 5

[[zone]]
name = "cc.gatech.edu"

# Three members: pushes make the measured metrics mean something.
[[group]]
zone = "any.example.net"
service = "web"
ttl = 2

[[group.member]]
address = "127.0.1.1"
port = 8080
cost = 1

[[group.member]]
address = "127.0.1.2"
port = 8080
cost = 2

[[group.member]]
address = "127.0.1.3"
port = 8080
cost = 1

# IPv6 members and the whole set in answers.
[[group]]
zone = "any.example.net"
service = "v6"
answer = "set"

[[group.member]]
address = "2001:db8::1"

[[group.member]]
address = "2001:db8::2"

[[group.member]]
address = "192.0.2.7"
"#;

/// The address of a member of `web` that [`DnsFixture`] has pushes for.
pub const WEB_MEMBERS: [&str; 3] = ["127.0.1.1:8080", "127.0.1.2:8080", "127.0.1.3:8080"];

/// A group so large that its whole-set answer does not fit in 512 bytes,
/// for the truncation path.
fn big_group() -> String {
    let mut text = String::from(
        "\n[[group]]\nzone = \"cc.gatech.edu\"\nservice = \"big\"\nanswer = \"set\"\n",
    );
    for i in 1..=60 {
        text.push_str(&format!("\n[[group.member]]\naddress = \"10.0.0.{i}\"\n"));
    }
    text
}

/// [`RESOLVER_CONFIG`] with its large group, parsed.
pub fn resolver_config() -> Config {
    let text = format!("{RESOLVER_CONFIG}{}", big_group());
    let source = anycast_config_file::Source::new(text, Path::new("fuzz.toml"));
    Config::from_source(&source, &env).expect("fixture config is valid")
}

/// The directory of [`resolver_config`].
pub fn directory() -> Directory {
    anycast_resolver::directory(&resolver_config())
}

/// A push body and its signature header, signed with [`push_key`].
pub fn signed(push: &Push, timestamp: u64) -> (String, Vec<u8>) {
    let body = push.to_json();
    let header = push_key().sign(push.seq, timestamp, &body).to_string();
    (header, body)
}

/// A push from `server` for `web.any.example.net`.
pub fn web_push(server: &str, state: ServerState, tufr_ms: Option<f64>, seq: u64) -> Push {
    Push {
        server: server.to_owned(),
        groups: vec!["web.any.example.net".to_owned()],
        state,
        tufr_ms,
        seq,
        sent_at_ms: NOW_UNIX * 1000,
        in_flight: None,
        workers: None,
        service_ms: None,
        stalled_ms: None,
    }
}

/// The client every fuzzed query comes from: not allowed to recurse.
pub fn client() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 99], 40000))
}

/// A DNS front over [`resolver_config`], with pushes received for `web`,
/// answering on a current-thread runtime.
#[derive(Debug)]
pub struct DnsFixture {
    runtime: tokio::runtime::Runtime,
    front: DnsFront,
    /// The largest UDP payload the front answers with.
    pub udp_payload: u16,
}

impl DnsFixture {
    /// Builds the front, as the resolver's `run` does but with no sockets.
    pub fn new() -> DnsFixture {
        let config = resolver_config();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let membership =
            Membership::new(config.zones.clone(), config.group_specs(), None).expect("membership");
        let observations = Observations::new(config.push.clone());
        let pushes = &observations.pushes;
        let directory = membership.directory();
        let now = Instant::now();
        let reports = [
            (ServerState::Up, Some(10.0)),
            (ServerState::Up, Some(40.0)),
            (ServerState::Draining, None),
        ];
        for (server, (state, tufr)) in WEB_MEMBERS.iter().zip(reports) {
            let (header, body) = signed(&web_push(server, state, tufr, 1), NOW_UNIX);
            pushes
                .receive(Some(&header), &body, &directory, now, NOW_UNIX)
                .expect("fixture push is accepted");
        }
        let front = {
            let _guard = runtime.enter();
            let forwarder = Forwarder::new(&config.forward).expect("forwarder");
            let membership = Arc::new(membership);
            let authorities =
                Authorities::new(membership.clone(), pushes.clone(), forwarder.clone())
                    .expect("authorities");
            DnsFront::new(
                &config,
                membership.subscribe(),
                observations.clone(),
                authorities,
                forwarder,
            )
        };
        DnsFixture {
            runtime,
            front,
            udp_payload: config.dns.udp_payload,
        }
    }

    /// One request in, the response (if any) out.
    pub fn answer(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.runtime
            .block_on(self.front.answer(request.to_vec(), client(), transport))
    }
}

impl Default for DnsFixture {
    fn default() -> Self {
        DnsFixture::new()
    }
}

/// Whether two TUFRs read back from JSON are the same but for their last
/// bits: serde_json's default float parser is not correctly rounded, so a
/// printed float may read back one ULP off.
pub fn same_tufr(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 1e-12,
        (x, y) => x == y,
    }
}
