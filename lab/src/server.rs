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
//!
//! Between policies the lab resets every server: a new generation with
//! fresh workers and seeds, whose cancellation drops whatever the previous
//! policy left queued, so each policy starts from the same state and sees
//! the same background arrivals (same seed, same schedule).

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
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::scenario::{Dist, LoadSchedule, ServerSpec};

/// The path clients fetch.
pub const FILE_PATH: &str = "/file";

/// The path the agent times (a small answer, through the same queue).
pub const AGENT_PATH: &str = "/agent";

/// Where the agent writes the probe file, relative to the docroot, and the
/// path the resolver fetches (the resolver's default probe URL).
pub const PROBE_PATH: &str = "/.well-known/anycast-probe.json";

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
        }
    }

    /// Waits for a worker and holds it for `service`; `false` if the
    /// generation ended first.
    async fn serve(&self, service: Duration) -> bool {
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
            spec,
        }
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
    }

    /// Starts the background load of the current generation: Poisson
    /// arrivals following `schedule` from now, drawn from `seed`. It stops
    /// at the next [`Server::reset`] or when `shutdown` is cancelled.
    pub fn start_background(
        self: &Arc<Self>,
        schedule: LoadSchedule,
        seed: u64,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) {
        let generation = self.current();
        let server = self.clone();
        let stop = shutdown.clone();
        let tracker = tasks.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let start = Instant::now();
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
                generation.background.fetch_add(1, Ordering::Relaxed);
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
    /// service time.
    pub fn expected_response(&self) -> Duration {
        let mean = self.spec.service.mean().as_secs_f64();
        let capacity = self.spec.capacity;
        let queue = self.queue();
        let wait = if queue < capacity {
            0.0
        } else {
            (queue - capacity + 1) as f64 * mean / capacity as f64
        };
        Duration::from_secs_f64(2.0 * self.spec.rtt.as_secs_f64() + wait + mean)
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
            rtt: Duration::from_millis(10),
            capacity: 2,
            service: Dist::Const(Duration::from_millis(20)),
            load: LoadSchedule { steps: vec![] },
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let s = Server::new(spec, addr, addr, PathBuf::new(), 10);
        assert_eq!(s.expected_response(), Duration::from_millis(40));
        s.oracle_sent();
        assert_eq!(s.expected_response(), Duration::from_millis(40));
        s.oracle_sent();
        s.oracle_sent();
        // Three in the system, two workers: two departures to wait for.
        assert_eq!(s.expected_response(), Duration::from_millis(60));
        s.reset(1);
        assert_eq!(s.queue(), 0);
    }
}
