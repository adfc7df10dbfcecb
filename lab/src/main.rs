//! `anycast-lab`: the testbed. Replicated servers with load and emulated
//! path delay on loopback, the real `anycast-resolver` and one real
//! `anycast-agent` per server, clients that resolve through real DNS
//! queries, and a comparison of server-selection policies on the same
//! scenario and seed (see `lab/README.md`).
//!
//! * [`scenario`]: the scenario file (TOML), validated.
//! * [`server`]: a simulated server: workers, service times, background load.
//! * [`proxy`]: the emulated path, a delaying TCP proxy per server.
//! * [`procs`]: finding, starting and killing the resolver and agents.
//! * [`dns`], [`client`]: the clients, their DNS stub and their fetches.
//! * [`balance`]: the client-side balancers compared with DNS (P2C with
//!   peak EWMA, Prequal, least request).
//! * [`policy`]: the policies and the names they resolve.
//! * [`lab`]: one run, start to finish; [`report`]: table, CSVs, chart.
//! * [`suite`]: every scenario of a directory, one table and chart.
//! * [`baseline`]: a plain hickory authoritative server, the DNS baseline.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod balance;
mod baseline;
mod client;
mod dns;
mod lab;
mod policy;
mod procs;
mod proxy;
mod report;
mod scenario;
mod server;
mod suite;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::policy::Policy;
use crate::procs::Binaries;
use crate::scenario::{ResolverRole, Scenario};

/// The built-in scenario of `anycast-lab demo`.
const DEMO: &str = include_str!("../scenarios/demo.toml");

/// Testbed for application-layer anycast: replicated servers with load and
/// path delay on loopback, the real resolver and agents, clients, and a
/// comparison of server-selection policies.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Args)]
struct BinArgs {
    /// The anycast-resolver binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    resolver_bin: Option<PathBuf>,
    /// The anycast-agent binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    agent_bin: Option<PathBuf>,
    /// Under `cargo run`, do not build the resolver and agent first.
    #[arg(long)]
    no_build: bool,
    /// Log filter of the resolver and the agents (their logs go to the
    /// output's `logs/`), e.g. "info,anycast_agent=trace" to see every
    /// measurement and push.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    daemon_log: String,
}

/// What `run` and `suite` may change of a scenario.
#[derive(Debug, clap::Args)]
struct Overrides {
    /// Run these policies (comma-separated) instead of the scenario's.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    policies: Option<Vec<Policy>>,
    /// Run each policy this long instead (every schedule scales along), e.g. "20s".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Idle time before each policy (and before the first) instead of the
    /// scenario's, e.g. "500ms" for a quick smoke run.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Split the clients among this many resolvers (client i asks resolver i mod N).
    #[arg(long, value_name = "N")]
    resolvers: Option<usize>,
    /// How several resolvers stand: "authoritative" (agents push to each,
    /// each probes) or "local" (one authority gets the pushes; N local
    /// resolvers learn from it and probe for themselves).
    #[arg(long, value_name = "ROLE")]
    resolver_role: Option<ResolverRole>,
}

