//! The real binaries the lab runs: finding them, starting them, reading what
//! they say, and making sure they die with the lab.
//!
//! * [`Binaries::locate`] finds `anycast-resolver` and `anycast-agent` next
//!   to the lab's own executable (the same cargo target directory), unless
//!   given explicitly. Under `cargo run` (cargo sets `CARGO` and
//!   `CARGO_MANIFEST_DIR` for the program it runs) the lab first runs
//!   `cargo build` for both with its own profile, so `cargo run --release -p
//!   anycast-lab -- demo` is one command that never runs stale binaries.
//! * [`Daemon`] is a running child: its stderr goes to a log file and is
//!   scanned for the lines the lab waits on (`listening on ADDR`). It is
//!   killed when dropped (also on panic, and when Ctrl-C drops the run), so
//!   the lab leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The resolver's binary name.
pub const RESOLVER: &str = "anycast-resolver";

/// The agent's binary name.
pub const AGENT: &str = "anycast-agent";

/// Lines of a daemon's log kept in memory for error messages.
const TAIL: usize = 40;

/// Where the two binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `anycast-resolver`.
    pub resolver: PathBuf,
    /// `anycast-agent`.
    pub agent: PathBuf,
    /// The log filter both are started with.
    pub log: String,
}

impl Binaries {
    /// Finds both binaries; under `cargo run` (and with `build`), builds them
    /// first. `resolver` and `agent` override the search.
    pub fn locate(
        resolver: Option<PathBuf>,
        agent: Option<PathBuf>,
        build: bool,
    ) -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("cannot tell where the lab's executable is")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?
            .to_path_buf();
        if build && (resolver.is_none() || agent.is_none()) {
            build_under_cargo(&dir)?;
        }
        let find = |given: Option<PathBuf>, name: &str| -> anyhow::Result<PathBuf> {
            let path = given.unwrap_or_else(|| dir.join(name));
            if path.is_file() {
                return Ok(path);
            }
            let profile = dir
                .file_name()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let flag = match profile.as_str() {
                "release" => " --release".to_owned(),
                "debug" | "" => String::new(),
                other => format!(" --profile {other}"),
            };
            bail!(
                "{} not found; build it with `cargo build{flag} -p {RESOLVER} -p {AGENT}` \
                 (or run the lab with `cargo run{flag} -p anycast-lab -- ...`, which builds \
                 them), or name it with --{}-bin",
                path.display(),
                name.trim_start_matches("anycast-")
            )
        };
        Ok(Binaries {
            resolver: find(resolver, RESOLVER)?,
            agent: find(agent, AGENT)?,
            log: "info".to_owned(),
        })
    }

    /// The same binaries, started with log filter `filter`.
    pub fn logging(self, filter: String) -> Self {
        Self {
            log: filter,
            ..self
        }
    }
}

/// Under `cargo run` / `cargo test`, builds the resolver and the agent with
/// the profile the lab itself was built with (the name of the directory it
/// runs from), so they sit beside it and are current.
fn build_under_cargo(exe_dir: &Path) -> anyhow::Result<()> {
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    let workspace = Path::new(&manifest_dir)
        .parent()
        .filter(|root| root.join("Cargo.toml").is_file() && root.join("resolver").is_dir());
    let Some(workspace) = workspace else {
        return Ok(());
    };
    let profile = exe_dir
        .file_name()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Built binaries go to <target>/<profile>: the lab's own directory.
    let target = exe_dir.parent().map(Path::to_path_buf);
    let mut command = std::process::Command::new(&cargo);
    command
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", RESOLVER, "-p", AGENT, "--bins"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    if let Some(target) = target {
        command.arg("--target-dir").arg(target);
    }
    eprintln!("building {RESOLVER} and {AGENT} ({profile})...");
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("building {RESOLVER} and {AGENT} failed ({status})");
    }
    Ok(())
}

/// What a daemon has logged, shared with the task reading it.
#[derive(Debug, Default)]
struct LogTail {
    lines: Vec<String>,
}

/// A running child process, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    tail: Arc<Mutex<LogTail>>,
    /// The number of lines logged so far; changes on each line, and closes
    /// when the child's stderr does.
    lines: watch::Receiver<usize>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (its stderr logged to `log`).
    pub async fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Daemon> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The last resort: whatever happens to this value, the child
            // gets SIGKILL when it is dropped.
            .kill_on_drop(true)
            .env_remove("RUST_LOG")
            // Plain log lines (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1");
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("{name}: stderr is not piped"))?;
        let mut file = tokio::fs::File::create(log)
            .await
            .with_context(|| format!("cannot create {}", log.display()))?;
        let tail = Arc::new(Mutex::new(LogTail::default()));
        let (tx, rx) = watch::channel(0usize);
        {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                let mut count = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    let _ = file.write_all(line.as_bytes()).await;
                    let _ = file.write_all(b"\n").await;
                    {
                        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                        tail.lines.push(line);
                        if tail.lines.len() > 4 * TAIL {
                            let cut = tail.lines.len() - TAIL;
                            tail.lines.drain(..cut);
                        }
                    }
                    count += 1;
                    let _ = tx.send(count);
                }
                let _ = file.flush().await;
            });
        }
        Ok(Daemon {
            name: name.to_owned(),
            child,
            tail,
            lines: rx,
            log: log.to_owned(),
        })
    }

    /// Waits until a logged line satisfies `found`, the child exits, or
    /// `deadline` passes; the error shows the end of its log.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let end = tokio::time::Instant::now() + deadline;
        let mut seen = 0;
        loop {
            {
                let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
                for line in tail.lines.iter().skip(seen) {
                    if let Some(t) = found(line) {
                        return Ok(t);
                    }
                }
                seen = tail.lines.len();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::select! {
                changed = self.lines.changed() => {
                    if changed.is_err() {
                        // stderr closed: the child is exiting; let try_wait see it.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                _ = tokio::time::sleep_until(end) => bail!(
                    "{} did not report {what} within {deadline:?} (log: {}):\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                ),
            }
        }
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let skip = tail.lines.len().saturating_sub(TAIL);
        tail.lines[skip..].join("\n")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGKILL, and reap it if it is already gone; tokio reaps the rest.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// The address of a `listening on ADDR listener="NAME"` log line.
pub fn listening_addr(line: &str, listener: &str) -> Option<SocketAddr> {
    if !line.contains(&format!("listener=\"{listener}\""))
        && !line.contains(&format!("listener={listener}"))
    {
        return None;
    }
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_their_address() {
        let line = "2026-01-01T00:00:00Z  INFO anycast_resolver::server: listening on 127.0.0.1:5300 listener=\"dns-udp\"";
        assert_eq!(
            listening_addr(line, "dns-udp"),
            Some("127.0.0.1:5300".parse().unwrap())
        );
        assert_eq!(listening_addr(line, "http"), None);
        let coloured =
            "\x1b[32m INFO\x1b[0m listening on 127.0.0.1:80 \x1b[3mlistener\x1b[0m=\"http\"";
        assert_eq!(
            listening_addr(&strip_ansi(coloured), "http"),
            Some("127.0.0.1:80".parse().unwrap())
        );
    }
}
