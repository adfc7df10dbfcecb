//! The simulated replicated web servers.
//!
//! Each server is a real HTTP server on its own loopback address
//! (127.0.2.N), so its agent measures it exactly as it would measure nginx
//! beside it, without the emulated path. Its behaviour is the classic
//! multi-server queue that makes server load matter:
//!
//! * `capacity` workers, handed out in FIFO order (tokio's semaphore is
//!   fair): a request waits for a worker, holds it for a service time drawn
//!   from the scenario's distribution, and only then answers. What a client
//!   sees as the server's share of the response time is therefore queueing
//!   plus service, which is what the agent's time-until-first-read measures.
//! * Every request goes through that queue: clients' file requests, the
//!   agent's measurements and the resolver's probes of the probe file (the
//!   file the agent writes into the server's docroot). A probe of a loaded
//!   server is slow, as in the paper.
//! * Background load is open-loop Poisson arrivals at the scenario's
//!   time-varying rate, generated in process: each arrival holds a worker
//!   for a service time, like a request from a client outside the
//!   experiment, without the HTTP.
//! * The server counts its true queue (waiting and busy) for the oracle.
//! * Like nginx, it answers a status page at once, outside the queue
//!   ([`STATUS_PATH`], nginx's `stub_status` format: `Writing` is the
//!   requests in the server, the status request included), which its agent
//!   reads for requests in flight. And it answers Prequal's probes at once
//!   ([`PREQUAL_PATH`]): requests in flight and the median latency of recent
//!   requests that arrived at about as many in flight.
//! * Its path's RTT and its condition (up, dead, black-holed) follow the
//!   scenario's schedules during a run; [`Gate`] makes a listening address
//!   refuse (dead) or swallow (black hole) connections accordingly.
//!
//! Between policies the lab resets every server: a new generation with
//! fresh workers and seeds, whose cancellation drops whatever the previous
//! policy left queued, so each policy starts from the same state and sees
//! the same background arrivals (same seed, same schedule).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::Distribution;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::scenario::{Condition, Dist, ServerSpec};

/// The path clients fetch.
pub const FILE_PATH: &str = "/file";

/// The path the agent times (a small answer, through the same queue).
pub const AGENT_PATH: &str = "/agent";

/// Where the agent writes the probe file, relative to the docroot, and the
/// path the resolver fetches (the resolver's default probe URL).
pub const PROBE_PATH: &str = "/.well-known/anycast-probe.json";

/// The status page, nginx's `stub_status` format, answered at once.
pub const STATUS_PATH: &str = "/nginx_status";

/// Prequal's probe, answered at once: `<requests in flight> <latency ms>`.
pub const PREQUAL_PATH: &str = "/prequal";

/// Completed requests whose latency [`LatencyLog`] keeps.
const LATENCY_LOG: usize = 512;

/// Samples the Prequal latency estimate is the median of, at least (from
/// the nearest numbers of requests in flight).
const LATENCY_NEAR: usize = 5;

/// A header clients of the oracle send, so the server can tell when a
/// request the oracle sent its way has arrived (see [`Server::en_route`]).
pub const ORACLE_HEADER: &str = "x-lab-oracle";

/// A distribution ready to sample, in seconds.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// Always this.
    Const(f64),
    /// Exponential.
    Exp(rand_distr::Exp<f64>),
    /// Log-normal.
    LogNormal(rand_distr::LogNormal<f64>),
    /// Uniform in `[a, b)`.
    Uniform(f64, f64),
}

