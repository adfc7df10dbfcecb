//! The `anycast-agent` binary: parse the command line, load the config,
//! start logging, run until SIGINT or SIGTERM (then push "draining").

use std::process::ExitCode;

use anycast_agent::config::AgentConfig;
use anycast_daemon::DaemonArgs;
use clap::Parser;

/// Push agent for application-layer anycast: runs beside a replicated server,
/// measures its time until first read (actively and/or from its access log),
/// publishes it in the probe file, and pushes significant changes, signed, to
/// the anycast resolvers. The signing key comes from a file or an environment
/// variable named in the config, never from the command line.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() -> ExitCode {
    if let Some(done) = anycast_daemon::print_man_page_if_asked::<Args>() {
        return done;
    }
    let args = Args::parse();
    let config = match AgentConfig::read(&args.daemon.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if args.daemon.check_config {
        println!(
            "{}: ok (server {}, {} groups, {} push targets, key {})",
            args.daemon.config.display(),
            config.server,
            config.groups.len(),
            config.push_urls.len(),
            config.key.id
        );
        return ExitCode::SUCCESS;
    }
    anycast_daemon::init_logging(&["hyper", "reqwest"], &args.daemon.log);
    anycast_daemon::run(|shutdown| anycast_agent::run(config, shutdown))
}
