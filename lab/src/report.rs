//! What a run produces: the table, the CSV files and the chart.
//!
//! * `results.csv`: one row per request (policy, start time, client,
//!   server, DNS time, response time, error).
//! * `summary.csv` and the table on stdout: per policy, requests, failures,
//!   mean, standard deviation, p50, p95, p99 of the response time, and each
//!   server's share of the requests.
//! * `shares.csv`: per policy and per second, requests started per server:
//!   herding and oscillation show here.
//! * `response-time.svg`: per policy, the mean response time of the
//!   requests started in each second (log scale), over the run.
//!
//! A request that failed (timed out, refused, unfinished at the end) counts
//! in the statistics with the time it had taken when it was given up, a
//! lower bound of what its user waited: leaving it out would flatter the
//! policies that overload servers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::client::Sample;
use crate::policy::Policy;

/// One policy's figures.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The policy.
    pub policy: Policy,
    /// Requests started.
    pub requests: usize,
    /// Requests that did not get the whole file.
    pub failed: usize,
    /// Response time statistics, milliseconds.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
    /// Percentiles.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean time of the DNS queries actually sent (not cached), ms.
    pub dns_ms: Option<f64>,
    /// Requests per server, in server order.
    pub per_server: Vec<usize>,
}

impl Summary {
    /// Figures of `samples` (one policy's) over `servers` servers.
    pub fn of(policy: Policy, samples: &[&Sample], servers: usize) -> Summary {
        let mut rts: Vec<f64> = samples
            .iter()
            .filter(|s| s.server.is_some())
            .map(|s| s.rt_ms)
            .collect();
        rts.sort_by(f64::total_cmp);
        let n = rts.len();
        let mean = if n == 0 {
            0.0
        } else {
            rts.iter().sum::<f64>() / n as f64
        };
        let sd = if n < 2 {
            0.0
        } else {
            (rts.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        let dns: Vec<f64> = samples
            .iter()
            .filter(|s| !s.dns_cached && s.policy != Policy::Oracle && s.server.is_some())
            .map(|s| s.dns_ms)
            .collect();
        let mut per_server = vec![0; servers];
        for s in samples {
            if let Some(i) = s.server.filter(|&i| i < servers) {
                per_server[i] += 1;
            }
        }
        Summary {
            policy,
            requests: samples.len(),
            failed: samples.iter().filter(|s| s.error.is_some()).count(),
            mean,
            sd,
            p50: percentile(&rts, 0.50),
            p95: percentile(&rts, 0.95),
            p99: percentile(&rts, 0.99),
            dns_ms: (!dns.is_empty()).then(|| dns.iter().sum::<f64>() / dns.len() as f64),
            per_server,
        }
    }

    /// Each server's share of the requests, 0..=1.
    pub fn shares(&self) -> Vec<f64> {
        let total: usize = self.per_server.iter().sum();
        self.per_server
            .iter()
            .map(|&n| {
                if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                }
            })
            .collect()
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summaries of every policy in `order`.
pub fn summarise(samples: &[Sample], order: &[Policy], servers: usize) -> Vec<Summary> {
    order
        .iter()
        .map(|&p| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.policy == p).collect();
            Summary::of(p, &mine, servers)
        })
        .collect()
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

/// The table, as printed.
pub fn table(summaries: &[Summary], server_names: &[String]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<12} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "policy", "requests", "failed", "mean", "sd", "p50", "p95", "p99", "dns"
    );
    for name in server_names {
        let _ = write!(out, " {name:>6}");
    }
    out.push('\n');
    for s in summaries {
        let _ = write!(
            out,
            "{:<12} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            s.policy.name(),
            s.requests,
            s.failed,
            ms(s.mean),
            ms(s.sd),
            ms(s.p50),
            ms(s.p95),
            ms(s.p99),
            s.dns_ms.map_or("-".to_owned(), |d| format!("{d:.2}ms")),
        );
        for share in s.shares() {
            let _ = write!(out, " {:>5.1}%", share * 100.0);
        }
        out.push('\n');
    }
    out
}

