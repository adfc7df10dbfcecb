//! Estimating each member's response time from pushes and probes.
//!
//! Pure code: every method takes `now`, nothing reads a clock. The maths,
//! with every constant, is in `docs/estimator.md`; in short:
//!
//! * A **probe** measures the whole response time `RT` along the resolver's
//!   path and reads the TUFR the server's agent put in the probe file. It
//!   calibrates the path: by default a robust fit (medians) of `RT = base +
//!   k * TUFR` over recent probes, or, with `calibration = "ratio"`, the
//!   paper's scaling factor `SF = RT / TUFR` (smoothed).
//! * A **push** brings a fresh TUFR; the estimate follows it at once, without
//!   waiting for a probe: `RT_est = SF * TUFR` (or `base + k * TUFR`).
//! * The TUFR used in the ratio is floored (`tufr_floor`), so a near-zero TUFR
//!   cannot blow `SF` up.
//! * No push for `push_stale_after`: the push is no longer trusted and the
//!   estimate falls back to the probe-only smoothed RT.
//! * Health: `fail_after` failed probes in a row make a member down; it is up
//!   again after `recover_after` successful ones (hysteresis).
//! * **The queue model** (the default, `load_model = "queue"`): the time a
//!   request answered now will spend in the server is predicted from the
//!   queue the latest push reported (requests in flight, workers, service
//!   time) plus what this resolver has handed out since ([`Handed`]), and
//!   calibrated like a pushed TUFR. With `load_model = "pushed"` (the
//!   paper's), the pushed TUFR is taken as it is.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anycast_proto::push::ServerState;

use crate::handout::{Handed, Trip};

/// How probes calibrate pushed TUFRs into response times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// The paper's hybrid: `RT_est = SF * TUFR`, `SF = RT / TUFR` per probe.
    Ratio,
    /// `RT_est = base + k * TUFR`, fitted over recent probes (the default:
    /// better than the ratio on the testbed, `docs/results.md`).
    #[default]
    Affine,
}

/// What the time in the server of a request answered now is taken to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadModel {
    /// The pushed TUFR as it is (the paper's).
    Pushed,
    /// Predicted from the pushed queue and this resolver's handouts since
    /// (the default: no herding onto the best member between pushes).
    #[default]
    Queue,
}

/// Probes whose ratios the scaling factor is the median of (fixed). A median
/// rather than an average: one probe that met a slow request (a heavy-tailed
/// service time, a retransmission) would otherwise move SF, and every
/// estimate until the next probes, by half its excess.
pub const SF_WINDOW: usize = 5;

/// Probes in a row that the fit misses on the same side, each by more than
/// [`MISS_RELATIVE`] of its prediction (and [`MISS_FLOOR_MS`]), and, above
/// the fit, that agree with each other on the path (their `RT - TUFR`
/// within [`MISS_RELATIVE`] of its mean, or [`MISS_FLOOR_MS`], of each
/// other), after which the fit forgets every older probe: the line no
/// longer describes the member (fixed). A longer path moves every probe up
/// by the same amount; the queue a probe meets on a loaded server, which
/// the probe file's smoothed TUFR does not show, moves each up by its own.
/// Below the fit there is no such queue: a probe cannot beat the path, so
/// probes well below it say the path is shorter, however much their own
/// service times scatter them.
const MISSES_TO_REFIT: u32 = 3;

/// A probe this far from the fit's prediction, relatively, is a miss.
const MISS_RELATIVE: f64 = 0.25;

/// ... and at least this far, in milliseconds.
const MISS_FLOOR_MS: f64 = 2.0;

/// Two probes whose TUFRs differ by this or less say nothing of the slope
/// (fixed, milliseconds).
const MIN_TUFR_SPREAD_MS: f64 = 1.0;

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    median_of_sorted(&values)
}

/// [`median`] of values already in order.
fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The median of `slopes` if their middle half is positive and within a
/// factor of two (the probes agree on a slope), else `None`.
fn agreed_slope(mut slopes: Vec<f64>) -> Option<f64> {
    slopes.sort_by(f64::total_cmp);
    let n = slopes.len();
    let (q1, q3) = (*slopes.get(n / 4)?, *slopes.get(3 * n / 4)?);
    (q1 > 0.0 && q3 <= 2.0 * q1)
        .then(|| median_of_sorted(&slopes))
        .flatten()
}

/// Estimation parameters (per group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorConfig {
    /// Ratio or affine.
    pub calibration: Calibration,
    /// TUFR below this is taken as this in the ratio (milliseconds).
    pub tufr_floor_ms: f64,
    /// Weight of a new probe in the smoothed probe-only RT (0..=1).
    pub probe_weight: f64,
    /// A push older than this is not trusted any more.
    pub push_stale_after: Duration,
    /// Failed probes in a row that make a member down.
    pub fail_after: u32,
    /// Successful probes in a row that bring it back.
    pub recover_after: u32,
    /// Probes kept for the affine fit.
    pub affine_window: usize,
    /// Pushed TUFR as it is, or the queue model.
    pub load_model: LoadModel,
    /// Resolvers answering the group's clients, this one included: each
    /// counts its own handouts this many times (the others, seeing the
    /// same pushes, hand out as many between two of them).
    pub resolvers: u32,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            calibration: Calibration::Affine,
            tufr_floor_ms: 1.0,
            probe_weight: 0.5,
            push_stale_after: Duration::from_secs(30),
            fail_after: 2,
            recover_after: 2,
            affine_window: 16,
            load_model: LoadModel::Queue,
            resolvers: 1,
        }
    }
}

