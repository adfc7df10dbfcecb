//! A real etcd cluster on loopback, from Debian's `etcd` binary (package
//! etcd-server), for tests of anything that keeps its state in etcd.
//!
//! [`Cluster::start`] starts `n` members `e0`..`e{n-1}` in the foreground,
//! each with its data dir and log file in the cluster's temp dir, a client
//! URL and a peer URL on free ports of 127.0.0.1, and fast elections (a
//! heartbeat of 50 ms, an election timeout of 500 ms). It is ready once
//! every member answers its status and all of them name the same leader,
//! polled until a deadline. A port may be taken by another process between
//! our finding it free and etcd binding it: then a member exits, or another
//! etcd answers on its port, and the whole cluster is started again on new
//! ports and with a new cluster token, a few times.
//!
//! Members are killed, stopped and restarted one by one to test failover;
//! every member is killed when the cluster is dropped, and the tails of
//! their logs are shown if the test is failing.
//!
//! [`Client`] is a small blocking client of etcd's v3 JSON gateway (on the
//! client port): put, get and get by prefix. In that JSON, keys and values
//! are base64, 64-bit numbers are decimal strings, and fields with a zero
//! value (an empty value, a missing leader) are left out.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::authority::{find_program, free_port};
use crate::http;

/// How long a cluster may take to start (every member answering, a leader
/// elected), and a restarted member to answer again.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a [`Client`] call keeps trying (through elections, members
/// down) before it panics.
pub const OP_DEADLINE: Duration = Duration::from_secs(10);

/// Raft's heartbeat interval, in milliseconds: half etcd's default, so that
/// failover tests take about a second.
const HEARTBEAT_MS: u32 = 50;

/// Raft's election timeout, in milliseconds: ten heartbeats, as etcd
/// advises, and still long enough that a busy machine's scheduling delays do
/// not depose a working leader.
const ELECTION_MS: u32 = 500;

/// How long a member sent SIGTERM may take to exit.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// How many times a cluster is started on new ports when a port turns out
/// not to be ours.
const PORT_ATTEMPTS: usize = 3;

/// Between polls of a condition.
const POLL_PAUSE: Duration = Duration::from_millis(20);

/// How many log lines of each member a failing test shows.
const LOG_TAIL: usize = 30;

/// What etcd logs when it cannot bind a listener.
const BIND_FAILURE: &str = "address already in use";

/// Makes each cluster's `--initial-cluster-token` unique within this
/// process (the process id makes it unique across processes), so members of
/// a cluster given up on never join the next one.
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// TLS for the members' client port: their certificate and key (PEM), and
/// the CA client certificates must chain to, if clients must present one.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A running etcd cluster on loopback; every member is killed when dropped.
#[derive(Debug)]
pub struct Cluster {
    etcd: PathBuf,
    members: Vec<Member>,
    /// `--initial-cluster`: every member's name and peer URL.
    initial_cluster: String,
    /// `--initial-cluster-token`.
    token: String,
    /// Serve clients over TLS too, beside plain HTTP.
    tls: Option<Tls>,
    /// Data dirs and logs; kept until every member is dead (fields drop in
    /// order, and `Drop for Cluster` kills them first).
    _dir: tempfile::TempDir,
}

/// One member: where it listens, where it keeps its data, its process.
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    /// The client port over TLS, when the cluster has [`Tls`].
    tls_client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    /// `None` once killed or stopped (and reaped). In a mutex because
    /// asking whether it has exited (`try_wait`) needs `&mut`, and the
    /// cluster is shared by the threads of a test.
    child: Mutex<Option<Child>>,
    /// Sockets holding its ports while it is down ([`Member::reserve_ports`]).
    reserved: Mutex<Vec<socket2::Socket>>,
    /// Its raft member id, learnt when the cluster starts; the leader a
    /// status names is one of these.
    id: u64,
}

/// What a member's status says (`/v3/maintenance/status`).
#[derive(Debug, Clone, Copy)]
struct Status {
    member_id: u64,
    /// The leader's member id, if it knows of one.
    leader: Option<u64>,
}

