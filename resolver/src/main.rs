//! The `anycast-resolver` binary: parse the command line, load the config,
//! start logging, run until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anycast_daemon::DaemonArgs;
use anycast_resolver::config::Config;
use clap::Parser;

/// DNS resolver for application-layer anycast: answers names of replicated
/// services (`web.any.example.net`, `rt.web.any.example.net`,
/// `Web%any.example.net`) with a server chosen by the named metric, and
/// forwards every other name to upstream DNS for allowed clients.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Serve DNS on this address instead of [dns] listen (repeatable).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
}

fn main() -> ExitCode {
    if let Some(done) = anycast_daemon::print_man_page_if_asked::<Args>() {
        return done;
    }
    let args = Args::parse();
    let mut config = match Config::read(&args.daemon.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if !args.listen.is_empty() {
        if let Some(problem) =
            anycast_resolver::config::forwarding_loop_among(&config.forward.upstreams, &args.listen)
        {
            eprintln!("error: --listen: {problem}");
            return ExitCode::from(2);
        }
        config.dns.listen = args.listen;
    }
    if args.daemon.check_config {
        println!(
            "{}: ok ({} zones, {} groups, {} members)",
            args.daemon.config.display(),
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
        &args.daemon.log,
    );
    anycast_daemon::run(|shutdown| {
        anycast_resolver::run(config, Some(args.daemon.config), shutdown)
    })
}