impl Sampler {
    /// Prepares `dist` (validated by the scenario: means above zero).
    pub fn new(dist: Dist) -> Sampler {
        let secs = |d: Duration| d.as_secs_f64();
        match dist {
            Dist::Const(d) => Sampler::Const(secs(d)),
            Dist::Exp(mean) => rand_distr::Exp::new(1.0 / secs(mean))
                .map(Sampler::Exp)
                .unwrap_or(Sampler::Const(secs(mean))),
            Dist::LogNormal { mean, sd } => {
                rand_distr::LogNormal::from_mean_cv(secs(mean), secs(sd) / secs(mean))
                    .map(Sampler::LogNormal)
                    .unwrap_or(Sampler::Const(secs(mean)))
            }
            Dist::Uniform(a, b) => Sampler::Uniform(secs(a), secs(b)),
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut StdRng) -> Duration {
        let s = match self {
            Sampler::Const(s) => *s,
            Sampler::Exp(d) => d.sample(rng),
            Sampler::LogNormal(d) => d.sample(rng),
            Sampler::Uniform(a, b) => a + (b - a) * rand::RngExt::random::<f64>(rng),
        };
        // Cap one draw at a minute: a heavy tail must not park a worker forever.
        Duration::try_from_secs_f64(s.clamp(0.0, 60.0)).unwrap_or_default()
    }
}

/// One policy's worth of server state.
#[derive(Debug)]
struct Generation {
    workers: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Requests (and background jobs) waiting for a worker.
    waiting: AtomicUsize,
    /// Workers busy.
    busy: AtomicUsize,
    /// Service times of HTTP requests.
    rng: Mutex<StdRng>,
    /// Background arrivals so far.
    background: AtomicU64,
    /// Recent latencies with the requests in flight they arrived at.
    latencies: Mutex<LatencyLog>,
}

/// Recent requests' latencies (wait plus service), each with the number of
/// requests in the server when it arrived: what a Prequal server keeps to
/// answer "how long does a request take here at this load".
#[derive(Debug, Default)]
pub struct LatencyLog {
    recent: VecDeque<(usize, f64)>,
}

impl LatencyLog {
    /// Records a completed request.
    pub fn record(&mut self, in_flight_at_arrival: usize, latency_ms: f64) {
        if self.recent.len() == LATENCY_LOG {
            self.recent.pop_front();
        }
        self.recent.push_back((in_flight_at_arrival, latency_ms));
    }

    /// The median latency of the recent requests that arrived with about
    /// `in_flight` in the server: those at the nearest counts, widening
    /// until [`LATENCY_NEAR`] samples are in (or all are). 0 with none.
    pub fn estimate(&self, in_flight: usize) -> f64 {
        let mut near: Vec<f64> = Vec::new();
        let mut width = 0;
        while near.len() < LATENCY_NEAR && near.len() < self.recent.len() {
            near = self
                .recent
                .iter()
                .filter(|(n, _)| n.abs_diff(in_flight) <= width)
                .map(|&(_, l)| l)
                .collect();
            width = (width * 2).max(1);
        }
        near.sort_by(f64::total_cmp);
        near.get(near.len() / 2).copied().unwrap_or(0.0)
    }
}

/// Decrements a counter when dropped, so a request whose client went away
/// (its future dropped mid-wait) does not stay counted.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Counted<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Generation {
    fn new(capacity: usize, seed: u64) -> Generation {
        Generation {
            workers: Arc::new(Semaphore::new(capacity)),
            cancel: CancellationToken::new(),
            waiting: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            background: AtomicU64::new(0),
            latencies: Mutex::new(LatencyLog::default()),
        }
    }

    /// Requests in the server: waiting or being served.
    fn in_flight(&self) -> usize {
        self.waiting.load(Ordering::Relaxed) + self.busy.load(Ordering::Relaxed)
    }

    /// Waits for a worker and holds it for `service`; `false` if the
    /// generation ended first.
    async fn serve(&self, service: Duration) -> bool {
        let arrived = Instant::now();
        let in_flight = self.in_flight();
        let permit = {
            let _waiting = Counted::new(&self.waiting);
            tokio::select! {
                permit = self.workers.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return false,
                },
                _ = self.cancel.cancelled() => return false,
            }
        };
        let _busy = Counted::new(&self.busy);
        tokio::time::sleep(service).await;
        drop(permit);
        self.latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(in_flight, arrived.elapsed().as_secs_f64() * 1000.0);
        true
    }

    fn draw(&self, sampler: &Sampler) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        sampler.sample(&mut rng)
    }
}

/// One simulated replicated server.
#[derive(Debug)]
pub struct Server {
    /// Its scenario entry.
    pub spec: ServerSpec,
    /// Its address as clients and the resolver see it (through the
    /// delaying proxy): `127.0.1.N:port`.
    pub member: SocketAddr,
    /// Its own address, where it listens and its agent measures it:
    /// `127.0.2.N:port`.
    pub own: SocketAddr,
    /// Where the agent writes the probe file.
    pub docroot: PathBuf,
    sampler: Sampler,
    body: Bytes,
    generation: Mutex<Arc<Generation>>,
    /// Requests the oracle sent here that have not arrived yet, so that
    /// clients picking at nearly the same instant do not all see the same
    /// short queue.
    en_route: AtomicUsize,
    /// The path's round-trip time now, microseconds.
    rtt_us: AtomicU64,
    /// Up, dead or black-holed now.
    condition: watch::Sender<Condition>,
    /// Requests taken since the lab started, as nginx's `requests` counts
    /// them: every HTTP request (status reads included) and every
    /// background arrival.
    requests: AtomicU64,
}

