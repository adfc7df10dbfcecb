//! A test bed: a resolver on a config the test builds, and the replicated
//! servers it answers with.
//!
//! * [`ResolverConfig`] and [`Group`] build a resolver's config section by
//!   section: `[dns]`, `[http]` and `[forward]` on free loopback ports, a
//!   `[probe]` section, the push key, `[admin]`, zone `any.example.net`,
//!   and `[[group]]` tables with their settings and members. A test names
//!   only what differs from the defaults.
//! * [`Bed`] starts a resolver on such a config, with [`Member`]s (a test
//!   web server per member, serving its probe file from a docroot, and the
//!   `anycast-agent` that measures it and pushes, or a [`SteadyAgent`] that
//!   reports a set TUFR) started first so that their ports are in the
//!   config.
//!
//! Timing settings are shorter than the defaults so end-to-end suites stay
//! quick; tests derive their bounds from them.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anycast_proto::probe::ProbeFile;
use anycast_proto::push::{Push, PushKey, SIGNATURE_HEADER, ServerState};
use serde_json::Value;

use crate::fixtures::{NO_UPSTREAM, admin_toml, resolver_head_with};
use crate::http;
use crate::process::{Agent, Resolver};
use crate::web::WebServer;

/// The push key's id, shared by the agents and the resolver of a bed.
pub const KEY_ID: &str = "k1";
/// The variable the key is passed in (to child processes only).
pub const KEY_ENV: &str = "ANYCAST_TEST_PUSH_KEY";
/// The shared secret.
pub const SECRET: &str = "anycast-test-shared-secret";
/// The zone every bed's resolver serves.
pub const ZONE: &str = "any.example.net";
/// The group of [`Group::bed`].
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
    /// The steady agent standing in for `agent`, if started (dropped
    /// first: it writes into the docroot).
    pub steady: Option<SteadyAgent>,
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
            steady: None,
            web,
            docroot,
            agent: None,
        }
    }

    /// A member at `addr` with no agent, its docroot serving a valid probe
    /// file (state up, TUFR 1 ms) written once.
    pub fn with_probe_file(addr: impl ToSocketAddrs, delay: Duration) -> Member {
        let member = Member::start_at(addr, delay);
        write_probe_file(
            &member.docroot.path().join(PROBE_PATH),
            &member.endpoint(),
            1.0,
            1,
            unix_now(),
        );
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

    /// Starts a [`SteadyAgent`] for the member, reporting `tufr_ms` to
    /// `resolver_http`.
    pub fn start_steady_agent(&mut self, resolver_http: SocketAddr, tufr_ms: f64) {
        self.steady = Some(SteadyAgent::start(self, resolver_http, tufr_ms));
    }

    /// Starts the member's agent reading its server's status page
    /// ([`start_agent_reading_status`]), pushing to `resolver_http`.
    pub fn start_agent_reading_status(&mut self, resolver_http: SocketAddr, workers: u32) {
        self.agent = Some(start_agent_reading_status(
            &self.web,
            self.docroot.path(),
            resolver_http,
            workers,
        ));
    }
}

// ---------------------------------------------------------------------------
// Resolver configs
// ---------------------------------------------------------------------------

/// A resolver config, built section by section. [`ResolverConfig::new`]
/// gives `[dns]` and `[http]` on free loopback ports, `[forward]` to
/// [`NO_UPSTREAM`], the bed's push key ([`KEY_ID`], read from [`KEY_ENV`])
/// and zone [`ZONE`], with no group; the methods add to it. Its text is its
/// [`Display`](fmt::Display).
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    dns: String,
    http: String,
    upstream: String,
    forward: String,
    /// `[probe]`'s lines, if the section is written at all.
    probe: Option<String>,
    key: Option<PushKeyConfig>,
    /// The token and state file of `[admin]`, if the section is written.
    admin: Option<(PathBuf, PathBuf)>,
    admin_extra: String,
    groups: Vec<Group>,
}

/// A `[[push.key]]` and the secret the resolver is started with.
#[derive(Debug, Clone)]
struct PushKeyConfig {
    id: String,
    env: String,
    secret: String,
}

