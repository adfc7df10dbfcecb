//! Smoothing raw TUFR samples into the value the agent publishes.
//!
//! An exponentially weighted moving average in continuous time: a sample
//! taken `dt` after the previous one has weight `alpha = 1 - exp(-dt / tau)`,
//! so the estimate forgets at the same rate however irregular the samples
//! are, and after a step change it has covered 63 % of the step in `tau`,
//! 86 % in `2 tau`, 95 % in `3 tau`. Before it enters the average a sample is
//! clamped to `[estimate / clamp, estimate * clamp]`, so one pathological
//! request (a slow client, a GC pause) moves the estimate by at most that
//! factor's share, while a real, lasting change still comes through within a
//! few samples.
//!
//! A server that stops answering is reported down, never as its last good
//! value: after `down_after` failed measurements in a row, or when no sample
//! at all arrived for `stale_after`.

use std::time::{Duration, Instant};

use anycast_proto::push::ServerState;

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothingConfig {
    /// Time constant of the average.
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
}

/// The smoother's state.
#[derive(Debug, Clone)]
pub struct Smoother {
    config: SmoothingConfig,
    estimate_ms: Option<f64>,
    last_sample: Option<Instant>,
    failures: u32,
}

impl Smoother {
    /// A smoother that has seen nothing yet.
    pub fn new(config: SmoothingConfig) -> Self {
        Self {
            config,
            estimate_ms: None,
            last_sample: None,
            failures: 0,
        }
    }

    /// Feeds one measured TUFR taken at `now`.
    pub fn sample(&mut self, tufr: Duration, now: Instant) {
        let value = tufr.as_secs_f64() * 1000.0;
        self.failures = 0;
        self.estimate_ms = Some(match (self.estimate_ms, self.last_sample) {
            (Some(estimate), Some(last)) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = 1.0 - (-dt / self.config.time_constant.as_secs_f64()).exp();
                let floor = estimate / self.config.clamp;
                let ceiling = (estimate * self.config.clamp).max(floor);
                let clamped = value.clamp(floor, ceiling);
                estimate + alpha * (clamped - estimate)
            }
            // The first sample, or the first after being down: no history to
            // trust, so start from the measurement itself.
            _ => value,
        });
        self.last_sample = Some(now);
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

    #[test]
    fn a_step_is_followed_at_the_time_constant() {
        let t0 = Instant::now();
        let mut s = smoother();
        s.sample(10 * MS, t0);
        // Samples every 100 ms at 50 ms: after one time constant (2 s) the
        // estimate has covered 1 - 1/e of the step.
        let mut now = t0;
        for _ in 0..20 {
            now += 100 * MS;
            s.sample(50 * MS, now);
        }
        let covered = (tufr(&s, now) - 10.0) / 40.0;
        assert!(
            (covered - (1.0 - (-1.0f64).exp())).abs() < 0.01,
            "{covered}"
        );
    }

    #[test]
    fn weight_depends_on_time_not_on_sample_count() {
        let t0 = Instant::now();
        let (mut a, mut b) = (smoother(), smoother());
        a.sample(10 * MS, t0);
        b.sample(10 * MS, t0);
        a.sample(20 * MS, t0 + 1000 * MS);
        for i in 1..=10 {
            b.sample(20 * MS, t0 + i * 100 * MS);
        }
        assert!((tufr(&a, t0 + 1000 * MS) - tufr(&b, t0 + 1000 * MS)).abs() < 1e-9);
    }

    #[test]
    fn one_outlier_is_clamped() {
        let t0 = Instant::now();
        let mut s = smoother();
        s.sample(10 * MS, t0);
        s.sample(10_000 * MS, t0 + 2000 * MS);
        // Clamped to 40 ms, then weighted by 1 - 1/e.
        let expected = 10.0 + (1.0 - (-1.0f64).exp()) * 30.0;
        assert!((tufr(&s, t0 + 2000 * MS) - expected).abs() < 1e-9);
    }

    #[test]
    fn lower_bounds_count_only_above_the_estimate() {
        let t0 = Instant::now();
        let mut s = smoother();
        s.at_least(50 * MS, t0);
        assert_eq!(s.reading(t0), None, "no estimate from a bound alone");
        s.sample(60 * MS, t0);
        s.at_least(50 * MS, t0 + 100 * MS);
        assert_eq!(
            tufr(&s, t0 + 100 * MS),
            60.0,
            "a bound below the estimate says nothing"
        );
        s.at_least(500 * MS, t0 + 200 * MS);
        assert!(tufr(&s, t0 + 200 * MS) > 60.0, "a bound above it raises it");
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
        // Back: the first sample is taken as it is.
        s.sample(30 * MS, t0 + 5000 * MS);
        assert_eq!(tufr(&s, t0 + 5000 * MS), 30.0);
        // Silence longer than stale_after.
        let later = t0 + 5000 * MS + SmoothingConfig::default().stale_after + MS;
        assert_eq!(s.reading(later).unwrap().state, ServerState::Down);
    }
}
