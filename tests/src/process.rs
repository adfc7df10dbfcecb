//! Running the real binaries (`anycast-resolver`, `anycast-agent`,
//! `anycastctl`) as a test's children, and waiting on conditions.
//!
//! * [`resolver_binary`] and [`agent_binary`] build the binaries once per
//!   test process (one `cargo build`).
//! * [`Resolver`] starts the resolver on a config written to a temp dir, finds
//!   the port it bound from its log, keeps its log lines, and kills it when
//!   dropped. [`Agent`] does the same for the push agent.
//! * [`anycastctl_command`] runs the operator's CLI against a resolver's
//!   admin API ([`Resolver::admin_addr`]).
//!
//! Everything waits on conditions with deadlines: nothing sleeps and hopes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a resolver or agent may take to say it is up (its `listening on`
/// or `agent running` line).
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// How many log lines a failing test shows.
const LOG_TAIL: usize = 100;

/// The log filter the resolver runs with: debug for our crate, so a failing
/// test's log says what the resolver decided.
const LOG_FILTER: &str = "info,anycast_resolver=debug";

/// The log filter the agent runs with in tests: debug for its crate, so a
/// failing test's log shows every push and failed measurement.
pub const AGENT_LOG_FILTER: &str = "info,anycast_agent=debug";

/// The environment variable the agent reads its key from by default; removed
/// from the agent's environment so the tests' own environment cannot leak in.
pub const AGENT_DEFAULT_KEY_ENV: &str = "ANYCAST_PUSH_KEY";

/// The binaries the tests run.
pub(crate) const RESOLVER: &str = "anycast-resolver";
pub(crate) const AGENT: &str = "anycast-agent";
/// The operator's CLI, a second binary of the resolver's package (built by
/// the same `cargo build -p anycast-resolver --bins`).
const ANYCASTCTL: &str = "anycastctl";

/// The environment variables `anycastctl` reads; removed from its
/// environment so the tests' own environment cannot leak in.
pub const ANYCASTCTL_ENV: [&str; 3] = [
    "ANYCASTCTL_SERVER",
    "ANYCASTCTL_TOKEN",
    "ANYCASTCTL_TOKEN_FILE",
];

/// The workspace root (the directory of the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// The built binaries, by name.
type Binaries = HashMap<&'static str, PathBuf>;

/// Builds (incrementally) both binaries with one cargo command the first time
/// any test of this process asks for one.
///
/// A failed build is remembered too, so that every test reports it at once
/// instead of running cargo again.
fn binary(name: &str) -> &'static Path {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    match BINARIES.get_or_init(build_binaries) {
        Ok(binaries) => binaries
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not one of the binaries built")),
        Err(message) => panic!("{message}"),
    }
}

/// Path of the `anycast-resolver` binary (built on first use).
pub fn resolver_binary() -> &'static Path {
    binary(RESOLVER)
}

/// Path of the `anycast-agent` binary (built on first use).
pub fn agent_binary() -> &'static Path {
    binary(AGENT)
}

/// Path of the `anycastctl` binary (built on first use).
pub fn anycastctl_binary() -> &'static Path {
    binary(ANYCASTCTL)
}

fn build_binaries() -> Result<Binaries, String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "-p", RESOLVER, "-p", AGENT, "--bins"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "building {RESOLVER} and {AGENT} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // cargo names the executables it built; fall back to the usual place.
    let built: Vec<PathBuf> = stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter_map(json_executable)
        .map(PathBuf::from)
        .collect();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                root.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| root.join("target"));
    let mut binaries = Binaries::new();
    for name in [RESOLVER, AGENT, ANYCASTCTL] {
        let binary = built
            .iter()
            .find(|path| path.file_name().is_some_and(|f| f == name))
            .cloned()
            .unwrap_or_else(|| target.join("debug").join(name));
        if !binary.is_file() {
            return Err(format!(
                "cargo built {name} but {} is not a file",
                binary.display()
            ));
        }
        binaries.insert(name, binary);
    }
    Ok(binaries)
}

/// The `"executable"` string of a cargo JSON message, if it has one.
fn json_executable(line: &str) -> Option<String> {
    const KEY: &str = r#""executable":""#;
    let start = line.find(KEY)? + KEY.len();
    let mut path = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(path),
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
    None
}

