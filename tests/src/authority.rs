//! Real DNS servers from Debian's packages, on loopback: NSD as the
//! authoritative server of zones the test writes, and unbound as a reference
//! resolver forwarding to it. The differential test compares our forwarded
//! answers with unbound's for the same authority.
//!
//! Each runs in the foreground on a config generated in its own temp dir,
//! on a free port of 127.0.0.1 (UDP and TCP), with its log in a file of that
//! dir, never as a daemon, never chrooted, never changing user, whether the
//! tests run as root (as on CI) or not. It is ready once it answers the SOA
//! query of a zone with NOERROR, polled until a deadline; it is stopped when
//! dropped, and its log is shown if the test is failing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{decode, encode, exchange_udp, query_message};

/// How long a server may take to answer its first query.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// How long a stopped server may take to exit before it is killed. NSD takes
/// about a second to stop its child processes.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How long one readiness query waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Between readiness queries refused at once (nothing listening yet).
const PROBE_PAUSE: Duration = Duration::from_millis(10);

/// How many free ports a server is started on before giving up: another
/// process may take the port between our finding it free and the server
/// binding it, and the server then exits at once.
const PORT_ATTEMPTS: usize = 3;

/// How many log lines a failing test shows.
const LOG_TAIL: usize = 60;

/// Where Debian installs daemons, which a non-root `PATH` often lacks.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// A zone NSD serves: its origin (`example.test.`) and its zone-file text.
#[derive(Debug, Clone, Copy)]
pub struct ZoneFile<'a> {
    /// The zone's apex, fully qualified.
    pub origin: &'a str,
    /// The master-file text (RFC 1035 section 5), `$ORIGIN` included or not.
    pub text: &'a str,
}

/// The path of `program` from `PATH` or an sbin directory; panics, naming
/// the package and the install script, if it is not installed.
pub fn find_program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed (Debian package {package}): run scripts/install-test-deps.sh"
            )
        })
}

/// A port of 127.0.0.1 free for both UDP and TCP just now.
///
/// The sockets are closed before the port is handed on, so another process
/// may take it first; [`Server`] tries again on another port when that
/// happens.
pub fn free_port() -> u16 {
    anycast_listen::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|pair| pair.local_addr())
        .expect("no port of 127.0.0.1 free for both UDP and TCP")
        .port()
}

/// NSD serving zones on loopback; stopped when dropped.
#[derive(Debug)]
pub struct Nsd {
    server: Server,
}

