//! Smoothing raw TUFR samples into the value the agent publishes.
//!
//! Three stages:
//!
//! 1. A **median prefilter**: what enters the average is the median of the
//!    last three samples (the lower of two), so one slow request (a
//!    heavy-tailed service time, a GC pause) does not enter at all, while a
//!    lasting change comes through one sample later.
//! 2. An exponentially weighted moving average in continuous time: a value
//!    taken `dt` after the previous one has weight `alpha = 1 - exp(-dt /
//!    tau)`, so the estimate forgets at the same rate however irregular the
//!    samples are, and after a step it has covered 63 % of the step in `tau`,
//!    86 % in `2 tau`, 95 % in `3 tau`. **Fast rise, slow fall**: `tau` is
//!    `rise_time_constant` when the value is above the estimate and
//!    `time_constant` when below. A server whose queue builds is reported
//!    within a few hundred milliseconds, since every client sent to it
//!    meanwhile waits in that queue; one that recovers comes back steadily.
//!    Before it enters the average a value is clamped to `[estimate / clamp,
//!    estimate * clamp]`.
//! 3. A **restart** with no history (the first samples, or the first after
//!    being down): until three samples have arrived the estimate is the
//!    prefilter's value itself. After an outage the first measurement to
//!    complete has usually waited out the old queue; the next one, started
//!    after it, shows whether the queue is still there, and the lower of the
//!    two is published.
//!
//! A server that stops answering is reported down, never as its last good
//! value: after `down_after` failed measurements in a row, or when no sample
//! at all arrived for `stale_after`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anycast_proto::push::ServerState;

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothingConfig {
    /// Time constant of the average when the value falls.
    pub time_constant: Duration,
    /// Time constant of the average when the value rises.
    pub rise_time_constant: Duration,
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
            rise_time_constant: Duration::from_millis(250),
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
}

/// The smoother's state.
#[derive(Debug, Clone)]
pub struct Smoother {
    config: SmoothingConfig,
    estimate_ms: Option<f64>,
    last_sample: Option<Instant>,
    failures: u32,
    /// The last [`PREFILTER`] samples since the last restart.
    window: VecDeque<f64>,
}

/// Samples the prefilter takes the median of (fixed).
const PREFILTER: usize = 3;

impl Smoother {
    /// A smoother that has seen nothing yet.
    pub fn new(config: SmoothingConfig) -> Self {
        Self {
            config,
            estimate_ms: None,
            last_sample: None,
            failures: 0,
            window: VecDeque::with_capacity(PREFILTER),
        }
    }

    /// Feeds one measured TUFR taken at `now`.
    pub fn sample(&mut self, tufr: Duration, now: Instant) {
        self.failures = 0;
        let restarting = self.estimate_ms.is_none() || self.window.len() < PREFILTER;
        if self.estimate_ms.is_none() {
            self.window.clear();
        }
        if self.window.len() == PREFILTER {
            self.window.pop_front();
        }
        self.window.push_back(tufr.as_secs_f64() * 1000.0);
        let value = self.prefiltered();
        self.estimate_ms = Some(match (self.estimate_ms, self.last_sample) {
            (Some(estimate), Some(last)) if !restarting => {
                let tau = if value > estimate {
                    self.config.rise_time_constant
                } else {
                    self.config.time_constant
                };
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = 1.0 - (-dt / tau.as_secs_f64()).exp();
                let floor = estimate / self.config.clamp;
                let ceiling = (estimate * self.config.clamp).max(floor);
                estimate + alpha * (value.clamp(floor, ceiling) - estimate)
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

    /// Feeds a lower bound taken at `now`: a measurement still outstanding
    /// after `elapsed`. It says something only when it exceeds the estimate
    /// (the server is slower than thought), and is then taken as a sample;
    /// otherwise, and before any estimate, it is ignored.
    pub fn at_least(&mut self, elapsed: Duration, now: Instant) {
        if self
            .estimate_ms
            .is_some_and(|e| elapsed.as_secs_f64() * 1000.0 > e)
        {
            self.sample(elapsed, now);
        }
    }

    /// Records a failed measurement (timeout, refused, server error).
    pub fn failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.config.down_after {
            // Forget the old value: when the server comes back, its first
            // measurement is the truth, not a blend with the pre-outage past.
            self.estimate_ms = None;
        }
    }

    /// The reading at `now`; `None` before the first sample.
    pub fn reading(&self, now: Instant) -> Option<Reading> {
        let down = Reading {
            state: ServerState::Down,
            tufr_ms: None,
        };
        if self.failures >= self.config.down_after {
            return Some(down);
        }
        let last = self.last_sample?;
        if now.saturating_duration_since(last) > self.config.stale_after {
            return Some(down);
        }
        self.estimate_ms.map(|t| Reading {
            state: ServerState::Up,
            tufr_ms: Some(t),
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
        // From 50 to 10 ms: after the prefilter's one-sample delay, one time
        // constant (2 s) covers 1 - 1/e of the step.
        let t0 = Instant::now();
        let mut s = settled(50, t0);
        let now = feed(&mut s, 10, t0, 2100 * MS);
        let c = covered(tufr(&s, now), 50.0, 10.0);
        assert!((c - (1.0 - (-1.0f64).exp())).abs() < 0.01, "{c}");
    }

    #[test]
    fn a_rise_is_followed_at_the_rise_time_constant() {
        // From 10 to 30 ms (within the clamp). The prefilter passes the step
        // with the second sample (at 200 ms), weighted from the first (at
        // 100 ms): at time t, 1 - exp(-(t - 100 ms) / 250 ms) of the step.
        let t0 = Instant::now();
        let mut s = settled(10, t0);
        let now = feed(&mut s, 30, t0, 300 * MS);
        let c = covered(tufr(&s, now), 10.0, 30.0);
        let expected = 1.0 - (-(300.0 - 100.0) / 250.0f64).exp();
        assert!((c - expected).abs() < 1e-9, "{c}");
        // A second after it passed the prefilter, all but 2 %.
        let now = feed(&mut s, 30, now, 800 * MS);
        assert!(covered(tufr(&s, now), 10.0, 30.0) > 0.98);
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
    fn a_lasting_jump_is_clamped_per_step() {
        let t0 = Instant::now();
        let mut s = settled(10, t0);
        s.sample(10_000 * MS, t0 + 1000 * MS);
        s.sample(10_000 * MS, t0 + 2000 * MS);
        // The second passes the prefilter, clamped to 40 ms, weighted by
        // 1 - exp(-1 s / 250 ms).
        let expected = 10.0 + (1.0 - (-4.0f64).exp()) * 30.0;
        assert!((tufr(&s, t0 + 2000 * MS) - expected).abs() < 1e-9);
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
                tufr_ms: None
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