impl Server {
    /// A server for `spec`, serving `file_size` bytes to clients.
    pub fn new(
        spec: ServerSpec,
        member: SocketAddr,
        own: SocketAddr,
        docroot: PathBuf,
        file_size: u64,
    ) -> Server {
        let sampler = Sampler::new(spec.service);
        let generation = Generation::new(spec.capacity, 0);
        Server {
            member,
            own,
            docroot,
            sampler,
            body: Bytes::from(vec![b'x'; usize::try_from(file_size).unwrap_or(0)]),
            generation: Mutex::new(Arc::new(generation)),
            en_route: AtomicUsize::new(0),
            rtt_us: AtomicU64::new(micros(spec.rtt.initial)),
            condition: watch::Sender::new(Condition::Up),
            requests: AtomicU64::new(0),
            spec,
        }
    }

    /// The path's round-trip time now.
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us.load(Ordering::Relaxed))
    }

    /// Whether it is up, dead or black-holed now.
    pub fn condition(&self) -> Condition {
        *self.condition.borrow()
    }

    /// Follows its condition.
    pub fn watch_condition(&self) -> watch::Receiver<Condition> {
        self.condition.subscribe()
    }

    /// Makes it up, dead or black-holed from now on.
    pub fn set_condition(&self, condition: Condition) {
        self.condition.send_replace(condition);
    }

    fn current(&self) -> Arc<Generation> {
        self.generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends the current generation (dropping its queue and background
    /// load) and starts an idle one whose service times follow `seed`.
    pub fn reset(&self, seed: u64) {
        let fresh = Arc::new(Generation::new(self.spec.capacity, seed));
        let old = std::mem::replace(
            &mut *self.generation.lock().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        old.cancel.cancel();
        self.en_route.store(0, Ordering::Relaxed);
        self.rtt_us
            .store(micros(self.spec.rtt.initial), Ordering::Relaxed);
        self.condition.send_replace(Condition::Up);
    }

    /// Starts a policy's run on the current generation: the background load
    /// (Poisson arrivals following the scenario's schedule from now, drawn
    /// from `seed`) and the changes of path RTT and condition. They stop at
    /// the next [`Server::reset`] or when `shutdown` is cancelled.
    pub fn start_run(
        self: &Arc<Self>,
        seed: u64,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) {
        let generation = self.current();
        let start = Instant::now();
        {
            let (server, generation, stop) = (self.clone(), generation.clone(), shutdown.clone());
            tasks.spawn(async move {
                // Both schedules' steps, in time order.
                let mut changes: Vec<(Duration, Option<Duration>, Option<Condition>)> = server
                    .spec
                    .rtt
                    .steps
                    .iter()
                    .map(|&(at, rtt)| (at, Some(rtt), None))
                    .chain(
                        server
                            .spec
                            .condition
                            .steps
                            .iter()
                            .map(|&(at, c)| (at, None, Some(c))),
                    )
                    .collect();
                changes.sort_by_key(|c| c.0);
                for (at, rtt, condition) in changes {
                    tokio::select! {
                        _ = tokio::time::sleep_until(start + at) => {}
                        _ = generation.cancel.cancelled() => return,
                        _ = stop.cancelled() => return,
                    }
                    if let Some(rtt) = rtt {
                        server.rtt_us.store(micros(rtt), Ordering::Relaxed);
                    }
                    if let Some(condition) = condition {
                        server.set_condition(condition);
                    }
                }
            });
        }
        let schedule = self.spec.load.clone();
        let server = self.clone();
        let stop = shutdown.clone();
        let tracker = tasks.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = Duration::ZERO;
            loop {
                let (rate, next_change) = schedule.at(t);
                let gap = if rate > 0.0 {
                    rand_distr::Exp::new(rate)
                        .ok()
                        .map(|e| Duration::from_secs_f64(e.sample(&mut rng)))
                } else {
                    None
                };
                // Exponential gaps are memoryless: when the rate changes
                // before the next arrival, draw again from the change.
                match (gap, next_change) {
                    (Some(gap), Some(change)) if t + gap >= change => {
                        t = change;
                        continue;
                    }
                    (Some(gap), _) => t += gap,
                    (None, Some(change)) => {
                        t = change;
                        continue;
                    }
                    (None, None) => return,
                }
                let service = server.sampler.sample(&mut rng);
                tokio::select! {
                    _ = tokio::time::sleep_until(start + t) => {}
                    _ = generation.cancel.cancelled() => return,
                    _ = stop.cancelled() => return,
                }
                // Other users' requests do not reach a server that is down.
                if server.condition() != Condition::Up {
                    continue;
                }
                generation.background.fetch_add(1, Ordering::Relaxed);
                server.requests.fetch_add(1, Ordering::Relaxed);
                let job = generation.clone();
                tracker.spawn(async move {
                    job.serve(service).await;
                });
            }
        });
    }

    /// Requests in the server now (waiting or being served), plus requests
    /// the oracle sent that are still on their way.
    pub fn queue(&self) -> usize {
        let g = self.current();
        g.waiting.load(Ordering::Relaxed)
            + g.busy.load(Ordering::Relaxed)
            + self.en_route.load(Ordering::Relaxed)
    }

    /// What a request sent now should take, from true state: the path (two
    /// round trips: connection setup, then request and response), the wait
    /// for one of `capacity` workers behind the current queue, and a mean
    /// service time. `None` when the server does not answer.
    pub fn expected_response(&self) -> Option<Duration> {
        if self.condition() != Condition::Up {
            return None;
        }
        let mean = self.spec.service.mean().as_secs_f64();
        let capacity = self.spec.capacity;
        let queue = self.queue();
        let wait = if queue < capacity {
            0.0
        } else {
            (queue - capacity + 1) as f64 * mean / capacity as f64
        };
        Some(Duration::from_secs_f64(
            2.0 * self.rtt().as_secs_f64() + wait + mean,
        ))
    }

    /// nginx's `stub_status` page: the requests in the server (this one
    /// included) are `Writing`; `requests` counts every request taken.
    fn status_page(&self) -> String {
        let g = self.current();
        let writing = g.in_flight() + 1;
        let total = self.requests.load(Ordering::Relaxed);
        format!(
            "Active connections: {writing} \nserver accepts handled requests\n {total} {total} {total} \nReading: 0 Writing: {writing} Waiting: 0 \n"
        )
    }

    /// Prequal's probe answer: requests in flight, and the latency estimate
    /// at that load.
    fn prequal_answer(&self) -> String {
        let g = self.current();
        let in_flight = g.in_flight();
        let latency = g
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .estimate(in_flight);
        format!("{in_flight} {latency:.3}\n")
    }

    /// The oracle sent a request here.
    pub fn oracle_sent(&self) {
        self.en_route.fetch_add(1, Ordering::Relaxed);
    }

    /// An oracle request never arrived (its connection failed).
    pub fn oracle_lost(&self) {
        let _ = self
            .en_route
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The HTTP service: every path goes through the worker queue.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }
}

