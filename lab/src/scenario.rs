//! Scenario files: what the testbed runs, as TOML.
//!
//! A scenario describes the replicated servers (workers, service time,
//! background load over time, emulated path RTT and how it changes, outages:
//! a server that dies or black-holes and comes back), the clients (how many
//! over time, how long they think, what they fetch, whether they honour the
//! DNS TTL, how often they retry), the resolvers (how many share the
//! clients, and in which role), how long each policy runs and the random
//! seed. `lab/scenarios/suite/paper.toml` is the commented reference.
//!
//! Like the project's other configuration files, a scenario is read in two
//! steps: serde into `Raw*` structs (`deny_unknown_fields`, so a typo is an
//! error rather than a silent default), then checks serde cannot make
//! (ranges, order, references). Errors of either step name the file, the
//! line and the field, through `anycast-config-file`'s [`Source`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anycast_config_file::{ConfigError, HumanDuration, Source, Spanned, spanned};
use serde::Deserialize;

use crate::policy::{Groups, Policy};

/// The most servers a scenario may have: server `N` listens on 127.0.1.N and
/// 127.0.2.N, so N stays within one byte, 1..=250.
pub const MAX_SERVERS: usize = 250;

/// The most clients a scenario may have (each is a task with its own socket).
pub const MAX_CLIENTS: usize = 2000;

/// The largest file clients fetch.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (the file's stem unless it says otherwise), for output.
    pub name: String,
    /// Where it came from (for messages).
    pub path: PathBuf,
    /// Seeds the background load, service times and think times.
    pub seed: u64,
    /// How long each policy runs.
    pub duration: Duration,
    /// Idle time before each policy, after the servers are reset, so every
    /// policy starts from idle servers that the resolver has seen idle.
    pub settle: Duration,
    /// Time for the resolver to probe and hear from every agent before the
    /// first policy.
    pub warmup: Duration,
    /// The service port of every server (0: any free one).
    pub port: u16,
    /// The replicated service's label (the group is `<service>.<zone>`).
    pub service: String,
    /// The anycast zone.
    pub zone: String,
    /// The policies compared, in order.
    pub policies: Vec<Policy>,
    /// The clients.
    pub clients: Clients,
    /// The replicated servers, in file order (server `N` is `servers[N-1]`).
    pub servers: Vec<ServerSpec>,
    /// Extra resolver `[[group]]` fields: for both groups, the default
    /// group and the hybrid (paper) group. Passed through as written.
    pub resolver: ResolverExtra,
    /// Extra agent configuration, merged over the lab's (tables merge,
    /// values replace). Passed through as written.
    pub agent: toml::Table,
    /// The resolvers the clients share.
    pub resolvers: Resolvers,
    /// This is the paper's setting: hybrid and default are judged against
    /// the paper's bar (a quarter of random's mean, half of nearest's).
    pub paper: bool,
}

/// The anycast resolvers the clients of a run share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolvers {
    /// How many; client `i` asks resolver `i mod count`.
    pub count: usize,
    /// How they learn about the servers.
    pub role: ResolverRole,
}

/// How several resolvers are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolverRole {
    /// Each is authoritative for the zone: every agent pushes to each, and
    /// each probes from where it stands.
    Authoritative,
    /// One authority receives the pushes; `count` local resolvers learn the
    /// group and its pushed loads from it, probe for themselves, and answer
    /// the clients.
    Local,
}

impl ResolverRole {
    /// Its name in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ResolverRole::Authoritative => "authoritative",
            ResolverRole::Local => "local",
        }
    }
}

impl std::str::FromStr for ResolverRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "authoritative" => Ok(ResolverRole::Authoritative),
            "local" => Ok(ResolverRole::Local),
            other => Err(format!(
                "{other:?} is not a resolver role (authoritative or local)"
            )),
        }
    }
}

/// The most resolvers a scenario may run.
pub const MAX_RESOLVERS: usize = 16;

/// Resolver settings a scenario passes through to the generated config.
#[derive(Debug, Clone, Default)]
pub struct ResolverExtra {
    /// Fields for every group.
    pub groups: toml::Table,
    /// Fields for the group of the `default` policy (and of `push-only`
    /// and `probe-only`).
    pub default: toml::Table,
    /// Fields for the group of the `hybrid` policy.
    pub hybrid: toml::Table,
    /// Fields for the group of `random`, `round-robin` and `nearest`.
    pub static_: toml::Table,
}