impl Nsd {
    /// Writes the zone files and an `nsd.conf` to a temp dir, starts
    /// `nsd -d` on a free port and waits until it answers the first zone's
    /// SOA query. Panics (with NSD's log) if it does not come up.
    pub fn start(zones: &[ZoneFile<'_>]) -> Nsd {
        let nsd = find_program("nsd", "nsd");
        let first = zones.first().expect("NSD needs a zone to serve");
        let server = Server::start("nsd", first.origin, |dir, port| {
            let mut conf = nsd_conf(dir, port);
            for (i, zone) in zones.iter().enumerate() {
                let file = format!("zone{i}.db");
                std::fs::write(dir.join(&file), zone.text).expect("cannot write a zone file");
                conf.push_str(&format!(
                    "zone:\n  name: \"{}\"\n  zonefile: \"{file}\"\n",
                    zone.origin
                ));
            }
            let conf_path = dir.join("nsd.conf");
            std::fs::write(&conf_path, conf).expect("cannot write nsd.conf");
            let mut command = Command::new(&nsd);
            command.arg("-d").arg("-c").arg(&conf_path);
            command
        });
        Nsd { server }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// NSD's server section: loopback only, IPv4, no database file, every state
/// file in `dir`, no user change or chroot (so it runs the same as root or
/// not), one server process, no control channel.
fn nsd_conf(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip4: yes
  do-ip6: no
  reuseport: no
  username: ""
  chroot: ""
  database: ""
  zonesdir: "{dir}"
  zonelistfile: "{dir}/zone.list"
  xfrdfile: "{dir}/xfrd.state"
  xfrdir: "{dir}"
  pidfile: "{dir}/nsd.pid"
  server-count: 1
  verbosity: 1
  hide-version: yes
remote-control:
  control-enable: no
"#
    )
}

/// unbound forwarding every name to one server; stopped when dropped.
#[derive(Debug)]
pub struct Unbound {
    server: Server,
}

impl Unbound {
    /// Starts `unbound -d` on a free port with a config that forwards every
    /// name (the root zone) to `upstream` and nothing else: no root hints,
    /// no DNSSEC validation, no trust anchor, so it never leaves loopback.
    /// Waits until it answers `ready_zone`'s SOA query.
    ///
    /// `local_zones_off` lists zones of unbound's built-in local data
    /// (RFC 6761 names such as `test.`) to forward like any other name.
    pub fn start(upstream: SocketAddr, ready_zone: &str, local_zones_off: &[&str]) -> Unbound {
        let unbound = find_program("unbound", "unbound");
        let server = Server::start("unbound", ready_zone, |dir, port| {
            let conf_path = dir.join("unbound.conf");
            std::fs::write(
                &conf_path,
                unbound_conf(dir, port, upstream, local_zones_off),
            )
            .expect("cannot write unbound.conf");
            let mut command = Command::new(&unbound);
            command.arg("-d").arg("-c").arg(&conf_path);
            command
        });
        Unbound { server }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// unbound's config: loopback only, for loopback clients; the iterator alone
/// (no validator) and no trust anchor; every name forwarded to `upstream`,
/// which may be on loopback (`do-not-query-localhost: no`); no root hints;
/// one thread; no user change, chroot, daemon or remote control; the log on
/// stderr.
fn unbound_conf(dir: &Path, port: u16, upstream: SocketAddr, local_zones_off: &[&str]) -> String {
    let mut conf = format!(
        r#"server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  so-reuseport: no
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  root-hints: ""
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
"#,
        dir = dir.display()
    );
    for zone in local_zones_off {
        conf.push_str(&format!("  local-zone: \"{zone}\" nodefault\n"));
    }
    conf.push_str(&format!(
        r#"remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: {ip}@{port}
"#,
        ip = upstream.ip(),
        port = upstream.port()
    ));
    conf
}

/// A server process with its own temp dir (config, state and log), killed
/// when dropped.
#[derive(Debug)]
struct Server {
    program: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a start attempt ended.
enum Start {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

impl Server {
    /// Starts the command that `command(dir, port)` builds (after writing its
    /// config into `dir`) on a free port, with stdout and stderr going to a
    /// log file, and waits until it answers `ready_zone`'s SOA with NOERROR.
    /// A server that exits before answering (its port taken meanwhile) is
    /// started again on another port, [`PORT_ATTEMPTS`] times in all.
    fn start(
        program: &'static str,
        ready_zone: &str,
        mut command: impl FnMut(&Path, u16) -> Command,
    ) -> Server {
        for attempt in 1..=PORT_ATTEMPTS {
            let dir = tempfile::tempdir().expect("cannot create a temp dir");
            let port = free_port();
            let log = dir.path().join(format!("{program}.log"));
            let log_file = std::fs::File::create(&log).expect("cannot create the log file");
            let child = command(dir.path(), port)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("cannot share the log file"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
            let mut server = Server {
                program,
                child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                log,
                _dir: dir,
            };
            match server.wait_ready(ready_zone) {
                Start::Ready => return server,
                Start::Exited(status) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "{program} exited ({status}) before answering on port {port}; trying another port:\n{}",
                        server.log_tail()
                    );
                }
                // The server's drop shows its log.
                Start::Exited(status) => {
                    panic!("{program} exited ({status}) before answering, {PORT_ATTEMPTS} times")
                }
                Start::TimedOut => panic!(
                    "{program} did not answer {ready_zone} SOA with NOERROR on {} within {READY_DEADLINE:?}",
                    server.addr
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Asks `zone`'s SOA until the answer is NOERROR, the process exits or
    /// the deadline passes.
    fn wait_ready(&mut self, zone: &str) -> Start {
        let end = Instant::now() + READY_DEADLINE;
        let query = query_message(zone, RecordType::SOA);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Start::Exited(status);
            }
            let sent = Instant::now();
            let answer = exchange_udp(
                self.addr,
                Ipv4Addr::LOCALHOST.into(),
                &encode(&query),
                PROBE_TIMEOUT,
            );
            if let Some(bytes) = answer
                && decode(&bytes).metadata.response_code == ResponseCode::NoError
            {
                return Start::Ready;
            }
            if Instant::now() >= end {
                return Start::TimedOut;
            }
            // Refused at once (the port is not bound yet): do not spin.
            if sent.elapsed() < PROBE_PAUSE {
                std::thread::sleep(PROBE_PAUSE);
            }
        }
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }

    /// SIGTERM, so that NSD stops its own child processes too, then SIGKILL
    /// if it has not exited by [`STOP_DEADLINE`].
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + STOP_DEADLINE;
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} (pid {}, {}), last log lines:\n{}",
                self.program,
                self.child.id(),
                self.addr,
                self.log_tail()
            );
        }
        self.stop();
    }
}
