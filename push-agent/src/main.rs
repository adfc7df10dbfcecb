//! The `anycast-agent` binary: parse the command line, load the config,
//! start logging, run until SIGINT or SIGTERM (then push "draining").

use std::path::PathBuf;
use std::process::ExitCode;

use anycast_agent::config::AgentConfig;
use clap::Parser;
use tokio_util::sync::CancellationToken;

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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "hyper=warn,reqwest=warn,{}",
            args.log
        )))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        anycast_agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining and shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: draining and shutting down"),
    }
    shutdown.cancel();
}
