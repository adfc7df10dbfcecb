//! Smoothing raw TUFR samples into the value the agent publishes.
//!
//! What is published is the larger of a steady **level** and a fast
//! **rise** signal:
//!
//! 1. The level is an exponentially weighted moving average, in continuous
//!    time, of the **median of the last three samples** (the lower of two).
//!    The median keeps one slow request (a heavy-tailed service time, a GC
//!    pause) out altogether; the average, with `time_constant` (2 s) and a
//!    value taken `dt` after the previous weighted `alpha = 1 - exp(-dt /
//!    tau)`, forgets at the same rate however irregular the samples are:
//!    after a step it covers 63 % of the step in `tau`, 95 % in `3 tau`.
//!    Before it enters, a value is clamped to `[level / clamp, level *
//!    clamp]`. Rises and falls are weighted alike, so the level is an
//!    unbiased middle of the noise (a faster rise than fall made it track
//!    the noise's upper envelope: 1.6 times the median on the testbed's
//!    service times, and every resolver's calibration carried that bias).
//! 2. **Rise**: the smaller of the last two samples. A queue that builds
//!    shows in every measurement, so two in a row above the level are
//!    published at once (every client sent to the server meanwhile waits in
//!    that queue); one slow request is not. A measurement still in progress
//!    that has already taken as long as the last one counts as the second
//!    ([`Smoother::twice`]): the rise is published without waiting for it to
//!    complete.
//! 3. **Fall**: when all of the last three samples are below a third of the
//!    level, the queue has drained: the level drops to the largest of them
//!    rather than decaying from the old queue over seconds.
//!
//! A **restart** with no history (the first samples, or the first after
//! being down) publishes the prefilter's value itself until three samples
//! have arrived: the first, then the lower of the first two, then their
//! median. After an outage the first measurement to complete has usually
//! waited out the old queue; the next, started after it, shows whether that
//! queue is still there.
//!
//! A server that stops answering is reported down, never as its last good
//! value: after `down_after` failed measurements in a row, or when no sample
//! at all arrived for `stale_after`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anycast_proto::push::ServerState;

use crate::load::Load;

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothingConfig {
    /// Time constant of the level's average.
    pub time_constant: Duration,
    /// Outlier clamp factor (> 1).
    pub clamp: f64,
    /// Failed measurements in a row that make the server down.
    pub down_after: u32,
    /// Silence after which the server counts as down.
    pub stale_after: Duration,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self {
            time_constant: Duration::from_secs(2),
            clamp: 4.0,
            down_after: 3,
            stale_after: Duration::from_secs(30),
        }
    }
}

/// What the agent knows of its server now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Up or down (draining is decided at shutdown, not measured).
    pub state: ServerState,
    /// Smoothed TUFR in milliseconds when up.
    pub tufr_ms: Option<f64>,
    /// Requests in flight, workers and service time, when known (the
    /// smoother leaves it empty: [`crate::load`] fills it in).
    pub load: Load,
}

/// The smoother's state.
#[derive(Debug, Clone)]
pub struct Smoother {
    config: SmoothingConfig,
    /// The level (stage 1), in milliseconds.
    level_ms: Option<f64>,
    last_sample: Option<Instant>,
    failures: u32,
    /// The last [`PREFILTER`] samples since the last restart.
    window: VecDeque<f64>,
    /// Two measurements in a row took at least this (ms): the last one and
    /// the one in progress. Until the next completes or fails.
    twice_ms: Option<f64>,
}

/// Samples the prefilter takes the median of, and a fall must show in
/// (fixed).
const PREFILTER: usize = 3;
/// Samples in a row a rise must show in to be published at once (fixed).
const RISE_SAMPLES: usize = 2;
/// A fall below this share of the level, in every sample of the window, is
/// a drained queue (fixed).
const FALL_BELOW: f64 = 1.0 / 3.0;

impl Smoother {
    /// A smoother that has seen nothing yet.
    pub fn new(config: SmoothingConfig) -> Self {
        Self {
            config,
            level_ms: None,
            last_sample: None,
            failures: 0,
            window: VecDeque::with_capacity(PREFILTER),
            twice_ms: None,
        }
    }

    /// Feeds one measured TUFR taken at `now`.
    pub fn sample(&mut self, tufr: Duration, now: Instant) {
        self.twice_ms = None;
        self.add(tufr, now);
    }

