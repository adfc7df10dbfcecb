//! The `anycast-resolver` binary: parse the command line, load the config,
//! start logging, run until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anycast_resolver::config::Config;
use clap::Parser;

/// DNS resolver for application-layer anycast: answers names of replicated
/// services (`web.any.example.net`, `rt.web.any.example.net`,
/// `Web%any.example.net`) with a server chosen by the named metric, and
/// forwards every other name to upstream DNS for allowed clients.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The TOML configuration file (see configs/resolver.toml for every field).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,

    /// Validate the configuration, print a summary and exit (0 if valid).
    #[arg(long)]
    check_config: bool,

    /// Serve DNS on this address instead of [dns] listen (repeatable).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    /// Log filter, as RUST_LOG (e.g. "debug" or "anycast_resolver=debug").
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match Config::read(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if !args.listen.is_empty() {
        config.dns.listen = args.listen;
    }
    if args.check_config {
        println!(
            "{}: ok ({} zones, {} groups, {} members)",
            args.config.display(),
            config.zones.len(),
            config.groups.len(),
            config
                .groups
                .iter()
                .map(|g| g.spec.members.len())
                .sum::<usize>()
        );
        return ExitCode::SUCCESS;
    }

    // hickory logs every query at info; a resolver must not.
    anycast_daemon::init_logging(
        &["hickory_server", "hickory_resolver", "hickory_net"],
        &args.log,
    );
    anycast_daemon::run(|shutdown| anycast_resolver::run(config, Some(args.config), shutdown))
}
