//! `anycastctl`: the operator's command line over the resolver's admin API.
//!
//! Exit codes, for scripts:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | refused by the resolver: bad input, no such group or member, already exists, changed since `--if-revision` (the message says which) |
//! | 2 | usage error (bad arguments) |
//! | 3 | unauthorized: missing or wrong token |
//! | 4 | the resolver could not be reached, or failed (5xx: e.g. the state file could not be written, or etcd cannot be reached; nothing changed) |

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anycast_resolver::membership::{GroupPatch, MemberPatch};
use anycast_selection::groups::AnswerMode;
use anycast_selection::select::Pick;
use clap::{CommandFactory, Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

/// Operate an anycast resolver: groups, members, draining, reload.
///
/// Talks to the resolver's admin API (`[admin] listen`, loopback by default)
/// with the bearer token from `--token-file` or ANYCASTCTL_TOKEN. Changes are
/// persisted by the resolver before they are acknowledged.
#[derive(Debug, Parser)]
#[command(name = "anycastctl", version)]
struct Cli {
    /// The admin API's base URL.
    #[arg(
        long,
        env = "ANYCASTCTL_SERVER",
        default_value = "http://127.0.0.1:8054",
        global = true
    )]
    server: String,

    /// A file holding the admin token (as `[admin] token_file`).
    #[arg(long, env = "ANYCASTCTL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,

    /// Print the resolver's JSON answer instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Make the change only if the group is still at this revision (the
    /// `revision` that `group show` prints); refused as a conflict if it has
    /// changed since, so an edit based on a stale read overwrites nothing.
    #[arg(long, global = true, value_name = "REVISION")]
    if_revision: Option<i64>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every group.
    Groups,
    /// Show, create, change or delete a group.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Add, change, remove, drain or undrain a member.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Re-read the resolver's config file (a bad file is refused; the old one stays).
    Reload,
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// A group's settings, all optional.
#[derive(Debug, clap::Args)]
struct Settings {
    /// Answer TTL in seconds.
    #[arg(long)]
    ttl: Option<u32>,
    /// Answer with the pick only (`one`) or the whole equivalent set (`set`).
    #[arg(long, value_parser = parse_answer)]
    answer: Option<AnswerMode>,
    /// Relative width of the equivalent set (0.3 = within 30 % of the best).
    #[arg(long)]
    threshold: Option<f64>,
    /// Absolute width of the equivalent set, in milliseconds.
    #[arg(long)]
    slack_ms: Option<f64>,
    /// `graded` (by the distance below the set's limit), `uniform`,
    /// `weighted` (by 1 / estimate), `least` (the least estimate) or `two`
    /// (the lesser of two at random).
    #[arg(long, value_parser = parse_pick)]
    pick: Option<Pick>,
    /// Time between probes of a member, in milliseconds.
    #[arg(long)]
    probe_interval_ms: Option<u64>,
    /// Probe timeout, in milliseconds.
    #[arg(long)]
    probe_timeout_ms: Option<u64>,
}

impl Settings {
    fn patch(&self) -> GroupPatch {
        GroupPatch {
            ttl: self.ttl,
            answer: self.answer,
            threshold: self.threshold,
            slack_ms: self.slack_ms,
            pick: self.pick,
            probe_interval_ms: self.probe_interval_ms,
            probe_timeout_ms: self.probe_timeout_ms,
            ..GroupPatch::default()
        }
    }
}

fn parse_answer(s: &str) -> Result<AnswerMode, String> {
    match s {
        "one" => Ok(AnswerMode::One),
        "set" => Ok(AnswerMode::Set),
        _ => Err("expected `one` or `set`".into()),
    }
}

