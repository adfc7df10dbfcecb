//! `anycast-agent`: runs beside each replicated server.
//!
//! It measures the server's time until first read (TUFR), smooths it,
//! publishes it in the probe file the resolver fetches, and pushes it to the
//! zone's resolvers when it changes significantly (see `DESIGN.md`, "Metric
//! collection"). The data flow:
//!
//! ```text
//! active (timed requests) ─┐                              ┌─► publish (probe file)
//! passive (access log) ────┼─► Sample ─► smooth + load ──┤
//! status (status page) ────┘           (Reading)          └─► push (one task per resolver)
//! ```
//!
//! * [`config`]: TOML into one typed [`config::AgentConfig`].
//! * [`active`], [`passive`]: the two ways of measuring.
//! * [`smooth`]: EWMA in continuous time, outlier clamp, down detection.
//! * [`load`]: requests in flight and workers beside the TUFR, and the
//!   service time (pure).
//! * [`policy`]: when to push (pure).
//! * [`push`]: signing and sending; [`publish`]: the probe file.
//! * [`status`]: the server's status page (requests in flight, workers).
//! * [`join`]: self-registration with the resolvers (optional).

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod active;
pub mod config;
pub mod join;
pub mod load;
pub mod passive;
pub mod policy;
pub mod publish;
pub mod push;
pub mod smooth;
pub mod status;

use anycast_daemon::tls::cause_chain;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{AgentConfig, PassiveConfig};
use crate::load::LoadTracker;
use crate::smooth::{Reading, Smoother};

/// One measurement outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// A measured time until first read.
    Tufr(Duration),
    /// A measurement still outstanding after this long: the time until first
    /// read is at least that.
    AtLeast(Duration),
    /// The last completed measurement took this long, and the one in
    /// progress has already taken as long: two in a row took at least this.
    Twice(Duration),
    /// The server did not answer the measurement.
    Failed,
    /// The server refused the measurement's connection: nothing listens
    /// (conclusive, unlike a timeout or a 5xx, so down at once).
    Refused,
    /// A reading of the server's status page; `None`: the read failed.
    Status(Option<status::PageReading>),
    /// A read of the status page, sent at this instant, went overdue, and
    /// the page has not been answered since; `None`: it is answered again.
    Stalled(Option<std::time::Instant>),
}

/// The current reading with its sequence number and time, as published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// State, smoothed TUFR and load.
    pub reading: Reading,
    /// Sequence number of this reading.
    pub seq: u64,
    /// When it was made, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Sequence numbers that increase strictly, across restarts too: each is the
/// current time in microseconds since the Unix epoch, or one more than the
/// previous number if the clock has not moved on (or went back).
#[derive(Debug, Clone, Default)]
pub struct SeqClock(Arc<AtomicU64>);

