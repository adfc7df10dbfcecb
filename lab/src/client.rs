//! The clients: closed-loop users that resolve the service name and fetch a
//! file, timing each request.
//!
//! A client thinks (a draw from the scenario's think time), picks a server
//! — through its [`Stub`] and the policy's DNS name, through its client-side
//! balancer, or, for the oracle, by asking the lab which server has the
//! least expected response time now — then opens a fresh TCP connection to
//! that server's member address, through its delaying proxy, and fetches
//! the file. The response time is measured as the paper measures it, from
//! the request to the last byte of the file; the DNS time is recorded beside
//! it, not in it. A failed attempt (refused, reset, no answer within the
//! timeout) is followed at once by another with a fresh pick, up to the
//! scenario's `retries`: what the user waited is the time of every attempt.
//!
//! The scenario's client count can change during a run (a flash crowd):
//! client `i` sends requests only while more than `i` clients are active.
//! Client `i` asks resolver `i mod k` when the run has `k`.
//!
//! A client only ever connects to the lab's own member addresses: an answer
//! naming anything else (possible with `--dns`) is recorded as a failure and
//! not fetched.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::balance::{Balancer, prequal};
use crate::dns::Stub;
use crate::policy::Policy;
use crate::scenario::{BalancerScope, Clients, Resolve, Schedule};
use crate::server::{FILE_PATH, ORACLE_HEADER, PREQUAL_PATH, Sampler, Server};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One request, as `results.csv` records it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The policy that chose the server.
    pub policy: Policy,
    /// When the request started, seconds since the policy's start.
    pub t: f64,
    /// Which client (0-based).
    pub client: usize,
    /// Which server (0-based) the last attempt went to, when it named one
    /// of the lab's.
    pub server: Option<usize>,
    /// Time to resolve, milliseconds, every attempt's (0 without DNS).
    pub dns_ms: f64,
    /// The first answer came from the client's TTL cache.
    pub dns_cached: bool,
    /// From the request to the last byte (or to giving up), milliseconds,
    /// over every attempt.
    pub rt_ms: f64,
    /// Attempts made (1 unless one failed).
    pub attempts: u32,
    /// `None` when the file arrived whole; otherwise why not (the last
    /// attempt's reason).
    pub error: Option<String>,
}

/// A client-side balancer with its probe connections (Prequal keeps one per
/// server), owned by one client or shared by all.
#[derive(Debug)]
pub struct ClientSide {
    balancer: Mutex<Balancer>,
    channels: Vec<tokio::sync::Mutex<Option<TcpStream>>>,
}

impl ClientSide {
    /// The balancer of `policy` over `servers` servers, if it is client-side.
    pub fn new(policy: Policy, servers: usize) -> Option<Arc<ClientSide>> {
        Balancer::new(policy, servers).map(|balancer| {
            Arc::new(ClientSide {
                balancer: Mutex::new(balancer),
                channels: (0..servers).map(|_| Default::default()).collect(),
            })
        })
    }

    /// The balancer every client of a run shares, when the scope says so.
    pub fn shared(policy: Policy, servers: usize, scope: BalancerScope) -> Option<Arc<ClientSide>> {
        match scope {
            BalancerScope::Shared => ClientSide::new(policy, servers),
            BalancerScope::PerClient => None,
        }
    }