fn parse_pick(s: &str) -> Result<Pick, String> {
    match s {
        "graded" => Ok(Pick::Graded),
        "uniform" => Ok(Pick::Uniform),
        "weighted" => Ok(Pick::Weighted),
        "least" => Ok(Pick::Least),
        "two" => Ok(Pick::Two),
        _ => Err("expected `graded`, `uniform`, `weighted`, `least` or `two`".into()),
    }
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Show a group's settings, members and origin.
    Show { name: String },
    /// Create a group (in a configured zone).
    Create {
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change a group's settings.
    Set {
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a group.
    Delete { name: String },
    /// Drop the runtime changes of a group: it follows the config file again.
    Reset { name: String },
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// Add a member to a group.
    Add {
        group: String,
        address: IpAddr,
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// The probe file's URL (default: http://ADDRESS:PORT/.well-known/anycast-probe.json).
        #[arg(long)]
        probe: Option<String>,
        #[arg(long, default_value_t = 0)]
        cost: u32,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Change a member's probe URL, cost or weight.
    Set {
        group: String,
        /// ADDRESS:PORT
        member: SocketAddr,
        #[arg(long)]
        probe: Option<String>,
        #[arg(long)]
        cost: Option<u32>,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a member.
    Remove {
        group: String,
        /// ADDRESS:PORT
        member: SocketAddr,
    },
    /// Take a member out of answers (it stays in the group and is still probed).
    Drain {
        group: String,
        /// ADDRESS:PORT
        member: SocketAddr,
    },
    /// Put a drained member back.
    Undrain {
        group: String,
        /// ADDRESS:PORT
        member: SocketAddr,
    },
}

/// How a command ended, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Refused = 1,
    Unauthorized = 3,
    Unreachable = 4,
}

fn main() -> ExitCode {
    if let Some(done) = anycast_daemon::print_man_page_if_asked::<Cli>() {
        return done;
    }
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "anycastctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let token = match read_token(&cli) {
        Ok(token) => token,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(Failure::Unreachable as u8);
        }
    };
    match runtime.block_on(execute(&cli, &token)) {
        Ok(answer) => {
            print_answer(&cli, &answer);
            ExitCode::SUCCESS
        }
        Err((failure, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(failure as u8)
        }
    }
}

fn read_token(cli: &Cli) -> Result<String, String> {
    if let Some(path) = &cli.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        return Ok(text.trim().to_owned());
    }
    std::env::var("ANYCASTCTL_TOKEN")
        .map(|t| t.trim().to_owned())
        .map_err(|_| "no token: give --token-file FILE or set ANYCASTCTL_TOKEN".to_owned())
}

/// Percent-encodes a path segment (names in the `%` form carry a `%`).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn execute(cli: &Cli, token: &str) -> Result<Value, (Failure, String)> {
    use reqwest::Method;
    let base = cli.server.trim_end_matches('/');
    let group_url = |name: &str| format!("{base}/v1/admin/groups/{}", segment(name));
    let member_url = |group: &str, member: &SocketAddr| {
        format!(
            "{}/members/{}",
            group_url(group),
            segment(&member.to_string())
        )
    };
    let (method, url, body): (Method, String, Option<Value>) = match &cli.command {
        Command::Groups => (Method::GET, format!("{base}/v1/admin/groups"), None),
        Command::Reload => (Method::POST, format!("{base}/v1/admin/reload"), None),
        Command::Completions { .. } => return Ok(Value::Null),
        Command::Group(g) => match g {
            GroupCommand::Show { name } => (Method::GET, group_url(name), None),
            GroupCommand::Create { name, settings } => {
                let mut spec = anycast_selection::groups::GroupSpec::default();
                settings.patch().apply(&mut spec);
                (Method::PUT, group_url(name), Some(to_json(&spec)))
            }
            GroupCommand::Set { name, settings } => (
                Method::PATCH,
                group_url(name),
                Some(to_json(&settings.patch())),
            ),
            GroupCommand::Delete { name } => (Method::DELETE, group_url(name), None),
            GroupCommand::Reset { name } => {
                (Method::POST, format!("{}/reset", group_url(name)), None)
            }
        },
        Command::Member(m) => match m {
            MemberCommand::Add {
                group,
                address,
                port,
                probe,
                cost,
                weight,
            } => (
                Method::POST,
                format!("{}/members", group_url(group)),
                Some(
                    json!({ "address": address, "port": port, "probe": probe, "cost": cost, "weight": weight }),
                ),
            ),
            MemberCommand::Set {
                group,
                member,
                probe,
                cost,
                weight,
            } => {
                let patch = MemberPatch {
                    probe: probe.clone(),
                    cost: *cost,
                    weight: *weight,
                };
                (
                    Method::PATCH,
                    member_url(group, member),
                    Some(to_json(&patch)),
                )
            }
            MemberCommand::Remove { group, member } => {
                (Method::DELETE, member_url(group, member), None)
            }
            MemberCommand::Drain { group, member } => (
                Method::POST,
                format!("{}/drain", member_url(group, member)),
                None,
            ),
            MemberCommand::Undrain { group, member } => (
                Method::POST,
                format!("{}/undrain", member_url(group, member)),
                None,
            ),
        },
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| (Failure::Unreachable, e.to_string()))?;
    let mut request = client.request(method, &url).bearer_auth(token);
    if let Some(revision) = cli.if_revision {
        request = request.header(reqwest::header::IF_MATCH, format!("\"{revision}\""));
    }
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .map_err(|e| (Failure::Unreachable, format!("cannot reach {base}: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| (Failure::Unreachable, e.to_string()))?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(answer);
    }
    let detail = answer["detail"]
        .as_str()
        .map_or_else(|| answer.to_string(), str::to_owned);
    let failure = match status.as_u16() {
        401 => Failure::Unauthorized,
        400..=499 => Failure::Refused,
        _ => Failure::Unreachable,
    };
    Err((failure, format!("{detail} ({status})")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

fn print_answer(cli: &Cli, answer: &Value) {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
        return;
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    match &cli.command {
        Command::Groups => {
            table.set_header(["group", "origin", "members", "drained", "ttl", "answer"]);
            for g in answer["groups"].as_array().into_iter().flatten() {
                table.add_row(
                    ["name", "origin", "members", "drained", "ttl", "answer"].map(|k| text(&g[k])),
                );
            }
            println!("{table}");
        }
        Command::Group(GroupCommand::Show { .. }) => {
            let spec = &answer["spec"];
            println!(
                "{} ({}, revision {})  ttl {}  answer {}  threshold {}  slack {} ms  pick {}  probe every {} ms",
                text(&answer["name"]),
                text(&answer["origin"]),
                text(&answer["revision"]),
                text(&spec["ttl"]),
                text(&spec["answer"]),
                text(&spec["threshold"]),
                text(&spec["slack_ms"]),
                text(&spec["pick"]),
                text(&spec["probe_interval_ms"]),
            );
            table.set_header(["member", "cost", "weight", "drained", "probe"]);
            for m in spec["members"].as_array().into_iter().flatten() {
                let endpoint = match (&m["address"], &m["port"]) {
                    (Value::String(a), Value::Number(p)) if a.contains(':') => format!("[{a}]:{p}"),
                    (a, p) => format!("{}:{}", text(a), text(p)),
                };
                table.add_row([
                    endpoint,
                    text(&m["cost"]),
                    text(&m["weight"]),
                    text(&m["drained"]),
                    text(&m["probe"]),
                ]);
            }
            println!("{table}");
        }
        _ => match &answer["revision"] {
            Value::Null => println!("ok: {}", text(&answer["change"])),
            revision => println!("ok: {} (revision {revision})", text(&answer["change"])),
        },
    }
}
