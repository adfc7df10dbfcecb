//! The per-source rate limit of pushes: a token bucket per source address,
//! checked before a push's body is read or its signature verified, so a
//! flood costs the resolver an HTTP parse and a table lookup per request.
//!
//! A source is an IPv4 address or an IPv6 /64 (one host commonly holds a
//! whole /64, so counting its addresses one by one would not limit it).
//!
//! The table of sources is bounded by [`PushLimit::sources`]. A source whose
//! bucket has refilled is the same as one never seen, so when the table is
//! full those entries are dropped (at most once per refill time, so a full
//! table is not scanned per request). Sources that still find no room share
//! one overflow bucket: sources already known keep their own allowance, and
//! a flood spread over many addresses gets one more bucket's worth, not one
//! per address.
//!
//! Time comes in as `now` (tokio's clock, so tests run on a paused one).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The limit's settings (`[push.limit]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushLimit {
    /// Pushes per second a source may send, sustained.
    pub rate: f64,
    /// Pushes a source may send at once after a quiet spell (the bucket's
    /// size).
    pub burst: u32,
    /// Sources tracked at once; past it, new sources share one bucket.
    pub sources: usize,
}

impl Default for PushLimit {
    /// 100 pushes a second with bursts of 200, per source: an agent whose
    /// server's queue keeps moving pushes to a resolver up to once per
    /// `queue_interval` (10 a second by default), so one address carries 10
    /// such agents (a host running several servers, a NAT), with room for
    /// twice as many restarting at once, while a flood is cut to the same
    /// 100 a second.
    fn default() -> Self {
        Self {
            rate: 100.0,
            burst: 200,
            sources: 4096,
        }
    }
}

impl PushLimit {
    /// How long an emptied bucket takes to fill up again.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.rate)
    }
}

/// One source's allowance: `tokens` as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: &PushLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    fn tokens_at(&self, limit: &PushLimit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * limit.rate).min(f64::from(limit.burst))
    }

    /// Takes one token, or says how long until there is one (a refusal
    /// takes nothing).
    fn take(&mut self, limit: &PushLimit, now: Instant) -> Result<(), Duration> {
        let tokens = self.tokens_at(limit, now);
        // The tolerance absorbs rounding, so a source pushing exactly at the
        // rate is never refused for a billionth of a token.
        if tokens >= 1.0 - 1e-9 {
            self.tokens = (tokens - 1.0).max(0.0);
            self.at = now;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / limit.rate))
        }
    }

    fn is_full(&self, limit: &PushLimit, now: Instant) -> bool {
        self.tokens_at(limit, now) >= f64::from(limit.burst)
    }
}

/// The buckets of every source.
#[derive(Debug)]
pub struct SourceLimiter {
    limit: PushLimit,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by the sources that found the table full.
    overflow: Option<Bucket>,
    /// No pruning before this (a full table is scanned at most once per
    /// refill time).
    next_prune: Option<Instant>,
}

impl SourceLimiter {
    /// No source seen yet.
    pub fn new(limit: PushLimit) -> Self {
        Self {
            limit,
            table: Mutex::new(Table::default()),
        }
    }

    /// The settings.
    pub fn limit(&self) -> &PushLimit {
        &self.limit
    }

    /// Takes one push from `source`'s allowance: `Ok`, or `Err` with how
    /// long until the source may push again.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let limit = &self.limit;
        let key = source_key(source);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = table.buckets.get_mut(&key) {
            return bucket.take(limit, now);
        }
        if table.buckets.len() >= limit.sources {
            table.prune(limit, now);
        }
        if table.buckets.len() < limit.sources {
            let mut bucket = Bucket::full(limit, now);
            let taken = bucket.take(limit, now);
            table.buckets.insert(key, bucket);
            return taken;
        }
        table
            .overflow
            .get_or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now)
    }

    /// Sources with a bucket of their own.
    pub fn tracked(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.buckets.len()
    }
}

impl Table {
    /// Drops the sources whose bucket has refilled (nothing is lost: a new
    /// bucket starts full), unless that was tried less than a refill time ago.
    fn prune(&mut self, limit: &PushLimit, now: Instant) {
        if self.next_prune.is_some_and(|at| now < at) {
            return;
        }
        self.next_prune = Some(now + limit.refill_time());
        self.buckets.retain(|_, bucket| !bucket.is_full(limit, now));
    }
}