/// The clients.
#[derive(Debug, Clone)]
pub struct Clients {
    /// How many run at once over time (closed loop: each waits for its
    /// answer, then thinks). A flash crowd is a step up.
    pub count: Schedule<usize>,
    /// Time between one request's end and the next one's start, over time.
    pub think: Schedule<Dist>,
    /// Bytes in each response body.
    pub file_size: u64,
    /// When a client asks DNS again.
    pub resolve: Resolve,
    /// A request not complete within this is given up.
    pub timeout: Duration,
    /// A failed attempt is followed at once by another, with a fresh pick,
    /// this many times at most; the request's response time runs from its
    /// first attempt to its last.
    pub retries: u32,
    /// Whether each client runs its own client-side balancer or all share one.
    pub balancer: BalancerScope,
}

impl Clients {
    /// The most clients active at any time: how many the lab starts.
    pub fn most(&self) -> usize {
        self.count.values().copied().max().unwrap_or(0)
    }
}

/// Who shares a client-side balancer's state (P2C, Prequal, least request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalancerScope {
    /// Every client has its own, as a client library in each user's program.
    PerClient,
    /// All clients share one, as a proxy on the clients' host would.
    Shared,
}

/// When clients resolve the service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolve {
    /// Keep an answer for its TTL, as a stub resolver's cache would.
    Ttl,
    /// Ask before every request.
    PerRequest,
}

/// One replicated server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// A short name for tables (`s1`...).
    pub name: String,
    /// Round-trip time of the emulated path between clients (or the
    /// resolver) and this server, over time.
    pub rtt: Schedule<Duration>,
    /// Workers: requests served at once; the rest wait in FIFO order.
    pub capacity: usize,
    /// How long a request holds a worker.
    pub service: Dist,
    /// Background arrivals per second over time (open loop, Poisson).
    pub load: LoadSchedule,
    /// Up, dead or black-holed, over time.
    pub condition: Schedule<Condition>,
}

/// Whether a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Serving.
    Up,
    /// Its process is gone: connections to it are refused, and those open
    /// when it died are reset.
    Dead,
    /// Wedged: it accepts connections and never answers on them (nor on
    /// those open when it wedged).
    Blackhole,
}

/// A value that changes in steps over a policy's run: `initial` until the
/// first step, then each step's value from its time on.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule<T> {
    /// The value from the start.
    pub initial: T,
    /// `(from, value)` pairs in increasing time.
    pub steps: Vec<(Duration, T)>,
}

/// Background arrivals per second over time (0 before the first step).
pub type LoadSchedule = Schedule<f64>;

impl<T: Clone> Schedule<T> {
    /// A value that never changes.
    pub fn constant(value: T) -> Schedule<T> {
        Schedule {
            initial: value,
            steps: Vec::new(),
        }
    }

    /// The value at `t` and when it next changes.
    pub fn at(&self, t: Duration) -> (T, Option<Duration>) {
        let mut value = &self.initial;
        for (from, v) in &self.steps {
            if *from > t {
                return (value.clone(), Some(*from));
            }
            value = v;
        }
        (value.clone(), None)
    }

    /// The same steps with each value mapped through `f`.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Schedule<U> {
        Schedule {
            initial: f(&self.initial),
            steps: self.steps.iter().map(|(t, v)| (*t, f(v))).collect(),
        }
    }

    /// Every value it takes.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.initial).chain(self.steps.iter().map(|(_, v)| v))
    }

    /// The same schedule with every time multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Schedule<T> {
        Schedule {
            initial: self.initial.clone(),
            steps: self
                .steps
                .iter()
                .map(|(t, v)| (t.mul_f64(factor), v.clone()))
                .collect(),
        }
    }
}

/// A distribution of durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    /// Always the same.
    Const(Duration),
    /// Exponential with this mean.
    Exp(Duration),
    /// Log-normal with this mean and standard deviation (heavy-tailed, as
    /// web service times are).
    LogNormal { mean: Duration, sd: Duration },
    /// Uniform between the two.
    Uniform(Duration, Duration),
}

