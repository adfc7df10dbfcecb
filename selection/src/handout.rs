//! Handouts: the answers this resolver has given out, as the load they are
//! about to bring.
//!
//! With an answer per request (TTL 0), every A/AAAA answer naming a member
//! sends it one request. A push tells the member's queue as its agent last
//! saw it; the answers handed out since then are load the push cannot show
//! yet. Without counting them, every client is sent to the best member
//! until a push says it is loaded, then every client leaves it: herding.
//!
//! Per member (by address and port, whatever group named it, since it is
//! the server that is loaded), the board keeps the number of handed-out
//! requests still outstanding, modelled as `H(t) = sum_i exp(-(t - t_i) /
//! tau)` over the answers `t_i`: the expected number still in the system if
//! each stays an exponentially distributed time of mean `tau` (the
//! [`Trip`]: from the answer until its request leaves the server).
//! Selection asks, at each answer, for `H(now) - H_arrived(push)`: how the
//! resolver's own requests have changed the queue the latest push reported
//! (its new ones still outstanding, less those the push counted that have
//! left; negative when it sends less than before). The push counted only
//! the requests that had reached the server: of the `H` outstanding then,
//! the share `travel / tau` was still on its way (in a steady stream, each
//! request spends that share of its time travelling), so `H_arrived = H *
//! (1 - travel / tau)`. It is noted the first time a push is seen: every
//! answer asks about every member before it hands one out, so no answer
//! falls between a push and that moment (but for answers being made
//! concurrently).
//!
//! Pure: every method takes `now`; the maths is in `docs/estimator.md`
//! ("Handouts and the queue model").

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::HashMap;

/// One member's outstanding handouts.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    /// `H` at `at`.
    level: f64,
    /// When `level` was last brought up to date.
    at: Instant,
    /// The latest push seen (when it arrived), and `H` then: the queue it
    /// reports includes what was outstanding then.
    push: Option<(Instant, f64)>,
    /// Answers naming the member since start.
    total: u64,
    /// The time constant `H` decays with: the member's response time as
    /// last estimated.
    tau: Duration,
}

/// The time constant before any estimate: a response time typical of a
/// service across a wide-area path.
const DEFAULT_TAU: Duration = Duration::from_millis(100);

impl Outstanding {
    fn new(now: Instant) -> Outstanding {
        Outstanding {
            level: 0.0,
            at: now,
            push: None,
            total: 0,
            tau: DEFAULT_TAU,
        }
    }

    /// `H` at `now`.
    fn level_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level * (-elapsed / self.tau.as_secs_f64().max(1e-3)).exp()
    }
}

/// How long a handed-out request takes, as estimated now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// From the answer until the request reaches the server (connection
    /// set-up and the request's way there).
    pub travel: Duration,
    /// From the answer until the request leaves the server.
    pub done: Duration,
}

impl Trip {
    /// The share of its time a request of a steady stream spends on its
    /// way: of the requests outstanding, that many have not arrived.
    fn travelling(&self) -> f64 {
        (self.travel.as_secs_f64() / self.done.as_secs_f64().max(1e-6)).clamp(0.0, 1.0)
    }
}

/// What selection needs of a member's handouts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Handed {
    /// Requests handed out and still outstanding, by the model.
    pub outstanding: f64,
    /// Change of `outstanding` since the latest push: load the push cannot
    /// show yet (negative once requests it counted have left).
    pub since_push: f64,
    /// Answers naming the member since start.
    pub total: u64,
}

impl Handed {
    /// What `resolvers` resolvers answering alike hand out between two
    /// pushes: this one's handouts, that many times (its own `total` stays).
    pub fn times(self, resolvers: u32) -> Handed {
        let n = f64::from(resolvers);
        Handed {
            outstanding: self.outstanding * n,
            since_push: self.since_push * n,
            total: self.total,
        }
    }
}

/// Every member's handouts.
#[derive(Debug, Default)]
pub struct Handouts {
    members: Mutex<HashMap<SocketAddr, Outstanding>>,
}