/// The bars the project holds itself to, as far as the summaries allow
/// judging them:
///
/// * on the paper's setting (`paper`), the paper's (ToN 2000): the anycast
///   mean at most 0.25 of random's and 0.50 of nearest's (hybrid and
///   default);
/// * against the oracle: the default's mean at most [`ORACLE_MEAN_BAR`] and
///   its p99 at most [`ORACLE_P99_BAR`] times the oracle's;
/// * against the client-side balancers: the default's mean at most theirs.
pub fn verdict(summaries: &[Summary], paper: bool) -> Option<String> {
    let of = |p: Policy| summaries.iter().find(|s| s.policy == p && s.requests > 0);
    let mut out = String::new();
    if let (true, Some(random), Some(nearest)) = (paper, of(Policy::Random), of(Policy::Nearest)) {
        out.push_str(
            "paper (ToN 2000): anycast mean = 0.23 of random's, 0.44 of nearest's; the bar: at most 0.25 and 0.50\n",
        );
        for p in [Policy::Hybrid, Policy::Default] {
            if let Some(s) = of(p) {
                let ok = s.mean <= random.mean / 4.0 && s.mean <= nearest.mean / 2.0;
                let _ = writeln!(
                    out,
                    "{:<8} mean = {:.2} of random's, {:.2} of nearest's, sd {} -> {}",
                    p.name(),
                    s.mean / random.mean,
                    s.mean / nearest.mean,
                    ms(s.sd),
                    meets(ok)
                );
            }
        }
    }
    let default = of(Policy::Default);
    if let (Some(default), Some(oracle)) = (default, of(Policy::Oracle)) {
        let (mean, p99) = (default.mean / oracle.mean, default.p99 / oracle.p99);
        let _ = writeln!(
            out,
            "default  mean = {mean:.2} x the oracle's (bar {ORACLE_MEAN_BAR}), p99 = {p99:.2} x (bar {ORACLE_P99_BAR}) -> {}",
            meets(mean <= ORACLE_MEAN_BAR && p99 <= ORACLE_P99_BAR)
        );
    }
    for p in [Policy::LeastRequest, Policy::P2cPeakEwma, Policy::Prequal] {
        if let (Some(default), Some(other)) = (default, of(p)) {
            let _ = writeln!(
                out,
                "default  mean = {:.2} x {}'s -> {}",
                default.mean / other.mean,
                p.name(),
                if default.mean <= other.mean {
                    "ahead"
                } else {
                    "behind"
                }
            );
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The default's mean may be at most this multiple of the oracle's.
pub const ORACLE_MEAN_BAR: f64 = 1.15;

/// The default's p99 may be at most this multiple of the oracle's.
pub const ORACLE_P99_BAR: f64 = 1.5;

fn meets(ok: bool) -> &'static str {
    if ok {
        "meets the bar"
    } else {
        "misses the bar"
    }
}

/// Writes `results.csv`, `summary.csv` and `shares.csv` into `dir`.
pub fn write_csvs(
    dir: &Path,
    samples: &[Sample],
    summaries: &[Summary],
    server_names: &[String],
) -> anyhow::Result<()> {
    let mut results =
        String::from("policy,t_s,client,server,dns_ms,dns_cached,rt_ms,ok,attempts,error\n");
    for s in samples {
        let _ = writeln!(
            results,
            "{},{:.3},{},{},{:.3},{},{:.3},{},{},{}",
            s.policy,
            s.t,
            s.client,
            s.server
                .and_then(|i| server_names.get(i))
                .map_or("", String::as_str),
            s.dns_ms,
            s.dns_cached,
            s.rt_ms,
            s.error.is_none(),
            s.attempts,
            s.error.as_deref().unwrap_or("").replace([',', '\n'], ";"),
        );
    }
    write(dir, "results.csv", &results)?;

    let mut summary =
        String::from("policy,requests,failed,mean_ms,sd_ms,p50_ms,p95_ms,p99_ms,dns_ms");
    for name in server_names {
        let _ = write!(summary, ",share_{name}");
    }
    summary.push('\n');
    for s in summaries {
        let _ = write!(
            summary,
            "{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{}",
            s.policy,
            s.requests,
            s.failed,
            s.mean,
            s.sd,
            s.p50,
            s.p95,
            s.p99,
            s.dns_ms.map_or(String::new(), |d| format!("{d:.3}"))
        );
        for share in s.shares() {
            let _ = write!(summary, ",{share:.4}");
        }
        summary.push('\n');
    }
    write(dir, "summary.csv", &summary)?;

    let mut shares = String::from("policy,second");
    for name in server_names {
        let _ = write!(shares, ",{name}");
    }
    shares.push_str(",mean_rt_ms\n");
    let mut buckets: BTreeMap<(Policy, u64), (Vec<usize>, f64, usize)> = BTreeMap::new();
    for s in samples {
        let Some(i) = s.server else { continue };
        let entry = buckets
            .entry((s.policy, s.t as u64))
            .or_insert_with(|| (vec![0; server_names.len()], 0.0, 0));
        if let Some(n) = entry.0.get_mut(i) {
            *n += 1;
        }
        entry.1 += s.rt_ms;
        entry.2 += 1;
    }
    for ((policy, second), (counts, sum, n)) in &buckets {
        let _ = write!(shares, "{policy},{second}");
        for c in counts {
            let _ = write!(shares, ",{c}");
        }
        let _ = writeln!(shares, ",{:.1}", sum / *n as f64);
    }
    write(dir, "shares.csv", &shares)?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Draws `response-time.svg`: per policy, the mean response time of the
/// requests started in each `bucket_s` seconds, on a log scale.
pub fn chart(
    path: &Path,
    title: &str,
    samples: &[Sample],
    order: &[Policy],
    duration_s: f64,
) -> anyhow::Result<()> {
    let bucket_s = if duration_s <= 20.0 { 0.5 } else { 1.0 };
    let mut series: Vec<(Policy, Vec<(f64, f64)>)> = Vec::new();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for &policy in order {
        let mut sums: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.policy == policy && s.server.is_some())
        {
            let b = (s.t / bucket_s) as u64;
            let e = sums.entry(b).or_insert((0.0, 0));
            e.0 += s.rt_ms;
            e.1 += 1;
        }
        let points: Vec<(f64, f64)> = sums
            .into_iter()
            .map(|(b, (sum, n))| ((b as f64 + 0.5) * bucket_s, (sum / n as f64).max(0.1)))
            .collect();
        for &(_, v) in &points {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        series.push((policy, points));
    }
    if lo > hi {
        (lo, hi) = (1.0, 1000.0);
    }
    let y = (lo * 0.8).max(0.1)..(hi * 1.25).max(lo * 2.0);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1100, 620)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                0.0..duration_s,
                y.clone()
                    .log_scale()
                    .with_key_points(log_ticks(y.start, y.end)),
            )?;
        chart
            .configure_mesh()
            .x_desc("time in the run (s)")
            .y_desc(format!("mean response time per {bucket_s} s (ms, log)"))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        for (i, (policy, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(policy.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// Ticks for a log axis from `lo` to `hi`: 1, 2 and 5 times each power of
/// ten in between (plotters' own log ticks start at the first power of ten
/// above `lo`, so a range of 20 to 400 ms had no label below 100).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.max(1e-9).log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if (lo..=hi).contains(&v) {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_label_below_the_first_power_of_ten() {
        assert_eq!(
            log_ticks(16.0, 900.0),
            vec![20.0, 50.0, 100.0, 200.0, 500.0]
        );
        assert_eq!(log_ticks(0.5, 3.0), vec![0.5, 1.0, 2.0]);
    }

    fn sample(policy: Policy, server: usize, rt: f64) -> Sample {
        Sample {
            policy,
            t: 1.0,
            client: 0,
            server: Some(server),
            dns_ms: 0.5,
            dns_cached: false,
            rt_ms: rt,
            attempts: 1,
            error: None,
        }
    }

    #[test]
    fn statistics_and_shares() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| sample(Policy::Random, i % 2, i as f64))
            .collect();
        let s = &summarise(&samples, &[Policy::Random], 2)[0];
        assert_eq!(s.requests, 100);
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert_eq!((s.p50, s.p95, s.p99), (50.0, 95.0, 99.0));
        assert_eq!(s.shares(), vec![0.5, 0.5]);
        assert!((s.sd - 29.011).abs() < 0.01, "{}", s.sd);
    }

    #[test]
    fn the_verdict_compares_with_random_and_nearest() {
        let samples = vec![
            sample(Policy::Random, 0, 1000.0),
            sample(Policy::Nearest, 0, 500.0),
            sample(Policy::Hybrid, 0, 200.0),
        ];
        let order = [Policy::Random, Policy::Nearest, Policy::Hybrid];
        let v = verdict(&summarise(&samples, &order, 1), true).unwrap();
        assert!(
            v.contains("hybrid   mean = 0.20 of random's, 0.40 of nearest's"),
            "{v}"
        );
        assert_eq!(verdict(&summarise(&samples, &order, 1), false), None);
        assert!(v.contains("meets the bar"), "{v}");

        let samples = vec![
            sample(Policy::Default, 0, 110.0),
            sample(Policy::Oracle, 0, 100.0),
            sample(Policy::P2cPeakEwma, 0, 105.0),
        ];
        let order = [Policy::Default, Policy::Oracle, Policy::P2cPeakEwma];
        let v = verdict(&summarise(&samples, &order, 1), false).unwrap();
        assert!(
            v.contains("default  mean = 1.10 x the oracle's (bar 1.15), p99 = 1.10 x (bar 1.5) -> meets the bar"),
            "{v}"
        );
        assert!(
            v.contains("default  mean = 1.05 x p2c-peak-ewma's -> behind"),
            "{v}"
        );
    }

    #[test]
    fn a_chart_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let samples = vec![
            sample(Policy::Random, 0, 100.0),
            sample(Policy::Hybrid, 0, 20.0),
        ];
        chart(
            &path,
            "t",
            &samples,
            &[Policy::Random, Policy::Hybrid],
            10.0,
        )
        .unwrap();
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("hybrid"));
    }
}
