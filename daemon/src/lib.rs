//! What every long-running binary of the project does the same way: start
//! logging, build the runtime, run until SIGINT or SIGTERM, and report a
//! fatal error with its cause chain.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Starts logging to stderr. `quiet` lists targets held at `warn` whatever
/// `filter` says (libraries that would otherwise log per request at `info`);
/// `filter` is a RUST_LOG-style directive list and overrides them when it
/// names them.
pub fn init_logging(quiet: &[&str], filter: &str) {
    let mut directives: Vec<String> = quiet.iter().map(|t| format!("{t}=warn")).collect();
    directives.push(filter.to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(directives.join(",")))
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `service` on a multi-threaded runtime with a shutdown token that the
/// first SIGINT or SIGTERM cancels, and turns the outcome into an exit code.
pub fn run<F, Fut>(service: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        service(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