impl Handouts {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<SocketAddr, Outstanding>) -> T) -> T {
        f(&mut self.members.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// An answer naming `member` was handed out at `now`.
    pub fn hand_out(&self, member: SocketAddr, now: Instant) {
        self.with(|members| {
            let o = members
                .entry(member)
                .or_insert_with(|| Outstanding::new(now));
            o.level = o.level_at(now) + 1.0;
            o.at = now;
            o.total += 1;
        });
    }

    /// `member`'s handouts at `now`, against its latest push (the instant
    /// it arrived), if it has one; `trip` is how long its requests take, as
    /// estimated now.
    pub fn handed(
        &self,
        member: SocketAddr,
        push: Option<Instant>,
        now: Instant,
        trip: Trip,
    ) -> Handed {
        self.with(|members| {
            // Noted even before the member's first answer: that answer
            // follows the push, and must not be taken for one before it.
            let o = members
                .entry(member)
                .or_insert_with(|| Outstanding::new(now));
            // Brought up to date with the old constant, decaying with the
            // new one from now on.
            o.level = o.level_at(now);
            o.at = now;
            o.tau = trip.done;
            let outstanding = o.level;
            let at_push = match (push, o.push) {
                (Some(p), Some((seen, arrived))) if seen == p => arrived,
                (Some(p), _) => {
                    // Back to the push's arrival, which no answer followed
                    // (every answer asks first): undo the decay since; of
                    // those, the ones still travelling were not counted.
                    let back = now.saturating_duration_since(p).as_secs_f64();
                    let level = o.level * (back / trip.done.as_secs_f64().max(1e-3)).exp();
                    let arrived = level * (1.0 - trip.travelling());
                    o.push = Some((p, arrived));
                    arrived
                }
                (None, _) => 0.0,
            };
            Handed {
                outstanding,
                since_push: outstanding - at_push,
                total: o.total,
            }
        })
    }

    /// Answers naming `member` since start.
    pub fn total(&self, member: SocketAddr) -> u64 {
        self.with(|members| members.get(&member).map_or(0, |o| o.total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_millis(100);

    /// A member next door: requests are there at once.
    const NEAR: Trip = Trip {
        travel: Duration::ZERO,
        done: TAU,
    };

    fn member() -> SocketAddr {
        "192.0.2.1:80".parse().unwrap()
    }

    #[test]
    fn answers_add_up_and_leave_at_the_response_time() {
        let board = Handouts::default();
        let t0 = Instant::now();
        board.handed(member(), None, t0, NEAR);
        for _ in 0..10 {
            board.hand_out(member(), t0);
        }
        let h = board.handed(member(), None, t0, NEAR);
        assert_eq!((h.outstanding, h.since_push, h.total), (10.0, 10.0, 10));
        // One response time later, 1/e of them are still outstanding.
        let h = board.handed(member(), None, t0 + TAU, NEAR);
        assert!((h.outstanding - 10.0 / std::f64::consts::E).abs() < 1e-9);
        let other = "192.0.2.2:80".parse().unwrap();
        assert_eq!(board.handed(other, None, t0, NEAR), Handed::default());
        assert_eq!(board.total(other), 0);
        assert_eq!(board.total(member()), 10);
    }

    #[test]
    fn a_push_counts_what_was_outstanding_and_what_left_since() {
        let board = Handouts::default();
        let t0 = Instant::now();
        board.handed(member(), None, t0, NEAR);
        for _ in 0..4 {
            board.hand_out(member(), t0);
        }
        // A push arriving now reports a queue that includes these four.
        let push = Some(t0);
        assert_eq!(board.handed(member(), push, t0, NEAR).since_push, 0.0);
        board.hand_out(member(), t0);
        assert_eq!(board.handed(member(), push, t0, NEAR).since_push, 1.0);
        // Long after, everything handed out has left: the queue the push
        // reported is four smaller by now.
        let later = board.handed(member(), push, t0 + TAU * 50, NEAR);
        assert!((later.since_push + 4.0).abs() < 1e-6, "{later:?}");
        // A newer push counts from its own arrival: nothing since. Noticed
        // a little after it arrived, the decay since is undone.
        let newer = Some(t0 + TAU);
        let h = board.handed(member(), newer, t0 + TAU * 2, NEAR);
        assert!(h.since_push.abs() < 1e-9, "{h:?}");
        board.hand_out(member(), t0 + TAU * 2);
        let h = board.handed(member(), newer, t0 + TAU * 2, NEAR);
        assert!((h.since_push - 1.0).abs() < 1e-9, "{h:?}");
    }

    /// Of what was outstanding when a push was made, the requests still on
    /// their way were not in the queue it reports: a far member whose
    /// requests spend 60 of their 100 ms travelling had 4 of its 10 in the
    /// server.
    #[test]
    fn requests_still_travelling_at_a_push_were_not_in_its_queue() {
        let board = Handouts::default();
        let far = Trip {
            travel: Duration::from_millis(60),
            done: TAU,
        };
        let t0 = Instant::now();
        board.handed(member(), None, t0, far);
        for _ in 0..10 {
            board.hand_out(member(), t0);
        }
        let h = board.handed(member(), Some(t0), t0, far);
        assert!((h.since_push - 6.0).abs() < 1e-9, "{h:?}");
    }

    #[test]
    fn a_members_first_answers_after_a_push_count_as_new_load() {
        // A push arrived long before the member was ever answered; then a
        // burst of answers: all of it is load the push did not see.
        let board = Handouts::default();
        let t0 = Instant::now();
        let push = Some(t0);
        let later = t0 + TAU * 5;
        for _ in 0..3 {
            board.handed(member(), push, later, NEAR);
            board.hand_out(member(), later);
        }
        let h = board.handed(member(), push, later, NEAR);
        assert_eq!((h.outstanding, h.since_push), (3.0, 3.0), "{h:?}");
    }
}