/// The latest push of a member, as the estimator needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushedLoad {
    /// What the agent says.
    pub state: ServerState,
    /// Its smoothed TUFR, when up.
    pub tufr_ms: Option<f64>,
    /// When it arrived.
    pub received: Instant,
    /// Requests in the server at the agent's latest status reading.
    pub in_flight: Option<u32>,
    /// Requests the server serves at once.
    pub workers: Option<u32>,
    /// Its time until first read when no request waits.
    pub service_ms: Option<f64>,
    /// How long the agent's status read had waited, unanswered, when the
    /// push came ([`Self::stall_ms`]).
    pub stalled_ms: Option<f64>,
}

impl PushedLoad {
    /// How long the server has left the agent's status read unanswered by
    /// `now`, if it had when the push came: the pushed stall grown by the
    /// time since, as the read is still waiting until a push says
    /// otherwise (the agent pushes the end of a stall at once).
    pub fn stall_ms(&self, now: Instant) -> Option<f64> {
        self.stalled_ms
            .map(|ms| ms + now.saturating_duration_since(self.received).as_secs_f64() * 1000.0)
    }

    /// The time a request answered now will spend in the server, by the
    /// queue model, given the resolver's handouts since this push; `None`
    /// without a TUFR (the server is not up).
    ///
    /// With the queue and the workers known: the queue now is `Q = in_flight
    /// + since_push` (at least 0), and a new request waits for `max(0, Q + 1
    /// - workers)` departures, one every `service / workers`:
    ///
    /// ```text
    /// server = service + max(0, Q + 1 - workers) * service / workers
    /// ```
    ///
    /// (The agent leaves `in_flight` out when its status page stops
    /// answering: the TUFR then rules, below.)
    ///
    /// Without the queue: the pushed TUFR plus, for every request handed out
    /// since the push, `service / workers` (as if every worker were busy:
    /// the cautious reading of a queue not known), or `service` without the
    /// workers either (as if served one at a time).
    ///
    /// A stall ([`Self::stall_ms`]) adds to either: a server that has left
    /// its status page unanswered for `S` has stopped serving, the
    /// requests in it wait where they are, and a new request waits for the
    /// rest of the stall (taken to be as long as it has lasted so far: a
    /// pause that has lasted long is likely to last) and then for its turn
    /// as before. The wait it adds for the others
    /// (`added_ms`) is its turn's, not the stall's, which they meet anyway.
    pub fn predicted_server_ms(&self, handed: &Handed, now: Instant) -> Option<QueueEstimate> {
        let tufr = self.tufr_ms?;
        let service = self.service_ms.unwrap_or(tufr).min(tufr).max(0.0);
        let (queue, server_ms) = match (self.in_flight, self.workers) {
            (Some(in_flight), Some(workers)) if workers > 0 => {
                let queue = (f64::from(in_flight) + handed.since_push).max(0.0);
                let c = f64::from(workers);
                let waiting = (queue + 1.0 - c).max(0.0);
                (Some(queue), service + waiting * service / c)
            }
            (_, workers) => (
                None,
                tufr + handed.since_push.max(0.0) * service
                    / f64::from(workers.unwrap_or(1).max(1)),
            ),
        };
        Some(QueueEstimate {
            queue,
            since_push: handed.since_push,
            server_ms: server_ms + self.stall_ms(now).unwrap_or(0.0),
            added_ms: (server_ms - service).max(0.0),
        })
    }
}

/// The queue model's reading of a member.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QueueEstimate {
    /// Requests in the server now, by the model (`None` when the push does
    /// not tell the queue and the workers).
    pub queue: Option<f64>,
    /// Requests added since the push by this resolver's handouts (times
    /// the group's `resolvers`; negative: fewer).
    pub since_push: f64,
    /// The time a request answered now will spend in the server.
    pub server_ms: f64,
    /// The wait a request answered now adds to the requests that will
    /// arrive behind it while this queue lasts: as much as its own wait
    /// (`server_ms` less the service time). A wait that grows by one
    /// departure interval per request is a linear latency, and the marginal
    /// cost of a linear latency `l(x) = a + b x` is `l(x) + b x`: the
    /// requester's own time plus as much again of queueing for the others.
    pub added_ms: f64,
}

/// One successful probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSample {
    /// Whole response time, to the last byte.
    pub rt_ms: f64,
    /// The TUFR in the probe file (absent if the agent says it is down).
    pub tufr_ms: Option<f64>,
}

/// Where an estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Pushed TUFR calibrated by probes (the paper's hybrid).
    Hybrid,
    /// Probes only: no fresh push, or no TUFR to calibrate with.
    ProbeOnly,
    /// A fresh push but no successful probe yet (no path information).
    PushOnly,
    /// Nothing measured yet.
    None,
}

