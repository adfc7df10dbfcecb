//! The client-side balancers users would pick instead of DNS, each with only
//! the information it would have in reality: what its own requests took and
//! how many are in flight, and (Prequal) what the servers answer to its
//! probes. Per client by default, as a library in each user's program; the
//! scenario can make all clients share one (`[clients] balancer = "shared"`),
//! as a proxy on the clients' host would.
//!
//! * [`least`]: Envoy's `least_request`, two choices on requests in flight.
//! * [`peak_ewma`]: power of two choices on peak-EWMA latency (tower,
//!   Linkerd, Finagle).
//! * [`prequal`]: Prequal's asynchronous probes and hot-cold rule.
//!
//! All three share the failure handling their deployments add to them
//! (Finagle's and Linkerd's failure accrual, Envoy's outlier detection): a
//! server whose request failed is passed over for [`EJECTION`], unless every
//! server is. Those eject after several failures in a row; ejecting at the
//! first favours the balancers, which is the side to err on for a bar.
//!
//! Constants and sources: `docs/results.md` ("The client-side balancers").

pub mod least;
pub mod peak_ewma;
pub mod prequal;

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::policy::Policy;

/// How long a server whose request failed is passed over.
pub const EJECTION: Duration = Duration::from_secs(5);

/// Which algorithm.
#[derive(Debug)]
enum Kind {
    LeastRequest(least::LeastRequest),
    PeakEwma(peak_ewma::PeakEwma),
    Prequal(prequal::Prequal),
}

/// One client's (or, shared, every client's) balancer.
#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    /// Until when each server is passed over after a failure.
    ejected_until: Vec<Option<Instant>>,
}

/// A pick: the server, and the servers to probe now (Prequal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The server to send the request to.
    pub server: usize,
    /// Servers to probe asynchronously.
    pub probe: Vec<usize>,
}

impl Balancer {
    /// The balancer of a client-side policy over `servers` servers; `None`
    /// for the others.
    pub fn new(policy: Policy, servers: usize) -> Option<Balancer> {
        let kind = match policy {
            Policy::LeastRequest => Kind::LeastRequest(least::LeastRequest::new(servers)),
            Policy::P2cPeakEwma => Kind::PeakEwma(peak_ewma::PeakEwma::new(servers)),
            Policy::Prequal => Kind::Prequal(prequal::Prequal::new(servers)),
            _ => return None,
        };
        Some(Balancer {
            kind,
            ejected_until: vec![None; servers],
        })
    }

    /// Picks a server for a request sent now, and counts it as in flight.
    pub fn pick(&mut self, now: Instant, rng: &mut impl Rng) -> Pick {
        let usable: Vec<bool> = self
            .ejected_until
            .iter()
            .map(|until| until.is_none_or(|u| now >= u))
            .collect();
        // Every server ejected: none is better known than another.
        let usable = if usable.iter().any(|&u| u) {
            usable
        } else {
            vec![true; usable.len()]
        };
        match &mut self.kind {
            Kind::LeastRequest(b) => Pick {
                server: b.pick(&usable, rng),
                probe: Vec::new(),
            },
            Kind::PeakEwma(b) => Pick {
                server: b.pick(&usable, now, rng),
                probe: Vec::new(),
            },
            Kind::Prequal(b) => b.pick(&usable, now, rng),
        }
    }

    /// A request sent to `server` at `sent` ended now, well or not.
    pub fn done(&mut self, server: usize, sent: Instant, now: Instant, ok: bool) {
        if !ok && let Some(until) = self.ejected_until.get_mut(server) {
            *until = Some(now + EJECTION);
        }
        match &mut self.kind {
            Kind::LeastRequest(b) => b.done(server),
            Kind::PeakEwma(b) => b.done(server, now - sent, now),
            Kind::Prequal(_) => {}
        }
    }

    /// A probe of `server` answered (Prequal): requests in flight there and
    /// its latency estimate.
    pub fn probed(&mut self, server: usize, in_flight: u32, latency_ms: f64, now: Instant) {
        if let Kind::Prequal(b) = &mut self.kind {
            b.probed(server, in_flight, latency_ms, now);
        }
    }
}

/// Two distinct indices drawn uniformly from `candidates` (one if only one).
fn two_distinct(candidates: &[usize], rng: &mut impl Rng) -> (usize, usize) {
    use rand::RngExt;
    match candidates.len() {
        0 => (0, 0),
        1 => (candidates[0], candidates[0]),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            (candidates[a], candidates[b])
        }
    }
}

/// The indices of `usable` that are true.
fn usable_indices(usable: &[bool]) -> Vec<usize> {
    usable
        .iter()
        .enumerate()
        .filter_map(|(i, &u)| u.then_some(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[tokio::test(start_paused = true)]
    async fn a_failed_server_is_passed_over_for_a_while() {
        let mut b = Balancer::new(Policy::LeastRequest, 2).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        b.done(0, t0, t0, false);
        for _ in 0..50 {
            let p = b.pick(t0 + Duration::from_secs(1), &mut rng);
            assert_eq!(p.server, 1);
            b.done(1, t0, t0, true);
        }
        let later = t0 + EJECTION;
        let picked: std::collections::HashSet<usize> = (0..50)
            .map(|_| {
                let s = b.pick(later, &mut rng).server;
                b.done(s, later, later, true);
                s
            })
            .collect();
        assert_eq!(picked.len(), 2, "back after the ejection");
    }

    #[test]
    fn two_distinct_are_distinct_and_cover_every_pair() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let (a, b) = two_distinct(&[3, 5, 7], &mut rng);
            assert_ne!(a, b);
            seen.insert((a, b));
        }
        assert_eq!(seen.len(), 6);
    }
}