impl Default for ResolverConfig {
    fn default() -> ResolverConfig {
        ResolverConfig::new()
    }
}

impl ResolverConfig {
    /// The defaults (see [`ResolverConfig`]).
    pub fn new() -> ResolverConfig {
        ResolverConfig {
            dns: String::new(),
            http: String::new(),
            upstream: NO_UPSTREAM.to_owned(),
            forward: String::new(),
            probe: None,
            key: None,
            admin: None,
            admin_extra: String::new(),
            groups: Vec::new(),
        }
        .push_key(KEY_ID, KEY_ENV, SECRET)
    }

    /// More `[dns]` settings (TOML lines).
    pub fn dns(mut self, lines: &str) -> ResolverConfig {
        add_lines(&mut self.dns, lines);
        self
    }

    /// More `[http]` settings (TOML lines).
    pub fn http(mut self, lines: &str) -> ResolverConfig {
        add_lines(&mut self.http, lines);
        self
    }

    /// `[forward] upstreams` is `[upstream]` instead of [`NO_UPSTREAM`].
    pub fn upstream(mut self, upstream: impl fmt::Display) -> ResolverConfig {
        self.upstream = upstream.to_string();
        self
    }

    /// More `[forward]` settings (TOML lines).
    pub fn forward(mut self, lines: &str) -> ResolverConfig {
        add_lines(&mut self.forward, lines);
        self
    }

    /// A `[probe]` section with `lines` (written even if they are empty).
    pub fn probe(mut self, lines: &str) -> ResolverConfig {
        add_lines(self.probe.get_or_insert_with(String::new), lines);
        self
    }

    /// The push key: id `id`, its secret read from `env`, and `secret` in
    /// that variable when the resolver is started (instead of the bed's).
    pub fn push_key(mut self, id: &str, env: &str, secret: &str) -> ResolverConfig {
        self.key = Some(PushKeyConfig {
            id: id.to_owned(),
            env: env.to_owned(),
            secret: secret.to_owned(),
        });
        self
    }

    /// No push key (and no secret in the resolver's environment).
    pub fn without_push_key(mut self) -> ResolverConfig {
        self.key = None;
        self
    }

    /// An `[admin]` section on a free loopback port, with the token and
    /// state file at the given paths ([`admin_toml`]).
    pub fn admin(mut self, token_file: &Path, state_file: &Path) -> ResolverConfig {
        self.admin = Some((token_file.to_owned(), state_file.to_owned()));
        self
    }

    /// More `[admin]` settings (TOML lines), for an [`ResolverConfig::admin`]
    /// section.
    pub fn admin_settings(mut self, lines: &str) -> ResolverConfig {
        add_lines(&mut self.admin_extra, lines);
        self
    }

    /// A `[[group]]` table after those already there.
    pub fn group(mut self, group: Group) -> ResolverConfig {
        self.groups.push(group);
        self
    }

    /// Starts a resolver on this config, with the push key's secret in its
    /// environment.
    pub fn start(&self) -> Resolver {
        let env: Vec<(&str, &str)> = self
            .key
            .iter()
            .map(|key| (key.env.as_str(), key.secret.as_str()))
            .collect();
        Resolver::start_with(&self.to_string(), &[], &env)
    }
}

impl fmt::Display for ResolverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&resolver_head_with(&self.upstream, &self.dns, &self.http))?;
        f.write_str(&self.forward)?;
        if let Some(probe) = &self.probe {
            write!(f, "\n[probe]\n{probe}")?;
        }
        if let Some(key) = &self.key {
            write!(
                f,
                "\n[[push.key]]\nid = \"{}\"\nenv = \"{}\"\n",
                key.id, key.env
            )?;
        }
        if let Some((token_file, state_file)) = &self.admin {
            write!(
                f,
                "\n{}{}",
                admin_toml(token_file, state_file),
                self.admin_extra
            )?;
        }
        write!(f, "\n[[zone]]\nname = \"{ZONE}\"\n")?;
        self.groups
            .iter()
            .try_for_each(|group| write!(f, "{group}"))
    }
}

