//! When to push: on significant change, rate-limited, with a heartbeat, and
//! with jittered backoff while a resolver is unreachable.
//!
//! Pure: every decision takes `now`, so the policy is tested without clocks.
//!
//! * A change is significant when the state changes, or the TUFR moves by
//!   more than `threshold` (relative to the last pushed value) and by more
//!   than `floor` (absolute, so tiny values do not push on noise).
//! * Pushes to one target are at least `min_interval` apart, except news
//!   that the server got worse (slower by a significant change, or down):
//!   that goes out once `rise_interval` has passed since the last push.
//!   Every client a resolver sends meanwhile meets the slower server, while
//!   a server getting faster loses nothing by being reported a little late.
//! * Without significant change, a heartbeat goes out every `heartbeat`, so
//!   the resolver can tell silence from stability.
//! * After a failed push the next attempt waits an exponentially growing,
//!   jittered delay (from `min_interval` up to `max_backoff`), whatever
//!   changed meanwhile; the first success resets it.

use std::time::{Duration, Instant};

use crate::smooth::Reading;

/// Push policy parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushPolicy {
    /// Relative change that is significant (0.1 = 10 %).
    pub threshold: f64,
    /// Absolute change below which nothing is significant.
    pub floor: Duration,
    /// Least time between two pushes to one target.
    pub min_interval: Duration,
    /// Least time between two pushes when the server got worse (at most
    /// `min_interval`; a longer value counts as `min_interval`).
    pub rise_interval: Duration,
    /// Most time between two pushes to one target (the heartbeat).
    pub heartbeat: Duration,
    /// Longest wait after failures.
    pub max_backoff: Duration,
}

impl Default for PushPolicy {
    fn default() -> Self {
        Self {
            threshold: 0.1,
            floor: Duration::from_micros(500),
            min_interval: Duration::from_secs(1),
            rise_interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What one target has been sent, and how sending has gone.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    last_pushed: Option<(Reading, Instant)>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl PushPolicy {
    /// When `reading` should next be pushed to a target in `state`.
    pub fn due(&self, state: &TargetState, reading: &Reading, now: Instant) -> Instant {
        if let Some(retry_at) = state.retry_at {
            return retry_at;
        }
        let Some((pushed, at)) = state.last_pushed else {
            return now;
        };
        if self.significant(&pushed, reading) {
            let gap = if worse(&pushed, reading) {
                self.rise_interval.min(self.min_interval)
            } else {
                self.min_interval
            };
            (at + gap).max(now)
        } else {
            at + self.heartbeat
        }
    }

    /// Whether `now` differs enough from what was pushed to warrant a push.
    pub fn significant(&self, pushed: &Reading, now: &Reading) -> bool {
        if pushed.state != now.state {
            return true;
        }
        match (pushed.tufr_ms, now.tufr_ms) {
            (Some(old), Some(new)) => {
                let delta = (new - old).abs();
                delta > self.floor.as_secs_f64() * 1000.0 && delta > self.threshold * old
            }
            (None, None) => false,
            _ => true,
        }
    }

    /// Records a successful push of `reading` at `now`.
    pub fn pushed(&self, state: &mut TargetState, reading: Reading, now: Instant) {
        state.last_pushed = Some((reading, now));
        state.failures = 0;
        state.retry_at = None;
    }

    /// Records a failed push at `now`; `jitter` in `[0, 1)` spreads retries
    /// of many agents apart. Returns the delay chosen.
    pub fn failed(&self, state: &mut TargetState, now: Instant, jitter: f64) -> Duration {
        state.failures = state.failures.saturating_add(1);
        let exponent = state.failures.saturating_sub(1).min(16);
        let base = self
            .min_interval
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        // Between 75 % and 125 % of the base, never past the maximum.
        let delay = base
            .mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
            .min(self.max_backoff);
        state.retry_at = Some(now + delay);
        delay
    }
}

/// Whether `now` reports a worse server than `pushed`: down (or draining)
/// after up, or a larger TUFR. Only asked of significant changes.
fn worse(pushed: &Reading, now: &Reading) -> bool {
    match (pushed.tufr_ms, now.tufr_ms) {
        (Some(old), Some(new)) => new > old,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anycast_proto::push::ServerState;

    const S: Duration = Duration::from_secs(1);

    fn up(ms: f64) -> Reading {
        Reading {
            state: ServerState::Up,
            tufr_ms: Some(ms),
        }
    }

    fn down() -> Reading {
        Reading {
            state: ServerState::Down,
            tufr_ms: None,
        }
    }

    #[test]
    fn first_reading_goes_at_once() {
        let p = PushPolicy::default();
        let now = Instant::now();
        assert_eq!(p.due(&TargetState::default(), &up(5.0), now), now);
    }

    #[test]
    fn steady_values_push_only_at_the_heartbeat() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let mut st = TargetState::default();
        p.pushed(&mut st, up(10.0), t0);
        // 5 % is below the 10 % threshold.
        assert_eq!(p.due(&st, &up(10.5), t0 + S), t0 + p.heartbeat);
        // 0.3 ms on 1 ms is 30 %, but below the 0.5 ms floor.
        p.pushed(&mut st, up(1.0), t0);
        assert_eq!(p.due(&st, &up(1.3), t0 + S), t0 + p.heartbeat);
    }

    #[test]
    fn significant_changes_go_at_most_once_per_min_interval() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let mut st = TargetState::default();
        p.pushed(&mut st, up(50.0), t0);
        let soon = t0 + Duration::from_millis(200);
        assert_eq!(p.due(&st, &up(10.0), soon), t0 + p.min_interval);
        assert_eq!(p.due(&st, &up(10.0), t0 + 3 * S), t0 + 3 * S);
        let down = down();
        assert!(p.significant(&up(10.0), &down));
    }

    #[test]
    fn a_server_getting_worse_is_pushed_after_the_rise_interval() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let mut st = TargetState::default();
        p.pushed(&mut st, up(10.0), t0);
        let soon = t0 + Duration::from_millis(100);
        // Slower: after rise_interval, not min_interval.
        assert_eq!(p.due(&st, &up(50.0), soon), t0 + p.rise_interval);
        let down = down();
        assert_eq!(p.due(&st, &down, soon), t0 + p.rise_interval);
        // Faster: min_interval as before.
        assert_eq!(p.due(&st, &up(5.0), soon), t0 + p.min_interval);
        // Back up from down is not worse.
        p.pushed(&mut st, down, t0);
        assert_eq!(p.due(&st, &up(5.0), soon), t0 + p.min_interval);
        // A rise_interval above min_interval is min_interval.
        let slow = PushPolicy {
            rise_interval: 2 * S,
            ..p
        };
        p.pushed(&mut st, up(10.0), t0);
        assert_eq!(slow.due(&st, &up(50.0), soon), t0 + slow.min_interval);
    }

    #[test]
    fn failures_back_off_with_jitter_up_to_the_maximum_then_reset() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let mut st = TargetState::default();
        let delays: Vec<Duration> = (0..8).map(|_| p.failed(&mut st, t0, 0.5)).collect();
        assert_eq!(delays[0], S);
        assert_eq!(delays[1], 2 * S);
        assert_eq!(delays[2], 4 * S);
        assert_eq!(*delays.last().unwrap(), p.max_backoff);
        assert_eq!(p.due(&st, &up(1.0), t0), t0 + p.max_backoff);
        assert!(p.failed(&mut st, t0, 0.0) >= p.max_backoff.mul_f64(0.75));
        p.pushed(&mut st, up(1.0), t0);
        assert_eq!(p.due(&st, &up(1.0), t0), t0 + p.heartbeat);
    }
}
