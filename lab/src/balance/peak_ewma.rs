//! Power of two choices on peak-EWMA latency, as tower's `PeakEwma` and
//! `p2c` (which Linkerd runs) and Finagle's `p2cPeakEwma` do:
//!
//! * per server, an RTT estimate that starts at Linkerd's `default_rtt`
//!   (30 ms) and takes a slower sample at once (the peak) and a faster one
//!   through an EWMA of time constant `decay` (10 s): `w = exp(-elapsed /
//!   decay)`, `rtt = rtt * w + sample * (1 - w)`, `elapsed` since the
//!   estimate was last touched;
//! * reading the load touches it too, decaying it toward zero (as if a
//!   sample of 0 came in), so servers not used for a while are tried again;
//! * load = estimate x (this balancer's requests in flight there + 1);
//! * a pick draws two distinct servers at random and keeps the lower load
//!   (a tie keeps the first).
//!
//! The sample is the request's whole response time (tower stops at the
//! response head, Linkerd at the first body byte; on the lab's small files
//! the difference is the transfer, a fraction of a millisecond on loopback).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{two_distinct, usable_indices};

/// The estimate of a server never measured (Linkerd's `DEFAULT_EWMA`).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The EWMA's time constant (Linkerd's and Finagle's).
pub const DECAY: Duration = Duration::from_secs(10);

/// One server's estimate.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    rtt_ms: f64,
    stamp: Option<Instant>,
    pending: u32,
}

impl Estimate {
    /// Moves the estimate toward `sample_ms` as of `now`: up at once, down
    /// through the EWMA.
    fn observe(&mut self, sample_ms: f64, now: Instant) {
        if sample_ms > self.rtt_ms {
            self.rtt_ms = sample_ms;
        } else {
            let elapsed = self.stamp.map_or(Duration::ZERO, |s| now - s);
            let w = (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp();
            self.rtt_ms = self.rtt_ms * w + sample_ms * (1.0 - w);
        }
        self.stamp = Some(now);
    }

    /// The load as tower reads it (decaying the estimate first).
    fn load(&mut self, now: Instant) -> f64 {
        self.observe(0.0, now);
        self.rtt_ms * f64::from(self.pending + 1)
    }
}

/// The balancer's per-server estimates.
#[derive(Debug)]
pub struct PeakEwma {
    servers: Vec<Estimate>,
}

impl PeakEwma {
    /// Every server at the default estimate.
    pub fn new(servers: usize) -> PeakEwma {
        PeakEwma {
            servers: vec![
                Estimate {
                    rtt_ms: DEFAULT_RTT.as_secs_f64() * 1000.0,
                    stamp: None,
                    pending: 0,
                };
                servers
            ],
        }
    }

    /// The better of two random usable servers; it counts as in flight.
    pub fn pick(&mut self, usable: &[bool], now: Instant, rng: &mut impl Rng) -> usize {
        let (a, b) = two_distinct(&usable_indices(usable), rng);
        let (la, lb) = (self.servers[a].load(now), self.servers[b].load(now));
        let server = if la <= lb { a } else { b };
        self.servers[server].pending += 1;
        server
    }

    /// A request to `server` ended after `took`.
    pub fn done(&mut self, server: usize, took: Duration, now: Instant) {
        if let Some(e) = self.servers.get_mut(server) {
            e.pending = e.pending.saturating_sub(1);
            e.observe(took.as_secs_f64() * 1000.0, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tower's own `compound_decay` test, in milliseconds: default 20 ms,
    /// decay 1 s there; here the same arithmetic with our constants.
    #[tokio::test(start_paused = true)]
    async fn a_peak_is_taken_at_once_and_decays() {
        let mut p = PeakEwma::new(1);
        let t0 = Instant::now();
        assert_eq!(p.servers[0].rtt_ms, 30.0);
        p.done(0, Duration::from_millis(100), t0);
        assert_eq!(p.servers[0].rtt_ms, 100.0, "a slower sample is the peak");
        // One decay constant later, reading the load decays it by 1/e.
        let load = p.servers[0].load(t0 + DECAY);
        assert!((load - 100.0 / std::f64::consts::E).abs() < 1e-9, "{load}");
        // In flight counts: (pending + 1) x estimate.
        p.servers[0].pending = 2;
        let load = p.servers[0].load(t0 + DECAY);
        assert!(
            (load - 3.0 * 100.0 / std::f64::consts::E).abs() < 1e-9,
            "{load}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_faster_of_two_is_picked() {
        use rand::SeedableRng;
        let mut p = PeakEwma::new(2);
        let t0 = Instant::now();
        p.done(0, Duration::from_millis(200), t0);
        p.done(1, Duration::from_millis(20), t0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let s = p.pick(&[true, true], t0, &mut rng);
            assert_eq!(s, 1);
            p.done(1, Duration::from_millis(20), t0);
        }
    }
}
