//! A test bed's replicated servers: a test web server per member, serving
//! its probe file from a docroot, and the `anycast-agent` that measures it
//! and pushes to a resolver. Timing settings are shorter than the defaults
//! so end-to-end suites stay quick; tests derive their bounds from them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anycast_proto::probe::ProbeFile;
use anycast_proto::push::ServerState;

use crate::harness::Agent;
use crate::web::WebServer;

/// The push key's id, shared by the agents and the resolver of a bed.
pub const KEY_ID: &str = "k1";
/// The variable the key is passed in (to child processes only).
pub const KEY_ENV: &str = "ANYCAST_TEST_PUSH_KEY";
/// The shared secret.
pub const SECRET: &str = "anycast-test-shared-secret";
/// The group every bed serves.
pub const ADN: &str = "web.any.example.net";
/// Where the probe file is, under a member's docroot and in its URL.
pub const PROBE_PATH: &str = ".well-known/anycast-probe.json";
/// Probe interval of the beds' resolvers.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(300);
/// Push heartbeat of the agents (and the resolver's expectation).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Least time between two pushes of one agent.
pub const MIN_PUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Smoothing time constant of the agents.
pub const TAU: Duration = Duration::from_millis(300);

/// A member: its web server, its docroot, and its agent once started.
#[derive(Debug)]
pub struct Member {
    /// The server clients and probes reach.
    pub web: WebServer,
    /// Where the agent writes the probe file (kept alive with the member).
    pub docroot: tempfile::TempDir,
    /// The agent, if started.
    pub agent: Option<Agent>,
}

impl Member {
    /// A web server on `ip` (free port) answering after `delay`; no agent yet.
    pub fn start(ip: &str, delay: Duration) -> Member {
        Member::start_at((ip, 0), delay)
    }

    /// A web server at `addr` answering after `delay`; no agent yet.
    pub fn start_at(addr: impl ToSocketAddrs, delay: Duration) -> Member {
        let docroot = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(docroot.path().join(".well-known")).expect("the docroot");
        let web = WebServer::with_docroot(addr, docroot.path()).expect("a web server");
        web.set_delay(delay);
        Member {
            web,
            docroot,
            agent: None,
        }
    }

    /// A member at `addr` with no agent, its docroot serving a valid probe
    /// file (state up, TUFR 1 ms) written once.
    pub fn with_probe_file(addr: impl ToSocketAddrs, delay: Duration) -> Member {
        let member = Member::start_at(addr, delay);
        let file = ProbeFile {
            server: member.endpoint(),
            state: ServerState::Up,
            tufr_ms: Some(1.0),
            seq: 1,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_millis() as u64,
            pad: String::new(),
        };
        std::fs::write(member.docroot.path().join(PROBE_PATH), file.to_json(256))
            .expect("the probe file");
        member
    }

    /// The URL of the member's probe file.
    pub fn probe_url(&self) -> String {
        format!("http://{}/{PROBE_PATH}", self.web.addr())
    }

    /// `address:port`, as the resolver names the member.
    pub fn endpoint(&self) -> String {
        self.web.addr().to_string()
    }

    /// Starts the member's agent, pushing to `resolver_http`.
    pub fn start_agent(&mut self, resolver_http: SocketAddr) {
        self.agent = Some(start_agent(&self.web, self.docroot.path(), resolver_http));
    }
}

/// A resolver config for a bed: the push key, zone `any.example.net`, and
/// group `web` probed every [`PROBE_INTERVAL`] and expecting a push every
/// [`HEARTBEAT`], with more of the group's settings in `settings` and its
/// `[[group.member]]` tables in `members`. Start the resolver with
/// `(KEY_ENV, SECRET)` in its environment.
pub fn resolver_toml(settings: &str, members: &str) -> String {
    format!(
        r#"{head}
[[push.key]]
id = "{KEY_ID}"
env = "{KEY_ENV}"

[[zone]]
name = "any.example.net"

[[group]]
service = "web"
probe_interval = "{probe}ms"
heartbeat = "{heartbeat}ms"
{settings}
{members}"#,
        head = crate::harness::resolver_head(crate::harness::NO_UPSTREAM, ""),
        probe = PROBE_INTERVAL.as_millis(),
        heartbeat = HEARTBEAT.as_millis(),
    )
}

/// A resolver config's `[[group.member]]` for the server at `endpoint`,
/// with its probe file's URL.
pub fn member_toml(endpoint: SocketAddr) -> String {
    format!(
        "[[group.member]]\naddress = \"{}\"\nport = {}\nprobe = \"http://{endpoint}/{PROBE_PATH}\"\n",
        endpoint.ip(),
        endpoint.port()
    )
}

/// An agent for `web` (active measurement every 50 ms, the probe file in
/// `docroot`), pushing to `resolver_http` with the bed's timing settings.
pub fn start_agent(web: &WebServer, docroot: &Path, resolver_http: SocketAddr) -> Agent {
    Agent::start(
        &agent_toml(web, docroot, resolver_http),
        &[(KEY_ENV, SECRET)],
    )
}

/// [`start_agent`], the agent also reading `web`'s nginx-style status page
/// with `workers` workers: it pushes the server's requests in flight.
pub fn start_agent_reading_status(
    web: &WebServer,
    docroot: &Path,
    resolver_http: SocketAddr,
    workers: u32,
) -> Agent {
    let toml = format!(
        "{}\n[status]\nurl = \"{}\"\nformat = \"nginx\"\nworkers = {workers}\n",
        agent_toml(web, docroot, resolver_http),
        web.stub_status_url()
    );
    Agent::start(&toml, &[(KEY_ENV, SECRET)])
}

/// The config of an agent for `web` (see [`start_agent`]).
pub fn agent_toml(web: &WebServer, docroot: &Path, resolver_http: SocketAddr) -> String {
    agent_toml_for(web.addr(), &web.url(), docroot, resolver_http)
}

/// The config of an agent for the server at `server`, timing `url` and
/// writing its probe file under `docroot`, with the bed's timing settings.
pub fn agent_toml_for(
    server: SocketAddr,
    url: &str,
    docroot: &Path,
    resolver_http: SocketAddr,
) -> String {
    format!(
        r#"
server = "{server}"
groups = ["{ADN}"]
push_urls = ["http://{resolver_http}/v1/push"]

[key]
id = "{KEY_ID}"
env = "{KEY_ENV}"

[active]
url = "{url}"
interval = "50ms"
timeout = "1s"

[smoothing]
time_constant = "{tau}ms"

[probe_file]
path = "{probe}"
size = 256

[push]
min_interval = "{min_push}ms"
heartbeat = "{heartbeat}ms"
"#,
        tau = TAU.as_millis(),
        probe = docroot.join(PROBE_PATH).display(),
        min_push = MIN_PUSH_INTERVAL.as_millis(),
        heartbeat = HEARTBEAT.as_millis(),
    )
}
