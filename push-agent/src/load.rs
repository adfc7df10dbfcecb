//! The server's load beside its TUFR: the requests it holds now, its
//! workers, and its service time.
//!
//! TUFR is how long the last measurements waited; a resolver that knows
//! the server's queue (requests in flight), how many it serves at once
//! (workers) and how long one takes with no queue (the service time) can
//! predict what its own answers will add. The status page gives the first
//! two ([`crate::status`]); the service time is estimated here, by
//! Little's law where the page counts requests, else from measurements:
//!
//! * **Little's law** (pages with a request counter: nginx, Apache,
//!   php-fpm): over the readings of the last time constant, the workers
//!   were busy for `sum(min(in_flight, workers) * dt)` and served
//!   `completed = taken - (in_flight_end - in_flight_start)` requests
//!   (`taken`: the counter's growth, less one per status read, which the
//!   counter includes); a request holds a worker `busy / completed` on
//!   average. Every request counts, whatever the queue, so a saturated
//!   server's service time is known (measurements that find a worker free
//!   grow rare exactly then, and a few short ones would leave the estimate
//!   low for as long as the saturation lasts: seen on the testbed, a 40 ms
//!   server taken for 13.6 ms for seconds). At least
//!   [`MIN_COMPLETED`] completions in the window, or it is not used.
//! * Otherwise, a measurement that **started** while the latest status
//!   reading showed a free worker (`in_flight < workers`) met no queue, so
//!   its TUFR is a service time; those are averaged by a continuous-time
//!   EWMA with the smoother's time constant (`alpha = 1 - exp(-dt / tau)`,
//!   `dt` since the previous one): like the TUFR's level, it forgets at the
//!   same rate whatever the sampling rate, and the first after a long gap
//!   all but replaces it.
//! * It is absent until either is known (and without a worker count, there
//!   never is one).
//!
//! Requests in flight and workers are the latest reading, not smoothed: the
//! point of them is to be instantaneous. Pure: `now` is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anycast_proto::push::MAX_TUFR_MS;

use crate::status::PageReading;

/// What the agent knows of its server's load, beside the TUFR.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Requests served or queued at the latest status reading (not counting
    /// the status request); `None` without a status page, or when the last
    /// read failed.
    pub in_flight: Option<u32>,
    /// Requests served at once: the configured count, else the page's.
    pub workers: Option<u32>,
    /// Estimated service time in milliseconds (TUFR with no queue).
    pub service_ms: Option<f64>,
    /// Since when the status page has gone unanswered: the sending of a
    /// read that went overdue (`None` while the page is answered).
    pub stalled_since: Option<Instant>,
}

/// How far back the tracker remembers whether workers were free: a
/// measurement that started earlier (longer than any measurement timeout)
/// is not credited.
const HISTORY: Duration = Duration::from_secs(60);

/// Changes of "a worker was free" remembered, at most (a bound on memory
/// when the page flips on every read: 60 s at 10 reads a second).
const MAX_CHANGES: usize = 1024;

/// Completions in the window below which Little's law is not used: a
/// handful of requests of a heavy-tailed service say little of its mean.
pub const MIN_COMPLETED: i64 = 10;

/// Readings kept for Little's law, at most (a bound on memory whatever
/// the read interval).
const MAX_COUNTED: usize = 1024;

/// A status reading with a request counter.
#[derive(Debug, Clone, Copy)]
struct Counted {
    at: Instant,
    requests: u64,
    in_flight: u32,
}

/// Follows the status page and the measurements into a [`Load`].
#[derive(Debug, Clone)]
pub struct LoadTracker {
    time_constant: Duration,
    /// The configured worker count, overriding the page's.
    configured_workers: Option<u32>,
    /// The latest status reading (`None`: none yet, or the last read failed).
    latest: Option<PageReading>,
    /// From when on a worker was free (`Some(true)`), none was
    /// (`Some(false)`), or it was unknown (`None`): one entry per change,
    /// oldest first.
    free: VecDeque<(Instant, Option<bool>)>,
    service_ms: Option<f64>,
    last_service: Option<Instant>,
    /// The readings of the last time constant that counted requests.
    counted: VecDeque<Counted>,
    /// See [`Load::stalled_since`].
    stalled_since: Option<Instant>,
}

