//! One run of the testbed: everything started, every policy run in turn on
//! the same scenario and seed, the results written.
//!
//! ```text
//!  clients ──DNS──► anycast-resolver ◄──push── anycast-agent (one per server)
//!     │                 │ probes                      │ measures, writes the probe file
//!     ▼                 ▼                             ▼
//!  127.0.1.N:PORT  delaying proxy (RTT of server N) ──► 127.0.2.N:PORT  server N
//! ```
//!
//! The order of a run:
//!
//! 1. Bind every server's own address and its proxy's member address on one
//!    port, start the servers and the proxies.
//! 2. Write the resolver's configuration (two groups over the same members:
//!    the default one, where each member's cost is its path RTT, and the
//!    paper's ratio-calibrated one), start it, read its DNS and HTTP
//!    addresses from its log; start one agent per server, pushing for both
//!    groups. With `--dns`, none of this: the given DNS server stands in.
//! 3. Warm up until the resolver has a push and a probe of every member.
//! 4. For each policy: reset the servers, let them idle for `settle`, start
//!    the background load schedules and the clients together, stop issuing
//!    requests after `duration`, give requests in flight a little time, and
//!    record every request. The resolver's view of the policy's group is
//!    sampled every second into `groups.jsonl`.
//! 5. Summarise: table, CSVs, chart.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use axum::serve::ListenerExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{self, ClientSide, RunContext, Sample};
use crate::dns::Stub;
use crate::policy::Policy;
use crate::procs::{Binaries, Daemon, listening_addr};
use crate::report::{self, Summary};
use crate::scenario::{ResolverRole, Scenario};
use crate::server::{AGENT_PATH, Gate, PROBE_PATH, STATUS_PATH, Server};

/// The environment variable the resolver and the agents read the push key
/// from (set on their command lines' environment only).
const KEY_ENV: &str = "ANYCAST_LAB_PUSH_KEY";

/// The key id in both configurations.
const KEY_ID: &str = "lab";

/// How long the resolver and agents may take to start.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// Longest wait for the first push and probe of every member.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Longest time requests in flight get after a policy's end.
const DRAIN: Duration = Duration::from_secs(10);

/// How a run is done.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where results go.
    pub out: PathBuf,
    /// Put this DNS server in the resolver's place.
    pub dns: Option<SocketAddr>,
    /// With `dns`: run agents pushing here (key from `ANYCAST_PUSH_KEY`).
    pub push_url: Option<String>,
    /// The binaries (not needed with `dns` and no `push_url`).
    pub binaries: Option<Binaries>,
    /// Print the table and verdict on stdout at the end.
    pub print: bool,
}

/// What a run leaves.
#[derive(Debug)]
pub struct Outcome {
    /// The chart's path.
    pub chart: PathBuf,
    /// Wall time of the whole run.
    pub took: Duration,
    /// Each policy's figures, in the order run.
    pub summaries: Vec<Summary>,
    /// The table as printed (with the verdict, if any).
    pub table: String,
}