/// A `[[group]]` table: its service, settings and `[[group.member]]`s, in
/// the order given. Its text is its [`Display`](fmt::Display).
#[derive(Debug, Clone)]
pub struct Group {
    service: String,
    settings: String,
    members: String,
}

impl Group {
    /// Group `service` with no settings and no member.
    pub fn new(service: &str) -> Group {
        Group {
            service: service.to_owned(),
            settings: String::new(),
            members: String::new(),
        }
    }

    /// The beds' group: `web` (so [`ADN`]), probed every
    /// [`PROBE_INTERVAL`] and expecting a push every [`HEARTBEAT`].
    pub fn bed() -> Group {
        Group::new("web")
            .probe_interval(PROBE_INTERVAL)
            .heartbeat(HEARTBEAT)
    }

    /// `probe_interval`.
    pub fn probe_interval(self, interval: Duration) -> Group {
        self.set("probe_interval", toml_duration(interval))
    }

    /// `heartbeat`: how often a push is expected.
    pub fn heartbeat(self, heartbeat: Duration) -> Group {
        self.set("heartbeat", toml_duration(heartbeat))
    }

    /// `probe_timeout`.
    pub fn probe_timeout(self, timeout: Duration) -> Group {
        self.set("probe_timeout", toml_duration(timeout))
    }

    /// `threshold`: how much slower than the best a member of the
    /// equivalent set may be, as a fraction of the best.
    pub fn threshold(self, threshold: f64) -> Group {
        // Debug, not Display: a float keeps its point (`1.0`, not `1`).
        self.set("threshold", format!("{threshold:?}"))
    }

    /// `slack`: how much slower than the best a member of the equivalent
    /// set may be in any case.
    pub fn slack(self, slack: Duration) -> Group {
        self.set("slack", toml_duration(slack))
    }

    /// `answer`: the answer mode (`one`, `set`, ...).
    pub fn answer(self, mode: &str) -> Group {
        self.set("answer", format!("\"{mode}\""))
    }

    /// `load_model` (`pushed`, ...).
    pub fn load_model(self, model: &str) -> Group {
        self.set("load_model", format!("\"{model}\""))
    }

    /// More of the group's settings (TOML lines), written as they are.
    pub fn settings(mut self, lines: &str) -> Group {
        add_lines(&mut self.settings, lines);
        self
    }

    /// A member at `endpoint`, probed at its probe file ([`member_toml`]).
    pub fn member(mut self, endpoint: SocketAddr) -> Group {
        self.members.push_str(&member_toml(endpoint));
        self
    }

    /// [`Group::member`] for each of `endpoints`, in order.
    pub fn members(self, endpoints: impl IntoIterator<Item = SocketAddr>) -> Group {
        endpoints.into_iter().fold(self, Group::member)
    }

    /// A member at `endpoint` (`("127.0.0.1", 80)`, `"127.0.0.1:80"`, ...)
    /// probed at `probe`.
    pub fn member_probed_at(mut self, endpoint: impl ToSocketAddrs, probe: &str) -> Group {
        self.members
            .push_str(&member_table(socket_addr(endpoint), Some(probe)));
        self
    }

    /// A member at `endpoint` with no probe URL.
    pub fn member_unprobed(mut self, endpoint: impl ToSocketAddrs) -> Group {
        self.members
            .push_str(&member_table(socket_addr(endpoint), None));
        self
    }

    /// `key = value`, `value` already in TOML.
    fn set(self, key: &str, value: String) -> Group {
        self.settings(&format!("{key} = {value}"))
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n[[group]]\nservice = \"{}\"\n{}{}",
            self.service, self.settings, self.members
        )
    }
}

/// A resolver config's `[[group.member]]` for the server at `endpoint`,
/// with its probe file's URL.
pub fn member_toml(endpoint: SocketAddr) -> String {
    member_table(endpoint, Some(&format!("http://{endpoint}/{PROBE_PATH}")))
}