    fn balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Probes `server` at `addr` once over its kept connection (skipped
    /// while a probe of it is in flight), and gives the balancer the answer.
    async fn probe(self: Arc<Self>, server: usize, addr: SocketAddr) {
        let Ok(mut channel) = self.channels[server].try_lock() else {
            return;
        };
        match tokio::time::timeout(prequal::MAX_AGE, probe_once(&mut channel, addr)).await {
            Ok(Ok((rif, latency_ms))) => {
                self.balancer()
                    .probed(server, rif, latency_ms, Instant::now());
            }
            // A probe that fails or comes too late leaves no answer; the
            // connection is opened afresh next time.
            _ => *channel = None,
        }
    }
}

/// One probe exchange: `GET /prequal` on a kept-alive connection.
async fn probe_once(
    channel: &mut Option<TcpStream>,
    addr: SocketAddr,
) -> Result<(u32, f64), String> {
    if channel.is_none() {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        *channel = Some(stream);
    }
    let stream = channel.as_mut().ok_or("no connection")?;
    stream
        .write_all(format!("GET {PREQUAL_PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let body = read_response(stream, true).await?;
    let text = String::from_utf8_lossy(&body.bytes);
    let mut fields = text.split_whitespace();
    let rif = fields.next().and_then(|f| f.parse().ok());
    let latency = fields.next().and_then(|f| f.parse().ok());
    rif.zip(latency)
        .ok_or_else(|| format!("unreadable probe answer {text:?}"))
}

/// What every client of one policy's run shares.
#[derive(Debug)]
pub struct RunContext {
    /// The policy.
    pub policy: Policy,
    /// The servers, by index.
    pub servers: Vec<Arc<Server>>,
    /// The DNS servers clients ask (client `i` asks `dns[i % len]`; not
    /// used when clients pick for themselves).
    pub dns: Vec<SocketAddr>,
    /// The name clients resolve (`None` when they pick for themselves).
    pub qname: Option<String>,
    /// The service port (the same on every member).
    pub port: u16,
    /// The scenario's clients.
    pub clients: Clients,
    /// Seeds think times.
    pub seed: u64,
    /// The policy's start.
    pub start: Instant,
    /// No request starts after this.
    pub end: Instant,
    /// The client-side balancer all clients share, if they share one.
    pub shared: Option<Arc<ClientSide>>,
}

impl RunContext {
    /// The server a member address belongs to.
    fn server_of(&self, address: Ipv4Addr) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.member.ip() == IpAddr::V4(address))
    }

    /// The oracle's pick: least expected response time from true state,
    /// ties broken at random; servers that do not answer are never picked.
    fn oracle_pick(&self, rng: &mut StdRng) -> Option<usize> {
        let expected: Vec<Option<Duration>> =
            self.servers.iter().map(|s| s.expected_response()).collect();
        let best = expected.iter().flatten().min()?;
        let ties: Vec<usize> = (0..expected.len())
            .filter(|&i| expected[i] == Some(*best))
            .collect();
        ties.choose(rng).copied()
    }

    /// Time since the run's start.
    fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }
}

/// How a client picks its servers.
enum Picker {
    Dns(Stub),
    Balancer(Arc<ClientSide>),
    Oracle,
}

/// Runs client `id` until the run's end (then finishes its request in
/// flight) or until `stop`, sending one [`Sample`] per request.
pub async fn run(
    id: usize,
    ctx: Arc<RunContext>,
    samples: mpsc::UnboundedSender<Sample>,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(
        ctx.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(id as u64 + 1),
    );
    let think: Schedule<Sampler> = ctx.clients.think.map(|d| Sampler::new(*d));
    let mut picker = match (&ctx.qname, ctx.dns.get(id % ctx.dns.len().max(1))) {
        _ if ctx.policy == Policy::Oracle => Picker::Oracle,
        (Some(name), Some(&dns)) => {
            match Stub::new(dns, name, ctx.clients.resolve == Resolve::Ttl).await {
                Ok(stub) => Picker::Dns(stub),
                Err(e) => {
                    let _ = samples.send(failure(&ctx, id, 0.0, format!("{e:#}")));
                    return;
                }
            }
        }
        _ => match ctx
            .shared
            .clone()
            .or_else(|| ClientSide::new(ctx.policy, ctx.servers.len()))
        {
            Some(side) => Picker::Balancer(side),
            None => {
                let _ = samples.send(failure(&ctx, id, 0.0, "no way to pick a server".into()));
                return;
            }
        },
    };
    let mut active = false;
    while Instant::now() < ctx.end && !stop.is_cancelled() {
        // Waits while this client is beyond the active count; a client that
        // becomes active starts within one think time, not with the others
        // at the same instant.
        let (count, next_change) = ctx.clients.count.at(ctx.elapsed());
        if id >= count {
            active = false;
            let until = next_change.map_or(ctx.end, |at| ctx.start + at);
            if !pause(until.saturating_duration_since(Instant::now()), &ctx, &stop).await {
                return;
            }
            continue;
        }
        if !active {
            active = true;
            let first = think.at(ctx.elapsed()).0.sample(&mut rng);
            if !pause(first, &ctx, &stop).await {
                return;
            }
            continue;
        }
        let sample = request(id, &ctx, &mut picker, &mut rng, &stop).await;
        let _ = samples.send(sample);
        let gap = think.at(ctx.elapsed()).0.sample(&mut rng);
        if !pause(gap, &ctx, &stop).await {
            return;
        }
    }
}