/// A member's estimates for every measured metric.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// Estimated response time (metric `rt`), milliseconds.
    pub rt_ms: Option<f64>,
    /// What selection ranks the member by for `rt`, milliseconds: with the
    /// queue model, the response time plus the wait an answer adds to the
    /// requests after it at the server ([`QueueEstimate::added_ms`]), so
    /// that a queue is shared out as the clients' mean time, not each
    /// request's own, wants; otherwise `rt_ms`.
    pub rank_ms: Option<f64>,
    /// The time in the server (metric `load`), milliseconds: the pushed,
    /// fresh TUFR, or what the queue model predicts.
    pub load_ms: Option<f64>,
    /// Smoothed probe response time (metric `path`), milliseconds.
    pub path_ms: Option<f64>,
    /// The smoothed scaling factor (ratio calibration).
    pub sf: Option<f64>,
    /// The fit of the affine calibration.
    pub fit: Option<Fit>,
    /// The queue model's reading, when it applies.
    pub queue: Option<QueueEstimate>,
    /// Where `rt_ms` comes from.
    pub source: Source,
}

/// The affine calibration's fit: `RT = base + k * TUFR`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fit {
    /// The response time without time in the server (path, transfer),
    /// milliseconds.
    pub base_ms: f64,
    /// Response time per unit of TUFR.
    pub k: f64,
    /// The base with `k = 1`, `median(RT - TUFR)` (at least 0): what the
    /// queue model adds its predicted time in the server to, since it
    /// predicts that time in the server's own units (requests in flight
    /// and their service time), where a fitted `k` has nothing to correct.
    pub base_one_ms: f64,
}

impl Fit {
    /// The response time this fit predicts for `tufr_ms`.
    pub fn rt_ms(&self, tufr_ms: f64) -> f64 {
        self.base_ms + self.k * tufr_ms
    }
}

/// Probe health with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not probed yet.
    Unknown,
    /// Probes succeed.
    Up,
    /// `fail_after` probes failed in a row; not yet `recover_after` successes.
    Down,
}

/// What the estimator knows of one member from probes.
#[derive(Debug, Clone)]
pub struct MemberEstimator {
    config: EstimatorConfig,
    sf: Option<f64>,
    fit: Option<Fit>,
    path_ms: Option<f64>,
    last_probe: Option<(ProbeSample, Instant)>,
    recent: VecDeque<(f64, f64)>,
    /// The probes in a row the fit missed on one side (`above`), each as
    /// `RT - TUFR`.
    misses: Vec<f64>,
    /// Whether the misses were above the fit.
    above: bool,
    health: Health,
    failures: u32,
    successes: u32,
}

impl MemberEstimator {
    /// A member never probed.
    pub fn new(config: EstimatorConfig) -> Self {
        Self {
            config,
            sf: None,
            fit: None,
            path_ms: None,
            last_probe: None,
            recent: VecDeque::new(),
            misses: Vec::new(),
            above: false,
            health: Health::Unknown,
            failures: 0,
            successes: 0,
        }
    }

    /// Takes a new configuration, keeping what was measured.
    pub fn reconfigure(&mut self, config: EstimatorConfig) {
        self.config = config;
        while self.recent.len() > self.kept() {
            self.recent.pop_front();
        }
        if self.sf.is_some() {
            self.calibrate();
        }
    }

    /// Probes kept: enough for the affine fit and for the scaling factor.
    fn kept(&self) -> usize {
        self.config.affine_window.max(SF_WINDOW)
    }

    /// The scaling factor: the median of `RT / max(TUFR, floor)` over the
    /// last [`SF_WINDOW`] probes.
    fn median_ratio(&self) -> Option<f64> {
        let floor = self.config.tufr_floor_ms;
        median(
            (self.recent.iter().rev().take(SF_WINDOW))
                .map(|(tufr, rt)| rt / tufr.max(floor))
                .collect(),
        )
    }

    /// Recomputes both calibrations from the recent probes.
    fn calibrate(&mut self) {
        self.sf = self.median_ratio();
        self.fit = self.fitted();
    }

    /// Records a successful probe.
    pub fn probe_ok(&mut self, sample: ProbeSample, now: Instant) {
        let w = self.config.probe_weight;
        self.path_ms = Some(
            self.path_ms
                .map_or(sample.rt_ms, |o| o + w * (sample.rt_ms - o)),
        );
        if let Some(tufr) = sample.tufr_ms {
            self.count_miss(tufr, sample.rt_ms);
            if self.misses.len() >= MISSES_TO_REFIT as usize {
                // The member changed (a path, or what the probes' own timing
                // sees): only the probes that showed it stay.
                let keep = MISSES_TO_REFIT as usize - 1;
                while self.recent.len() > keep {
                    self.recent.pop_front();
                }
                self.misses.clear();
            }
            self.recent.push_back((tufr, sample.rt_ms));
            while self.recent.len() > self.kept() {
                self.recent.pop_front();
            }
            self.calibrate();
        }
        self.last_probe = Some((sample, now));
        self.failures = 0;
        self.successes = self.successes.saturating_add(1);
        if self.health == Health::Unknown
            || (self.health == Health::Down && self.successes >= self.config.recover_after)
        {
            self.health = Health::Up;
        }
    }