impl Overrides {
    fn apply(&self, mut scenario: Scenario) -> anyhow::Result<Scenario> {
        if let Some(d) = self.duration {
            scenario = scenario.with_duration(d);
        }
        if let Some(settle) = self.settle {
            scenario.settle = settle;
            scenario.warmup = settle;
        }
        if let Some(list) = &self.policies {
            anyhow::ensure!(
                !list.contains(&Policy::External),
                "the \"external\" policy is chosen with --dns"
            );
            scenario.policies = list.clone();
        }
        if let Some(n) = self.resolvers {
            anyhow::ensure!(
                (1..=scenario::MAX_RESOLVERS).contains(&n),
                "--resolvers {n}: write 1 to {}",
                scenario::MAX_RESOLVERS
            );
            scenario.resolvers.count = n;
        }
        if let Some(role) = self.resolver_role {
            scenario.resolvers.role = role;
        }
        Ok(scenario)
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario: every policy in turn, then the table, CSVs and chart.
    Run {
        /// The scenario file (see lab/scenarios/suite/paper.toml).
        scenario: PathBuf,
        /// Put this DNS server in the resolver's place (one policy, "external").
        #[arg(long, value_name = "ADDR")]
        dns: Option<SocketAddr>,
        /// With --dns: run agents pushing to this URL (key from ANYCAST_PUSH_KEY).
        #[arg(long, value_name = "URL", requires = "dns")]
        push_url: Option<String>,
        #[command(flatten)]
        overrides: Overrides,
        /// Where results go.
        #[arg(long, default_value = "lab-out", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        bins: BinArgs,
    },
    /// Run every scenario of a directory, then one table and one chart
    /// over all of them (each policy's mean and p99, and both as multiples
    /// of the oracle's).
    Suite {
        /// The directory of scenario files.
        #[arg(default_value = "lab/scenarios/suite", value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// Where results go (a directory per scenario, and suite.txt,
        /// suite.csv, suite.svg).
        #[arg(long, default_value = "lab-out/suite", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        bins: BinArgs,
    },
    /// About a minute on the built-in demo scenario (lab/scenarios/demo.toml):
    /// random, nearest, P2C with peak EWMA, our default and the oracle.
    Demo {
        /// Where results go.
        #[arg(long, default_value = "lab-out", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        bins: BinArgs,
    },
    /// Validate a scenario (and, if the binaries are found, the resolver and
    /// agent configurations the lab would generate from it).
    Check {
        /// The scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        bins: BinArgs,
    },
    /// Serve a plain hickory authoritative zone (bench.example.), the
    /// baseline of scripts/bench-dns.sh.
    BaselineDns {
        /// Address for UDP and TCP.
        #[arg(long, default_value = "127.0.0.1:5399", value_name = "ADDR")]
        listen: SocketAddr,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    anycast_config_file::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration (write e.g. \"20s\")"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    // The baseline server runs until stopped; everything else is cut short.
    let stopping_is_normal = matches!(args.command, Cmd::BaselineDns { .. });
    let result = runtime.block_on(async {
        let main = command(args.command, shutdown.clone());
        tokio::select! {
            result = main => result,
            _ = interrupted() => {
                // Dropping the run drops its children's guards: they are killed.
                shutdown.cancel();
                if stopping_is_normal {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("interrupted"))
                }
            }
        }
    });
    // Do not wait for stragglers (a server task blocked on a slow client).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

fn binaries(bins: BinArgs) -> anyhow::Result<Binaries> {
    Binaries::locate(bins.resolver_bin, bins.agent_bin, !bins.no_build)
        .map(|b| b.logging(bins.daemon_log))
}

async fn command(cmd: Cmd, shutdown: CancellationToken) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run {
            scenario,
            dns,
            push_url,
            overrides,
            out,
            bins,
        } => {
            let scenario = overrides.apply(Scenario::read(&scenario)?)?;
            let binaries = if dns.is_some() && push_url.is_none() {
                None
            } else {
                Some(binaries(bins)?)
            };
            let outcome = lab::run(
                &scenario,
                lab::Options {
                    out: out.clone(),
                    dns,
                    push_url,
                    binaries,
                    print: true,
                },
                shutdown,
            )
            .await?;
            eprintln!(
                "took {:.0} s; chart: {}; per-request results: {}",
                outcome.took.as_secs_f64(),
                outcome.chart.display(),
                out.join("results.csv").display()
            );
            Ok(())
        }
        Cmd::Suite {
            dir,
            overrides,
            out,
            bins,
        } => {
            let binaries = binaries(bins)?;
            let files = suite::scenarios(&dir)?;
            let scenarios = files
                .iter()
                .map(|f| overrides.apply(Scenario::read(f)?))
                .collect::<anyhow::Result<Vec<Scenario>>>()?;
            let mut results = Vec::new();
            for (i, scenario) in scenarios.iter().enumerate() {
                eprintln!(
                    "suite: scenario {} of {}: {} ({} policies of {:?})",
                    i + 1,
                    scenarios.len(),
                    scenario.name,
                    scenario.policies.len(),
                    scenario.duration
                );
                let outcome = lab::run(
                    scenario,
                    lab::Options {
                        out: out.join(&scenario.name),
                        dns: None,
                        push_url: None,
                        binaries: Some(binaries.clone()),
                        print: false,
                    },
                    shutdown.clone(),
                )
                .await?;
                eprintln!("{}", outcome.table);
                results.push(suite::ScenarioResult {
                    name: scenario.name.clone(),
                    summaries: outcome.summaries,
                    paper: scenario.paper,
                });
            }
            let table = suite::table(&results);
            println!("{table}");
            let write = |name: &str, text: &str| {
                let path = out.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))
            };
            write("suite.txt", &table)?;
            write("suite.csv", &suite::csv(&results))?;
            let chart = out.join("suite.svg");
            suite::chart(&chart, &results)?;
            eprintln!(
                "suite: {} scenarios; table {}, figures {}, chart {}",
                results.len(),
                out.join("suite.txt").display(),
                out.join("suite.csv").display(),
                chart.display()
            );
            Ok(())
        }
        Cmd::Demo { out, bins } => {
            let binaries = binaries(bins)?;
            let scenario = Scenario::from_toml(DEMO, Path::new("lab/scenarios/demo.toml"))?;
            eprintln!(
                "anycast-lab demo: {} servers (path RTT {}; workers {}), {} clients; {} for {:?} each",
                scenario.servers.len(),
                scenario
                    .servers
                    .iter()
                    .map(|s| format!("{} ms", s.rtt.initial.as_millis()))
                    .collect::<Vec<_>>()
                    .join(", "),
                scenario
                    .servers
                    .iter()
                    .map(|s| s.capacity.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                scenario.clients.most(),
                scenario
                    .policies
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                scenario.duration
            );
            let outcome = lab::run(
                &scenario,
                lab::Options {
                    out: out.clone(),
                    dns: None,
                    push_url: None,
                    binaries: Some(binaries),
                    print: true,
                },
                shutdown,
            )
            .await?;
            eprintln!(
                "took {:.0} s; chart: {} (open it in a browser); per-request results: {}",
                outcome.took.as_secs_f64(),
                outcome.chart.display(),
                out.join("results.csv").display()
            );
            eprintln!(
                "more: anycast-lab suite (every scenario of lab/scenarios/suite, about an hour); \
                 docs/results.md has the measured tables"
            );
            Ok(())
        }
        Cmd::Check { scenario, bins } => {
            let scenario = Scenario::read(&scenario)?;
            let binaries = binaries(bins).ok();
            print!("{}", lab::check(&scenario, binaries.as_ref()).await?);
            if binaries.is_none() {
                println!("  (resolver and agent not found: their configurations were not checked)");
            }
            Ok(())
        }
        Cmd::BaselineDns { listen } => baseline::serve(listen, shutdown).await,
    }
}