impl SeqClock {
    /// The next number.
    pub fn next(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut last = self.0.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self
                .0
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How often the smoother re-evaluates without samples (to notice silence).
const SMOOTHER_TICK: Duration = Duration::from_millis(500);

/// Runs the agent until `shutdown`, then sends the draining push.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = config
        .push_tls
        .apply(reqwest::Client::builder().pool_max_idle_per_host(4))
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for the pushes: {e}"))?
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {}", cause_chain(&e)))?;
    let seq = SeqClock::default();
    let measuring = CancellationToken::new();
    let tasks = TaskTracker::new();

    let (samples_tx, samples_rx) = mpsc::channel(256);
    let (reports_tx, reports_rx) = watch::channel(None);
    if let Some(active) = config.active.clone() {
        info!(url = %active.url, interval = ?active.interval, "measuring actively");
        tasks.spawn(
            active::measure(
                active,
                client.clone(),
                samples_tx.clone(),
                reports_rx.clone(),
                measuring.clone(),
            )
            .instrument(info_span!("active")),
        );
    }
    if let Some(passive) = config.passive.clone() {
        info!(log = %passive.log.display(), "measuring passively");
        let (tx, stop) = (samples_tx.clone(), measuring.clone());
        tasks.spawn_blocking(move || follow_log(passive, tx, stop));
    }
    if let Some(status) = config.status.clone() {
        info!(url = %status.url, format = ?status.format, workers = ?status.workers, "reading the status page");
        if status.workers.is_none() && status.format == status::StatusFormat::Nginx {
            info!(
                "nginx's status page has no worker count: no service time without [status] workers"
            );
        }
        tasks.spawn(
            status::watch(
                status,
                client.clone(),
                samples_tx.clone(),
                measuring.clone(),
            )
            .instrument(info_span!("status")),
        );
    }
    drop(samples_tx);

    tasks.spawn(
        smooth_samples(
            Smoother::new(config.smoothing),
            LoadTracker::new(
                config.smoothing.time_constant,
                config.status.as_ref().and_then(|s| s.workers),
            ),
            samples_rx,
            reports_tx,
            seq.clone(),
            measuring.clone(),
        )
        .instrument(info_span!("smooth")),
    );

    let server = config.server.to_string();
    publish::start(
        config.probe_file.clone(),
        server.clone(),
        reports_rx.clone(),
        measuring.clone(),
        &tasks,
    )
    .await?;
    if let Some(path) = &config.probe_file.path {
        info!(path = %path.display(), "writing the probe file");
    }

    let pusher = push::Pusher {
        server,
        groups: config.groups.clone(),
        key: config.key.clone(),
        client,
        timeout: config.push_timeout,
        seq,
    };
    if let Some(join) = &config.join {
        for url in &config.push_urls {
            tasks.spawn(
                join::join(
                    pusher.client.clone(),
                    url.clone(),
                    pusher.server.clone(),
                    config.groups.clone(),
                    join.clone(),
                    measuring.clone(),
                )
                .instrument(info_span!("join", %url)),
            );
        }
    }
    for url in &config.push_urls {
        tasks.spawn(
            pusher
                .clone()
                .run_target(
                    url.clone(),
                    config.policy,
                    reports_rx.clone(),
                    measuring.clone(),
                )
                .instrument(info_span!("push", %url)),
        );
    }
    info!(server = %config.server, groups = ?config.groups, targets = config.push_urls.len(), "agent running");
    anycast_daemon::notify::ready();

    shutdown.cancelled().await;
    measuring.cancel();
    tasks.close();
    // Let the probe file writer stop before the last word is written.
    if tokio::time::timeout(Duration::from_secs(2), tasks.wait())
        .await
        .is_err()
    {
        warn!("measurement tasks did not stop within 2 s");
    }
    publish::write_draining(
        &config.probe_file,
        &pusher.server,
        pusher.seq.next(),
        unix_millis(),
    );
    pusher.drain(&config.push_urls).await;
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        warn!("tasks did not stop within 5 s");
    }
    info!("stopped");
    Ok(())
}

/// Feeds samples to the smoother and the load tracker, and publishes each
/// new reading.
async fn smooth_samples(
    mut smoother: Smoother,
    mut load: LoadTracker,
    mut samples: mpsc::Receiver<Sample>,
    reports: watch::Sender<Option<Report>>,
    seq: SeqClock,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SMOOTHER_TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            sample = samples.recv() => {
                let now = std::time::Instant::now();
                match sample {
                    None => return,
                    Some(Sample::Tufr(t)) => {
                        smoother.sample(t, now);
                        load.measured(t, now);
                    }
                    Some(Sample::AtLeast(t)) => smoother.at_least(t, now),
                    Some(Sample::Twice(t)) => smoother.twice(t),
                    Some(Sample::Failed) => smoother.failure(),
                    Some(Sample::Refused) => smoother.refused(),
                    Some(Sample::Status(page)) => load.status(page, now),
                    Some(Sample::Stalled(since)) => load.stalled(since),
                }
            }
        }
        let Some(reading) = smoother.reading(std::time::Instant::now()) else {
            continue;
        };
        let reading = Reading {
            load: load.load(),
            ..reading
        };
        reports.send_if_modified(|current| {
            if current.is_some_and(|c| c.reading == reading) {
                return false;
            }
            if current.is_none_or(|c| c.reading.state != reading.state) {
                info!(state = ?reading.state, tufr_ms = ?reading.tufr_ms, "server state");
            }
            *current = Some(Report {
                reading,
                seq: seq.next(),
                at_ms: unix_millis(),
            });
            true
        });
    }
}

/// Follows the access log (blocking file I/O, on its own thread), sending
/// the median of each poll's request times as one sample: the smoother
/// weighs samples by time, so a burst of lines read at one instant must count
/// as one observation, and the median keeps one odd line from dominating it.
fn follow_log(config: PassiveConfig, samples: mpsc::Sender<Sample>, shutdown: CancellationToken) {
    let mut follower = match passive::LogFollower::open(&config.log, config.format, false) {
        Ok(f) => f,
        Err(error) => {
            warn!(log = %config.log.display(), %error, "cannot follow the access log");
            return;
        }
    };
    let mut reported_error = false;
    while !shutdown.is_cancelled() {
        match follower.poll() {
            Ok(mut times) if !times.is_empty() => {
                reported_error = false;
                times.sort_unstable();
                let median = times[times.len() / 2];
                if samples.blocking_send(Sample::Tufr(median)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                if !reported_error {
                    warn!(log = %config.log.display(), %error, "cannot read the access log");
                    reported_error = true;
                }
            }
        }
        std::thread::sleep(config.poll);
    }
}
