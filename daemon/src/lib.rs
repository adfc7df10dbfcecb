//! What every long-running binary of the project does the same way: start
//! logging, build the runtime, run until SIGINT or SIGTERM, tell systemd how
//! it goes ([`notify`]), report a fatal error with its cause chain, and
//! replace files atomically.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod notify;
pub mod tls;

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

/// The command-line flags every daemon of the project takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The TOML configuration file (the example in configs/ documents every field).
    #[arg(long, short, value_name = "FILE")]
    pub config: std::path::PathBuf,

    /// Validate the configuration, print a summary and exit (0 if valid, 2 if not).
    #[arg(long)]
    pub check_config: bool,

    /// Log filter, as RUST_LOG (e.g. "debug" or "anycast_resolver=debug").
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// The variable that makes a binary print its man page (roff, from its
/// clap definitions) and exit, for packaging (`scripts/package.sh`).
pub const PRINT_MAN_PAGE: &str = "ANYCAST_PRINT_MAN_PAGE";

/// If [`PRINT_MAN_PAGE`] is set, prints the man page of `C` (section 8, a
/// system command) to stdout and returns the exit code to end with.
pub fn print_man_page_if_asked<C: clap::CommandFactory>() -> Option<ExitCode> {
    std::env::var_os(PRINT_MAN_PAGE)?;
    let man = clap_mangen::Man::new(C::command()).section("8");
    let mut out = std::io::stdout().lock();
    Some(match man.render(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write the man page: {error}");
            ExitCode::FAILURE
        }
    })
}

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
        if let Some(interval) = notify::watchdog_interval() {
            tracing::info!(?interval, "systemd watchdog: pinging at half the interval");
            tokio::spawn(notify::keep_watchdog(interval, shutdown.clone()));
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
        notify::stopping();
        shutdown.cancel();
    }
}

/// How hard [`write_atomically`] works to make the new file survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Readers see the old file or the new one, never a mix; after a crash
    /// either may be there (for files rewritten often and cheap to lose).
    Replaced,
    /// As `Replaced`, and the new file is on disk when the call returns (the
    /// file and its directory are fsynced): an acknowledged write survives a
    /// crash.
    Synced,
}

/// Replaces `path` with `bytes` atomically: writes a temporary file in the
/// same directory, then renames it over `path`. On any error the old file is
/// left as it was and the temporary file removed.
pub fn write_atomically(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durability == Durability::Synced {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durability == Durability::Synced {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for durability in [Durability::Replaced, Durability::Synced] {
            write_atomically(&path, b"one", durability).unwrap();
            write_atomically(&path, b"two", durability).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"two");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.json");
        write_atomically(&path, b"old", Durability::Synced).unwrap();
        // A non-empty directory where the file should go makes the rename fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomically(&blocked, b"new", Durability::Synced).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp file left"
        );
    }
}