    /// Counts a probe the current fit misses by much, on the same side as
    /// the ones before it.
    fn count_miss(&mut self, tufr: f64, rt: f64) {
        let Some(fit) = self.fit else { return };
        let predicted = fit.rt_ms(tufr);
        let off = rt - predicted;
        if off.abs() <= (MISS_RELATIVE * predicted).max(MISS_FLOOR_MS) {
            self.misses.clear();
            return;
        }
        if self.above != (off > 0.0) {
            self.misses.clear();
            self.above = off > 0.0;
        }
        self.misses.push(rt - tufr);
        // Above the fit, only the latest misses that agree on the path make
        // a run.
        while self.above && self.misses.len() > 1 {
            let (lo, hi, sum) = self.misses.iter().fold(
                (f64::INFINITY, f64::NEG_INFINITY, 0.0f64),
                |(lo, hi, sum), &path| (lo.min(path), hi.max(path), sum + path),
            );
            let mean = sum / self.misses.len() as f64;
            if hi - lo <= (MISS_RELATIVE * mean.abs()).max(MISS_FLOOR_MS) {
                break;
            }
            self.misses.remove(0);
        }
    }

    /// Records a failed probe (timeout, refused, error status, bad file).
    pub fn probe_failed(&mut self) {
        self.successes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.config.fail_after {
            self.health = Health::Down;
        }
    }

    /// Whether the last probe missed the fit by much (see
    /// [`MISSES_TO_REFIT`]): the prober confirms or dismisses it sooner.
    pub fn missing(&self) -> bool {
        !self.misses.is_empty()
    }

    /// Probe health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Failed probes in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last successful probe and when it was made.
    pub fn last_probe(&self) -> Option<(ProbeSample, Instant)> {
        self.last_probe
    }

    /// The estimates at `now`, given the member's latest push. With the
    /// queue model, `handed` gives this resolver's handouts to the member;
    /// it is asked with the [`Trip`] of a request as the pushed TUFR
    /// predicts it: the path's share of the fit's base before the server
    /// (three quarters: connection set-up and the request's way there), and
    /// the response time less the response's way back until it is done.
    pub fn estimate(
        &self,
        push: Option<&PushedLoad>,
        now: Instant,
        handed: impl FnOnce(Trip) -> Handed,
    ) -> Estimate {
        let fresh = push
            .filter(|p| now.saturating_duration_since(p.received) <= self.config.push_stale_after)
            .filter(|p| p.state == ServerState::Up && p.tufr_ms.is_some());
        let fresh_tufr = fresh.and_then(|p| p.tufr_ms);
        let calibrate = |server_ms: f64| match self.config.calibration {
            Calibration::Ratio => self
                .sf
                .map(|sf| sf * server_ms.max(self.config.tufr_floor_ms)),
            Calibration::Affine => self.fit.map(|f| f.rt_ms(server_ms)),
        };
        let pushed_rt = fresh_tufr.and_then(calibrate);
        let queue = match (self.config.load_model, fresh) {
            (LoadModel::Queue, Some(p)) => {
                let rt = pushed_rt.or(self.path_ms).or(fresh_tufr).unwrap_or(0.0);
                let base = self.fit.map_or(0.0, |f| f.base_ms).min(rt);
                let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
                let own = handed(Trip {
                    travel: ms(0.75 * base),
                    done: ms(rt - 0.25 * base),
                });
                p.predicted_server_ms(&own.times(self.config.resolvers), now)
            }
            _ => None,
        };
        let server_ms = queue.map(|q| q.server_ms).or(fresh_tufr);
        let response = |server_ms: f64| match (queue, self.config.calibration, self.fit) {
            // The queue model's time in the server is in the server's own
            // units: one for one, on the path alone.
            (Some(_), Calibration::Affine, Some(fit)) => Some(fit.base_one_ms + server_ms),
            _ => calibrate(server_ms),
        };
        let calibrated = server_ms.and_then(response);
        let (rt_ms, source) = match (calibrated, self.path_ms, server_ms) {
            (Some(rt), _, _) => (Some(rt), Source::Hybrid),
            (None, Some(path), _) => (Some(path), Source::ProbeOnly),
            (None, None, Some(server)) => (Some(server), Source::PushOnly),
            (None, None, None) => (None, Source::None),
        };
        let rank_ms = match queue {
            Some(q) if source == Source::Hybrid => response(q.server_ms + q.added_ms),
            _ => rt_ms,
        };
        Estimate {
            rt_ms,
            rank_ms,
            load_ms: server_ms,
            path_ms: self.path_ms,
            sf: self.sf,
            fit: self.fit,
            queue,
            source,
        }
    }

    /// The affine fit `RT = base + k * TUFR` over recent probes, robust to
    /// the probes a transient puts far off the line. `k` is the median of
    /// the slopes between every two probes whose TUFRs differ by more than
    /// a millisecond (Theil-Sen), taken only when the probes agree on it:
    /// the middle half of those slopes positive and within a factor of two.
    /// Otherwise (noise, a transient, fewer than three probes) `k = 1`: time
    /// spent in the server adds to the response time one for one. `base` is
    /// the median of `RT - k * TUFR`. `k` is kept within `[0.5, 20]` and
    /// `base` at or above zero.
    fn fitted(&self) -> Option<Fit> {
        let points = &self.recent;
        let slopes: Vec<f64> = points
            .iter()
            .enumerate()
            .flat_map(|(i, &(t1, r1))| {
                points
                    .range(i + 1..)
                    .filter(move |(t2, _)| (t2 - t1).abs() > MIN_TUFR_SPREAD_MS)
                    .map(move |&(t2, r2)| (r2 - r1) / (t2 - t1))
            })
            .collect();
        let base_for = |k: f64| median(points.iter().map(|(t, r)| r - k * t).collect());
        let agreed = agreed_slope(slopes)
            .filter(|_| points.len() >= 3)
            .map(|k| k.clamp(0.5, 20.0));
        // A slope that puts the path below zero does not describe these
        // probes (a few slow ones against a cluster of others can agree on
        // one): one for one then.
        let base_one = base_for(1.0)?;
        let (k, base) = match agreed.map(|k| (k, base_for(k))) {
            Some((k, Some(base))) if base >= 0.0 => (k, base),
            _ => (1.0, base_one),
        };
        Some(Fit {
            base_ms: base.max(0.0),
            k,
            base_one_ms: base_one.max(0.0),
        })
    }