impl Dist {
    /// The mean.
    pub fn mean(&self) -> Duration {
        match *self {
            Dist::Const(d) | Dist::Exp(d) => d,
            Dist::LogNormal { mean, .. } => mean,
            Dist::Uniform(a, b) => (a + b) / 2,
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn read(path: &Path) -> Result<Scenario, ConfigError> {
        Scenario::from_source(&Source::read(path)?)
    }

    /// Validates scenario text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Scenario, ConfigError> {
        Scenario::from_source(&Source::new(text, path))
    }

    fn from_source(source: &Source) -> Result<Scenario, ConfigError> {
        let raw: RawScenario = source.parse()?;
        let err = |span: std::ops::Range<usize>, m: String| source.error_at(Some(span), m);

        let duration = positive(source, raw.duration)?;
        let name = match raw.name {
            Some(n) => n,
            None => source
                .path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".to_owned()),
        };

        let policies = match raw.policies {
            None => Policy::COMPARED.to_vec(),
            Some(list) => {
                let span = list.span();
                let mut policies = Vec::new();
                for name in list.into_inner() {
                    let policy: Policy = name.parse().map_err(|e| err(span.clone(), e))?;
                    if policy == Policy::External {
                        return Err(err(
                            span,
                            "\"external\" is chosen with --dns, not in a scenario".into(),
                        ));
                    }
                    if policies.contains(&policy) {
                        return Err(err(span, format!("policy {policy} is listed twice")));
                    }
                    policies.push(policy);
                }
                if policies.is_empty() {
                    return Err(err(span, "list at least one policy".into()));
                }
                policies
            }
        };

        let c = raw.clients;
        let check_count = |count: Spanned<usize>| {
            let span = count.span();
            let count = count.into_inner();
            if (1..=MAX_CLIENTS).contains(&count) {
                Ok(count)
            } else {
                Err(err(
                    span,
                    format!("{count} clients: write 1 to {MAX_CLIENTS}"),
                ))
            }
        };
        let initial_count = check_count(c.count)?;
        let initial_think = dist(source, c.think)?;
        // One list of changes in the file, a schedule per quantity here: a
        // step that leaves one of them out keeps its current value.
        let changes = steps(source, c.changes, duration, "client changes", |change| {
            if change.count.is_none() && change.think.is_none() {
                return Err("a change needs `count`, `think` or both".to_owned());
            }
            Ok(change)
        })?;
        let mut count = Schedule::constant(initial_count);
        let mut think = Schedule::constant(initial_think);
        for (at, change) in changes {
            let (now_count, _) = count.at(at);
            let (now_think, _) = think.at(at);
            count.steps.push((
                at,
                match change.count {
                    Some(n) => check_count(n)?,
                    None => now_count,
                },
            ));
            think.steps.push((
                at,
                match change.think {
                    Some(d) => dist(source, d)?,
                    None => now_think,
                },
            ));
        }
        let file_span = c.file_size.span();
        let file_size = c.file_size.into_inner();
        if file_size > MAX_FILE_SIZE {
            return Err(err(
                file_span,
                format!("{file_size} bytes is more than the {MAX_FILE_SIZE} the lab serves"),
            ));
        }
        let retries_span = c.retries.span();
        let retries = c.retries.into_inner();
        if retries > 10 {
            return Err(err(
                retries_span,
                format!("{retries} retries: write 0 to 10"),
            ));
        }
        let clients = Clients {
            count,
            think,
            file_size,
            resolve: c.resolve,
            timeout: positive(source, c.timeout)?,
            retries,
            balancer: c.balancer,
        };

        let servers_span = raw.servers.span();
        let raw_servers = raw.servers.into_inner();
        if raw_servers.is_empty() || raw_servers.len() > MAX_SERVERS {
            return Err(err(
                servers_span,
                format!(
                    "{} servers: write 1 to {MAX_SERVERS} [[server]] tables",
                    raw_servers.len()
                ),
            ));
        }
        let mut servers: Vec<ServerSpec> = Vec::new();
        for (i, s) in raw_servers.into_iter().enumerate() {
            let name = match s.name {
                Some(n) => {
                    let span = n.span();
                    let n = n.into_inner();
                    if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        return Err(err(
                            span,
                            format!("{n:?}: use letters, digits and '-' only"),
                        ));
                    }
                    if servers.iter().any(|o| o.name == n) {
                        return Err(err(span, format!("server {n:?} is named twice")));
                    }
                    n
                }
                None => format!("s{}", i + 1),
            };
            let check_rtt = |rtt: Spanned<HumanDuration>| {
                let span = rtt.span();
                let rtt = rtt.into_inner().0;
                if rtt > Duration::from_secs(10) {
                    Err(err(
                        span,
                        format!("{rtt:?} is longer than the 10 s the proxy emulates"),
                    ))
                } else {
                    Ok(rtt)
                }
            };
            let rtt = Schedule {
                initial: check_rtt(s.rtt)?,
                steps: steps(
                    source,
                    s.rtt_changes,
                    duration,
                    "rtt_changes",
                    |c| Ok(c.rtt),
                )?
                .into_iter()
                .map(|(at, rtt)| Ok((at, check_rtt(rtt)?)))
                .collect::<Result<_, ConfigError>>()?,
            };
            let cap_span = s.capacity.span();
            let capacity = s.capacity.into_inner();
            if !(1..=10_000).contains(&capacity) {
                return Err(err(
                    cap_span,
                    format!("{capacity} workers: write 1 to 10000"),
                ));
            }
            let load = Schedule {
                initial: 0.0,
                steps: steps(source, s.load, duration, "load steps", |step| {
                    if step.rate.is_finite() && (0.0..=100_000.0).contains(&step.rate) {
                        Ok(step.rate)
                    } else {
                        Err(format!(
                            "rate {} is not a number of arrivals per second in 0..=100000",
                            step.rate
                        ))
                    }
                })?,
            };
            let condition = Schedule {
                initial: Condition::Up,
                steps: steps(source, s.events, duration, "events", |e| Ok(e.condition))?,
            };
            servers.push(ServerSpec {
                name,
                rtt,
                capacity,
                service: dist(source, s.service)?,
                load,
                condition,
            });
        }

        let check_label = |label: Spanned<String>| -> Result<String, ConfigError> {
            let span = label.span();
            let label = label.into_inner().to_ascii_lowercase();
            if label.is_empty()
                || label.len() > 50
                || !label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    span,
                    format!("{label:?}: one DNS label of letters, digits, '-' and '_'"),
                ));
            }
            Ok(label)
        };
        let service = check_label(raw.service)?;
        let zone_span = raw.zone.span();
        let zone = raw
            .zone
            .into_inner()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if zone.is_empty() || zone.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(err(zone_span, format!("{zone:?} is not a DNS zone name")));
        }

        Ok(Scenario {
            name,
            path: source.path().to_owned(),
            seed: raw.seed,
            duration,
            settle: raw.settle.0,
            warmup: raw.warmup.0,
            port: raw.port,
            service,
            zone,
            policies,
            clients,
            servers,
            paper: raw.paper,
            resolvers: Resolvers {
                count: {
                    let span = raw.resolver.count.span();
                    let count = raw.resolver.count.into_inner();
                    if !(1..=MAX_RESOLVERS).contains(&count) {
                        return Err(err(
                            span,
                            format!("{count} resolvers: write 1 to {MAX_RESOLVERS}"),
                        ));
                    }
                    count
                },
                role: raw.resolver.role,
            },
            resolver: ResolverExtra {
                groups: raw.resolver.groups,
                default: raw.resolver.default,
                hybrid: raw.resolver.hybrid,
                static_: raw.resolver.static_,
            },
            agent: raw.agent,
        })
    }

    /// The scenario with each policy's run shortened (or lengthened) to
    /// `duration`, the load schedules scaled along, so the run keeps its shape.
    pub fn with_duration(&self, duration: Duration) -> Scenario {
        let factor = duration.as_secs_f64() / self.duration.as_secs_f64();
        let mut scenario = self.clone();
        scenario.duration = duration;
        scenario.clients.count = scenario.clients.count.scaled(factor);
        scenario.clients.think = scenario.clients.think.scaled(factor);
        for server in &mut scenario.servers {
            server.load = server.load.scaled(factor);
            server.rtt = server.rtt.scaled(factor);
            server.condition = server.condition.scaled(factor);
        }
        scenario
    }

    /// The names of the resolver's groups.
    pub fn groups(&self) -> Groups {
        Groups::new(&self.service, &self.zone)
    }
}

