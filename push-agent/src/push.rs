//! Pushing readings to one resolver, by the [`PushPolicy`].
//!
//! One task per target, so a resolver that is down delays only its own
//! pushes. The task always sends the latest reading (a `watch` channel holds
//! only that): nothing queues while a target is unreachable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anycast_proto::push::{MAX_TUFR_MS, Push, PushKey, SIGNATURE_HEADER, ServerState};
use rand::RngExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::load::Load;
use crate::policy::{PushPolicy, TargetState};
use crate::smooth::Reading;
use crate::{Report, SeqClock};

/// What every push of this agent has in common.
#[derive(Debug, Clone)]
pub struct Pusher {
    /// The member identity, `address:port`.
    pub server: String,
    /// The groups reported for.
    pub groups: Vec<String>,
    /// The signing key.
    pub key: PushKey,
    /// The HTTP client (shared connection pool).
    pub client: reqwest::Client,
    /// Timeout of one push.
    pub timeout: Duration,
    /// Sequence numbers.
    pub seq: SeqClock,
}

impl Pusher {
    /// Signs and sends one reading to `url`.
    pub async fn send(&self, url: &str, reading: &Reading) -> Result<(), String> {
        let seq = self.seq.next();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let push = Push {
            server: self.server.clone(),
            groups: self.groups.clone(),
            state: reading.state,
            tufr_ms: reading.tufr_ms,
            seq,
            sent_at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            in_flight: reading.load.in_flight,
            workers: reading.load.workers,
            service_ms: reading.load.service_ms,
            stalled_ms: reading
                .load
                .stalled_since
                .map(|since| since.elapsed().as_secs_f64() * 1000.0)
                .map(|ms| ms.min(MAX_TUFR_MS)),
        };
        let body = push.to_json();
        let signature = self.key.sign(seq, now.as_secs(), &body);
        let response = self
            .client
            .post(url)
            .timeout(self.timeout)
            .header(SIGNATURE_HEADER, signature.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| anycast_daemon::tls::cause_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = tokio::time::timeout(self.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(format!("{status}: {}", text.trim()))
    }

    /// Pushes to `url` by `policy` until `shutdown`.
    pub async fn run_target(
        self,
        url: String,
        policy: PushPolicy,
        mut reports: watch::Receiver<Option<Report>>,
        shutdown: CancellationToken,
    ) {
        let mut state = TargetState::default();
        let mut failing = false;
        loop {
            let reading = reports.borrow_and_update().map(|r| r.reading);
            let Some(reading) = reading else {
                // Nothing measured yet.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = reports.changed() => if changed.is_err() { return } else { continue },
                }
            };
            let now = Instant::now();
            let due = policy.due(&state, &reading, now.into_std());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = reports.changed() => { if changed.is_err() { return } continue; }
                _ = tokio::time::sleep_until(Instant::from_std(due)) => {}
            }
            match self.send(&url, &reading).await {
                Ok(()) => {
                    if failing {
                        info!(%url, "pushes reach the resolver again");
                        failing = false;
                    }
                    debug!(
                        %url,
                        state = ?reading.state,
                        tufr_ms = ?reading.tufr_ms,
                        in_flight = ?reading.load.in_flight,
                        stalled = reading.load.stalled_since.is_some(),
                        "pushed"
                    );
                    policy.pushed(&mut state, reading, Instant::now().into_std());
                }
                Err(error) => {
                    let jitter = rand::rng().random::<f64>();
                    let delay = policy.failed(&mut state, Instant::now().into_std(), jitter);
                    if !failing {
                        warn!(%url, %error, "push failed; retrying with backoff");
                        failing = true;
                    } else {
                        debug!(%url, %error, ?delay, "push failed again");
                    }
                }
            }
        }
    }

    /// The last word at shutdown: tell every target, at once, that this
    /// member is draining.
    pub async fn drain(&self, urls: &[String]) {
        let draining = Reading {
            state: ServerState::Draining,
            tufr_ms: None,
            load: Load::default(),
        };
        let mut sends = tokio::task::JoinSet::new();
        for url in urls {
            let (pusher, url) = (self.clone(), url.clone());
            sends.spawn(async move {
                match pusher.send(&url, &draining).await {
                    Ok(()) => info!(%url, "sent draining push"),
                    Err(error) => warn!(%url, %error, "draining push failed"),
                }
            });
        }
        sends.join_all().await;
    }
}