impl LoadTracker {
    /// A tracker averaging the service time with `time_constant`;
    /// `workers` is the configured count, if any.
    pub fn new(time_constant: Duration, workers: Option<u32>) -> Self {
        Self {
            time_constant,
            configured_workers: workers,
            latest: None,
            free: VecDeque::new(),
            service_ms: None,
            last_service: None,
            counted: VecDeque::new(),
            stalled_since: None,
        }
    }

    fn workers(&self) -> Option<u32> {
        self.configured_workers
            .or(self.latest.and_then(|r| r.workers))
    }

    /// Records a status reading made at `now`; `None` for a failed read.
    pub fn status(&mut self, reading: Option<PageReading>, now: Instant) {
        self.latest = reading;
        match reading.and_then(|r| Some((r.requests?, r.in_flight))) {
            Some((requests, in_flight)) => {
                // A counter that went back: the server restarted.
                if self.counted.back().is_some_and(|c| c.requests > requests) {
                    self.counted.clear();
                }
                self.counted.push_back(Counted {
                    at: now,
                    requests,
                    in_flight,
                });
                // Keeps the window's span: the oldest reading at or before
                // its start.
                let start = now.checked_sub(self.time_constant);
                while self.counted.len() > MAX_COUNTED
                    || (self.counted.len() > 2 && start.is_some_and(|s| self.counted[1].at <= s))
                {
                    self.counted.pop_front();
                }
            }
            // A gap in the counts would count its requests against no busy
            // time.
            None => self.counted.clear(),
        }
        let free = match (reading, self.workers()) {
            (Some(r), Some(w)) => Some(r.in_flight < w),
            _ => None,
        };
        if self.free.back().is_none_or(|(_, f)| *f != free) {
            self.free.push_back((now, free));
        }
        // Forget what no measurement can have started in, keeping the entry
        // in force at the horizon.
        let horizon = now.checked_sub(HISTORY);
        while self.free.len() > 1
            && (self.free.len() > MAX_CHANGES || horizon.is_some_and(|h| self.free[1].0 <= h))
        {
            self.free.pop_front();
        }
    }

    /// Whether a worker was free at `at`, by the reading in force then.
    fn free_at(&self, at: Instant) -> Option<bool> {
        self.free
            .iter()
            .rev()
            .find(|(since, _)| *since <= at)
            .and_then(|(_, free)| *free)
    }