fn positive(source: &Source, v: Spanned<HumanDuration>) -> Result<Duration, ConfigError> {
    anycast_config_file::positive_duration(source, v)
}

/// A list of timed changes (`at` plus the values that change), checked in
/// one place for every list: each `at` within the run and later than the
/// one before; `value` turns an entry into its value or says what is wrong
/// with it. Errors point at the entry.
fn steps<R: At, T>(
    source: &Source,
    raw: Vec<Spanned<R>>,
    duration: Duration,
    what: &str,
    value: impl Fn(R) -> Result<T, String>,
) -> Result<Vec<(Duration, T)>, ConfigError> {
    let mut out: Vec<(Duration, T)> = Vec::with_capacity(raw.len());
    for entry in raw {
        let span = entry.span();
        let entry = entry.into_inner();
        let at = entry.at();
        let bad = |m: String| source.error_at(Some(span.clone()), m);
        if at >= duration {
            return Err(bad(format!(
                "at = {at:?} is not within the duration ({duration:?})"
            )));
        }
        if out.last().is_some_and(|&(prev, _)| prev >= at) {
            return Err(bad(format!("{what} must be in increasing `at` order")));
        }
        out.push((at, value(entry).map_err(bad)?));
    }
    Ok(out)
}

/// An entry of a list of timed changes.
trait At {
    /// When it takes effect, from the start of a policy's run.
    fn at(&self) -> Duration;
}

