//! Running as a system service (docs/operations.md, "Running as a
//! service"): the daemons' systemd notifications, read from a fake
//! `NOTIFY_SOCKET` the test binds, and the unit files in `configs/systemd/`
//! checked by `systemd-analyze verify` and scored by `systemd-analyze
//! security`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anycast_tests::authority::find_program;
use anycast_tests::bed::{self, Member};
use anycast_tests::harness::{
    Agent, NO_UPSTREAM, Resolver, addresses, agent_binary, anycastctl_binary, resolver_binary,
    resolver_head, workspace_root,
};

/// How long a notification may take to come.
const DEADLINE: Duration = Duration::from_secs(10);
/// The watchdog interval the tests ask for; pings come at half of it.
const WATCHDOG: Duration = Duration::from_millis(400);

/// A fake systemd: the socket the daemon notifies.
struct Notifications {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Notifications {
    fn new() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifications {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The environment a service manager gives the daemon.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", WATCHDOG.as_micros().to_string()),
        ]
    }

    /// The next notification whose first line starts with `key`, skipping
    /// others (watchdog pings); panics with what came if none does in time.
    fn wait_for(&self, key: &str) -> String {
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while Instant::now() < end {
            self.socket
                .set_read_timeout(Some(
                    end.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            let Ok(n) = self.socket.recv(&mut buf) else {
                break;
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.starts_with(key) {
                return message;
            }
            seen.push(message);
        }
        panic!("no {key} within {DEADLINE:?}; got {seen:?}");
    }

    /// Counts watchdog pings over `span`.
    fn pings_during(&self, span: Duration) -> usize {
        let end = Instant::now() + span;
        let mut pings = 0;
        let mut buf = [0u8; 1024];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"WATCHDOG=1") => pings += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        pings
    }
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn the_resolver_tells_systemd_it_is_ready_alive_reloading_and_stopping() {
    let notifications = Notifications::new();
    let member = Member::with_probe_file(("127.0.88.1", 0), Duration::ZERO);
    let config = format!(
        "{}\n[[zone]]\nname = \"any.example.net\"\n[[group]]\nservice = \"web\"\n{}",
        resolver_head(NO_UPSTREAM, ""),
        bed::member_toml(member.web.addr())
    );
    let env = notifications.env();
    let resolver = Resolver::start_with(&config, &[], &env_refs(&env));

    let ready = notifications.wait_for("READY=1");
    assert!(ready.contains("STATUS=running"), "{ready}");
    // Ready means serving: the DNS listener answers.
    assert_eq!(addresses(resolver.addr(), "web.any.example.net").len(), 1);

    // Pings at half the interval: about 5 in a second; at least 2 on a busy
    // machine.
    let pings = notifications.pings_during(Duration::from_secs(1));
    eprintln!("figure: {pings} watchdog pings in 1 s (interval {WATCHDOG:?})");
    assert!(pings >= 2, "{pings} watchdog pings in 1 s");

    assert!(resolver.wait_for_signal_handlers(DEADLINE));
    resolver.signal("HUP");
    let reloading = notifications.wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notifications.wait_for("READY=1");

    resolver.signal("TERM");
    notifications.wait_for("STOPPING=1");
}

#[test]
fn the_agent_tells_systemd_it_is_ready_alive_and_stopping() {
    let notifications = Notifications::new();
    let member = Member::start("127.0.88.2", Duration::ZERO);
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = bed::agent_toml(
        &member.web,
        member.docroot.path(),
        sink.local_addr().unwrap(),
    );
    let mut env = notifications.env();
    env.push((bed::KEY_ENV, bed::SECRET.to_owned()));
    let agent = Agent::start(&config, &env_refs(&env));

    let ready = notifications.wait_for("READY=1");
    assert!(ready.contains("STATUS=running"), "{ready}");
    assert!(notifications.pings_during(Duration::from_secs(1)) >= 2);
    assert!(agent.wait_for_signal_handlers(DEADLINE));
    agent.signal("TERM");
    notifications.wait_for("STOPPING=1");
}

/// The units as installed would be, with the built binaries in ExecStart.
fn units_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let source = workspace_root().join("configs/systemd");
    ["anycast-resolver.service", "anycast-agent.service"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(source.join(name)).unwrap();
            let text = text
                .replace(
                    "/usr/bin/anycast-resolver",
                    &resolver_binary().display().to_string(),
                )
                .replace(
                    "/usr/bin/anycast-agent",
                    &agent_binary().display().to_string(),
                );
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_score_ok_for_security() {
    let analyze = find_program("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let units = units_in(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    for unit in &units {
        let out = Command::new(&analyze)
            .args(["security", "--offline=true"])
            .arg(unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score in {text}"));
        eprintln!("figure: {} exposure {score}", unit.display());
        // systemd calls up to 2.0 "OK"; 10 is a service with no hardening.
        assert!(score <= 2.0, "{}: exposure {score}\n{text}", unit.display());
    }
}

/// Each binary prints its man page (section 8, from its clap definitions)
/// for packaging, with its own name and its options.
#[test]
fn every_binary_prints_its_man_page() {
    for (name, binary, option) in [
        (
            "anycast-resolver",
            resolver_binary(),
            "\\-\\-check\\-config",
        ),
        ("anycast-agent", agent_binary(), "\\-\\-check\\-config"),
        ("anycastctl", anycastctl_binary(), "\\-\\-if\\-revision"),
    ] {
        let out = Command::new(binary)
            .env(anycast_daemon::PRINT_MAN_PAGE, "1")
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(page.contains(&format!(".TH {name} 8")), "{name}: {page}");
        assert!(page.contains(option), "{name} documents {option}: {page}");
    }
}