fn member_table(endpoint: SocketAddr, probe: Option<&str>) -> String {
    let probe = probe
        .map(|url| format!("probe = \"{url}\"\n"))
        .unwrap_or_default();
    format!(
        "[[group.member]]\naddress = \"{}\"\nport = {}\n{probe}",
        endpoint.ip(),
        endpoint.port()
    )
}

fn socket_addr(endpoint: impl ToSocketAddrs) -> SocketAddr {
    endpoint
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("a member's address and port")
}

/// `lines` appended to `to`, ending in a newline (nothing if empty).
fn add_lines(to: &mut String, lines: &str) {
    to.push_str(lines);
    if !lines.is_empty() && !lines.ends_with('\n') {
        to.push('\n');
    }
}

/// A duration as a TOML string, the way a config writes it: `"1h"`, `"2s"`
/// or `"300ms"`.
fn toml_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0 => "\"0ms\"".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("\"{}h\"", ms / 3_600_000),
        _ if ms.is_multiple_of(1000) => format!("\"{}s\"", ms / 1000),
        _ => format!("\"{ms}ms\""),
    }
}

// ---------------------------------------------------------------------------
// The bed
// ---------------------------------------------------------------------------

/// What a bed's members run besides their web server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agents {
    /// No agent: the test pushes itself, or not at all.
    None,
    /// An agent per member ([`start_agent`]).
    Measuring,
    /// An agent per member that also reads its server's status page, the
    /// server having `workers` workers ([`start_agent_reading_status`]).
    ReadingStatus {
        /// The workers each server tells of.
        workers: u32,
    },
    /// A [`SteadyAgent`] per member, reporting its server's delay as its
    /// TUFR: the estimates move only with the resolver's own probes.
    Steady,
}

impl Agents {
    /// Starts `member`'s agent, if any, pushing to `resolver_http`.
    fn start(self, member: &mut Member, resolver_http: SocketAddr) {
        match self {
            Agents::None => {}
            Agents::Measuring => member.start_agent(resolver_http),
            Agents::ReadingStatus { workers } => {
                member.start_agent_reading_status(resolver_http, workers);
            }
            Agents::Steady => {
                let delay_ms = member.web.delay().as_secs_f64() * 1000.0;
                member.start_steady_agent(resolver_http, delay_ms);
            }
        }
    }
}

/// A resolver on a [`ResolverConfig`], with the members the bed started
/// for its last group. Everything is killed when dropped.
#[derive(Debug)]
pub struct Bed {
    /// The members the bed started, in the order given; a test may take
    /// one out to stop it. (Dropped before the resolver: a steady agent
    /// that cannot push fails the test.)
    pub members: Vec<Member>,
    /// The resolver (a new one after [`Bed::restart`]).
    pub resolver: Resolver,
    config: ResolverConfig,
}

impl Bed {
    /// A resolver on `config`, with no member of the bed's own.
    pub fn start(config: ResolverConfig) -> Bed {
        Bed::start_with_members(config, &[], Agents::None)
    }

    /// Web servers on `(ip, delay in ms)` (free ports), added in that order
    /// to the last group of `config`; the resolver on it; then `agents`.
    /// (The members' ports must be known for the resolver's config, and the
    /// resolver's HTTP address for the agents' configs.)
    pub fn start_with_members(
        mut config: ResolverConfig,
        servers: &[(&str, u64)],
        agents: Agents,
    ) -> Bed {
        let members: Vec<Member> = servers
            .iter()
            .map(|(ip, ms)| Member::start(ip, Duration::from_millis(*ms)))
            .collect();
        if !members.is_empty() {
            let group = config.groups.pop().expect("a group for the bed's members");
            config = config.group(group.members(members.iter().map(|m| m.web.addr())));
        }
        let resolver = config.start();
        let mut bed = Bed {
            resolver,
            members,
            config,
        };
        if agents != Agents::None {
            let http = bed.http();
            for member in &mut bed.members {
                agents.start(member, http);
            }
        }
        bed
    }

    /// Starts a new resolver on the same config (the old one is killed once
    /// the new one is up, unless it has exited already). Its ports are new.
    pub fn restart(&mut self) {
        self.resolver = self.config.start();
    }