fn dist(source: &Source, raw: Spanned<RawDist>) -> Result<Dist, ConfigError> {
    let span = raw.span();
    let bad = |m: &str| source.error_at(Some(span.clone()), m.to_owned());
    Ok(match raw.into_inner() {
        RawDist::Const { value } => Dist::Const(value.0),
        RawDist::Exp { mean } => {
            if mean.0.is_zero() {
                return Err(bad("an exponential needs a mean above zero"));
            }
            Dist::Exp(mean.0)
        }
        RawDist::Lognormal { mean, sd } => {
            if mean.0.is_zero() {
                return Err(bad("a log-normal needs a mean above zero"));
            }
            Dist::LogNormal {
                mean: mean.0,
                sd: sd.0,
            }
        }
        RawDist::Uniform { min, max } => {
            if min.0 > max.0 {
                return Err(bad("min is above max"));
            }
            Dist::Uniform(min.0, max.0)
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default = "default_seed")]
    seed: u64,
    duration: Spanned<HumanDuration>,
    #[serde(default = "default_settle")]
    settle: HumanDuration,
    #[serde(default = "default_warmup")]
    warmup: HumanDuration,
    #[serde(default)]
    port: u16,
    #[serde(default = "default_service")]
    service: Spanned<String>,
    #[serde(default = "default_zone")]
    zone: Spanned<String>,
    policies: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    paper: bool,
    clients: RawClients,
    #[serde(rename = "server")]
    servers: Spanned<Vec<RawServer>>,
    #[serde(default)]
    resolver: RawResolver,
    #[serde(default)]
    agent: toml::Table,
}

fn default_seed() -> u64 {
    1
}
fn default_settle() -> HumanDuration {
    Duration::from_secs(3).into()
}
fn default_warmup() -> HumanDuration {
    Duration::from_secs(3).into()
}
fn default_resolvers() -> Spanned<usize> {
    spanned(1)
}
fn default_role() -> ResolverRole {
    ResolverRole::Authoritative
}
impl Default for RawResolver {
    fn default() -> Self {
        RawResolver {
            count: default_resolvers(),
            role: default_role(),
            groups: toml::Table::new(),
            default: toml::Table::new(),
            hybrid: toml::Table::new(),
            static_: toml::Table::new(),
        }
    }
}
fn default_service() -> Spanned<String> {
    spanned("web".to_owned())
}
fn default_zone() -> Spanned<String> {
    spanned("any.example.net".to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    #[serde(default = "default_resolvers")]
    count: Spanned<usize>,
    #[serde(default = "default_role")]
    role: ResolverRole,
    #[serde(default)]
    groups: toml::Table,
    #[serde(default)]
    default: toml::Table,
    #[serde(default)]
    hybrid: toml::Table,
    #[serde(default, rename = "static")]
    static_: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClients {
    count: Spanned<usize>,
    think: Spanned<RawDist>,
    #[serde(default = "default_file_size")]
    file_size: Spanned<u64>,
    #[serde(default = "default_resolve")]
    resolve: Resolve,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
    #[serde(default)]
    changes: Vec<Spanned<RawClientChange>>,
    #[serde(default = "default_retries")]
    retries: Spanned<u32>,
    #[serde(default = "default_balancer")]
    balancer: BalancerScope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientChange {
    at: HumanDuration,
    count: Option<Spanned<usize>>,
    think: Option<Spanned<RawDist>>,
}

impl At for RawClientChange {
    fn at(&self) -> Duration {
        self.at.0
    }
}

fn default_retries() -> Spanned<u32> {
    spanned(2)
}
fn default_balancer() -> BalancerScope {
    BalancerScope::PerClient
}

fn default_file_size() -> Spanned<u64> {
    spanned(10 * 1024)
}
fn default_resolve() -> Resolve {
    Resolve::Ttl
}
fn default_timeout() -> Spanned<HumanDuration> {
    spanned(Duration::from_secs(30).into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Option<Spanned<String>>,
    rtt: Spanned<HumanDuration>,
    #[serde(default)]
    rtt_changes: Vec<Spanned<RawRttChange>>,
    capacity: Spanned<usize>,
    service: Spanned<RawDist>,
    #[serde(default)]
    load: Vec<Spanned<RawStep>>,
    #[serde(default)]
    events: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: HumanDuration,
    rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRttChange {
    at: HumanDuration,
    rtt: Spanned<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: HumanDuration,
    condition: Condition,
}

impl At for RawStep {
    fn at(&self) -> Duration {
        self.at.0
    }
}

impl At for RawRttChange {
    fn at(&self) -> Duration {
        self.at.0
    }
}

impl At for RawEvent {
    fn at(&self) -> Duration {
        self.at.0
    }
}

#[derive(Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
enum RawDist {
    Const {
        value: HumanDuration,
    },
    Exp {
        mean: HumanDuration,
    },
    Lognormal {
        mean: HumanDuration,
        sd: HumanDuration,
    },
    Uniform {
        min: HumanDuration,
        max: HumanDuration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
duration = "10s"
[clients]
count = 2
think = { dist = "exp", mean = "100ms" }
[[server]]
rtt = "5ms"
capacity = 2
service = { dist = "const", value = "10ms" }
load = [{ at = "0s", rate = 5 }, { at = "5s", rate = 50 }]
"#;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::from_toml(text, Path::new("s.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_scenario_gets_the_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.servers[0].name, "s1");
        assert_eq!(s.policies, Policy::COMPARED.to_vec());
        assert_eq!(s.clients.resolve, Resolve::Ttl);
        assert_eq!(s.groups().default, "web.any.example.net");
        let load = &s.servers[0].load;
        assert_eq!(load.at(Duration::ZERO), (5.0, Some(Duration::from_secs(5))));
        assert_eq!(load.at(Duration::from_secs(7)), (50.0, None));
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = parse(&MINIMAL.replace("capacity = 2", "capacity = 0")).unwrap_err();
        assert!(
            e.starts_with("s.toml:8:12: field `capacity` in [[server]]"),
            "{e}"
        );
        let e = parse(&MINIMAL.replace("\"exp\"", "\"gamma\"")).unwrap_err();
        assert!(e.starts_with("s.toml:5:"), "{e}");
        let e = parse(&MINIMAL.replace("at = \"5s\"", "at = \"50s\"")).unwrap_err();
        assert!(e.starts_with("s.toml:10:") && e.contains("duration"), "{e}");
        let e = parse(&MINIMAL.replace("rtt =", "rrt =")).unwrap_err();
        assert!(e.contains("rrt"), "{e}");
        let e = parse(&format!("policies = [\"random\", \"fastest\"]\n{MINIMAL}")).unwrap_err();
        assert!(e.starts_with("s.toml:1:") && e.contains("fastest"), "{e}");
    }

    #[test]
    fn shortening_scales_the_load_schedule() {
        let s = parse(MINIMAL)
            .unwrap()
            .with_duration(Duration::from_secs(5));
        assert_eq!(
            s.servers[0].load.steps,
            vec![(Duration::ZERO, 5.0), (Duration::from_millis(2500), 50.0)]
        );
    }

    #[test]
    fn the_scenarios_in_the_repo_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::read(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 2, "paper.toml and smoke.toml at least");
    }
}
