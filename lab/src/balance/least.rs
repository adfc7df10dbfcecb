//! Envoy's `least_request` with equal weights: draw `choice_count` = 2
//! servers at random, with replacement, and keep the one with fewer of this
//! balancer's requests in flight (strictly fewer: a tie keeps the first
//! draw). Requests count from when they are sent until they end.

use rand::{Rng, RngExt};

use super::usable_indices;

/// Draws per pick (Envoy's default `choice_count`).
const CHOICES: usize = 2;

/// Requests in flight per server.
#[derive(Debug)]
pub struct LeastRequest {
    active: Vec<u32>,
}

impl LeastRequest {
    /// Nothing in flight.
    pub fn new(servers: usize) -> LeastRequest {
        LeastRequest {
            active: vec![0; servers],
        }
    }

    /// The pick among the `usable` servers; it counts as in flight.
    pub fn pick(&mut self, usable: &[bool], rng: &mut impl Rng) -> usize {
        let candidates = usable_indices(usable);
        let mut best: Option<usize> = None;
        for _ in 0..CHOICES {
            let s = candidates[rng.random_range(0..candidates.len())];
            if best.is_none_or(|b| self.active[s] < self.active[b]) {
                best = Some(s);
            }
        }
        let server = best.unwrap_or(0);
        self.active[server] += 1;
        server
    }

    /// A request to `server` ended.
    pub fn done(&mut self, server: usize) {
        if let Some(a) = self.active.get_mut(server) {
            *a = a.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_busier_of_two_is_taken_a_quarter_of_the_time() {
        // Envoy's own note: with two servers (draws with replacement) the
        // busier one is returned 25 % of the time.
        let mut b = LeastRequest::new(2);
        b.active[1] = 5;
        let mut rng = StdRng::seed_from_u64(3);
        let busier = (0..8000)
            .filter(|_| {
                let s = b.pick(&[true, true], &mut rng);
                b.done(s);
                s == 1
            })
            .count();
        assert!((1800..=2200).contains(&busier), "{busier}");
    }
}
