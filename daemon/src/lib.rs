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
        // Install the handlers before the service starts (and says it is
        // listening): a signal arriving between the two must still shut it
        // down cleanly rather than kill it.
        match Signals::install() {
            Ok(signals) => {
                tokio::spawn(signals.cancel_on_first(shutdown.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot install signal handlers; stop with SIGKILL");
            }
        }
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

/// SIGINT and SIGTERM, caught.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Cancels `shutdown` on the first SIGINT or SIGTERM.
    async fn cancel_on_first(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    }
}
