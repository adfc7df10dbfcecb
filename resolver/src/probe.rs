//! The prober: fetches each member's probe file periodically from this
//! resolver's vantage point, and keeps each member's estimator.
//!
//! One task per member of every group (following membership changes), each
//! probing every `probe_interval`
//! (jittered by ±10 % so probes of many members spread out), sooner after a
//! failure (so a dead member is confirmed dead quickly) and while a member
//! that was down answers again (so it is confirmed back quickly: a server
//! whose queue has just drained is the fastest there is), at once after a
//! probe the fit missed by much (so a changed path is confirmed within
//! three of its round trips), never more than
//! `MAX_CONCURRENT_PROBES` at once across the resolver. The probe traffic a
//! member sees is therefore fixed by configuration, whatever the query rate.
//!
//! A probe opens a fresh connection (no keep-alive), as a new client would,
//! so its response time includes connection setup along the path. The body
//! is read to the last byte, at most [`MAX_PROBE_BYTES`]; a probe that times
//! out, is refused, answers a non-2xx status, is too large or is not a probe
//! file is a failure.

use anycast_daemon::tls::cause_chain;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anycast_proto::AnycastName;
use anycast_proto::probe::{MAX_PROBE_BYTES, ProbeFile};
use rand::RngExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use crate::estimate::{Health, MemberEstimator, ProbeSample};
use crate::groups::{Directory, Group, Member, PerMember};

/// Probes in flight at once, over every member.
pub const MAX_CONCURRENT_PROBES: usize = 64;

/// Delay before re-probing a member whose probe just failed, or that is
/// down and whose probe just succeeded (on its way back up).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// Delay before re-probing a member whose probe the fit missed by much: none.
/// The misses that restart the fit must come in a row, and a probe over a
/// path that grew takes that path's round trips (two of 150 ms take 300 ms
/// and more): waiting between them as well kept clients on the longer path
/// for more than a second after its first probe showed it.
pub const CONFIRM_AFTER_MISS: Duration = Duration::ZERO;

/// Every member's estimator, fed by the prober.
#[derive(Debug, Default)]
pub struct ProbeBoard {
    members: Mutex<PerMember<MemberEstimator>>,
}

impl ProbeBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        group: &Group,
        member: &Member,
        f: impl FnOnce(&mut MemberEstimator) -> T,
    ) -> T {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        f(
            members.get_or_insert_with(&group.name, member.endpoint(), || {
                MemberEstimator::new(group.estimator)
            }),
        )
    }

    /// Records a successful probe of `member`; returns when to probe it
    /// next: after `interval`, or sooner to confirm what this probe showed.
    pub fn probe_ok(
        &self,
        group: &Group,
        member: &Member,
        sample: ProbeSample,
        now: Instant,
        interval: Duration,
    ) -> Duration {
        self.with(group, member, |e| {
            let was = e.health();
            e.probe_ok(sample, now);
            if was == Health::Down && e.health() == Health::Up {
                info!(group = %group.name, member = %member.endpoint(), "member is up again");
            }
            if e.health() == Health::Down {
                RETRY_AFTER_FAILURE
            } else if e.missing() {
                CONFIRM_AFTER_MISS
            } else {
                interval
            }
        })
    }

    /// Records a failed probe of `member`.
    pub fn probe_failed(&self, group: &Group, member: &Member, reason: &str) {
        self.with(group, member, |e| {
            let was = e.health();
            e.probe_failed();
            if was != Health::Down && e.health() == Health::Down {
                info!(group = %group.name, member = %member.endpoint(), %reason, "member is down: probes fail");
            }
        });
    }

    /// Reads the member's estimator under the lock, without copying it (a
    /// fresh one if never probed): the DNS path's way in.
    pub fn read<T>(
        &self,
        group: &Group,
        member: &Member,
        f: impl FnOnce(&MemberEstimator) -> T,
    ) -> T {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        match members.get(&group.name, member.endpoint()) {
            Some(estimator) => f(estimator),
            None => f(&MemberEstimator::new(group.estimator)),
        }
    }

    /// A copy of the member's estimator, for the views.
    pub fn estimator(&self, group: &Group, member: &Member) -> MemberEstimator {
        self.read(group, member, MemberEstimator::clone)
    }
}