/// Runs `scenario` until done or `shutdown`.
pub async fn run(
    scenario: &Scenario,
    options: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<Outcome> {
    let began = Instant::now();
    let logs = options.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("anycast-lab-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();
    // Whatever happens below, stop every task of ours on the way out.
    let _stop_on_exit = stop.clone().drop_guard();

    let groups = scenario.groups();
    let policies: Vec<Policy> = match options.dns {
        Some(_) => vec![Policy::External],
        None => scenario.policies.clone(),
    };

    // 1. Servers and proxies.
    let (port, bound) = bind_all(scenario).await?;
    let mut servers: Vec<Arc<Server>> = Vec::new();
    for (i, (spec, (own_listener, proxy_listener))) in
        scenario.servers.iter().zip(bound).enumerate()
    {
        let docroot = scratch.path().join(format!("www-{}", spec.name));
        std::fs::create_dir_all(docroot.join(".well-known"))
            .with_context(|| format!("cannot create {}", docroot.display()))?;
        let server = Arc::new(Server::new(
            spec.clone(),
            SocketAddr::new(member_ip(i), port),
            SocketAddr::new(own_ip(i), port),
            docroot,
            scenario.clients.file_size,
        ));
        let app = server.router();
        let listener = Gate::new(own_listener, &server, stop.clone(), &tasks)?.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let quit = stop.clone();
        tasks.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { quit.cancelled().await })
                .await;
        });
        let gate = Gate::new(proxy_listener, &server, stop.clone(), &tasks)?;
        crate::proxy::start(gate, server.clone(), stop.clone(), &tasks);
        servers.push(server);
    }

    // 2. Resolvers and agents.
    let key = random_key();
    let mut daemons: Vec<Daemon> = Vec::new();
    // What the clients ask (DNS), and where each one's view can be read.
    let mut facing: Vec<(SocketAddr, Option<SocketAddr>)> = Vec::new();
    // Where the agents push.
    let mut push_urls: Vec<String> = Vec::new();
    match options.dns {
        Some(dns) => {
            eprintln!(
                "DNS server under test: {dns}, asked for {} (members below)",
                groups.default
            );
            for s in &servers {
                eprintln!(
                    "  member {} ({}, path RTT {:?})",
                    s.member, s.spec.name, s.spec.rtt.initial
                );
            }
            facing.push((dns, None));
            push_urls.extend(options.push_url.clone());
        }
        None => {
            let binaries = options
                .binaries
                .as_ref()
                .ok_or_else(|| anyhow!("no resolver binary"))?;
            let k = scenario.resolvers.count;
            let start_resolver = |name: String, config: String| {
                spawn_resolver(binaries, &key, scratch.path(), &logs, name, config)
            };
            let authoritative = resolver_config(scenario, &servers, port, None)?;
            match scenario.resolvers.role {
                ResolverRole::Authoritative => {
                    for i in 0..k {
                        let name = if k == 1 {
                            "resolver".to_owned()
                        } else {
                            format!("resolver-{}", i + 1)
                        };
                        let (daemon, dns, http) =
                            start_resolver(name, authoritative.clone()).await?;
                        daemons.push(daemon);
                        facing.push((dns, Some(http)));
                        push_urls.push(format!("http://{http}/v1/push"));
                    }
                }
                ResolverRole::Local => {
                    let (daemon, _, http) =
                        start_resolver("authority".to_owned(), authoritative).await?;
                    daemons.push(daemon);
                    push_urls.push(format!("http://{http}/v1/push"));
                    let local = resolver_config(scenario, &servers, port, Some(http))?;
                    for i in 0..k {
                        let (daemon, dns, http) =
                            start_resolver(format!("local-{}", i + 1), local.clone()).await?;
                        daemons.push(daemon);
                        facing.push((dns, Some(http)));
                    }
                }
            }
        }
    };
    if !push_urls.is_empty() && (options.dns.is_none() || options.push_url.is_some()) {
        let binaries = options
            .binaries
            .as_ref()
            .ok_or_else(|| anyhow!("no agent binary"))?;
        let key = match options.dns {
            // Pushing to someone else's resolver: its key, from our environment.
            Some(_) => std::env::var("ANYCAST_PUSH_KEY")
                .context("--push-url needs the resolver's key in ANYCAST_PUSH_KEY")?,
            None => key.clone(),
        };
        for server in &servers {
            let config = scratch
                .path()
                .join(format!("agent-{}.toml", server.spec.name));
            std::fs::write(&config, agent_config(scenario, server, &push_urls)?)
                .with_context(|| format!("cannot write {}", config.display()))?;
            let mut command = Command::new(&binaries.agent);
            command
                .arg("--config")
                .arg(&config)
                .arg("--log")
                .arg(&binaries.log)
                .env(KEY_ENV, &key);
            let name = format!("anycast-agent ({})", server.spec.name);
            let log = logs.join(format!("agent-{}.log", server.spec.name));
            let mut agent = Daemon::spawn(&name, command, &log).await?;
            agent
                .wait_for("that it runs", START_DEADLINE, |l| {
                    l.contains("agent running").then_some(())
                })
                .await?;
            daemons.push(agent);
        }
    }
    let dns: Vec<SocketAddr> = facing.iter().map(|&(dns, _)| dns).collect();
    let views: Vec<SocketAddr> = facing.iter().filter_map(|&(_, http)| http).collect();
    // The view sampled into groups.jsonl: the first resolver the clients ask.
    let http = views.first().copied();

    if let Some(http) = http {
        eprintln!(
            "{}: DNS {}; dashboard http://{http}/ (open it to watch the selection react)",
            match dns.len() {
                1 => "resolver".to_owned(),
                k => format!("{k} {} resolvers", scenario.resolvers.role.name()),
            },
            dns.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        eprintln!(
            "          JSON: http://{http}/v1/groups/{} (also {} and {}); logs in {}",
            groups.default,
            groups.hybrid,
            groups.static_,
            logs.display()
        );
    }

    // 3. Warm-up.
    if !views.is_empty() {
        let ready = Instant::now() + READY_DEADLINE;
        loop {
            let mut all = true;
            for (&(dns, http), g) in facing
                .iter()
                .flat_map(|f| [(f, &groups.default), (f, &groups.hybrid)])
            {
                let Some(http) = http else { continue };
                // A local resolver learns a group at its first query.
                if let Ok(mut stub) = Stub::new(dns, g, false).await {
                    let _ = tokio::time::timeout(Duration::from_secs(1), stub.lookup()).await;
                }
                all &= fetch_view(http, g)
                    .await
                    .is_ok_and(|v| every_member_heard(&v));
            }
            if all {
                break;
            }
            if Instant::now() >= ready {
                bail!(
                    "the resolver had no push and probe of every member within {READY_DEADLINE:?}; \
                     see {}",
                    logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(scenario.warmup).await;

    if let Some(warning) = warn_if_busy("before the first policy") {
        eprintln!("{warning}");
    }

    // 4. The policies.
    let per_policy = scenario.settle + scenario.duration;
    let total = per_policy * policies.len() as u32;
    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:32}] {percent:>3}% (about {eta} left) {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let say = |bar: &ProgressBar, line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut views = String::new();
    for (k, &policy) in policies.iter().enumerate() {
        for (i, server) in servers.iter().enumerate() {
            server.reset(seed_for(scenario.seed, 1000 + i as u64));
        }
        let base = per_policy * k as u32;
        bar.set_message(format!("{policy}: settling"));
        let settle_end = Instant::now() + scenario.settle;
        tick_until(&bar, settle_end, base, Instant::now(), &stop).await;
        if stop.is_cancelled() {
            bail!("interrupted");
        }

        let start = Instant::now();
        let end = start + scenario.duration;
        for (i, server) in servers.iter().enumerate() {
            server.start_run(seed_for(scenario.seed, i as u64), &stop, &tasks);
        }
        let ctx = Arc::new(RunContext {
            policy,
            servers: servers.clone(),
            dns: dns.clone(),
            qname: policy.qname(&groups),
            port,
            clients: scenario.clients.clone(),
            seed: scenario.seed,
            start,
            end,
            shared: ClientSide::shared(policy, servers.len(), scenario.clients.balancer),
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let clients_stop = stop.child_token();
        let clients = TaskTracker::new();
        for id in 0..scenario.clients.most() {
            clients.spawn(client::run(
                id,
                ctx.clone(),
                tx.clone(),
                clients_stop.clone(),
            ));
        }
        drop(tx);
        clients.close();

        let mut mine: Vec<Sample> = Vec::new();
        let mut next_view = start;
        let drain_end = end + DRAIN.min(scenario.clients.timeout);
        loop {
            let now = Instant::now();
            if let (Some(http), Some(qname)) = (http, &ctx.qname)
                && now >= next_view
                && now < end
            {
                next_view += Duration::from_secs(1);
                // The servers' true state at the same instant, to hold the
                // resolver's view against.
                let truth: Vec<serde_json::Value> = servers
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "server": s.spec.name,
                            "queue": s.queue(),
                            "rtt_ms": s.rtt().as_secs_f64() * 1000.0,
                            "condition": format!("{:?}", s.condition()).to_lowercase(),
                        })
                    })
                    .collect();
                if let Ok(view) = fetch_view(http, qname).await {
                    let _ = writeln!(
                        views,
                        "{{\"policy\":\"{policy}\",\"t\":{:.2},\"view\":{view},\"truth\":{}}}",
                        (now - start).as_secs_f64(),
                        serde_json::Value::Array(truth)
                    );
                }
            }
            while let Ok(s) = rx.try_recv() {
                mine.push(s);
            }
            let done_ms = mine.iter().filter(|s| s.server.is_some()).count();
            let mean = mine
                .iter()
                .filter(|s| s.server.is_some())
                .map(|s| s.rt_ms)
                .sum::<f64>()
                / done_ms.max(1) as f64;
            bar.set_message(format!(
                "{policy} ({}/{}): {} requests, mean {mean:.0} ms",
                k + 1,
                policies.len(),
                mine.len()
            ));
            let elapsed = (now.min(end) - start) + scenario.settle;
            bar.set_position((base + elapsed).as_millis() as u64);
            if clients.is_empty() {
                break;
            }
            if now >= drain_end {
                clients_stop.cancel();
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = clients.wait() => {}
                _ = stop.cancelled() => bail!("interrupted"),
            }
        }
        while let Ok(s) = rx.try_recv() {
            mine.push(s);
        }
        let summary = Summary::of(policy, &mine.iter().collect::<Vec<_>>(), servers.len());
        say(
            &bar,
            format!(
                "{:<12} {:>6} requests, mean {:>8.1} ms, sd {:>8.1} ms, p95 {:>8.1} ms, failed {}{}",
                policy.name(),
                summary.requests,
                summary.mean,
                summary.sd,
                summary.p95,
                summary.failed,
                machine_load().map_or(String::new(), |(l, _)| format!(" (load {l:.1})")),
            ),
        );
        samples.extend(mine);
        for d in &mut daemons {
            if !d.running() {
                bail!("{} stopped during the run:\n{}", d.name(), d.log_tail());
            }
        }
    }
    bar.finish_and_clear();

    // 5. Results.
    let names: Vec<String> = servers.iter().map(|s| s.spec.name.clone()).collect();
    let summaries = report::summarise(&samples, &policies, servers.len());
    report::write_csvs(&options.out, &samples, &summaries, &names)?;
    if !views.is_empty() {
        let path = options.out.join("groups.jsonl");
        std::fs::write(&path, &views)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let chart = options.out.join("response-time.svg");
    report::chart(
        &chart,
        &format!(
            "{}: mean response time over each run ({} servers, {} clients)",
            scenario.name,
            servers.len(),
            scenario.clients.most()
        ),
        &samples,
        &policies,
        scenario.duration.as_secs_f64(),
    )?;
    let mut table = report::table(&summaries, &names);
    if let Some(verdict) = report::verdict(&summaries, scenario.paper) {
        table.push('\n');
        table.push_str(&verdict);
    }
    if options.print {
        println!("{table}");
    }
    stop.cancel();
    drop(daemons);
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    Ok(Outcome {
        chart,
        took: began.elapsed(),
        summaries,
        table,
    })
}

/// Starts a resolver named `name` (its log: `logs/<name>.log`) with
/// `config`, and waits for its DNS and HTTP addresses.
async fn spawn_resolver(
    binaries: &Binaries,
    key: &str,
    scratch: &std::path::Path,
    logs: &std::path::Path,
    name: String,
    config: String,
) -> anyhow::Result<(Daemon, SocketAddr, SocketAddr)> {
    let path = scratch.join(format!("{name}.toml"));
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    let mut command = Command::new(&binaries.resolver);
    command
        .arg("--config")
        .arg(&path)
        .arg("--log")
        .arg(&binaries.log)
        .env(KEY_ENV, key);
    let log = logs.join(format!("{name}.log"));
    let mut resolver = Daemon::spawn(&format!("anycast-resolver ({name})"), command, &log).await?;
    let dns = resolver
        .wait_for("its DNS address", START_DEADLINE, |l| {
            listening_addr(l, "dns-udp")
        })
        .await?;
    let http = resolver
        .wait_for("its HTTP address", START_DEADLINE, |l| {
            listening_addr(l, "http")
        })
        .await?;
    Ok((resolver, dns, http))
}

/// Advances the bar until `until` (for the settle pause).
async fn tick_until(
    bar: &ProgressBar,
    until: Instant,
    base: Duration,
    from: Instant,
    stop: &CancellationToken,
) {
    while Instant::now() < until && !stop.is_cancelled() {
        bar.set_position((base + (Instant::now() - from)).as_millis() as u64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200).min(until - Instant::now())) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// A seed per purpose, derived from the scenario's.
fn seed_for(seed: u64, purpose: u64) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
        .wrapping_add(purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Server `i`'s member address (its proxy): 127.0.1.(i+1).
fn member_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, octet(i)))
}

/// Server `i`'s own address: 127.0.2.(i+1).
fn own_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 2, octet(i)))
}