async fn handle(State(server): State<Arc<Server>>, uri: Uri, headers: HeaderMap) -> Response {
    if headers.contains_key(ORACLE_HEADER) {
        server.oracle_lost();
    }
    server.requests.fetch_add(1, Ordering::Relaxed);
    match server.condition() {
        Condition::Up => {}
        // A request on a connection opened before the server died.
        Condition::Dead => return (StatusCode::SERVICE_UNAVAILABLE, "dead\n").into_response(),
        Condition::Blackhole => std::future::pending().await,
    }
    match uri.path() {
        STATUS_PATH => return server.status_page().into_response(),
        PREQUAL_PATH => return server.prequal_answer().into_response(),
        _ => {}
    }
    let generation = server.current();
    let service = generation.draw(&server.sampler);
    if !generation.serve(service).await {
        return (StatusCode::SERVICE_UNAVAILABLE, "reset\n").into_response();
    }
    match uri.path() {
        FILE_PATH => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(server.body.clone()),
        )
            .into_response(),
        PROBE_PATH => {
            let file = server.docroot.join(PROBE_PATH.trim_start_matches('/'));
            match tokio::fs::read(&file).await {
                Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                Err(_) => (StatusCode::NOT_FOUND, "no probe file yet\n").into_response(),
            }
        }
        AGENT_PATH | "/" => "ok\n".into_response(),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A listening address that follows its server's condition: it accepts
/// while the server is up, is closed (connections refused) while it is
/// dead, and accepts connections only to hold them unanswered while it is
/// black-holed. Both of a server's addresses go through one: its own (the
/// agent's view) and its proxy's (the clients' and the resolver's).
#[derive(Debug)]
pub struct Gate {
    addr: SocketAddr,
    listener: Option<TcpListener>,
    condition: watch::Receiver<Condition>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Gate {
    /// A gate on `listener`, following `server`'s condition until `shutdown`.
    pub fn new(
        listener: TcpListener,
        server: &Server,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> std::io::Result<Gate> {
        Ok(Gate {
            addr: listener.local_addr()?,
            listener: Some(listener),
            condition: server.watch_condition(),
            shutdown,
            tasks: tasks.clone(),
        })
    }

    /// The next connection to serve (pending forever once shut down).
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if self.shutdown.is_cancelled() {
                return std::future::pending().await;
            }
            let condition = *self.condition.borrow_and_update();
            if condition == Condition::Dead {
                // Closed: the kernel refuses connections to the address.
                self.listener = None;
                tokio::select! {
                    _ = self.condition.changed() => {}
                    _ = self.shutdown.cancelled() => {}
                }
                continue;
            }
            let Some(listener) = self.listener.as_ref() else {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => self.listener = Some(l),
                    // Taken meanwhile (unlikely on the lab's own addresses).
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                continue;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.condition.changed() => continue,
                _ = self.shutdown.cancelled() => continue,
            };
            let Ok((stream, peer)) = accepted else {
                // Out of descriptors or similar: back off a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if condition == Condition::Blackhole {
                self.hold(stream);
                continue;
            }
            return (stream, peer);
        }
    }

    /// Keeps a connection open, reading and dropping what it sends, until
    /// the peer closes it or the lab stops.
    fn hold(&self, mut stream: TcpStream) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut sink = [0u8; 4096];
            loop {
                tokio::select! {
                    read = stream.read(&mut sink) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

impl axum::serve::Listener for Gate {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        Gate::accept(self).await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_have_the_asked_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        for dist in [
            Dist::Exp(Duration::from_millis(20)),
            Dist::LogNormal {
                mean: Duration::from_millis(20),
                sd: Duration::from_millis(40),
            },
            Dist::Uniform(Duration::from_millis(10), Duration::from_millis(30)),
            Dist::Const(Duration::from_millis(20)),
        ] {
            let s = Sampler::new(dist);
            let n = 200_000;
            let mean = (0..n)
                .map(|_| s.sample(&mut rng).as_secs_f64())
                .sum::<f64>()
                / n as f64;
            assert!((mean - 0.020).abs() < 0.001, "{dist:?}: {mean}");
        }
    }

    #[test]
    fn the_oracle_counts_the_queue_beyond_the_workers() {
        let spec = ServerSpec {
            name: "s1".into(),
            rtt: crate::scenario::Schedule::constant(Duration::from_millis(10)),
            capacity: 2,
            service: Dist::Const(Duration::from_millis(20)),
            load: crate::scenario::Schedule::constant(0.0),
            condition: crate::scenario::Schedule::constant(Condition::Up),
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let s = Server::new(spec, addr, addr, PathBuf::new(), 10);
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(s.expected_response(), ms(40));
        s.oracle_sent();
        assert_eq!(s.expected_response(), ms(40));
        s.oracle_sent();
        s.oracle_sent();
        // Three in the system, two workers: two departures to wait for.
        assert_eq!(s.expected_response(), ms(60));
        s.set_condition(Condition::Dead);
        assert_eq!(s.expected_response(), None, "the oracle knows it is dead");
        s.reset(1);
        assert_eq!(s.queue(), 0);
        assert_eq!(s.expected_response(), ms(40));
    }

    #[test]
    fn the_latency_estimate_is_the_median_at_the_nearest_load() {
        let mut log = LatencyLog::default();
        assert_eq!(log.estimate(3), 0.0);
        for (n, l) in [
            (0, 10.0),
            (0, 12.0),
            (0, 11.0),
            (4, 50.0),
            (4, 60.0),
            (4, 55.0),
        ] {
            log.record(n, l);
        }
        for (n, l) in [(5, 70.0), (5, 65.0)] {
            log.record(n, l);
        }
        // At 0: only three samples there, so the nearest widen to 1, 2, 4
        // and take in those at 4: median of 10, 11, 12, 50, 55, 60.
        assert_eq!(log.estimate(0), 50.0);
        // At 4: 50, 55, 60 and (within 1) 65, 70.
        assert_eq!(log.estimate(4), 60.0);
    }
}
