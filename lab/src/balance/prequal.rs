//! Prequal (Wydrowski, Kleinberg, Rumble, Archer: "Load is not what you
//! should balance: Introducing Prequal", NSDI 2024), client side:
//!
//! * Each query sends [`PROBES_PER_QUERY`] probes to distinct random servers,
//!   asynchronously (the query does not wait for them). A server answers a
//!   probe at once with its requests in flight (RIF) and its estimate of a
//!   request's latency at that load (the median of recent requests that
//!   arrived at about that RIF: `lab/src/server.rs`).
//! * Answers go to a pool of at most [`POOL`] probes (the newest per server),
//!   each usable for [`MAX_AGE`] and a reuse budget of `b_reuse = max(1,
//!   (1 + δ) / ((1 - m/n) r_probe - r_remove))` queries, δ = 1. With no more
//!   servers than the pool holds (`n <= m`, every lab scenario) the
//!   denominator is not positive and the budget is 1: the paper assumes
//!   hundreds of replicas.
//! * The pick, by the hot-cold lexicographic rule: a probe is hot when its
//!   RIF is above the [`Q_RIF`] quantile of the RIFs in the pool. Among cold
//!   probes, the lowest latency; if every probe is hot, the lowest RIF. The
//!   probe used has its RIF raised by one (the query just sent) and spends
//!   one use. With fewer than two probes in the pool, a random server.
//! * After each query one probe is removed, alternately the oldest and the
//!   worst (the hottest if any is hot, else the slowest).
//!
//! Probes travel the path like requests (the lab's servers answer them
//! outside their queue), over a connection each balancer keeps per server,
//! as Prequal's RPC channels are kept.

use std::time::Duration;

use rand::seq::index::sample;
use rand::{Rng, RngExt};
use tokio::time::Instant;

use super::{Pick, usable_indices};

/// Probes sent per query (the paper's `r_probe`).
pub const PROBES_PER_QUERY: usize = 3;

/// Probes kept (the paper's pool size `m`).
pub const POOL: usize = 16;

/// Oldest probe used.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Quantile of the pool's RIFs above which a probe is hot (`2^-0.25`).
pub const Q_RIF: f64 = 0.840_896_415_253_714_5;

/// The paper's δ in the reuse budget.
const DELTA: f64 = 1.0;

/// Probes removed per query (`r_remove`).
const REMOVE_PER_QUERY: f64 = 1.0;

/// One probe answer in the pool.
#[derive(Debug, Clone, Copy)]
struct Probe {
    server: usize,
    rif: u32,
    latency_ms: f64,
    at: Instant,
    uses_left: u32,
}

/// The pool and the rule.
#[derive(Debug)]
pub struct Prequal {
    servers: usize,
    pool: Vec<Probe>,
    budget: u32,
    remove_oldest_next: bool,
}

impl Prequal {
    /// An empty pool over `servers` servers.
    pub fn new(servers: usize) -> Prequal {
        let n = servers as f64;
        let m = POOL as f64;
        let d = (1.0 - m / n) * PROBES_PER_QUERY as f64 - REMOVE_PER_QUERY;
        let budget = if d > 0.0 {
            ((1.0 + DELTA) / d).max(1.0).round() as u32
        } else {
            1
        };
        Prequal {
            servers,
            pool: Vec::new(),
            budget,
            remove_oldest_next: true,
        }
    }

    /// A probe answer arrived.
    pub fn probed(&mut self, server: usize, rif: u32, latency_ms: f64, now: Instant) {
        self.pool.retain(|p| p.server != server);
        if self.pool.len() == POOL
            && let Some(oldest) = self.oldest()
        {
            self.pool.swap_remove(oldest);
        }
        self.pool.push(Probe {
            server,
            rif,
            latency_ms,
            at: now,
            uses_left: self.budget,
        });
    }