    /// Enters one value (a measurement, or a lower bound of one) at `now`.
    fn add(&mut self, tufr: Duration, now: Instant) {
        self.failures = 0;
        let restarting = self.level_ms.is_none() || self.window.len() < PREFILTER;
        if self.level_ms.is_none() {
            self.window.clear();
        }
        if self.window.len() == PREFILTER {
            self.window.pop_front();
        }
        self.window.push_back(tufr.as_secs_f64() * 1000.0);
        let value = self.prefiltered();
        self.level_ms = Some(match (self.level_ms, self.last_sample) {
            (Some(level), Some(last)) if !restarting => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = 1.0 - (-dt / self.config.time_constant.as_secs_f64()).exp();
                let floor = level / self.config.clamp;
                let ceiling = (level * self.config.clamp).max(floor);
                let level = level + alpha * (value.clamp(floor, ceiling) - level);
                let highest = self.window.iter().copied().fold(f64::MIN, f64::max);
                if highest < level * FALL_BELOW {
                    highest
                } else {
                    level
                }
            }
            // No history to trust yet: the prefiltered measurement itself.
            _ => value,
        });
        self.last_sample = Some(now);
    }

    /// The median of the window (the lower of two).
    fn prefiltered(&self) -> f64 {
        let mut sorted: Vec<f64> = self.window.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        sorted[(sorted.len() - 1) / 2]
    }

    /// What is published: the larger of the level and the rise signal
    /// (the smaller of the last two samples, or of the last and the one in
    /// progress).
    fn published(&self) -> Option<f64> {
        let level = self.level_ms?;
        let rise = (self.window.len() >= RISE_SAMPLES).then(|| {
            self.window
                .iter()
                .rev()
                .take(RISE_SAMPLES)
                .copied()
                .fold(f64::MAX, f64::min)
        });
        Some(
            [rise, self.twice_ms]
                .into_iter()
                .flatten()
                .fold(level, f64::max),
        )
    }

    /// Feeds the news that the last measurement took `tufr` and the one in
    /// progress has already taken as long: the rise test's two in a row,
    /// before the second completes. It holds until the next measurement
    /// completes or fails.
    pub fn twice(&mut self, tufr: Duration) {
        if self.level_ms.is_some() {
            self.twice_ms = Some(tufr.as_secs_f64() * 1000.0);
        }
    }

    /// Feeds a lower bound taken at `now`: a measurement still outstanding
    /// after `elapsed`. It says something only when it exceeds the
    /// published value (the server is slower than thought), and is then
    /// taken as a sample; otherwise, and before any estimate, it is ignored.
    pub fn at_least(&mut self, elapsed: Duration, now: Instant) {
        if self
            .published()
            .is_some_and(|e| elapsed.as_secs_f64() * 1000.0 > e)
        {
            self.add(elapsed, now);
        }
    }

    /// Records a failed measurement (timeout, server error).
    pub fn failure(&mut self) {
        self.twice_ms = None;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.config.down_after {
            // Forget the old value: when the server comes back, its first
            // measurement is the truth, not a blend with the pre-outage past.
            self.level_ms = None;
        }
    }

    /// Records a refused connection: nothing listens on the server's port
    /// (it stopped, or is restarting), which one measurement shows as well
    /// as `down_after` do, so the server is down at once.
    pub fn refused(&mut self) {
        while self.failures < self.config.down_after {
            self.failure();
        }
    }

    /// The reading at `now`; `None` before the first sample.
    pub fn reading(&self, now: Instant) -> Option<Reading> {
        let down = Reading {
            state: ServerState::Down,
            tufr_ms: None,
            load: Load::default(),
        };
        if self.failures >= self.config.down_after {
            return Some(down);
        }
        let last = self.last_sample?;
        if now.saturating_duration_since(last) > self.config.stale_after {
            return Some(down);
        }
        self.published().map(|t| Reading {
            state: ServerState::Up,
            tufr_ms: Some(t),
            load: Load::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn smoother() -> Smoother {
        Smoother::new(SmoothingConfig::default())
    }

    fn tufr(s: &Smoother, now: Instant) -> f64 {
        s.reading(now).and_then(|r| r.tufr_ms).unwrap()
    }

    #[test]
    fn nothing_before_the_first_sample_then_the_sample_itself() {
        let t0 = Instant::now();
        let mut s = smoother();
        assert_eq!(s.reading(t0), None);
        s.sample(10 * MS, t0);
        assert_eq!(tufr(&s, t0), 10.0);
    }

    /// A smoother past its restart, at `value` ms, its last sample at `t0`.
    fn settled(value: u32, t0: Instant) -> Smoother {
        let mut s = smoother();
        for i in (0..3u32).rev() {
            s.sample(value * MS, t0 - i * 100 * MS);
        }
        assert_eq!(tufr(&s, t0), value as f64);
        s
    }

    /// Feeds `value` every 100 ms for `span`; returns the time of the last.
    fn feed(s: &mut Smoother, value: u32, from: Instant, span: Duration) -> Instant {
        let mut now = from;
        while now < from + span {
            now += 100 * MS;
            s.sample(value * MS, now);
        }
        now
    }

    /// Share of a step from `from` to `to` covered by `value`.
    fn covered(value: f64, from: f64, to: f64) -> f64 {
        (value - from) / (to - from)
    }

    #[test]
    fn a_fall_is_followed_at_the_time_constant() {
        // From 50 to 20 ms (above a third): after the prefilter's one-sample
        // delay, one time constant (2 s) covers 1 - 1/e of the step.
        let t0 = Instant::now();
        let mut s = settled(50, t0);
        let now = feed(&mut s, 20, t0, 2100 * MS);
        let c = covered(tufr(&s, now), 50.0, 20.0);
        assert!((c - (1.0 - (-1.0f64).exp())).abs() < 0.01, "{c}");
    }

    #[test]
    fn a_drained_queue_is_published_once_three_samples_show_it() {
        // From 900 to 25 ms: two samples are not enough (one could be a
        // fast request), the third drops the level to the largest of them.
        let t0 = Instant::now();
        let mut s = settled(900, t0);
        s.sample(20 * MS, t0 + 100 * MS);
        s.sample(25 * MS, t0 + 200 * MS);
        assert!(tufr(&s, t0 + 200 * MS) > 800.0);
        s.sample(22 * MS, t0 + 300 * MS);
        assert_eq!(tufr(&s, t0 + 300 * MS), 25.0);
    }

    #[test]
    fn a_rise_in_two_samples_in_a_row_is_published_at_once() {
        let t0 = Instant::now();
        let mut s = settled(10, t0);
        s.sample(300 * MS, t0 + 100 * MS);
        assert_eq!(
            tufr(&s, t0 + 100 * MS),
            10.0,
            "one slow sample is not a rise"
        );
        s.sample(200 * MS, t0 + 200 * MS);
        assert_eq!(tufr(&s, t0 + 200 * MS), 200.0, "the smaller of the two");
        // The level follows at the time constant, from the prefilter's
        // median (200 ms, clamped to 40) on: it is below the samples, so
        // what is published is the rise.
        let now = feed(&mut s, 250, t0 + 200 * MS, 300 * MS);
        assert_eq!(tufr(&s, now), 250.0);
        // Back to 10 ms: the rise signal goes with the second fast sample,
        // and the level, raised meanwhile, decays.
        s.sample(10 * MS, now + 100 * MS);
        s.sample(10 * MS, now + 200 * MS);
        let published = tufr(&s, now + 200 * MS);
        assert!(published > 10.0 && published < 250.0, "{published}");
    }

    #[test]
    fn a_measurement_in_progress_as_long_as_the_last_confirms_the_rise() {
        let t0 = Instant::now();
        let mut s = settled(30, t0);
        s.sample(120 * MS, t0 + 100 * MS);
        assert_eq!(tufr(&s, t0 + 100 * MS), 30.0, "one slow sample");
        // The next has been outstanding for 120 ms: two in a row.
        s.twice(120 * MS);
        assert_eq!(tufr(&s, t0 + 220 * MS), 120.0);
        // Lower bounds of it meanwhile do not take the rise back ...
        s.at_least(200 * MS, t0 + 300 * MS);
        assert_eq!(tufr(&s, t0 + 300 * MS), 120.0);
        // ... and when it completes the rise is the smaller of the two.
        s.sample(250 * MS, t0 + 350 * MS);
        assert_eq!(tufr(&s, t0 + 350 * MS), 200.0);
    }

    #[test]
    fn a_confirmation_lasts_until_the_measurement_ends() {
        let t0 = Instant::now();
        let mut s = settled(30, t0);
        s.sample(120 * MS, t0 + 100 * MS);
        s.twice(120 * MS);
        s.failure();
        assert_eq!(tufr(&s, t0 + 200 * MS), 30.0, "a failure ends it");
        s.twice(120 * MS);
        s.sample(30 * MS, t0 + 300 * MS);
        assert_eq!(tufr(&s, t0 + 300 * MS), 30.0, "so does a completion");
        // Before any estimate it says nothing.
        let mut s = smoother();
        s.twice(120 * MS);
        assert_eq!(s.reading(t0), None);
    }

    #[test]
    fn weight_depends_on_time_not_on_sample_count() {
        let t0 = Instant::now();
        let (mut a, mut b) = (settled(20, t0), settled(20, t0));
        // The same fall, sampled every 100 ms and every 500 ms.
        feed(&mut a, 10, t0, 3000 * MS);
        for i in 1..=6 {
            b.sample(10 * MS, t0 + i * 500 * MS);
        }
        // Both are past the prefilter's delay (one sample: 100 against
        // 500 ms), so compare the time since the step entered the average.
        let (ta, tb) = (tufr(&a, t0 + 3000 * MS), tufr(&b, t0 + 3000 * MS));
        let expected = |entered: f64| 20.0 - 10.0 * (1.0 - (-(3.0 - entered) / 2.0).exp());
        assert!((ta - expected(0.1)).abs() < 1e-6, "{ta}");
        assert!((tb - expected(0.5)).abs() < 1e-6, "{tb}");
    }

    #[test]
    fn one_slow_request_does_not_enter_the_estimate() {
        let t0 = Instant::now();
        let mut s = settled(10, t0);
        s.sample(10_000 * MS, t0 + 100 * MS);
        assert_eq!(tufr(&s, t0 + 100 * MS), 10.0);
        s.sample(10 * MS, t0 + 200 * MS);
        assert_eq!(tufr(&s, t0 + 200 * MS), 10.0);
    }

    #[test]
    fn the_level_moves_by_at_most_the_clamp_per_sample() {
        let t0 = Instant::now();
        let mut s = settled(10, t0);
        s.sample(10_000 * MS, t0 + 1000 * MS);
        s.sample(10_000 * MS, t0 + 2000 * MS);
        // The second passes the prefilter, clamped to 40 ms, weighted by
        // 1 - exp(-1 s / 2 s); what is published is the rise itself.
        let expected = 10.0 + (1.0 - (-0.5f64).exp()) * 30.0;
        assert!((s.level_ms.unwrap() - expected).abs() < 1e-9);
        assert_eq!(tufr(&s, t0 + 2000 * MS), 10_000.0);
    }

    #[test]
    fn a_restart_publishes_the_lower_of_the_first_two_then_their_median() {
        let t0 = Instant::now();
        let mut s = smoother();
        // The first measurement after an outage waited out the old queue.
        s.sample(1400 * MS, t0);
        assert_eq!(tufr(&s, t0), 1400.0);
        s.sample(25 * MS, t0 + 100 * MS);
        assert_eq!(tufr(&s, t0 + 100 * MS), 25.0);
        s.sample(30 * MS, t0 + 200 * MS);
        assert_eq!(tufr(&s, t0 + 200 * MS), 30.0);
        // A queue still there shows in both.
        let mut s = smoother();
        s.sample(1400 * MS, t0);
        s.sample(1300 * MS, t0 + 100 * MS);
        assert_eq!(tufr(&s, t0 + 100 * MS), 1300.0);
    }

    #[test]
    fn lower_bounds_count_only_above_the_estimate() {
        let t0 = Instant::now();
        let mut s = smoother();
        s.at_least(50 * MS, t0);
        assert_eq!(s.reading(t0), None, "no estimate from a bound alone");
        let mut s = settled(60, t0);
        s.at_least(50 * MS, t0 + 100 * MS);
        assert_eq!(
            tufr(&s, t0 + 100 * MS),
            60.0,
            "a bound below the estimate says nothing"
        );
        // A measurement outstanding for two intervals passes the prefilter.
        s.at_least(500 * MS, t0 + 200 * MS);
        s.at_least(700 * MS, t0 + 300 * MS);
        assert!(tufr(&s, t0 + 300 * MS) > 60.0, "a bound above it raises it");
    }

    #[test]
    fn a_refused_connection_means_down_at_once() {
        let t0 = Instant::now();
        let mut s = smoother();
        s.sample(10 * MS, t0);
        s.refused();
        assert_eq!(s.reading(t0).unwrap().state, ServerState::Down);
        assert_eq!(s.reading(t0).unwrap().tufr_ms, None);
        // Listening again: its first answer is the truth.
        s.sample(30 * MS, t0 + 500 * MS);
        assert_eq!(tufr(&s, t0 + 500 * MS), 30.0);
    }

    #[test]
    fn failures_and_silence_mean_down_never_a_frozen_value() {
        let t0 = Instant::now();
        let mut s = smoother();
        s.sample(10 * MS, t0);
        s.failure();
        s.failure();
        assert_eq!(s.reading(t0).unwrap().state, ServerState::Up);
        s.failure();
        assert_eq!(
            s.reading(t0),
            Some(Reading {
                state: ServerState::Down,
                tufr_ms: None,
                load: Load::default(),
            })
        );
        // Back: a restart, whose first sample is taken as it is (the
        // samples before the outage are forgotten).
        s.sample(30 * MS, t0 + 5000 * MS);
        assert_eq!(tufr(&s, t0 + 5000 * MS), 30.0);
        s.sample(40 * MS, t0 + 5100 * MS);
        assert_eq!(tufr(&s, t0 + 5100 * MS), 30.0);
        // Silence longer than stale_after.
        let later = t0 + 5100 * MS + SmoothingConfig::default().stale_after + MS;
        assert_eq!(s.reading(later).unwrap().state, ServerState::Down);
    }
}