/// The address a source is counted under: IPv4 as it is (also when it
/// arrives IPv4-mapped on a dual-stack socket), IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: PushLimit = PushLimit {
        rate: 10.0,
        burst: 20,
        sources: 3,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// How many of `n` pushes at `now` are admitted.
    fn admitted(limiter: &SourceLimiter, source: IpAddr, n: usize) -> usize {
        let now = Instant::now();
        (0..n)
            .filter(|_| limiter.admit(source, now).is_ok())
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_and_the_wait_is_told() {
        let limiter = SourceLimiter::new(LIMIT);
        let a = ip("192.0.2.1");
        assert_eq!(admitted(&limiter, a, 100), 20, "the burst, then nothing");
        let wait = limiter.admit(a, Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one token at 10/s");

        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(limiter.admit(a, Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.admit(a, Instant::now()).is_ok(), "refilled");
        assert!(limiter.admit(a, Instant::now()).is_err());

        // A second refills rate tokens; a long quiet spell refills at most
        // the burst.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(admitted(&limiter, a, 100), 10);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(admitted(&limiter, a, 100), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_gets_the_rate_and_nothing_more() {
        let limiter = SourceLimiter::new(LIMIT);
        let a = ip("192.0.2.1");
        // 10,000 pushes a second for 5 s, one every 100 us.
        let mut passed = 0;
        for _ in 0..50_000 {
            passed += usize::from(limiter.admit(a, Instant::now()).is_ok());
            tokio::time::advance(Duration::from_micros(100)).await;
        }
        // The burst, then 10 a second (the last interval may or may not
        // have completed a token).
        assert!((69..=70).contains(&passed), "{passed} passed");
    }

    #[tokio::test(start_paused = true)]
    async fn agents_at_the_rate_are_never_refused() {
        // As many agents behind one address as the rate allows at their
        // min_interval (here 1 s: 10 agents), pushing on every change, all
        // starting at the same instant, plus every agent's final push at
        // shutdown: never refused.
        let limiter = SourceLimiter::new(LIMIT);
        let host = ip("198.51.100.7");
        for _ in 0..600 {
            assert_eq!(admitted(&limiter, host, 10), 10);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(admitted(&limiter, host, 10), 10, "the draining pushes");
    }

    #[tokio::test(start_paused = true)]
    async fn sources_are_counted_apart_and_ipv6_by_its_64() {
        let limiter = SourceLimiter::new(LIMIT);
        assert_eq!(admitted(&limiter, ip("192.0.2.1"), 100), 20);
        assert_eq!(admitted(&limiter, ip("192.0.2.2"), 1), 1, "another source");
        assert_eq!(
            admitted(&limiter, ip("::ffff:192.0.2.1"), 1),
            0,
            "IPv4-mapped is the same source"
        );
        assert_eq!(admitted(&limiter, ip("2001:db8:1:2::1"), 15), 15);
        assert_eq!(
            admitted(&limiter, ip("2001:db8:1:2:ffff::9"), 100),
            5,
            "same /64"
        );
        assert_eq!(admitted(&limiter, ip("2001:db8:1:3::1"), 1), 1, "next /64");
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_new_sources_share_the_overflow() {
        let limiter = SourceLimiter::new(LIMIT);
        for i in 1..=3 {
            assert_eq!(admitted(&limiter, ip(&format!("192.0.2.{i}")), 1), 1);
        }
        // Full, and no bucket has refilled: newcomers share one bucket.
        let mut passed = 0;
        for i in 0..1000 {
            let source = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            passed += admitted(&limiter, source, 1);
        }
        assert_eq!(passed, 20, "one burst for all the newcomers");
        assert_eq!(limiter.tracked(), 3);
        // The known sources keep their own allowance.
        assert_eq!(admitted(&limiter, ip("192.0.2.1"), 100), 19);

        // Once buckets refill they make room: a newcomer gets its own.
        tokio::time::advance(LIMIT.refill_time()).await;
        assert_eq!(admitted(&limiter, ip("203.0.113.1"), 100), 20);
        assert!(limiter.tracked() <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_is_not_rescanned_per_request() {
        let limiter = SourceLimiter::new(LIMIT);
        for i in 1..=3 {
            assert_eq!(admitted(&limiter, ip(&format!("192.0.2.{i}")), 1), 1);
        }
        // Pruning finds nothing to drop and is not tried again until a
        // refill time has passed, even though by then the buckets are full.
        assert_eq!(admitted(&limiter, ip("203.0.113.1"), 1), 1, "overflow");
        tokio::time::advance(LIMIT.refill_time() / 2).await;
        assert_eq!(admitted(&limiter, ip("203.0.113.2"), 1), 1, "overflow");
        assert_eq!(limiter.tracked(), 3);
        let table = limiter.table.lock().unwrap();
        assert!(!table.buckets.contains_key(&ip("203.0.113.2")));
    }
}