    /// The pick for a query sent now, and the servers to probe.
    pub fn pick(&mut self, usable: &[bool], now: Instant, rng: &mut impl Rng) -> Pick {
        self.pool
            .retain(|p| now.saturating_duration_since(p.at) <= MAX_AGE && usable[p.server]);
        let probe: Vec<usize> = sample(rng, self.servers, PROBES_PER_QUERY.min(self.servers))
            .into_iter()
            .collect();
        let server = if self.pool.len() < 2 {
            let candidates = usable_indices(usable);
            candidates[rng.random_range(0..candidates.len())]
        } else {
            let threshold = self.hot_threshold();
            let cold = (0..self.pool.len())
                .filter(|&i| f64::from(self.pool[i].rif) <= threshold)
                .min_by(|&a, &b| self.pool[a].latency_ms.total_cmp(&self.pool[b].latency_ms));
            let chosen = cold.unwrap_or_else(|| {
                (0..self.pool.len())
                    .min_by_key(|&i| self.pool[i].rif)
                    .unwrap_or(0)
            });
            let p = &mut self.pool[chosen];
            p.rif += 1;
            p.uses_left = p.uses_left.saturating_sub(1);
            let server = p.server;
            if p.uses_left == 0 {
                self.pool.swap_remove(chosen);
            }
            server
        };
        self.remove_one();
        Pick { server, probe }
    }

    /// The `Q_RIF` quantile of the pool's RIFs, interpolated between ranks
    /// (with a handful of probes a nearest-rank quantile at 0.84 is the
    /// largest, and nothing would ever be hot).
    fn hot_threshold(&self) -> f64 {
        let mut rifs: Vec<u32> = self.pool.iter().map(|p| p.rif).collect();
        rifs.sort_unstable();
        let Some(last) = rifs.len().checked_sub(1) else {
            return f64::INFINITY;
        };
        let position = Q_RIF * last as f64;
        let below = position.floor() as usize;
        let above = (below + 1).min(last);
        let fraction = position - below as f64;
        f64::from(rifs[below]) + fraction * (f64::from(rifs[above]) - f64::from(rifs[below]))
    }

    fn oldest(&self) -> Option<usize> {
        (0..self.pool.len()).min_by_key(|&i| self.pool[i].at)
    }

    /// Removes one probe: alternately the oldest and the worst.
    fn remove_one(&mut self) {
        if self.pool.is_empty() {
            return;
        }
        let victim = if self.remove_oldest_next {
            self.oldest()
        } else {
            let threshold = self.hot_threshold();
            let hottest = (0..self.pool.len())
                .filter(|&i| f64::from(self.pool[i].rif) > threshold)
                .max_by_key(|&i| self.pool[i].rif);
            hottest.or_else(|| {
                (0..self.pool.len())
                    .max_by(|&a, &b| self.pool[a].latency_ms.total_cmp(&self.pool[b].latency_ms))
            })
        };
        self.remove_oldest_next = !self.remove_oldest_next;
        if let Some(i) = victim {
            self.pool.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[tokio::test(start_paused = true)]
    async fn cold_probes_are_chosen_by_latency_hot_ones_avoided() {
        let mut p = Prequal::new(6);
        assert_eq!(p.budget, 1, "six servers, a pool of 16: the budget is 1");
        let now = Instant::now();
        // RIFs 1, 2, 2, 3, 9: the 0.84 quantile is 3 + 0.36 x 6 = 5.2, so
        // only 9 is hot; it has the lowest latency but is passed over.
        for (server, rif, latency) in [
            (0, 1, 40.0),
            (1, 2, 30.0),
            (2, 2, 35.0),
            (3, 3, 50.0),
            (4, 9, 5.0),
        ] {
            p.probed(server, rif, latency, now);
        }
        let mut rng = StdRng::seed_from_u64(1);
        let pick = p.pick(&[true; 6], now, &mut rng);
        assert_eq!(pick.server, 1, "the fastest cold probe");
        assert_eq!(pick.probe.len(), PROBES_PER_QUERY);
        assert!(!p.pool.iter().any(|q| q.server == 1), "used up its budget");
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_probe_hot_the_least_loaded_wins_and_old_probes_expire() {
        let mut p = Prequal::new(3);
        let now = Instant::now();
        // Two probes at equal RIF: neither is above the quantile, both cold.
        p.probed(0, 4, 10.0, now);
        p.probed(1, 4, 20.0, now);
        let mut rng = StdRng::seed_from_u64(2);
        assert_eq!(p.pick(&[true; 3], now, &mut rng).server, 0);
        // Expired probes leave the pool: with fewer than two, a random pick.
        p.probed(2, 1, 10.0, now);
        p.probed(1, 1, 10.0, now);
        let later = now + MAX_AGE + Duration::from_millis(1);
        let _ = p.pick(&[true; 3], later, &mut rng);
        assert!(p.pool.is_empty());
    }
}