    /// The affine fit as of the last probe ([`Self::fitted`]); `None`
    /// before the first probe with a TUFR.
    pub fn fit(&self) -> Option<Fit> {
        self.fit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// No handouts: the resolver has answered with nobody.
    fn alone(_: Trip) -> Handed {
        Handed::default()
    }

    fn push(tufr: f64, at: Instant) -> PushedLoad {
        PushedLoad {
            in_flight: None,
            workers: None,
            service_ms: None,
            state: ServerState::Up,
            tufr_ms: Some(tufr),
            received: at,
            stalled_ms: None,
        }
    }

    fn probe(rt: f64, tufr: f64) -> ProbeSample {
        ProbeSample {
            rt_ms: rt,
            tufr_ms: Some(tufr),
        }
    }

    fn rt(e: &MemberEstimator, p: &PushedLoad, now: Instant) -> f64 {
        e.estimate(Some(p), now, alone).rt_ms.unwrap()
    }

    fn ratio() -> EstimatorConfig {
        EstimatorConfig {
            calibration: Calibration::Ratio,
            ..EstimatorConfig::default()
        }
    }

    #[test]
    fn ratio_calibration_converges_on_a_constant_path() {
        // Path 40 ms, server 10 ms: RT 50, SF 5.
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(ratio());
        e.probe_ok(probe(80.0, 10.0), t0); // a noisy first probe
        for i in 1..10 {
            e.probe_ok(probe(50.0, 10.0), t0 + i * S);
        }
        let p = push(10.0, t0 + 10 * S);
        assert!((rt(&e, &p, t0 + 10 * S) - 50.0).abs() < 0.1);
        assert_eq!(
            e.estimate(Some(&p), t0 + 10 * S, alone).source,
            Source::Hybrid
        );
    }

    #[test]
    fn one_slow_probe_does_not_move_the_scaling_factor() {
        // Path 40 ms, server 10 ms; one probe meets a 300 ms request.
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(ratio());
        for i in 0..4 {
            e.probe_ok(probe(50.0, 10.0), t0 + i * S);
        }
        e.probe_ok(probe(340.0, 10.0), t0 + 4 * S);
        assert_eq!(e.estimate(None, t0 + 4 * S, alone).sf, Some(5.0));
        // A lasting change of path comes through once it is most of the window.
        for i in 5..8 {
            e.probe_ok(probe(90.0, 10.0), t0 + i * S);
        }
        assert_eq!(e.estimate(None, t0 + 8 * S, alone).sf, Some(9.0));
    }

    #[test]
    fn affine_calibration_converges_and_separates_path_from_load() {
        let t0 = Instant::now();
        let config = EstimatorConfig {
            calibration: Calibration::Affine,
            ..EstimatorConfig::default()
        };
        let mut e = MemberEstimator::new(config);
        for (i, tufr) in [5.0, 10.0, 20.0, 40.0, 10.0, 5.0].into_iter().enumerate() {
            e.probe_ok(probe(40.0 + tufr, tufr), t0 + (i as u32) * S);
        }
        let Fit {
            base_ms: path, k, ..
        } = e.fit().unwrap();
        assert!(
            (path - 40.0).abs() < 1e-6 && (k - 1.0).abs() < 1e-6,
            "{path} {k}"
        );
        // A TUFR never seen before is extrapolated along the fit.
        let p = push(100.0, t0 + 6 * S);
        assert!((rt(&e, &p, t0 + 6 * S) - 140.0).abs() < 1e-6);
    }

    #[test]
    fn probes_of_a_transient_do_not_bend_the_fit() {
        // A member 10 ms away whose server answers in 15-30 ms, and three
        // probes from the end of an overload, when the probe file's TUFR
        // (the agent's reading when the probe was served) was far from what
        // the probe met. Least squares through such a window says 41 ms for
        // a TUFR of 20 (base 30, k 0.57), and kept saying it until sixteen
        // probes had passed; the member answers in 30.
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        let overload = [(1421.0, 600.0), (535.0, 187.0), (801.0, 997.0)];
        let idle = (0..13).map(|i| {
            let tufr = 15.0 + f64::from(i % 4) * 5.0;
            (tufr, 10.0 + tufr + if i % 2 == 0 { 2.0 } else { -2.0 })
        });
        for (i, (tufr, rt)) in overload.into_iter().chain(idle).enumerate() {
            e.probe_ok(probe(rt, tufr), t0 + (i as u32) * S);
        }
        let est = rt(&e, &push(20.0, t0 + 16 * S), t0 + 16 * S);
        assert!((est - 30.0).abs() < 3.0, "{est}: {:?}", e.fit());
    }

    /// Issue 17: while another program loaded the machine's CPU, a 5 ms
    /// member's probes and its agent's measurements both stretched (the
    /// prober's and the agent's own timing wait for the CPU); the probes of
    /// the stall agreed on a slope of about 2.4 against the cluster of normal
    /// ones, the base went to 0, and the fit stayed bent until the stall's
    /// probes left the window: 16.7 ms estimated where the push said 7.0 and
    /// the probe 6.6, for more than 12 s. Now the slope is dropped once it
    /// puts the path below zero, and probes the fit keeps missing restart it.
    #[test]
    fn a_fit_bent_by_a_cpu_stall_recovers_within_three_probes() {
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        let normal = |i: u32| {
            (
                7.0 + f64::from(i % 3) * 0.3 - 0.3,
                6.6 + f64::from(i % 2) * 0.8 - 0.4,
            )
        };
        let stall = [
            (12.0, 29.0),
            (18.0, 44.0),
            (25.0, 61.0),
            (20.0, 47.0),
            (15.0, 37.0),
        ];
        let mut t = 0;
        let mut probe_at = |e: &mut MemberEstimator, (tufr, rt): (f64, f64)| {
            e.probe_ok(probe(rt, tufr), t0 + t * S);
            t += 1;
        };
        for i in 0..10 {
            probe_at(&mut e, normal(i));
        }
        for p in stall {
            probe_at(&mut e, p);
        }
        for i in 0..3 {
            probe_at(&mut e, normal(i));
        }
        let now = t0 + 18 * S;
        let est = rt(&e, &push(7.0, now), now);
        assert!((est - 6.6).abs() < 1.5, "{est}: {:?}", e.fit());
    }

    /// On a loaded server each probe meets its own queue, which the probe
    /// file's smoothed TUFR does not show: misses of every size on one side.
    /// They do not restart the fit (on the testbed, three of them made a
    /// 20 ms path's base 115 ms for seconds).
    #[test]
    fn scattered_misses_of_a_loaded_server_keep_the_fit() {
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        for i in 0..16 {
            e.probe_ok(probe(140.0 + f64::from(i % 3), 100.0), t0 + i * S);
        }
        let before = e.fit().unwrap();
        for (i, rt) in [(16, 260.0), (17, 190.0), (18, 330.0), (19, 205.0)] {
            e.probe_ok(probe(rt, 100.0), t0 + i * S);
        }
        assert!(
            (e.fit().unwrap().base_ms - before.base_ms).abs() < 5.0,
            "{:?}",
            e.fit()
        );
    }

    /// A route change moves every probe by the same amount: the fit follows
    /// within three probes, not once the median of sixteen has moved.
    #[test]
    fn a_path_change_is_followed_within_three_probes() {
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        for i in 0..16 {
            e.probe_ok(probe(30.0 + f64::from(i % 3), 10.0), t0 + i * S);
        }
        assert!((rt(&e, &push(10.0, t0), t0) - 31.0).abs() < 1.0);
        for i in 16..19 {
            e.probe_ok(probe(310.0 + f64::from(i % 3), 10.0), t0 + i * S);
        }
        let now = t0 + 19 * S;
        let est = rt(&e, &push(10.0, now), now);
        assert!((est - 311.0).abs() < 2.0, "{est}: {:?}", e.fit());
    }

    /// A shorter path under scattered service times (issue 17's path
    /// change: a member 120 ms away came to 20 ms, and its probes, one
    /// service time each, read 99, 51 and 115 ms): every probe is well
    /// below the fit, none agree on the path, and the fit follows within
    /// three probes.
    #[test]
    fn a_shorter_path_is_followed_through_scattered_probes() {
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        for i in 0..16 {
            e.probe_ok(probe(255.0 + f64::from(i % 3), 20.0), t0 + i * S);
        }
        for (i, rt) in [(16, 99.0), (17, 51.0), (18, 115.0)] {
            e.probe_ok(probe(rt, 20.0), t0 + i * S);
        }
        let now = t0 + 19 * S;
        let est = rt(&e, &push(20.0, now), now);
        assert!((est - 99.0).abs() < 2.0, "{est}: {:?}", e.fit());
    }

    #[test]
    fn probes_that_disagree_on_a_slope_leave_it_at_one() {
        // TUFRs a few milliseconds apart and response times that vary by
        // tens (one service time each): the slopes between them go from -22
        // to +13.5, and their median, clamped, would be 0.5.
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        let probes = [
            (16.0, 21.0),
            (14.0, 45.0),
            (14.0, 65.0),
            (18.0, 23.0),
            (18.0, 48.0),
        ];
        for (i, (tufr, rt)) in probes.into_iter().enumerate() {
            e.probe_ok(probe(rt, tufr), t0 + (i as u32) * S);
        }
        let Fit { base_ms, k, .. } = e.fit().unwrap();
        assert_eq!(k, 1.0);
        assert_eq!(base_ms, 30.0, "the median of RT - TUFR");
    }

    #[test]
    fn a_step_in_tufr_moves_the_estimate_at_the_next_push_without_a_probe() {
        let t0 = Instant::now();
        for calibration in [Calibration::Ratio, Calibration::Affine] {
            let mut e = MemberEstimator::new(EstimatorConfig {
                calibration,
                ..EstimatorConfig::default()
            });
            for i in 0..5 {
                e.probe_ok(probe(30.0, 10.0), t0 + i * S);
            }
            let before = rt(&e, &push(10.0, t0 + 5 * S), t0 + 5 * S);
            let after = rt(&e, &push(50.0, t0 + 6 * S), t0 + 6 * S);
            assert!(after > before * 2.0, "{calibration:?}: {before} -> {after}");
        }
    }

    #[test]
    fn tiny_tufr_does_not_explode() {
        // Path 100 ms and a server that answers in 10 microseconds: SF would
        // be 10 000 unfloored; a later push of 2 ms would then predict 20 s.
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(ratio());
        for i in 0..5 {
            e.probe_ok(probe(100.0, 0.01), t0 + i * S);
        }
        assert!((e.estimate(None, t0, alone).sf.unwrap() - 100.0).abs() < 1e-9);
        let est = rt(&e, &push(2.0, t0 + 5 * S), t0 + 5 * S);
        assert!(est <= 200.0 + 1e-9, "{est}");
        // At or below the floor the estimate is the probed RT itself.
        assert!((rt(&e, &push(0.001, t0 + 5 * S), t0 + 5 * S) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn stale_pushes_fall_back_to_probes_only() {
        let t0 = Instant::now();
        let config = EstimatorConfig::default();
        let mut e = MemberEstimator::new(config);
        e.probe_ok(probe(30.0, 10.0), t0);
        let p = push(50.0, t0);
        assert_eq!(e.estimate(Some(&p), t0, alone).source, Source::Hybrid);
        let later = t0 + config.push_stale_after + S;
        let est = e.estimate(Some(&p), later, alone);
        assert_eq!(est.source, Source::ProbeOnly);
        assert_eq!(est.rt_ms, Some(30.0));
        assert_eq!(est.load_ms, None);
    }

    #[test]
    fn push_only_and_nothing() {
        let t0 = Instant::now();
        let e = MemberEstimator::new(EstimatorConfig::default());
        assert_eq!(e.estimate(None, t0, alone).source, Source::None);
        let est = e.estimate(Some(&push(7.0, t0)), t0, alone);
        assert_eq!(
            (est.source, est.rt_ms, est.load_ms),
            (Source::PushOnly, Some(7.0), Some(7.0))
        );
    }

    #[test]
    fn health_has_hysteresis() {
        let t0 = Instant::now();
        let mut e = MemberEstimator::new(EstimatorConfig::default());
        assert_eq!(e.health(), Health::Unknown);
        e.probe_ok(probe(10.0, 1.0), t0);
        assert_eq!(e.health(), Health::Up);
        e.probe_failed();
        assert_eq!(e.health(), Health::Up, "one failure is not enough");
        e.probe_failed();
        assert_eq!(e.health(), Health::Down);
        e.probe_ok(probe(10.0, 1.0), t0);
        assert_eq!(e.health(), Health::Down, "one success is not enough");
        e.probe_ok(probe(10.0, 1.0), t0);
        assert_eq!(e.health(), Health::Up);
    }

    #[test]
    fn a_lying_server_is_calibrated_to_its_true_response_time() {
        // The agent reports a tenth of the real TUFR in pushes and in the
        // probe file alike: the ratio absorbs the factor.
        let t0 = Instant::now();
        for calibration in [Calibration::Ratio, Calibration::Affine] {
            let mut e = MemberEstimator::new(EstimatorConfig {
                calibration,
                ..EstimatorConfig::default()
            });
            for (i, true_tufr) in [20.0, 40.0, 80.0, 40.0].into_iter().enumerate() {
                e.probe_ok(
                    probe(10.0 + true_tufr, true_tufr / 10.0),
                    t0 + (i as u32) * S,
                );
            }
            let est = rt(&e, &push(4.0, t0 + 5 * S), t0 + 5 * S);
            assert!((est - 50.0).abs() / 50.0 < 0.35, "{calibration:?}: {est}");
        }
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn queue(in_flight: Option<u32>, workers: Option<u32>) -> PushedLoad {
        PushedLoad {
            state: ServerState::Up,
            tufr_ms: Some(30.0),
            received: Instant::now(),
            in_flight,
            workers,
            service_ms: Some(20.0),
            stalled_ms: None,
        }
    }

    fn since(n: f64) -> Handed {
        Handed {
            outstanding: n.max(0.0),
            since_push: n,
            total: 0,
        }
    }

    #[test]
    fn handouts_wait_for_a_worker_only_once_every_worker_is_busy() {
        let p = PushedLoad {
            tufr_ms: Some(20.0),
            ..queue(Some(2), Some(4))
        };
        let server = |n| p.predicted_server_ms(&since(n), p.received).unwrap();
        // Two in flight, four workers: one more still finds one free.
        assert_eq!(server(0.0).server_ms, 20.0);
        assert_eq!(server(1.0).server_ms, 20.0);
        // Five in the server: the new one waits for two departures, one
        // every 20 / 4 ms.
        let s = server(3.0);
        assert_eq!((s.queue, s.server_ms), (Some(5.0), 30.0));
        // Fewer requests of ours than the push counted: never below empty.
        assert_eq!(server(-9.0).queue, Some(0.0));
    }

    #[test]
    fn without_the_queue_each_handout_counts_a_service_time() {
        let p = queue(None, None);
        let server = |n| {
            p.predicted_server_ms(&since(n), p.received)
                .unwrap()
                .server_ms
        };
        assert_eq!(server(0.0), 30.0);
        assert_eq!(server(2.0), 70.0);
        assert_eq!(server(-2.0), 30.0, "no credit for what is not known");
        // With the workers but not the queue (the status page went quiet):
        // a service time shared by the workers each.
        let p = queue(None, Some(4));
        assert_eq!(
            p.predicted_server_ms(&since(2.0), p.received)
                .unwrap()
                .server_ms,
            40.0
        );
        let down = PushedLoad { tufr_ms: None, ..p };
        assert_eq!(down.predicted_server_ms(&since(1.0), p.received), None);
    }

    #[test]
    fn a_pushed_stall_adds_to_the_wait_and_grows_until_the_next_push() {
        let p = PushedLoad {
            stalled_ms: Some(15.0),
            ..queue(None, Some(4))
        };
        let at = |ms: u64| {
            p.predicted_server_ms(&since(0.0), p.received + Duration::from_millis(ms))
                .unwrap()
        };
        // The pushed TUFR, then the stall as it has grown by now; what a
        // new request adds for the others is its turn's alone.
        assert_eq!(at(0).server_ms, 45.0);
        assert_eq!(at(35).server_ms, 80.0);
        assert_eq!(at(35).added_ms, 10.0);
        assert_eq!(at(1000).server_ms, 1045.0);
        // With the queue known as well: a turn, then the stall.
        let queued = PushedLoad {
            stalled_ms: Some(100.0),
            ..queue(Some(5), Some(4))
        };
        let server = queued
            .predicted_server_ms(&since(0.0), queued.received)
            .unwrap();
        assert_eq!((server.server_ms, server.added_ms), (130.0, 10.0));
        // No stall pushed: nothing added, however old the push.
        let calm = queue(Some(5), Some(4));
        let later = calm.received + Duration::from_secs(5);
        assert_eq!(
            calm.predicted_server_ms(&since(0.0), later)
                .unwrap()
                .server_ms,
            30.0
        );
    }

    #[test]
    fn the_queue_model_raises_the_estimate_as_answers_go_out_and_the_paper_does_not() {
        let t0 = Instant::now();
        let probe = ProbeSample {
            rt_ms: 50.0,
            tufr_ms: Some(20.0),
        };
        let push = queue(Some(4), Some(4));
        for (model, expected) in [(LoadModel::Queue, 80.0), (LoadModel::Pushed, 60.0)] {
            let mut e = MemberEstimator::new(EstimatorConfig {
                load_model: model,
                ..EstimatorConfig::default()
            });
            e.probe_ok(probe, t0);
            // k = 1, base 30. Four in the server with four workers and five
            // handouts since the push: nine, so a new request waits for six
            // departures, 5 ms apart: 20 + 30 = 50 ms in the server ...
            let est = e.estimate(Some(&push), t0, |trip| {
                // ... asked with the trip the pushed TUFR predicts: 60 ms in
                // all, 22.5 of them on the way there, 7.5 back.
                assert_eq!(trip.travel, Duration::from_secs_f64(0.0225));
                assert_eq!(trip.done, Duration::from_secs_f64(0.0525));
                since(5.0)
            });
            assert_eq!(est.rt_ms, Some(expected), "{model:?}");
        }
    }

    #[test]
    fn the_rank_adds_the_wait_an_answer_makes_the_later_requests_wait() {
        let t0 = Instant::now();
        let probe = ProbeSample {
            rt_ms: 50.0,
            tufr_ms: Some(20.0),
        };
        let rank = |model, push: &PushedLoad, handed: f64| {
            let mut e = MemberEstimator::new(EstimatorConfig {
                load_model: model,
                ..EstimatorConfig::default()
            });
            e.probe_ok(probe, t0);
            let est = e.estimate(Some(push), t0, |_| since(handed));
            (est.rt_ms.unwrap(), est.rank_ms.unwrap())
        };
        // Base 30 ms, service 20 ms, four workers. Nine in the server: this
        // request waits 30 ms, and each request after it while the queue
        // lasts waits 5 ms longer for it, 30 ms in all.
        let busy = queue(Some(4), Some(4));
        assert_eq!(rank(LoadModel::Queue, &busy, 5.0), (80.0, 110.0));
        // A worker free: nobody waits for it; the rank is the response time.
        assert_eq!(rank(LoadModel::Queue, &busy, -2.0), (50.0, 50.0));
        // The paper's model ranks by the response time it estimates.
        assert_eq!(rank(LoadModel::Pushed, &busy, 5.0), (60.0, 60.0));
    }

    #[test]
    fn each_of_several_resolvers_counts_its_handouts_for_all_of_them() {
        // One in the server with four workers: with two handouts of this
        // resolver alone a worker is still free; as one of three resolvers
        // that answer alike, six arrive, and a new request waits for four
        // departures, 5 ms apart.
        let t0 = Instant::now();
        let probe = ProbeSample {
            rt_ms: 50.0,
            tufr_ms: Some(20.0),
        };
        let push = queue(Some(1), Some(4));
        for (resolvers, server_ms) in [(1, 20.0), (3, 40.0)] {
            let mut e = MemberEstimator::new(EstimatorConfig {
                resolvers,
                ..EstimatorConfig::default()
            });
            e.probe_ok(probe, t0);
            let est = e.estimate(Some(&push), t0, |_| since(2.0));
            let queue = est.queue.unwrap();
            assert_eq!(queue.server_ms, server_ms, "{resolvers} resolvers");
            assert_eq!(queue.since_push, 2.0 * f64::from(resolvers));
        }
    }
}
