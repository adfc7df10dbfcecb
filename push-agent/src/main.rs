//! The `anycast-agent` binary: parse the command line, load the config,
//! start logging, run until SIGINT or SIGTERM (then push "draining").

use std::path::PathBuf;
use std::process::ExitCode;

use anycast_agent::config::AgentConfig;
use clap::Parser;

/// Push agent for application-layer anycast: runs beside a replicated server,
/// measures its time until first read (actively and/or from its access log),
/// publishes it in the probe file, and pushes significant changes, signed, to
/// the anycast resolvers. The signing key comes from a file or an environment
/// variable named in the config, never from the command line.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The TOML configuration file (see configs/agent.toml for every field).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,

    /// Validate the configuration, print a summary and exit (0 if valid).
    #[arg(long)]
    check_config: bool,

    /// Log filter, as RUST_LOG (e.g. "debug").
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match AgentConfig::read(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!(
            "{}: ok (server {}, {} groups, {} push targets, key {})",
            args.config.display(),
            config.server,
            config.groups.len(),
            config.push_urls.len(),
            config.key.id
        );
        return ExitCode::SUCCESS;
    }
    anycast_daemon::init_logging(&["hyper", "reqwest"], &args.log);
    anycast_daemon::run(|shutdown| anycast_agent::run(config, shutdown))
}
