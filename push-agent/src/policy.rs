//! When to push: on significant change, rate-limited, with a heartbeat, and
//! with jittered backoff while a resolver is unreachable.
//!
//! Pure: every decision takes `now`, so the policy is tested without clocks.
//!
//! * A change is significant when the state changes, or the TUFR moves by
//!   more than `threshold` (relative to the last pushed value) and by more
//!   than `floor` (absolute, so tiny values do not push on noise), or the
//!   requests in flight move by at least a quarter of the workers (at least
//!   1), or, with no worker count, by at least 1 and 25 % of the last pushed
//!   value; or they appear or disappear (the status page read, or failed).
//!   Workers and the service time ride along: they change slowly, and alone
//!   they push nothing.
//! * Pushes to one target are at least `min_interval` apart, except news
//!   that the server got slower by a significant change: that goes out once
//!   `rise_interval` has passed since the last push; news that its requests
//!   in flight moved, either way: that goes out once `queue_interval` has
//!   passed (at most `rise_interval`); and alarming news (a
//!   TUFR at least twice the one pushed, or down: a wedged or dead server,
//!   an overload's onset) goes out at once, [`URGENT_INTERVAL`] after the
//!   last push at the soonest; so does a stall of the status page that
//!   begins or ends (the resolver grows a pushed stall with its own clock
//!   until it hears of the end). Every client a resolver sends meanwhile
//!   meets the slower server. A queue is news both ways: the resolver
//!   predicts from the pushed queue and its own answers since until the
//!   next push, so a queue that drained unreported keeps clients off an
//!   idle server as surely as one that grew sends them into a full one.
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
    /// Least time between two pushes when the requests in flight moved,
    /// either way (at most `rise_interval`, as above).
    pub queue_interval: Duration,
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
            // The status page's default read interval: a queue that moved is
            // pushed from the read that shows it.
            queue_interval: Duration::from_millis(100),
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
        let gap = match self.change(&pushed, reading) {
            Change::Same => return at + self.heartbeat,
            Change::Significant => self.min_interval,
            Change::Worse => self.rise_interval.min(self.min_interval),
            Change::Queue => self
                .queue_interval
                .min(self.rise_interval)
                .min(self.min_interval),
            Change::Alarming => URGENT_INTERVAL.min(self.rise_interval),
        };
        (at + gap).max(now)
    }

    /// Whether `now` differs enough from what was pushed to warrant a push.
    pub fn significant(&self, pushed: &Reading, now: &Reading) -> bool {
        self.change(pushed, now) != Change::Same
    }

    /// How `now` differs from what was pushed: the larger of what its state
    /// and TUFR say, what its requests in flight say and what its stall says.
    fn change(&self, pushed: &Reading, now: &Reading) -> Change {
        self.tufr_change(pushed, now)
            .max(in_flight_change(pushed, now))
            .max(stall_change(pushed, now))
    }

    fn tufr_change(&self, pushed: &Reading, now: &Reading) -> Change {
        match (pushed.tufr_ms, now.tufr_ms) {
            (Some(old), Some(new)) => {
                let delta = (new - old).abs();
                let significant =
                    delta > self.floor.as_secs_f64() * 1000.0 && delta > self.threshold * old;
                match (significant, new > old) {
                    (false, _) if pushed.state == now.state => Change::Same,
                    (false, _) | (true, false) => Change::Significant,
                    (true, true) if new >= ALARMING_RISE * old => Change::Alarming,
                    (true, true) => Change::Worse,
                }
            }
            // Down (or draining) after up.
            (Some(_), None) => Change::Alarming,
            // Up again after down.
            (None, Some(_)) => Change::Significant,
            // Draining after down, say.
            (None, None) if pushed.state != now.state => Change::Significant,
            (None, None) => Change::Same,
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

/// How a reading differs from the one pushed, in increasing urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// Not enough to push before the heartbeat.
    Same,
    /// Worth a push, within `min_interval`.
    Significant,
    /// The server got worse: worth a push within `rise_interval`.
    Worse,
    /// Its requests in flight moved: worth a push within `queue_interval`.
    Queue,
    /// The server stopped answering, or its TUFR at least doubled (a
    /// wedge, an overload's onset): worth a push at once.
    Alarming,
}

/// A TUFR this many times the pushed one is alarming.
const ALARMING_RISE: f64 = 2.0;

/// The least time between two pushes, even of alarming news (a server
/// that keeps getting worse is reported this often, no more).
pub const URGENT_INTERVAL: Duration = Duration::from_millis(20);

/// What a stall says: one that begins or ends is alarming. The resolver
/// takes a pushed stall to grow with its own clock until a push says it
/// ended, so a wedge is news at once, and so is its end: the stall would
/// otherwise keep growing there, and keep clients away from a server that
/// answers again.
fn stall_change(pushed: &Reading, now: &Reading) -> Change {
    if pushed.load.stalled_since == now.load.stalled_since {
        Change::Same
    } else {
        Change::Alarming
    }
}

/// What the requests in flight say: a move by at least a quarter of the
/// workers (at least 1), or without a worker count by at least 1 and 25 % of
/// the last pushed value, is news to push soon, whichever way it went. A
/// queue moves in whole requests, so with few workers every one counts;
/// with many, a quarter of them is what changes a prediction.
fn in_flight_change(pushed: &Reading, now: &Reading) -> Change {
    match (pushed.load.in_flight, now.load.in_flight) {
        (Some(old), Some(new)) => {
            let moved = old.abs_diff(new);
            let significant = match now.load.workers.or(pushed.load.workers) {
                Some(workers) => moved >= (workers / 4).max(1),
                None => moved >= 1 && f64::from(moved) >= 0.25 * f64::from(old),
            };
            if significant {
                Change::Queue
            } else {
                Change::Same
            }
        }
        (None, None) => Change::Same,
        // The status page read again, or failed: no news of a queue.
        _ => Change::Significant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;
    use anycast_proto::push::ServerState;

    const S: Duration = Duration::from_secs(1);

    fn up(ms: f64) -> Reading {
        Reading {
            state: ServerState::Up,
            tufr_ms: Some(ms),
            load: Load::default(),
        }
    }

    fn down() -> Reading {
        Reading {
            state: ServerState::Down,
            tufr_ms: None,
            load: Load::default(),
        }
    }

    /// Up at 10 ms with `in_flight` requests of `workers`.
    fn queue(in_flight: Option<u32>, workers: Option<u32>) -> Reading {
        Reading {
            load: Load {
                in_flight,
                workers,
                service_ms: None,
                stalled_since: None,
            },
            ..up(10.0)
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
        assert_eq!(p.due(&st, &up(15.0), soon), t0 + p.rise_interval);
        // Twice as slow, or down: alarming, at once (but for the least gap
        // between pushes).
        assert_eq!(p.due(&st, &up(20.0), soon), soon);
        assert_eq!(p.due(&st, &up(50.0), t0), t0 + URGENT_INTERVAL);
        let down = down();
        assert_eq!(p.due(&st, &down, soon), soon);
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
        assert_eq!(slow.due(&st, &up(15.0), soon), t0 + slow.min_interval);
    }

    #[test]
    fn in_flight_moving_by_a_quarter_of_the_workers_is_significant() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(100);
        let mut st = TargetState::default();
        // 16 workers: a step of 4.
        p.pushed(&mut st, queue(Some(8), Some(16)), t0);
        assert_eq!(
            p.due(&st, &queue(Some(11), Some(16)), soon),
            t0 + p.heartbeat
        );
        assert_eq!(
            p.due(&st, &queue(Some(5), Some(16)), soon),
            t0 + p.heartbeat
        );
        // A queue's move is news either way: after queue_interval.
        assert_eq!(
            p.due(&st, &queue(Some(12), Some(16)), soon),
            t0 + p.queue_interval
        );
        assert_eq!(
            p.due(&st, &queue(Some(4), Some(16)), soon),
            t0 + p.queue_interval
        );
        // Few workers: every request counts (a step of at least 1).
        p.pushed(&mut st, queue(Some(0), Some(3)), t0);
        assert_eq!(p.due(&st, &queue(Some(0), Some(3)), soon), t0 + p.heartbeat);
        assert_eq!(
            p.due(&st, &queue(Some(1), Some(3)), soon),
            t0 + p.queue_interval
        );
        // The worker count of the new reading decides, else the pushed one's.
        p.pushed(&mut st, queue(Some(8), None), t0);
        assert_eq!(
            p.due(&st, &queue(Some(9), Some(4)), soon),
            t0 + p.queue_interval
        );
        p.pushed(&mut st, queue(Some(8), Some(40)), t0);
        assert_eq!(p.due(&st, &queue(Some(17), None), soon), t0 + p.heartbeat);
        assert_eq!(
            p.due(&st, &queue(Some(18), None), soon),
            t0 + p.queue_interval
        );
        // Workers alone push nothing.
        p.pushed(&mut st, queue(Some(8), Some(16)), t0);
        assert_eq!(
            p.due(&st, &queue(Some(8), Some(64)), soon),
            t0 + p.heartbeat
        );
    }

    #[test]
    fn without_workers_in_flight_must_move_by_one_and_a_quarter() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(100);
        let mut st = TargetState::default();
        p.pushed(&mut st, queue(Some(20), None), t0);
        assert_eq!(p.due(&st, &queue(Some(24), None), soon), t0 + p.heartbeat);
        assert_eq!(
            p.due(&st, &queue(Some(25), None), soon),
            t0 + p.queue_interval
        );
        assert_eq!(p.due(&st, &queue(Some(16), None), soon), t0 + p.heartbeat);
        assert_eq!(
            p.due(&st, &queue(Some(15), None), soon),
            t0 + p.queue_interval
        );
        // From an idle server, the first request is news; so is its end.
        p.pushed(&mut st, queue(Some(0), None), t0);
        assert_eq!(
            p.due(&st, &queue(Some(1), None), soon),
            t0 + p.queue_interval
        );
        p.pushed(&mut st, queue(Some(1), None), t0);
        assert_eq!(
            p.due(&st, &queue(Some(0), None), soon),
            t0 + p.queue_interval
        );
    }

    #[test]
    fn the_status_page_appearing_or_failing_is_significant_not_worse() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(100);
        let mut st = TargetState::default();
        p.pushed(&mut st, queue(Some(3), Some(4)), t0);
        assert_eq!(p.due(&st, &queue(None, Some(4)), soon), t0 + p.min_interval);
        p.pushed(&mut st, queue(None, Some(4)), t0);
        assert_eq!(
            p.due(&st, &queue(Some(3), Some(4)), soon),
            t0 + p.min_interval
        );
        assert_eq!(p.due(&st, &queue(None, None), soon), t0 + p.heartbeat);
    }

    #[test]
    fn the_more_urgent_of_tufr_and_in_flight_decides() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(100);
        let mut st = TargetState::default();
        p.pushed(&mut st, queue(Some(2), Some(4)), t0);
        // Faster, but more requests waiting: the queue's news.
        let faster_but_queued = Reading {
            tufr_ms: Some(5.0),
            ..queue(Some(3), Some(4))
        };
        assert_eq!(p.due(&st, &faster_but_queued, soon), t0 + p.queue_interval);
        // Slower (significantly), with fewer waiting: the queue's news too.
        let slower = Reading {
            tufr_ms: Some(15.0),
            ..queue(Some(1), Some(4))
        };
        assert_eq!(p.due(&st, &slower, soon), t0 + p.queue_interval);
        // Slower, with the same queue: worse, after rise_interval.
        let slower_alone = Reading {
            tufr_ms: Some(15.0),
            ..queue(Some(2), Some(4))
        };
        assert_eq!(p.due(&st, &slower_alone, soon), t0 + p.rise_interval);
        // A little slower (not significant) with fewer waiting: the fall
        // alone decides, and it is the queue's news as a rise would be.
        let fewer = Reading {
            tufr_ms: Some(10.5),
            ..queue(Some(1), Some(4))
        };
        assert_eq!(p.due(&st, &fewer, soon), t0 + p.queue_interval);
        // A queue_interval above rise_interval is rise_interval.
        let lazy = PushPolicy {
            queue_interval: 2 * S,
            ..p
        };
        assert_eq!(lazy.due(&st, &slower, soon), t0 + p.rise_interval);
        // The service time alone pushes nothing.
        let service = Reading {
            load: Load {
                service_ms: Some(50.0),
                ..queue(Some(2), Some(4)).load
            },
            ..queue(Some(2), Some(4))
        };
        assert_eq!(p.due(&st, &service, soon), t0 + p.heartbeat);
    }

    #[test]
    fn a_stall_that_begins_or_ends_goes_out_at_once() {
        let p = PushPolicy::default();
        let t0 = Instant::now();
        let mut st = TargetState::default();
        p.pushed(&mut st, queue(None, Some(4)), t0);
        let since = t0 + 50 * Duration::from_millis(1);
        let stalled = |since| Reading {
            load: Load {
                stalled_since: since,
                ..queue(None, Some(4)).load
            },
            ..queue(None, Some(4))
        };
        let soon = t0 + Duration::from_millis(60);
        assert_eq!(p.due(&st, &stalled(Some(since)), soon), soon);
        p.pushed(&mut st, stalled(Some(since)), soon);
        // The same stall, older: nothing new (the resolver ages it).
        let later = soon + Duration::from_millis(100);
        assert_eq!(p.due(&st, &stalled(Some(since)), later), soon + p.heartbeat);
        // Its end, once the urgent gap has passed.
        assert_eq!(p.due(&st, &stalled(None), later), later);
        let at_once = soon + Duration::from_millis(5);
        assert_eq!(p.due(&st, &stalled(None), at_once), soon + URGENT_INTERVAL);
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