    /// The config the resolver runs on.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The resolver's DNS address (UDP and TCP).
    pub fn dns(&self) -> SocketAddr {
        self.resolver.addr()
    }

    /// The resolver's HTTP API.
    pub fn http(&self) -> SocketAddr {
        self.resolver
            .http_addr()
            .expect("the resolver logs its HTTP listener")
    }

    /// `GET /v1/groups/{ADN}`: the bed's group as the API shows it.
    pub fn view(&self) -> Value {
        http::get_json(self.http(), &format!("/v1/groups/{ADN}"))
    }

    /// The member at `endpoint` in [`Bed::view`] (panics if it is not there).
    pub fn member_view(&self, endpoint: &str) -> Value {
        let view = self.view();
        view["members"]
            .as_array()
            .and_then(|members| members.iter().find(|m| m["endpoint"] == endpoint))
            .cloned()
            .unwrap_or_else(|| panic!("{endpoint} not in {view:#}"))
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Value {
        http::get_json(self.http(), "/v1/status")
    }
}

// ---------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------

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

/// A scripted agent: pushes the same TUFR for its member, signed with the
/// bed's key, and writes it into the member's probe file, at once and then
/// every quarter [`HEARTBEAT`] until dropped. What the resolver sees of the
/// member then changes only with its own probes, not with what a real
/// agent's timing meets on a busy machine; and the TUFR may be a lie.
#[derive(Debug)]
pub struct SteadyAgent {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SteadyAgent {
    /// Reports `tufr_ms` for `member` to `resolver_http`, the first time
    /// before returning.
    pub fn start(member: &Member, resolver_http: SocketAddr, tufr_ms: f64) -> SteadyAgent {
        let mut report = SteadyReport {
            key: PushKey::new(KEY_ID, SECRET.as_bytes()).expect("the bed's key"),
            server: member.endpoint(),
            probe_file: member.docroot.path().join(PROBE_PATH),
            resolver_http,
            tufr_ms,
            seq: 0,
        };
        report.send();
        let (stop, stopped) = mpsc::channel();
        let thread = thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT / 4) {
                report.send();
            }
        });
        SteadyAgent {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for SteadyAgent {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A report that failed panicked the thread: the test fails with
            // it (unless it is failing already).
            if let Err(panic) = thread.join()
                && !thread::panicking()
            {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// One [`SteadyAgent`]'s push and probe file.
struct SteadyReport {
    key: PushKey,
    server: String,
    probe_file: PathBuf,
    resolver_http: SocketAddr,
    tufr_ms: f64,
    seq: u64,
}

impl SteadyReport {
    fn send(&mut self) {
        self.seq += 1;
        let now = unix_now();
        write_probe_file(&self.probe_file, &self.server, self.tufr_ms, self.seq, now);
        let push = Push {
            server: self.server.clone(),
            groups: vec![ADN.into()],
            state: ServerState::Up,
            tufr_ms: Some(self.tufr_ms),
            seq: self.seq,
            sent_at_ms: now.as_millis() as u64,
            in_flight: None,
            workers: None,
            service_ms: None,
            stalled_ms: None,
        };
        let body = push.to_json();
        let signature = self.key.sign(self.seq, now.as_secs(), &body).to_string();
        let response = http::post(
            self.resolver_http,
            "/v1/push",
            &[(SIGNATURE_HEADER, &signature)],
            &body,
        );
        assert_eq!(response.status, 200, "push refused: {}", response.text());
    }
}

/// The time since the Unix epoch.
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// Writes a probe file at `path` for `server`, up with `tufr_ms`, as of
/// `at` (since the Unix epoch).
fn write_probe_file(path: &Path, server: &str, tufr_ms: f64, seq: u64, at: Duration) {
    let file = ProbeFile {
        server: server.to_owned(),
        state: ServerState::Up,
        tufr_ms: Some(tufr_ms),
        seq,
        at_ms: at.as_millis() as u64,
        pad: String::new(),
    };
    std::fs::write(path, file.to_json(256)).expect("the probe file");
}