    /// Records a measurement that completed at `now` after `tufr`: it
    /// counts toward the service time if a worker was free when it started.
    pub fn measured(&mut self, tufr: Duration, now: Instant) {
        let Some(started) = now.checked_sub(tufr) else {
            return;
        };
        if self.free_at(started) != Some(true) {
            return;
        }
        let value = (tufr.as_secs_f64() * 1000.0).min(MAX_TUFR_MS);
        self.service_ms = Some(match (self.service_ms, self.last_service) {
            (Some(old), Some(last)) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = 1.0 - (-dt / self.time_constant.as_secs_f64()).exp();
                old + alpha * (value - old)
            }
            _ => value,
        });
        self.last_service = Some(now);
    }

    /// The mean service time by Little's law over the counted readings.
    fn littles_law_ms(&self) -> Option<f64> {
        let workers = self.workers()?;
        let (first, last) = (self.counted.front()?, self.counted.back()?);
        let busy: f64 = self
            .counted
            .iter()
            .zip(self.counted.iter().skip(1))
            .map(|(a, b)| f64::from(a.in_flight.min(workers)) * (b.at - a.at).as_secs_f64())
            .sum();
        let reads = i64::try_from(self.counted.len() - 1).ok()?;
        let taken = i64::try_from(last.requests - first.requests).ok()? - reads;
        let completed = taken - (i64::from(last.in_flight) - i64::from(first.in_flight));
        (completed >= MIN_COMPLETED).then(|| (busy * 1000.0 / completed as f64).min(MAX_TUFR_MS))
    }

    /// Records that the status page has gone unanswered since `since`
    /// (the sending of a read that went overdue), or, `None`, that it is
    /// answered again.
    pub fn stalled(&mut self, since: Option<Instant>) {
        self.stalled_since = since;
    }

    /// What is known now.
    pub fn load(&self) -> Load {
        Load {
            in_flight: self.latest.map(|r| r.in_flight),
            workers: self.workers(),
            service_ms: self.littles_law_ms().or(self.service_ms),
            stalled_since: self.stalled_since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const TAU: Duration = Duration::from_secs(2);

    fn page(in_flight: u32, workers: Option<u32>) -> Option<PageReading> {
        Some(PageReading {
            in_flight,
            workers,
            requests: None,
        })
    }

    fn counted(in_flight: u32, requests: u64) -> Option<PageReading> {
        Some(PageReading {
            in_flight,
            workers: None,
            requests: Some(requests),
        })
    }

    /// A saturated server: 4 workers always busy, 40 ms each, so 100
    /// requests a second complete. Measurements never find a worker free;
    /// Little's law still knows the service time, from the counts.
    #[test]
    fn the_service_time_of_a_saturated_server_by_littles_law() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(4));
        // A stale, short measurement from when a worker was free.
        t.status(page(0, None), t0);
        t.measured(13 * MS, t0 + 20 * MS);
        assert_eq!(t.load().service_ms, Some(13.0));
        // Then 10 readings a second for 3 s: 30 in flight throughout, 10
        // requests completed and 10 arrived between two reads, plus the
        // read itself in the counter.
        let mut requests = 1000;
        for i in 1..=30u32 {
            requests += 10 + 1;
            t.status(counted(30, requests), t0 + i * 100 * MS);
        }
        let service = t.load().service_ms.unwrap();
        assert!((service - 40.0).abs() < 1e-6, "{service}");
        // A growing queue: arrivals are not completions.
        for i in 31..=60u32 {
            requests += 20 + 1;
            let in_flight = 30 + (i - 30) * 10;
            t.status(counted(in_flight, requests), t0 + i * 100 * MS);
        }
        let service = t.load().service_ms.unwrap();
        assert!((service - 40.0).abs() < 1e-6, "{service}");
    }

    #[test]
    fn few_completions_or_a_restart_fall_back_to_the_measurements() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(4));
        t.status(counted(0, 100), t0);
        t.measured(20 * MS, t0 + 50 * MS);
        // Nine completions in 2 s (and the reads): too few.
        t.status(counted(0, 100 + 9 + 1), t0 + 2000 * MS);
        assert_eq!(t.load().service_ms, Some(20.0));
        // A counter that went back (a restart) starts the window again.
        t.status(counted(0, 5), t0 + 2100 * MS);
        assert_eq!(t.counted.len(), 1);
    }

    #[test]
    fn in_flight_and_workers_are_the_latest_reading() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, None);
        assert_eq!(t.load(), Load::default(), "nothing before a reading");
        t.status(page(3, Some(8)), t0);
        assert_eq!((t.load().in_flight, t.load().workers), (Some(3), Some(8)));
        t.status(page(7, Some(8)), t0 + 100 * MS);
        assert_eq!(t.load().in_flight, Some(7), "not smoothed");
        // A failed read clears both (the page's count went with it).
        t.status(None, t0 + 200 * MS);
        assert_eq!((t.load().in_flight, t.load().workers), (None, None));
    }

    #[test]
    fn the_configured_worker_count_overrides_the_page_and_outlives_a_failure() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(4));
        assert_eq!(t.load().workers, Some(4), "known before any reading");
        t.status(page(2, Some(50)), t0);
        assert_eq!(t.load().workers, Some(4));
        t.status(None, t0 + 100 * MS);
        assert_eq!((t.load().in_flight, t.load().workers), (None, Some(4)));
    }

    #[test]
    fn the_service_time_averages_measurements_that_started_with_a_free_worker() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(4));
        t.status(page(1, None), t0);
        t.measured(10 * MS, t0 + 100 * MS);
        assert_eq!(
            t.load().service_ms,
            Some(10.0),
            "the first is taken as it is"
        );
        // The queue builds: 4 of 4 busy. One that started before counts,
        // though it ends after: it had a worker from the start.
        t.status(page(4, None), t0 + 200 * MS);
        t.measured(30 * MS, t0 + 210 * MS);
        let alpha = 1.0 - (-0.11f64 / 2.0).exp();
        let expected = 10.0 + alpha * (30.0 - 10.0);
        assert!((t.load().service_ms.unwrap() - expected).abs() < 1e-9);
        // One that started in the queue waited in it: no service time.
        t.measured(300 * MS, t0 + 600 * MS);
        assert!((t.load().service_ms.unwrap() - expected).abs() < 1e-9);
        // Free again: weighted by the time since the last one counted.
        t.status(page(0, None), t0 + 700 * MS);
        t.measured(12 * MS, t0 + 2210 * MS);
        let alpha = 1.0 - (-2.0f64 / 2.0).exp();
        let expected = expected + alpha * (12.0 - expected);
        assert!((t.load().service_ms.unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn no_service_time_without_knowing_that_a_worker_was_free() {
        let t0 = Instant::now();
        // No worker count anywhere (nginx without `workers`).
        let mut t = LoadTracker::new(TAU, None);
        t.status(page(0, None), t0);
        t.measured(10 * MS, t0 + 100 * MS);
        assert_eq!(t.load().service_ms, None);
        // Started before the first reading, or while reads failed.
        let mut t = LoadTracker::new(TAU, Some(4));
        t.status(page(0, None), t0 + 100 * MS);
        t.measured(50 * MS, t0 + 120 * MS);
        assert_eq!(t.load().service_ms, None, "started before any reading");
        t.status(None, t0 + 200 * MS);
        t.measured(10 * MS, t0 + 300 * MS);
        assert_eq!(t.load().service_ms, None, "started while reads failed");
        t.status(page(0, None), t0 + 400 * MS);
        t.measured(10 * MS, t0 + 500 * MS);
        assert_eq!(t.load().service_ms, Some(10.0));
    }

    #[test]
    fn the_service_time_is_within_what_a_push_may_carry() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(1));
        t.status(page(0, None), t0);
        let long = Duration::from_secs(700);
        t.measured(long, t0 + long);
        assert_eq!(t.load().service_ms, Some(MAX_TUFR_MS));
    }

    #[test]
    fn memory_is_bounded_when_the_page_flips_on_every_read() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(1));
        for i in 0..5000u32 {
            t.status(page(i % 2, None), t0 + i * 10 * MS);
        }
        assert!(t.free.len() <= MAX_CHANGES, "{}", t.free.len());
        // Entries older than the horizon go too, but for the one in force
        // at it.
        let later = t0 + 50_000 * MS + HISTORY + HISTORY;
        t.status(page(0, None), later);
        assert_eq!(t.free.len(), 2, "{:?}", t.free);
        t.status(page(1, None), later + MS);
        // The latest is still in force for a measurement started now.
        t.status(page(0, None), later + 2 * MS);
        t.measured(MS, later + 3 * MS);
        assert_eq!(t.load().service_ms, Some(1.0));
    }

    #[test]
    fn a_stall_is_in_the_load_until_it_ends() {
        let t0 = Instant::now();
        let mut t = LoadTracker::new(TAU, Some(4));
        t.status(page(1, None), t0);
        assert_eq!(t.load().stalled_since, None);
        // The read sent at 100 ms went overdue: the reading is stale, and
        // a failed read does not end the stall.
        t.status(None, t0 + 110 * MS);
        t.stalled(Some(t0 + 100 * MS));
        t.status(None, t0 + 1100 * MS);
        assert_eq!(t.load().stalled_since, Some(t0 + 100 * MS));
        assert_eq!(t.load().in_flight, None);
        t.stalled(None);
        t.status(page(3, None), t0 + 1200 * MS);
        assert_eq!(t.load().stalled_since, None);
        assert_eq!(t.load().in_flight, Some(3));
    }
}