/// How a start attempt ended.
enum Started {
    Ready,
    /// A port was not ours (a member exited, or another etcd answered).
    PortLost(String),
    TimedOut(String),
}

impl Cluster {
    /// Starts `n` members and waits until each answers and they agree on a
    /// leader. Panics, with the members' log tails, if the cluster does not
    /// come up within [`START_DEADLINE`] or loses a port [`PORT_ATTEMPTS`]
    /// times.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, None)
    }

    /// [`Cluster::start`] whose members also serve clients over TLS, on
    /// their [`Cluster::tls_endpoints`], with `tls`'s certificate and, if it
    /// has a client CA, asking clients for a certificate signed by it. The
    /// plain-HTTP endpoints stay (the cluster's own checks use them).
    pub fn start_tls(n: usize, tls: Tls) -> Cluster {
        Cluster::start_with(n, Some(tls))
    }

    fn start_with(n: usize, tls: Option<Tls>) -> Cluster {
        assert!(n > 0, "a cluster needs a member");
        let etcd = find_program("etcd", "etcd-server");
        for attempt in 1..=PORT_ATTEMPTS {
            let mut cluster = Cluster::spawn(&etcd, n, tls.clone());
            match cluster.wait_started() {
                Started::Ready => return cluster,
                Started::PortLost(why) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "etcd cluster {}: {why}; starting it again on other ports\n{}",
                        cluster.token,
                        cluster.log_tails()
                    );
                }
                // The cluster's drop shows the logs.
                Started::PortLost(why) => {
                    panic!(
                        "etcd cluster {}: {why}, {PORT_ATTEMPTS} times",
                        cluster.token
                    )
                }
                Started::TimedOut(why) => panic!(
                    "etcd cluster {} did not come up within {START_DEADLINE:?}: {why}",
                    cluster.token
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The members' client URLs (`http://127.0.0.1:PORT`), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.members[i].client)
    }

    /// The members' client URLs over TLS (`https://127.0.0.1:PORT`), for a
    /// cluster started with [`Cluster::start_tls`].
    pub fn tls_endpoints(&self) -> Vec<String> {
        assert!(self.tls.is_some(), "the cluster was started without TLS");
        self.members
            .iter()
            .map(|m| format!("https://{}", m.tls_client))
            .collect()
    }

    /// Whether member `i`'s process is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// The index of the leader every running member names, if they all
    /// answer and agree, and it is running; `None` otherwise (during an
    /// election, say).
    pub fn leader(&self) -> Option<usize> {
        let mut agreed = None;
        for i in self.running() {
            let leader = self.index_of(self.status(i).ok()?.leader?)?;
            if agreed.is_some_and(|a| a != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed.filter(|&leader| self.is_running(leader))
    }

    /// Waits until [`Cluster::leader`] names one; panics with the log tails
    /// if none is agreed on within `deadline`.
    pub fn wait_for_leader(&self, deadline: Duration) -> usize {
        let end = Instant::now() + deadline;
        loop {
            if let Some(leader) = self.leader() {
                return leader;
            }
            assert!(
                Instant::now() < end,
                "the running members of etcd cluster {} agreed on no running leader within {deadline:?}:\n{}",
                self.token,
                self.log_tails()
            );
            std::thread::sleep(POLL_PAUSE);
        }
    }

    /// The process id of member `i`, if it is running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].with_child(|child| {
            child.and_then(|c| matches!(c.try_wait(), Ok(None)).then(|| c.id()))
        })
    }

    /// Kills member `i` with SIGKILL and reaps it; nothing if it is down.
    /// It takes `&self`, so that a test may kill a member (the leader, say)
    /// while other threads use the cluster.
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.members[i].take_child() {
            let _ = child.kill();
            let _ = child.wait();
            self.members[i].reserve_ports();
        }
    }

    /// Stops member `i` with SIGTERM (a leader hands its leadership over
    /// first) and waits for it to exit; nothing if it is down. Panics if it
    /// is still running after [`STOP_DEADLINE`] (it is killed then).
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.members[i].take_child() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) only sends a signal, to our own unreaped child.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "cannot send SIGTERM to {}", self.members[i].name);
        let end = Instant::now() + STOP_DEADLINE;
        while Instant::now() < end {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.members[i].reserve_ports();
                return;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} did not exit within {STOP_DEADLINE:?} of SIGTERM:\n{}",
            self.members[i].name,
            self.members[i].log_tail()
        );
    }

    /// Starts member `i` again, after [`Cluster::kill`] or [`Cluster::stop`],
    /// on its ports and its data dir (`--initial-cluster-state existing`),
    /// and waits until it answers as itself and knows a leader. Panics if it
    /// is running, cannot bind its ports again (another process took one
    /// while it was down) or does not answer within [`START_DEADLINE`].
    pub fn restart(&mut self, i: usize) {
        self.restart_many(&[i]);
    }

    /// [`Cluster::restart`] of several members at once: all are started,
    /// then each must answer and know a leader (a majority restarted after
    /// the whole cluster was stopped elects one only once enough are up).
    pub fn restart_many(&mut self, members: &[usize]) {
        for &i in members {
            assert!(
                !self.is_running(i),
                "{} is running; kill or stop it before restarting it",
                self.members[i].name
            );
            self.members[i].release_ports();
            let child = self.spawn_member(i, "existing");
            self.members[i].set_child(child);
        }
        let end = Instant::now() + START_DEADLINE;
        for &i in members {
            let member = &self.members[i];
            loop {
                if let Some(status) = member.exit_status() {
                    let tail = member.log_tail();
                    if tail.contains(BIND_FAILURE) {
                        panic!(
                            "{} could not bind its ports again ({} and {}): another process took one while it was down:\n{tail}",
                            member.name, member.client, member.peer
                        );
                    }
                    panic!("{} exited ({status}) on restart:\n{tail}", member.name);
                }
                if self.status(i).is_ok_and(|s| s.leader.is_some()) {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "{} did not answer within {START_DEADLINE:?} of its restart:\n{}",
                    member.name,
                    member.log_tail()
                );
                std::thread::sleep(POLL_PAUSE);
            }
        }
    }

    /// A client of the running members.
    pub fn client(&self) -> Client {
        Client::new(self.running().map(|i| self.members[i].client).collect())
    }

    /// A client of member `i` alone (to read what a restarted member sees).
    pub fn member_client(&self, i: usize) -> Client {
        Client::new(vec![self.members[i].client])
    }

    /// [`Client::put`] on the running members.
    pub fn put(&self, key: &str, value: &str) {
        self.client().put(key, value);
    }

    /// [`Client::get`] on the running members.
    pub fn get(&self, key: &str) -> Option<(String, i64)> {
        self.client().get(key)
    }

    /// [`Client::get_prefix`] on the running members.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.client().get_prefix(prefix)
    }

    /// Creates the temp dir, picks ports and starts every member of a new
    /// cluster, without waiting.
    fn spawn(etcd: &Path, n: usize, tls: Option<Tls>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("etcd-cluster")
            .tempdir()
            .expect("cannot create a temp dir");
        let ports = distinct_free_ports(3 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("e{i}");
                Member {
                    client: SocketAddr::from((Ipv4Addr::LOCALHOST, ports[3 * i])),
                    peer: SocketAddr::from((Ipv4Addr::LOCALHOST, ports[3 * i + 1])),
                    tls_client: SocketAddr::from((Ipv4Addr::LOCALHOST, ports[3 * i + 2])),
                    data_dir: dir.path().join(format!("{name}.etcd")),
                    log: dir.path().join(format!("{name}.log")),
                    child: Mutex::new(None),
                    reserved: Mutex::new(Vec::new()),
                    id: 0,
                    name,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "anycast-tests-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let cluster = Cluster {
            etcd: etcd.to_owned(),
            members,
            initial_cluster,
            token,
            tls,
            _dir: dir,
        };
        for i in 0..n {
            let child = cluster.spawn_member(i, "new");
            cluster.members[i].set_child(child);
        }
        cluster
    }

    /// Starts member `i`'s process with its log appended to its log file.
    fn spawn_member(&self, i: usize, state: &str) -> Child {
        let member = &self.members[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("cannot open an etcd log file");
        let client_url = format!("http://{}", member.client);
        let listen_client_urls = match &self.tls {
            Some(_) => format!("{client_url},https://{}", member.tls_client),
            None => client_url.clone(),
        };
        let peer_url = format!("http://{}", member.peer);
        let mut command = Command::new(&self.etcd);
        // etcd reads every flag from an ETCD_* variable too: none of the
        // caller's may reach the member.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &listen_client_urls])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            // A member that comes back, or lags on a busy machine, asks
            // before it calls an election, so it does not depose a leader
            // the others still follow.
            .arg("--pre-vote")
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
            if let Some(ca) = &tls.client_ca {
                command
                    .arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(ca);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share an etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd member {}: {e}", member.name))
    }

    /// Polls until every member answers as itself and all name the same
    /// leader, a member exits, another etcd answers on a member's port, or
    /// the deadline passes.
    fn wait_started(&mut self) -> Started {
        let end = Instant::now() + START_DEADLINE;
        loop {
            for member in &self.members {
                if let Some(status) = member.exit_status() {
                    let why = if member.log_tail().contains(BIND_FAILURE) {
                        "a port was taken"
                    } else {
                        "it failed"
                    };
                    return Started::PortLost(format!(
                        "{} exited ({status}) before answering: {why}",
                        member.name
                    ));
                }
            }
            for i in 0..self.members.len() {
                if self.members[i].id != 0 {
                    continue;
                }
                match self.identify(i) {
                    Ok(Some(id)) => self.members[i].id = id,
                    Ok(None) => {}
                    Err(why) => return Started::PortLost(why),
                }
            }
            let unanswered: Vec<&str> = self
                .members
                .iter()
                .filter(|m| m.id == 0)
                .map(|m| m.name.as_str())
                .collect();
            if unanswered.is_empty() && self.leader().is_some() {
                return Started::Ready;
            }
            if Instant::now() >= end {
                return Started::TimedOut(if unanswered.is_empty() {
                    "the members agreed on no leader".to_owned()
                } else {
                    format!("no answer from {}", unanswered.join(", "))
                });
            }
            std::thread::sleep(POLL_PAUSE);
        }
    }

    /// Member `i`'s raft id, once what answers on its client port is the
    /// member with its peer URL; `Ok(None)` while nothing answers there;
    /// `Err` if another etcd does.
    fn identify(&self, i: usize) -> Result<Option<u64>, String> {
        let member = &self.members[i];
        let Ok(status) = status_at(member.client) else {
            return Ok(None);
        };
        let Ok(list) = gateway(member.client, "/v3/cluster/member/list", &json!({})) else {
            return Ok(None);
        };
        let peer_url = format!("http://{}", member.peer);
        let ours = list["members"].as_array().is_some_and(|members| {
            members.iter().any(|m| {
                decimal(&m["ID"]) == status.member_id
                    && m["peerURLs"]
                        .as_array()
                        .is_some_and(|urls| urls.iter().any(|u| *u == peer_url.as_str()))
            })
        });
        if ours {
            Ok(Some(status.member_id))
        } else {
            Err(format!(
                "another etcd answers on {}'s client port {}",
                member.name, member.client
            ))
        }
    }

    /// Member `i`'s status, if it answers as itself.
    fn status(&self, i: usize) -> Result<Status, String> {
        let member = &self.members[i];
        let status = status_at(member.client)?;
        if status.member_id != member.id {
            return Err(format!(
                "{} answered as member {:x}, not as itself ({:x})",
                member.client, status.member_id, member.id
            ));
        }
        Ok(status)
    }

    /// The index of the member with raft id `id`.
    fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The indexes of the running members.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.is_running(i))
    }

    /// The last lines of every member's log.
    fn log_tails(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- etcd {} (client {}, peer {}), last log lines:\n{}",
                    m.name,
                    m.client,
                    m.peer,
                    m.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Member {
    fn is_running(&self) -> bool {
        self.with_child(|child| child.is_some_and(|c| matches!(c.try_wait(), Ok(None))))
    }

    /// How its process ended, if it was started and has exited by itself
    /// (not through [`Cluster::kill`] or [`Cluster::stop`]).
    fn exit_status(&self) -> Option<ExitStatus> {
        self.with_child(|child| child.and_then(|c| c.try_wait().ok().flatten()))
    }

    fn with_child<T>(&self, f: impl FnOnce(Option<&mut Child>) -> T) -> T {
        self.with_child_slot(|slot| f(slot.as_mut()))
    }

    /// Holds the member's ports while it is down: each is bound by a
    /// socket that does not listen, so a connection to it is refused, as to
    /// a port nobody holds, but no other process (another test's server, a
    /// connection's ephemeral port) can take it before the member restarts.
    /// Best effort: a port taken in the moment after the exit stays taken,
    /// and the restart says so.
    fn reserve_ports(&self) {
        let held = [self.client, self.peer, self.tls_client]
            .into_iter()
            .filter_map(|addr| {
                let socket = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .ok()?;
                // The member's closed connections linger in TIME_WAIT.
                socket.set_reuse_address(true).ok()?;
                socket.bind(&addr.into()).ok()?;
                Some(socket)
            })
            .collect();
        *self.reserved.lock().unwrap_or_else(|e| e.into_inner()) = held;
    }

    fn release_ports(&self) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn set_child(&self, child: Child) {
        self.with_child_slot(|slot| *slot = Some(child));
    }

    fn take_child(&self) -> Option<Child> {
        self.with_child_slot(Option::take)
    }

    fn with_child_slot<T>(&self, f: impl FnOnce(&mut Option<Child>) -> T) -> T {
        f(&mut self.child.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

/// `n` distinct ports of 127.0.0.1, each free just now (see [`free_port`]).
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// The status of whatever etcd answers at `addr`.
fn status_at(addr: SocketAddr) -> Result<Status, String> {
    let status = gateway(addr, "/v3/maintenance/status", &json!({}))?;
    let member_id = decimal(&status["header"]["member_id"]);
    if member_id == 0 {
        return Err(format!(
            "a status from {addr} without a member id: {status}"
        ));
    }
    let leader = decimal(&status["leader"]);
    Ok(Status {
        member_id,
        leader: (leader != 0).then_some(leader),
    })
}

/// A blocking client of etcd's v3 JSON gateway on a list of members: each
/// call asks them in turn until one succeeds, round after round until
/// [`OP_DEADLINE`], so it rides out elections and members that are down.
#[derive(Debug, Clone)]
pub struct Client {
    addrs: Vec<SocketAddr>,
}

impl Client {
    /// A client of the members whose client ports are `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> Client {
        assert!(!addrs.is_empty(), "an etcd client needs a member to ask");
        Client { addrs }
    }

    /// Sets `key` to `value`. A put retried after a timeout may have been
    /// applied twice: the value is the same, the revision is not.
    pub fn put(&self, key: &str, value: &str) {
        self.call(
            "/v3/kv/put",
            &json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) }),
        );
    }

    /// `key`'s value and mod revision (a linearizable read), if it is set.
    pub fn get(&self, key: &str) -> Option<(String, i64)> {
        let reply = self.call("/v3/kv/range", &json!({ "key": BASE64.encode(key) }));
        let kv = reply["kvs"].as_array()?.first()?;
        let revision = decimal(&kv["mod_revision"]);
        Some((
            text(&kv["value"]),
            i64::try_from(revision).expect("a revision fits i64"),
        ))
    }

    /// Every key under `prefix` with its value, sorted by key.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let (key, range_end) = prefix_range(prefix.as_bytes());
        let reply = self.call(
            "/v3/kv/range",
            &json!({ "key": BASE64.encode(key), "range_end": BASE64.encode(range_end) }),
        );
        reply["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (text(&kv["key"]), text(&kv["value"])))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// POSTs `body` to `path` (any call of the v3 JSON gateway, e.g.
    /// `/v3/auth/enable`) on the members in turn until one answers with
    /// success; panics with the last error at [`OP_DEADLINE`].
    pub fn call(&self, path: &str, body: &Value) -> Value {
        let end = Instant::now() + OP_DEADLINE;
        loop {
            let mut last_error = String::new();
            for &addr in &self.addrs {
                match gateway(addr, path, body) {
                    Ok(reply) => return reply,
                    Err(e) => last_error = e,
                }
            }
            assert!(
                Instant::now() < end,
                "etcd {path} {body} failed on every member ({:?}) for {OP_DEADLINE:?}; last: {last_error}",
                self.addrs
            );
            std::thread::sleep(POLL_PAUSE);
        }
    }
}

/// POSTs `body` to the gateway's `path` at `addr`: the reply's JSON, or why
/// there is none (no connection, an error status, an error in the body).
fn gateway(addr: SocketAddr, path: &str, body: &Value) -> Result<Value, String> {
    let response = http::request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .map_err(|e| format!("POST http://{addr}{path}: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "POST http://{addr}{path}: status {}: {}",
            response.status,
            response.text()
        ));
    }
    let reply: Value = serde_json::from_slice(&response.body).map_err(|e| {
        format!(
            "POST http://{addr}{path}: not JSON ({e}): {}",
            response.text()
        )
    })?;
    if reply.get("error").is_some() {
        return Err(format!("POST http://{addr}{path}: {reply}"));
    }
    Ok(reply)
}

/// A 64-bit number the gateway writes as a decimal string; 0 when left out.
fn decimal(value: &Value) -> u64 {
    match value {
        Value::Null => 0,
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("etcd sent {value} for a number: {e}")),
        other => other
            .as_u64()
            .unwrap_or_else(|| panic!("etcd sent {other} for a number")),
    }
}