fn octet(i: usize) -> u8 {
    // The scenario allows at most 250 servers.
    u8::try_from(i + 1).unwrap_or(u8::MAX)
}

/// Binds every server's own and member address on one port: the scenario's,
/// or a free one found by trying (a DNS answer carries only the address, so
/// every member must use the same port).
async fn bind_all(scenario: &Scenario) -> anyhow::Result<(u16, Vec<(TcpListener, TcpListener)>)> {
    let n = scenario.servers.len();
    let attempt = |port: u16| async move {
        let mut bound = Vec::with_capacity(n);
        for i in 0..n {
            let own = TcpListener::bind(SocketAddr::new(own_ip(i), port)).await?;
            let member = TcpListener::bind(SocketAddr::new(member_ip(i), port)).await?;
            bound.push((own, member));
        }
        Ok::<_, std::io::Error>(bound)
    };
    if scenario.port != 0 {
        let bound = attempt(scenario.port).await.with_context(|| {
            format!(
                "cannot listen on port {} of 127.0.1.x and 127.0.2.x (scenario {})",
                scenario.port,
                scenario.path.display()
            )
        })?;
        return Ok((scenario.port, bound));
    }
    let mut last = None;
    for _ in 0..100 {
        let port: u16 = rand::rng().random_range(20_000..60_000);
        match attempt(port).await {
            Ok(bound) => return Ok((port, bound)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "cannot find a port free on 127.0.1.x and 127.0.2.x: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// 32 random bytes, hex.
fn random_key() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Merges `extra` over `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, extra: &toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn table(pairs: &[(&str, toml::Value)]) -> toml::Table {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(v: impl Into<String>) -> toml::Value {
    toml::Value::String(v.into())
}

fn millis(d: Duration) -> toml::Value {
    s(format!("{}ms", d.as_millis()))
}

/// The resolver's per-source push allowance in the lab. Deployed, each
/// agent pushes from its own host; here every agent pushes from 127.0.0.1,
/// so the one source gets the resolver's default allowance (100 pushes a
/// second, bursts of 200) once per agent: a scenario of many servers, or
/// whose agents push faster than the defaults, is not cut short by its
/// neighbours' pushes, as it would not be deployed.
fn push_limit(agents: usize) -> toml::Value {
    let agents = u32::try_from(agents.max(1)).unwrap_or(u32::MAX);
    toml::Value::Table(table(&[
        ("rate", toml::Value::Float(100.0 * f64::from(agents))),
        ("burst", toml::Value::Integer(200 * i64::from(agents))),
    ]))
}

/// The resolver's configuration: loopback only, one zone, three groups over
/// the same members; or, with `authority`, a local resolver of the zone that
/// learns them from that authority's HTTP listener.
pub fn resolver_config(
    scenario: &Scenario,
    servers: &[Arc<Server>],
    port: u16,
    authority: Option<SocketAddr>,
) -> anyhow::Result<String> {
    let members: Vec<toml::Value> = servers
        .iter()
        .map(|server| {
            toml::Value::Table(table(&[
                ("address", s(server.member.ip().to_string())),
                ("port", toml::Value::Integer(i64::from(port))),
                // The classic static "nearest server": least path RTT.
                (
                    "cost",
                    toml::Value::Integer(
                        i64::try_from(server.spec.rtt.initial.as_millis()).unwrap_or(i64::MAX),
                    ),
                ),
            ]))
        })
        .collect();
    let group = |service: String, own: &toml::Table, extra: &[(&str, toml::Value)]| {
        let mut g = table(&[("service", s(service)), ("zone", s(scenario.zone.clone()))]);
        // The scenario's own settings come last: they win.
        merge(&mut g, &table(extra));
        merge(&mut g, &scenario.resolver.groups);
        merge(&mut g, own);
        g.insert("member".into(), toml::Value::Array(members.clone()));
        toml::Value::Table(g)
    };
    // The resolvers that share the clients, as an operator who runs several
    // would say of every group (local ones learn it from the authority with
    // the rest of the group): it scales the handouts each counts and
    // spreads each one's probes, so the members carry one resolver's probes.
    let resolvers = (
        "resolvers",
        toml::Value::Integer(i64::try_from(scenario.resolvers.count).unwrap_or(i64::MAX)),
    );
    let mut zone = table(&[("name", s(scenario.zone.clone()))]);
    if let Some(authority) = authority {
        zone.insert("role".into(), s("local"));
        zone.insert("authority".into(), s(format!("http://{authority}")));
    }
    let mut config = table(&[
        (
            "dns",
            toml::Value::Table(table(&[(
                "listen",
                toml::Value::Array(vec![s("127.0.0.1:0")]),
            )])),
        ),
        (
            "http",
            toml::Value::Table(table(&[("listen", s("127.0.0.1:0"))])),
        ),
        (
            // The lab asks only anycast names; nothing may leave the machine.
            "forward",
            toml::Value::Table(table(&[
                ("upstreams", toml::Value::Array(vec![s("127.0.0.1:9")])),
                ("allow", toml::Value::Array(vec![s("127.0.0.0/8")])),
            ])),
        ),
        (
            "push",
            toml::Value::Table(table(&[
                (
                    "key",
                    toml::Value::Array(vec![toml::Value::Table(table(&[
                        ("id", s(KEY_ID)),
                        ("env", s(KEY_ENV)),
                    ]))]),
                ),
                ("limit", push_limit(servers.len())),
            ])),
        ),
        ("zone", toml::Value::Array(vec![toml::Value::Table(zone)])),
        (
            "group",
            toml::Value::Array(vec![
                group(
                    scenario.service.clone(),
                    &scenario.resolver.default,
                    std::slice::from_ref(&resolvers),
                ),
                group(
                    format!("{}-paper", scenario.service),
                    &scenario.resolver.hybrid,
                    &[
                        ("calibration", s("ratio")),
                        ("load_model", s("pushed")),
                        ("pick", s("uniform")),
                        resolvers.clone(),
                    ],
                ),
                // Load-blind, as the classic schemes are: no agent pushes
                // here, and a probe stuck in a loaded server's queue does
                // not count as failed before 30 s (a dead server's refused
                // connection still fails at once). A 1 s TTL, whatever the
                // resolver's default: the baselines every run in
                // docs/results.md was measured against. (Per request,
                // random pays the overloaded server's queue on a quarter of
                // all requests: 391 against 291 ms.)
                group(
                    format!("{}-static", scenario.service),
                    &scenario.resolver.static_,
                    &[
                        ("probe_interval", s("2s")),
                        ("probe_timeout", s("30s")),
                        ("ttl", toml::Value::Integer(1)),
                        resolvers,
                    ],
                ),
            ]),
        ),
    ]);
    if authority.is_some() {
        // A local resolver has no groups of its own and receives no pushes.
        config.remove("group");
        config.remove("push");
    }
    toml::to_string(&config).context("cannot write the resolver's configuration")
}

/// One agent's configuration: active measurement of the server's own
/// address (no path), the probe file in its docroot, pushes for both groups.
pub fn agent_config(
    scenario: &Scenario,
    server: &Server,
    push_urls: &[String],
) -> anyhow::Result<String> {
    let groups = scenario.groups();
    let mut config = table(&[
        ("server", s(server.member.to_string())),
        (
            "groups",
            toml::Value::Array(vec![s(groups.default), s(groups.hybrid)]),
        ),
        (
            "push_urls",
            toml::Value::Array(push_urls.iter().map(|u| s(u.as_str())).collect()),
        ),
        (
            "key",
            toml::Value::Table(table(&[("id", s(KEY_ID)), ("env", s(KEY_ENV))])),
        ),
        (
            "active",
            toml::Value::Table(table(&[
                ("url", s(format!("http://{}{AGENT_PATH}", server.own))),
                ("interval", millis(Duration::from_millis(200))),
            ])),
        ),
        (
            // The server's status page, as nginx's stub_status: requests in
            // flight, pushed beside the TUFR; the workers are the
            // application's, which an operator knows and nginx does not.
            "status",
            toml::Value::Table(table(&[
                ("url", s(format!("http://{}{STATUS_PATH}", server.own))),
                ("format", s("nginx")),
                (
                    "workers",
                    toml::Value::Integer(i64::try_from(server.spec.capacity).unwrap_or(i64::MAX)),
                ),
            ])),
        ),
        (
            "probe_file",
            toml::Value::Table(table(&[(
                "path",
                s(server
                    .docroot
                    .join(PROBE_PATH.trim_start_matches('/'))
                    .to_string_lossy()
                    .into_owned()),
            )])),
        ),
        (
            // Runs last a minute: a heartbeat every 2 s, and changes pushed
            // up to twice a second, so the resolver is never long behind.
            "push",
            toml::Value::Table(table(&[
                ("min_interval", millis(Duration::from_millis(500))),
                ("heartbeat", millis(Duration::from_secs(2))),
            ])),
        ),
    ]);
    merge(&mut config, &scenario.agent);
    toml::to_string(&config).context("cannot write an agent's configuration")
}

/// GET `/v1/groups/<name>` from the resolver's HTTP listener: the JSON body.
pub async fn fetch_view(http: SocketAddr, name: &str) -> anyhow::Result<String> {
    let body = http_get(http, &format!("/v1/groups/{name}")).await?;
    Ok(body.trim().to_owned())
}

/// Whether a group view shows a push and a probe of every member.
fn every_member_heard(view: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(view) else {
        return false;
    };
    value["members"].as_array().is_some_and(|members| {
        !members.is_empty()
            && members
                .iter()
                .all(|m| !m["push"].is_null() && !m["probe"].is_null())
    })
}

/// A plain HTTP/1.1 GET with `Connection: close`: the body, if 200.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| anyhow!("GET {path} from {addr}: no answer within 2 s"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path} from {addr}: no response head"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {path} from {addr}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// Checks a scenario beyond parsing: that the resolver and an agent accept
/// the configurations the lab would give them (with the scenario's
/// pass-through settings), using their `--check-config`.
pub async fn check(scenario: &Scenario, binaries: Option<&Binaries>) -> anyhow::Result<String> {
    let mut report = format!(
        "{}: ok ({} servers, {} clients, {} policies of {:?} each, {:?} in all)\n",
        scenario.path.display(),
        scenario.servers.len(),
        scenario.clients.most(),
        scenario.policies.len(),
        scenario.duration,
        scenario.warmup + (scenario.settle + scenario.duration) * scenario.policies.len() as u32
    );
    let Some(binaries) = binaries else {
        return Ok(report);
    };
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let port = 8080;
    let servers: Vec<Arc<Server>> = scenario
        .servers
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            Arc::new(Server::new(
                spec.clone(),
                SocketAddr::new(member_ip(i), port),
                SocketAddr::new(own_ip(i), port),
                dir.path().join(&spec.name),
                0,
            ))
        })
        .collect();
    let key = random_key();
    let checks = [
        (
            &binaries.resolver,
            "resolver.toml",
            resolver_config(scenario, &servers, port, None)?,
        ),
        (
            &binaries.agent,
            "agent.toml",
            agent_config(
                scenario,
                &servers[0],
                &["http://127.0.0.1:1/v1/push".to_owned()],
            )?,
        ),
    ];
    for (binary, file, text) in checks {
        let path = dir.path().join(file);
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        let output = Command::new(binary)
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env(KEY_ENV, &key)
            .output()
            .await
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "{}: the {file} generated from it is refused (check [resolver] and [agent] \
                 pass-through settings):\n{}\n--- {file} ---\n{text}",
                scenario.path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let _ = writeln!(
            report,
            "  {}: {}",
            binary
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(report)
}

/// The 1-minute load average and the number of cores, where Linux tells.
fn machine_load() -> Option<(f64, usize)> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load = text.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().ok()?.get();
    Some((load, cores))
}

/// A warning when other work competes for the CPU: the lab measures time,
/// and a starved lab (or resolver) adds its own delays to every policy.
fn warn_if_busy(when: &str) -> Option<String> {
    let (load, cores) = machine_load()?;
    (load > cores as f64).then(|| {
        format!(
            "warning: the machine is busy {when} (load {load:.1} on {cores} cores): response \
             times include CPU contention (see lab/README.md, \"Measuring on a shared machine\")"
        )
    })
}
