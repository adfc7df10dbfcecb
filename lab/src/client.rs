//! The clients: closed-loop users that resolve the service name and fetch a
//! file, timing each request.
//!
//! A client thinks (a draw from the scenario's think time), resolves the
//! policy's name through its [`Stub`] (or, for the oracle, asks the lab
//! which server has the least expected response time now), then opens a
//! fresh TCP connection to the picked member address, through that server's
//! delaying proxy, and fetches the file. The response time is measured as
//! the paper measures it, from the request to the last byte of the file;
//! the DNS time is recorded beside it, not in it.
//!
//! A client only ever connects to the lab's own member addresses: an answer
//! naming anything else (possible with `--dns`) is recorded as a failure and
//! not fetched.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dns::Stub;
use crate::policy::Policy;
use crate::scenario::{Clients, Resolve};
use crate::server::{FILE_PATH, ORACLE_HEADER, Sampler, Server};

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
    /// Which server (0-based), when the answer named one of the lab's.
    pub server: Option<usize>,
    /// Time to resolve, milliseconds (0 for the oracle).
    pub dns_ms: f64,
    /// The answer came from the client's TTL cache.
    pub dns_cached: bool,
    /// From the request to the last byte (or to giving up), milliseconds.
    pub rt_ms: f64,
    /// `None` when the file arrived whole; otherwise why not.
    pub error: Option<String>,
}

/// What every client of one policy's run shares.
#[derive(Debug)]
pub struct RunContext {
    /// The policy.
    pub policy: Policy,
    /// The servers, by index.
    pub servers: Vec<Arc<Server>>,
    /// The DNS server clients ask (not used by the oracle).
    pub dns: Option<SocketAddr>,
    /// The name clients resolve (`None` for the oracle).
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
}

impl RunContext {
    /// The server a member address belongs to.
    fn server_of(&self, address: Ipv4Addr) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.member.ip() == IpAddr::V4(address))
    }

    /// The oracle's pick: least expected response time from true state,
    /// ties broken at random.
    fn oracle_pick(&self, rng: &mut StdRng) -> Option<usize> {
        let expected: Vec<Duration> = self.servers.iter().map(|s| s.expected_response()).collect();
        let best = expected.iter().min()?;
        let ties: Vec<usize> = (0..expected.len())
            .filter(|&i| expected[i] == *best)
            .collect();
        ties.choose(rng).copied()
    }
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
    let think = Sampler::new(ctx.clients.think);
    let mut stub = match (&ctx.qname, ctx.dns) {
        (Some(name), Some(dns)) => {
            match Stub::new(dns, name, ctx.clients.resolve == Resolve::Ttl).await {
                Ok(stub) => Some(stub),
                Err(e) => {
                    let _ = samples.send(failure(&ctx, id, 0.0, None, format!("{e:#}")));
                    return;
                }
            }
        }
        _ => None,
    };
    // Clients start spread over one think time, not all at once.
    let first = think.sample(&mut rng);
    if !pause(first, &ctx, &stop).await {
        return;
    }
    while Instant::now() < ctx.end && !stop.is_cancelled() {
        let began = Instant::now();
        let t = (began - ctx.start).as_secs_f64();
        let mut dns_cached = false;
        let picked = match stub.as_mut() {
            None => ctx
                .oracle_pick(&mut rng)
                .inspect(|&i| ctx.servers[i].oracle_sent())
                .ok_or_else(|| "no server to pick".to_owned()),
            Some(stub) => match stub.lookup().await {
                Ok(answer) => {
                    dns_cached = answer.cached;
                    ctx.server_of(answer.address).ok_or_else(|| {
                        format!(
                            "the answer {} is not one of the lab's servers",
                            answer.address
                        )
                    })
                }
                Err(e) => Err(e.to_string()),
            },
        };
        let dns_ms = began.elapsed().as_secs_f64() * 1000.0;
        let server = match picked {
            Ok(i) => i,
            Err(error) => {
                let mut s = failure(&ctx, id, t, None, error);
                s.dns_ms = dns_ms;
                let _ = samples.send(s);
                if !pause(think.sample(&mut rng), &ctx, &stop).await {
                    return;
                }
                continue;
            }
        };
        let oracle = ctx.policy == Policy::Oracle;
        let addr = SocketAddr::new(ctx.servers[server].member.ip(), ctx.port);
        let fetched = Instant::now();
        let outcome = tokio::select! {
            r = tokio::time::timeout(ctx.clients.timeout, fetch(addr, oracle, ctx.clients.file_size)) => match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("no complete answer within {:?}", ctx.clients.timeout)),
            },
            _ = stop.cancelled() => Some("unfinished when the run ended".to_owned()),
        };
        if oracle && outcome.as_deref().is_some_and(|e| e.starts_with("connect")) {
            ctx.servers[server].oracle_lost();
        }
        let _ = samples.send(Sample {
            policy: ctx.policy,
            t,
            client: id,
            server: Some(server),
            dns_ms,
            dns_cached,
            rt_ms: fetched.elapsed().as_secs_f64() * 1000.0,
            error: outcome,
        });
        if !pause(think.sample(&mut rng), &ctx, &stop).await {
            return;
        }
    }
}

fn failure(ctx: &RunContext, id: usize, t: f64, server: Option<usize>, error: String) -> Sample {
    Sample {
        policy: ctx.policy,
        t,
        client: id,
        server,
        dns_ms: 0.0,
        dns_cached: false,
        rt_ms: 0.0,
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
    read_response(&mut stream, expected).await
}

/// Reads a response head and its body (by Content-Length, else to the end).
async fn read_response(stream: &mut TcpStream, expected: u64) -> Result<(), String> {
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
    let mut body = (buf.len() - head_end) as u64;
    loop {
        if length.is_some_and(|l| body >= l) {
            break;
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            if length.is_some() {
                return Err(format!("connection closed after {body} body bytes"));
            }
            break;
        }
        body += n as u64;
    }
    if body < expected {
        return Err(format!("short body: {body} of {expected} bytes"));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