/// One request: picks and fetches, again after a failure while retries
/// remain.
async fn request(
    id: usize,
    ctx: &RunContext,
    picker: &mut Picker,
    rng: &mut StdRng,
    stop: &CancellationToken,
) -> Sample {
    let t = ctx.elapsed().as_secs_f64();
    let mut sample = failure(ctx, id, t, String::new());
    sample.attempts = 0;
    let mut rt = Duration::ZERO;
    while sample.attempts <= ctx.clients.retries && !stop.is_cancelled() {
        sample.attempts += 1;
        let asked = Instant::now();
        let picked = match picker {
            Picker::Oracle => ctx
                .oracle_pick(rng)
                .inspect(|&i| ctx.servers[i].oracle_sent())
                .ok_or_else(|| "no server to pick".to_owned()),
            Picker::Dns(stub) => match stub.lookup().await {
                Ok(answer) => {
                    if sample.attempts == 1 {
                        sample.dns_cached = answer.cached;
                    }
                    ctx.server_of(answer.address).ok_or_else(|| {
                        format!(
                            "the answer {} is not one of the lab's servers",
                            answer.address
                        )
                    })
                }
                Err(e) => Err(e.to_string()),
            },
            Picker::Balancer(side) => {
                let pick = side.balancer().pick(Instant::now(), rng);
                for s in pick.probe {
                    let addr = SocketAddr::new(ctx.servers[s].member.ip(), ctx.port);
                    tokio::spawn(side.clone().probe(s, addr));
                }
                Ok(pick.server)
            }
        };
        if matches!(picker, Picker::Dns(_)) {
            sample.dns_ms += asked.elapsed().as_secs_f64() * 1000.0;
        }
        let server = match picked {
            Ok(i) => i,
            Err(error) => {
                sample.error = Some(error);
                continue;
            }
        };
        sample.server = Some(server);
        let oracle = ctx.policy == Policy::Oracle;
        let addr = SocketAddr::new(ctx.servers[server].member.ip(), ctx.port);
        let sent = Instant::now();
        let outcome = tokio::select! {
            r = tokio::time::timeout(ctx.clients.timeout, fetch(addr, oracle, ctx.clients.file_size)) => match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("no complete answer within {:?}", ctx.clients.timeout)),
            },
            _ = stop.cancelled() => Some("unfinished when the run ended".to_owned()),
        };
        rt += sent.elapsed();
        if oracle && outcome.as_deref().is_some_and(|e| e.starts_with("connect")) {
            ctx.servers[server].oracle_lost();
        }
        match picker {
            Picker::Balancer(side) => {
                side.balancer()
                    .done(server, sent, Instant::now(), outcome.is_none())
            }
            // The address failed: ask again rather than reuse it.
            Picker::Dns(stub) if outcome.is_some() => stub.forget(),
            _ => {}
        }
        sample.error = outcome;
        if sample.error.is_none() {
            break;
        }
    }
    sample.rt_ms = rt.as_secs_f64() * 1000.0;
    sample
}

fn failure(ctx: &RunContext, id: usize, t: f64, error: String) -> Sample {
    Sample {
        policy: ctx.policy,
        t,
        client: id,
        server: None,
        dns_ms: 0.0,
        dns_cached: false,
        rt_ms: 0.0,
        attempts: 1,
        error: Some(error),
    }
}

/// Sleeps `d`, but not past the run's end; false if the run is over.
async fn pause(d: Duration, ctx: &RunContext, stop: &CancellationToken) -> bool {
    let until = (Instant::now() + d).min(ctx.end);
    tokio::select! {
        _ = tokio::time::sleep_until(until) => Instant::now() < ctx.end,
        _ = stop.cancelled() => false,
    }
}

/// One HTTP/1.1 GET of the file on a fresh connection, read to its last
/// byte. Errors start with the step that failed (`connect`, `send`, ...).
pub async fn fetch(addr: SocketAddr, oracle: bool, expected: u64) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!("GET {FILE_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if oracle {
        request.push_str(ORACLE_HEADER);
        request.push_str(": 1\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let body = read_response(&mut stream, false).await?;
    if body.len < expected {
        return Err(format!("short body: {} of {expected} bytes", body.len));
    }
    Ok(())
}

/// A response body read: its length, and its bytes if they were kept.
#[derive(Debug, Default)]
struct ReadBody {
    len: u64,
    bytes: Vec<u8>,
}

impl ReadBody {
    fn take(&mut self, bytes: &[u8], keep: bool) {
        self.len += bytes.len() as u64;
        if keep {
            self.bytes.extend_from_slice(bytes);
        }
    }
}

/// Reads a response head and its body (by Content-Length, else to the
/// end), keeping the body's bytes if `keep` (a probe's answer; a file is
/// only counted).
async fn read_response(stream: &mut TcpStream, keep: bool) -> Result<ReadBody, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("response head too large".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "unreadable status line".to_owned())?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<u64>().ok())?
    });
    let mut body = ReadBody::default();
    body.take(&buf[head_end..], keep);
    loop {
        if length.is_some_and(|l| body.len >= l) {
            break;
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            if length.is_some() {
                return Err(format!("connection closed after {} body bytes", body.len));
            }
            break;
        }
        body.take(&chunk[..n], keep);
    }
    Ok(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