/// A command running the resolver binary, with no environment-dependent logging.
pub fn resolver_command() -> Command {
    let mut command = Command::new(resolver_binary());
    command.env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

/// A command running the agent binary, with no environment-dependent logging
/// and without the default key variable of the tests' own environment.
pub fn agent_command() -> Command {
    agent_command_for(agent_binary())
}

/// A command running `anycastctl` against the admin API at `admin` with the
/// token in `token_file`, without the `ANYCASTCTL_*` variables of the tests'
/// own environment. Add the subcommand's arguments; run it with
/// [`run_with_deadline`].
pub fn anycastctl_command(admin: SocketAddr, token_file: &Path) -> Command {
    let mut command = anycastctl_bare_command();
    command
        .arg("--server")
        .arg(format!("http://{admin}"))
        .arg("--token-file")
        .arg(token_file);
    command
}

/// `anycastctl` with no server, no token and none of the `ANYCASTCTL_*`
/// variables: for tests of its defaults and usage errors.
pub fn anycastctl_bare_command() -> Command {
    let mut command = Command::new(anycastctl_binary());
    for name in ANYCASTCTL_ENV {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// [`agent_command`] for another build of the agent (say a release build).
pub fn agent_command_for(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("RUST_LOG")
        .env_remove(AGENT_DEFAULT_KEY_ENV)
        .stdin(Stdio::null());
    command
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

/// The log lines of a process, shared with the thread that reads them.
#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    /// stderr reached end of file: the process is gone (or closed it).
    closed: bool,
}

#[derive(Debug, Default)]
struct Logs {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Logs {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a line satisfies `found` (returning what it returns), stderr
    /// closes, or the deadline passes.
    fn wait_for<T>(
        &self,
        deadline: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + deadline;
        let mut seen = 0;
        let mut state = self.lock();
        loop {
            for line in &state.lines[seen..] {
                if let Some(t) = found(line) {
                    return Some(t);
                }
            }
            seen = state.lines.len();
            let now = Instant::now();
            if state.closed || now >= end {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, end - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// A running daemon (resolver or agent) on a config in its own temp dir, with
/// its stderr log collected by a thread; killed when dropped, and its log
/// shown if the test is failing.
#[derive(Debug)]
struct Daemon {
    program: String,
    child: Child,
    logs: Arc<Logs>,
    reader: Option<JoinHandle<()>>,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Writes `config_toml` to `file_name` in a fresh temp dir and runs
    /// `command --config FILE ARGS...` with stderr collected.
    fn spawn(mut command: Command, file_name: &str, config_toml: &str, args: &[&str]) -> Daemon {
        let program = Path::new(command.get_program())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = tempfile::tempdir().expect("cannot create a temp dir");
        let config = dir.path().join(file_name);
        std::fs::write(&config, config_toml).expect("cannot write the config");
        let mut child = command
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Logs::default());
        let reader = {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().lines.push(strip_ansi(&line));
                    logs.changed.notify_all();
                }
                logs.lock().closed = true;
                logs.changed.notify_all();
            })
        };
        Daemon {
            program,
            child,
            logs,
            reader: Some(reader),
            config,
            dir,
        }
    }

    /// Panics with the log: the daemon did not come up.
    fn failed_to_start(&mut self, what: &str) -> ! {
        let status = self.child.try_wait().ok().flatten();
        panic!(
            "{} did not {what} within {START_DEADLINE:?} (exit status: {status:?}); its log:\n{}",
            self.program,
            self.logs().join("\n")
        );
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().lines.clone()
    }

    fn wait_for_log(&self, needle: &str, deadline: Duration) -> Option<String> {
        self.logs.wait_for(deadline, |line| {
            line.contains(needle).then(|| line.to_owned())
        })
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill");
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid()
        );
    }

    fn wait_for_signal_handlers(&self, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        loop {
            if [SIGINT, SIGTERM]
                .into_iter()
                .all(|signal| catches_signal(self.pid(), signal))
            {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.program))
            {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: its output (captured by the test harness) gets
            // the end of the daemon's log.
            let lines = self.logs();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- {} (pid {}, config {}), last {} log lines:\n{}",
                self.program,
                self.pid(),
                self.config.display(),
                tail.len(),
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A running `anycast-resolver`, killed when dropped.
#[derive(Debug)]
pub struct Resolver {
    daemon: Daemon,
    addr: SocketAddr,
}

impl Resolver {
    /// Writes `config_toml` to a fresh temp dir, starts the resolver on it and
    /// waits for its DNS listener. Panics (with the log) if it does not come up.
    pub fn start(config_toml: &str) -> Resolver {
        Resolver::start_with(config_toml, &[], &[])
    }

    /// [`Resolver::start`] with extra command-line arguments (e.g. `--listen`).
    pub fn start_with_args(config_toml: &str, args: &[&str]) -> Resolver {
        Resolver::start_with(config_toml, args, &[])
    }

    /// [`Resolver::start`] with extra command-line arguments and environment
    /// variables for the resolver only (e.g. the secret of a `[[push.key]]`
    /// with `env = "NAME"`).
    pub fn start_with(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Resolver {
        let mut command = resolver_command();
        command.args(["--log", LOG_FILTER]);
        command.envs(env.iter().copied());
        let mut daemon = Daemon::spawn(command, "resolver.toml", config_toml, args);
        let addr = daemon
            .logs
            .wait_for(START_DEADLINE, |line| listening_addr(line, "dns-udp"));
        match addr {
            Some(addr) => Resolver { daemon, addr },
            None => daemon.failed_to_start("report a dns-udp listener"),
        }
    }

    /// The DNS address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP API's address, once the resolver has logged it (`None` if it
    /// does not within [`START_DEADLINE`]).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.daemon
            .logs
            .wait_for(START_DEADLINE, |line| listening_addr(line, "http"))
    }

    /// The admin API's address (`[admin] listen`), once the resolver has
    /// logged it (`None` if it does not within [`START_DEADLINE`], e.g.
    /// without an `[admin]` section).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.daemon
            .logs
            .wait_for(START_DEADLINE, |line| listening_addr(line, "admin"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Where its config file is.
    pub fn config_path(&self) -> &Path {
        &self.daemon.config
    }

    /// Every log line so far, ANSI colours removed.
    pub fn logs(&self) -> Vec<String> {
        self.daemon.logs()
    }

    /// Waits until a log line contains `needle`; returns that line, or `None`
    /// if the deadline passes or the process closes stderr first.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> Option<String> {
        self.daemon.wait_for_log(needle, deadline)
    }

    /// Sends a signal (`TERM`, `INT`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        self.daemon.signal(name);
    }

    /// Waits until the process has installed its SIGINT and SIGTERM handlers
    /// (see [`catches_signal`]); `false` if it has not at the deadline.
    pub fn wait_for_signal_handlers(&self, deadline: Duration) -> bool {
        self.daemon.wait_for_signal_handlers(deadline)
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.daemon.wait_exit(deadline)
    }
}

/// A running `anycast-agent`, killed when dropped.
#[derive(Debug)]
pub struct Agent {
    daemon: Daemon,
}

impl Agent {
    /// Writes `config_toml` to a fresh temp dir, starts the agent on it with
    /// `env` added to its environment (the key's variable, say) and waits for
    /// its `agent running` line. Panics (with the log) if it does not come up.
    pub fn start(config_toml: &str, env: &[(&str, &str)]) -> Agent {
        Agent::start_custom(agent_binary(), config_toml, env, AGENT_LOG_FILTER)
    }

    /// [`Agent::start`] with another build of the agent and another log
    /// filter (measurements of a release build at `info`, say).
    pub fn start_custom(
        binary: &Path,
        config_toml: &str,
        env: &[(&str, &str)],
        log_filter: &str,
    ) -> Agent {
        let mut command = agent_command_for(binary);
        command.args(["--log", log_filter]);
        command.envs(env.iter().copied());
        let mut daemon = Daemon::spawn(command, "agent.toml", config_toml, &[]);
        if daemon
            .wait_for_log("agent running", START_DEADLINE)
            .is_none()
        {
            daemon.failed_to_start("log `agent running`");
        }
        Agent { daemon }
    }

    /// The address of the agent's own probe-file listener (`[probe_file]
    /// listen`), from its `listening on` line; `None` if it has none.
    pub fn probe_http_addr(&self) -> Option<SocketAddr> {
        // Logged before `agent running`, which `start` waited for.
        self.daemon
            .logs()
            .iter()
            .find_map(|line| listening_addr(line, "probe-http"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Where its config file is.
    pub fn config_path(&self) -> &Path {
        &self.daemon.config
    }

    /// The agent's own temp dir (where its config is).
    pub fn dir(&self) -> &Path {
        self.daemon.dir.path()
    }

    /// Every log line so far, ANSI colours removed.
    pub fn logs(&self) -> Vec<String> {
        self.daemon.logs()
    }

    /// Waits until a log line contains `needle`; returns that line, or `None`
    /// if the deadline passes or the process closes stderr first.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> Option<String> {
        self.daemon.wait_for_log(needle, deadline)
    }

    /// Sends a signal (`TERM`, `INT`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        self.daemon.signal(name);
    }

    /// Waits until the process has installed its SIGINT and SIGTERM handlers
    /// (see [`catches_signal`]); `false` if it has not at the deadline.
    pub fn wait_for_signal_handlers(&self, deadline: Duration) -> bool {
        self.daemon.wait_for_signal_handlers(deadline)
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.daemon.wait_exit(deadline)
    }
}

/// Signal numbers (Linux).
pub const SIGINT: u32 = 2;
/// See [`SIGINT`].
pub const SIGTERM: u32 = 15;

/// Whether process `pid` has a handler installed for `signal` (the `SigCgt`
/// mask of `/proc/PID/status`). A daemon logs that it is listening before
/// its signal handlers are certainly installed (they are set up by a task of
/// its runtime), and a SIGTERM that comes first kills it outright; tests
/// that mean to test the graceful shutdown wait for this first.
pub fn catches_signal(pid: u32, signal: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| signal >= 1 && mask & (1 << (signal - 1)) != 0)
}

/// The address of a `listening on ADDR ... listener="NAME"` log line.
fn listening_addr(line: &str, listener: &str) -> Option<SocketAddr> {
    if !line.contains(&format!("listener=\"{listener}\"")) {
        return None;
    }
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Runs `command` to completion, killing it if it outlives `deadline`.
pub fn run_with_deadline(command: &mut Command, deadline: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the command");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => output.expect("cannot collect the output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not finish within {deadline:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting on conditions
// ---------------------------------------------------------------------------

/// How often [`wait_until`] polls.
pub const POLL: Duration = Duration::from_millis(20);

/// Waits until `done` holds, polling every [`POLL`]; `false` if it does not
/// by `deadline` (checked once more then).
pub fn wait_until(deadline: Duration, done: impl FnMut() -> bool) -> bool {
    wait_until_every(POLL, deadline, done)
}

/// [`wait_until`], polling every `poll`.
pub fn wait_until_every(
    poll: Duration,
    deadline: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(poll);
    }
    done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        let coloured = "\x1b[2m2026-01-01T00:00:00Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2manycast_resolver::server\x1b[0m\x1b[2m:\x1b[0m listening on 127.0.0.1:5300 \x1b[3mlistener\x1b[0m\x1b[2m=\x1b[0m\"dns-udp\"";
        let plain = strip_ansi(coloured);
        assert_eq!(
            plain,
            "2026-01-01T00:00:00Z  INFO anycast_resolver::server: listening on 127.0.0.1:5300 listener=\"dns-udp\""
        );
        assert_eq!(
            listening_addr(&plain, "dns-udp"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5300)))
        );
        assert_eq!(listening_addr(&plain, "dns-tcp"), None);
        assert_eq!(
            listening_addr("listening on [::1]:53 listener=\"dns-udp\"", "dns-udp"),
            Some("[::1]:53".parse().unwrap())
        );
    }

    #[test]
    fn cargo_json_names_the_executable() {
        let line = r#"{"reason":"compiler-artifact","executable":"/w/target/debug/anycast-resolver","fresh":true}"#;
        assert_eq!(
            json_executable(line).as_deref(),
            Some("/w/target/debug/anycast-resolver")
        );
        assert_eq!(
            json_executable(r#"{"reason":"compiler-artifact","executable":null}"#),
            None
        );
        assert_eq!(
            json_executable(r#"{"executable":"C:\\t\\a.exe"}"#).as_deref(),
            Some(r"C:\t\a.exe")
        );
    }
}