/// A base64 key or value as text; empty when left out.
fn text(value: &Value) -> String {
    let Some(encoded) = value.as_str() else {
        return String::new();
    };
    let bytes = BASE64
        .decode(encoded)
        .unwrap_or_else(|e| panic!("etcd sent {encoded:?}, not base64: {e}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("a key or value that is not UTF-8: {e}"))
}

/// The `key` and `range_end` of a range request for every key starting
/// with `prefix`: the end is the prefix with its last byte below 0xff
/// incremented (and what follows cut); a prefix with no such byte (the
/// empty one among them) reaches the end of the key space, `"\0"` to etcd,
/// and the empty key etcd refuses becomes `"\0"`, the first key.
fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let key = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.to_vec()
    };
    let range_end = match prefix.iter().rposition(|&b| b < 0xff) {
        Some(last) => {
            let mut end = prefix[..=last].to_vec();
            end[last] += 1;
            end
        }
        None => vec![0],
    };
    (key, range_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_after_the_last_key_with_the_prefix() {
        assert_eq!(prefix_range(b"/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(
            prefix_range(b"a\xff\xff"),
            (b"a\xff\xff".to_vec(), b"b".to_vec())
        );
        assert_eq!(prefix_range(b"\xff"), (b"\xff".to_vec(), vec![0]));
        assert_eq!(prefix_range(b""), (vec![0], vec![0]));
    }

    #[test]
    fn numbers_are_decimal_strings_or_left_out() {
        assert_eq!(decimal(&json!("18446744073709551615")), u64::MAX);
        assert_eq!(decimal(&Value::Null), 0);
        assert_eq!(text(&json!("aGk=")), "hi");
        assert_eq!(text(&Value::Null), "");
    }
}