/// Keeps one probing task per member of every group, following membership
/// changes: tasks start for new members and for groups whose settings
/// changed, and stop for members that left. What was measured of a member
/// stays on the board across such restarts.
/// `settings`: the local address probes are sent from (`None`: the
/// system's choice) and the CAs `https://` probes trust. Every probe opens a
/// new connection (no pool), so a probe over TLS pays the handshake, as a
/// client does.
pub fn start(
    mut directory: watch::Receiver<Arc<Directory>>,
    board: Arc<ProbeBoard>,
    settings: &crate::config::ProbeConfig,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    let builder = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(settings.source);
    let client = settings
        .tls
        .apply(builder)
        .map_err(|e| anyhow::anyhow!("cannot set up the probes' TLS: {e}"))?
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the probe HTTP client: {}", cause_chain(&e)))?;
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    let spawner = tasks.clone();
    tasks.spawn(async move {
        let mut running: HashMap<(AnycastName, SocketAddr), (Arc<Group>, CancellationToken)> =
            HashMap::new();
        loop {
            let current = directory.borrow_and_update().clone();
            let mut wanted = HashMap::new();
            for group in current.groups() {
                for (index, member) in group.members.iter().enumerate() {
                    wanted.insert(
                        (group.name.clone(), member.endpoint()),
                        (group.clone(), index),
                    );
                }
            }
            running.retain(|key, (group, stop)| {
                let keep = wanted.get(key).is_some_and(|(g, _)| Arc::ptr_eq(g, group));
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (key, (group, index)) in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                let stop = shutdown.child_token();
                let span = info_span!("probe", group = %key.0, member = %key.1);
                spawner.spawn(
                    probe_member(
                        group.clone(),
                        index,
                        client.clone(),
                        permits.clone(),
                        board.clone(),
                        stop.clone(),
                    )
                    .instrument(span),
                );
                running.insert(key, (group, stop));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = directory.changed() => if changed.is_err() { return },
            }
        }
    });
    Ok(())
}

async fn probe_member(
    group: Arc<Group>,
    index: usize,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    board: Arc<ProbeBoard>,
    shutdown: CancellationToken,
) {
    let member = &group.members[index];
    let settings = group.probing;
    let every = group.probe_every();
    // Start at a random point of the interval, so members are not probed in step.
    let mut wait = every.mul_f64(rand::rng().random::<f64>());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // Stopped mid-probe (member removed, shutdown): drop the probe.
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = async {
                let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
                fetch(&client, &member.probe, settings.timeout).await
            } => outcome,
        };
        crate::telemetry::probed(
            outcome.is_ok(),
            outcome.as_ref().map_or(Duration::ZERO, |(rt, _)| *rt),
        );
        wait = match outcome {
            Ok((rt, file)) => {
                let sample = ProbeSample {
                    rt_ms: rt.as_secs_f64() * 1000.0,
                    tufr_ms: file.tufr_ms,
                };
                debug!(rt_ms = sample.rt_ms, tufr_ms = ?sample.tufr_ms, "probed");
                let interval = every.mul_f64(0.9 + 0.2 * rand::rng().random::<f64>());
                board.probe_ok(&group, member, sample, Instant::now(), interval)
            }
            Err(reason) => {
                debug!(%reason, "probe failed");
                board.probe_failed(&group, member, &reason);
                RETRY_AFTER_FAILURE
            }
        };
    }
}

/// Fetches a probe file, timing the whole exchange to the last byte.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(Duration, ProbeFile), String> {
    let start = Instant::now();
    let exchange = async {
        let mut response = client.get(url).send().await.map_err(|e| cause_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| cause_chain(&e))? {
            if body.len() + chunk.len() > MAX_PROBE_BYTES {
                return Err(format!("probe file larger than {MAX_PROBE_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no complete answer within {timeout:?}"))??;
    let rt = start.elapsed();
    let file = ProbeFile::from_json(&body).map_err(|e| e.to_string())?;
    Ok((rt, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::AnswerMode;
    use anycast_proto::Zone;

    /// The prober's next probe: after the interval while the fit holds, at
    /// once after a probe it misses by much, until the misses restart it.
    #[test]
    fn a_probe_the_fit_misses_is_confirmed_at_once() {
        let zone = Zone::new("any.example.net").unwrap();
        let member = Member::new("127.0.1.1:80".parse().unwrap());
        let group = Group::new(
            AnycastName::new("web", None, zone).unwrap(),
            5,
            AnswerMode::One,
            vec![member.clone()],
        );
        let board = ProbeBoard::new();
        let interval = Duration::from_secs(1);
        let start = Instant::now();
        let probe = |i: u32, rt_ms: f64| {
            let sample = ProbeSample {
                rt_ms,
                tufr_ms: Some(5.0),
            };
            board.probe_ok(&group, &member, sample, start + interval * i, interval)
        };
        // A 20 ms path, probed as usual.
        for i in 0..5 {
            assert_eq!(probe(i, 25.0), interval);
        }
        // The path grows to 300 ms: the next two probes go at once, and the
        // third miss restarts the fit, which then holds.
        assert_eq!(probe(5, 305.0), CONFIRM_AFTER_MISS);
        assert_eq!(probe(6, 305.0), CONFIRM_AFTER_MISS);
        assert_eq!(probe(7, 305.0), interval);
        assert_eq!(probe(8, 305.0), interval);
        // One miss that the next probe dismisses: back to the interval.
        assert_eq!(probe(9, 30.0), CONFIRM_AFTER_MISS);
        assert_eq!(probe(10, 305.0), interval);
    }
}
