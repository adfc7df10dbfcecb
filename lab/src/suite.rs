//! `anycast-lab suite`: every scenario of a directory, one after the other,
//! and one table and one chart over all of them: per scenario and policy,
//! the mean and p99 response time and both as a multiple of the oracle's.
//!
//! Each scenario's own outputs (table, CSVs, chart, logs) go to
//! `OUT/<scenario>/`; the suite's to `OUT/suite.csv`, `OUT/suite.txt` and
//! `OUT/suite.svg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use crate::policy::Policy;
use crate::report::{self, ORACLE_MEAN_BAR, ORACLE_P99_BAR, Summary};

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Each policy's figures.
    pub summaries: Vec<Summary>,
    /// Whether it is the paper's setting (the paper's bar applies).
    pub paper: bool,
}

impl ScenarioResult {
    fn oracle(&self) -> Option<&Summary> {
        self.summaries
            .iter()
            .find(|s| s.policy == Policy::Oracle && s.requests > 0)
    }

    /// `s`'s mean and p99 as multiples of the oracle's.
    fn ratios(&self, s: &Summary) -> Option<(f64, f64)> {
        let o = self.oracle()?;
        (o.mean > 0.0 && o.p99 > 0.0).then(|| (s.mean / o.mean, s.p99 / o.p99))
    }
}

/// The scenario files of `dir`, in name order.
pub fn scenarios(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no scenario (*.toml) in {}",
        dir.display()
    );
    Ok(files)
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |r| format!("{r:.2}"))
}

/// The suite's table: a block per scenario, a line per policy, and the
/// default's verdict under each block.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<14} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7}",
        "scenario", "policy", "requests", "failed", "mean ms", "p99 ms", "mean/o", "p99/o"
    );
    for r in results {
        for s in &r.summaries {
            let ratios = r.ratios(s);
            let _ = writeln!(
                out,
                "{:<18} {:<14} {:>8} {:>6} {:>9.1} {:>9.1} {:>7} {:>7}",
                r.name,
                s.policy.name(),
                s.requests,
                s.failed,
                s.mean,
                s.p99,
                ratio(ratios.map(|r| r.0)),
                ratio(ratios.map(|r| r.1)),
            );
        }
        if let Some(verdict) = report::verdict(&r.summaries, r.paper) {
            for line in verdict.lines() {
                let _ = writeln!(out, "{:<18} {line}", "");
            }
        }
        out.push('\n');
    }
    out
}

/// `suite.csv`: a row per scenario and policy.
pub fn csv(results: &[ScenarioResult]) -> String {
    let mut out = String::from(
        "scenario,policy,requests,failed,mean_ms,sd_ms,p50_ms,p95_ms,p99_ms,mean_over_oracle,p99_over_oracle\n",
    );
    for r in results {
        for s in &r.summaries {
            let ratios = r.ratios(s);
            let _ = writeln!(
                out,
                "{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},{}",
                r.name,
                s.policy,
                s.requests,
                s.failed,
                s.mean,
                s.sd,
                s.p50,
                s.p95,
                s.p99,
                ratios.map_or(String::new(), |r| format!("{:.4}", r.0)),
                ratios.map_or(String::new(), |r| format!("{:.4}", r.1)),
            );
        }
    }
    out
}

/// Width of one scenario's group of bars in the chart's x units.
const SLOT: i32 = 1000;

/// `suite.svg`: two panels (mean and p99 as multiples of the oracle's, log
/// scale), a group of bars per scenario, a bar per policy, and the bars the
/// default is held to as dashed lines.
pub fn chart(path: &Path, results: &[ScenarioResult]) -> anyhow::Result<()> {
    let mut policies: Vec<Policy> = Vec::new();
    for r in results {
        for s in &r.summaries {
            if s.policy != Policy::Oracle && !policies.contains(&s.policy) {
                policies.push(s.policy);
            }
        }
    }
    let hi = results
        .iter()
        .flat_map(|r| r.summaries.iter().filter_map(|s| r.ratios(s)))
        .flat_map(|(m, p)| [m, p])
        .fold(2.0f64, f64::max)
        * 1.2;
    let n = results.len().max(1);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(450);
        for (area, which, bar) in [
            (&top, "mean", ORACLE_MEAN_BAR),
            (&bottom, "p99", ORACLE_P99_BAR),
        ] {
            let y = 0.8..hi;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{which} response time / the oracle's (log), per scenario"),
                    ("sans-serif", 20),
                )
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(
                    // A scenario is SLOT units wide (integers: the labels
                    // sit at key points, which only default formats allow).
                    (0..n as i32 * SLOT)
                        .with_key_points((0..n as i32).map(|i| i * SLOT + SLOT / 2).collect()),
                    y.clone()
                        .log_scale()
                        .with_key_points(report::log_ticks(y.start, y.end)),
                )?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|x| {
                    results
                        .get((x / SLOT) as usize)
                        .map_or(String::new(), |r| r.name.clone())
                })
                .y_label_formatter(&|v| format!("{v}"))
                .draw()?;
            let width = SLOT * 8 / 10 / policies.len().max(1) as i32;
            for (k, &policy) in policies.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                let bars = results.iter().enumerate().filter_map(|(i, r)| {
                    let s = r.summaries.iter().find(|s| s.policy == policy)?;
                    let (mean, p99) = r.ratios(s)?;
                    let v = if which == "mean" { mean } else { p99 };
                    let x0 = i as i32 * SLOT + SLOT / 10 + k as i32 * width;
                    Some(Rectangle::new(
                        [(x0, 0.8), (x0 + width * 9 / 10, v.max(0.8))],
                        color.filled(),
                    ))
                });
                let series = chart.draw_series(bars)?;
                if which == "mean" {
                    series.label(policy.name()).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
                }
            }
            chart.draw_series(DashedLineSeries::new(
                [(0, bar), (n as i32 * SLOT, bar)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?;
            if which == "mean" {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()?;
            }
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Sample;

    fn result(name: &str, figures: &[(Policy, f64)]) -> ScenarioResult {
        let samples: Vec<Sample> = figures
            .iter()
            .map(|&(policy, rt)| Sample {
                policy,
                t: 1.0,
                client: 0,
                server: Some(0),
                dns_ms: 0.0,
                dns_cached: false,
                rt_ms: rt,
                attempts: 1,
                error: None,
            })
            .collect();
        let order: Vec<Policy> = figures.iter().map(|f| f.0).collect();
        ScenarioResult {
            name: name.into(),
            summaries: report::summarise(&samples, &order, 1),
            paper: false,
        }
    }

    #[test]
    fn ratios_to_the_oracle_in_the_table_csv_and_chart() {
        let results = vec![
            result("a", &[(Policy::Default, 110.0), (Policy::Oracle, 100.0)]),
            result("b", &[(Policy::Random, 300.0), (Policy::Default, 90.0)]),
        ];
        let t = table(&results);
        assert!(t.contains("a                  default"), "{t}");
        assert!(t.contains("   1.10    1.10"), "{t}");
        assert!(t.contains("meets the bar"), "{t}");
        let c = csv(&results);
        assert!(c.contains("a,default,1,0,110.000,"), "{c}");
        assert!(c.contains(",1.1000,1.1000\n"), "{c}");
        assert!(c.contains("b,random,1,0,300.000,"), "{c}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suite.svg");
        chart(&path, &results).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("default") && svg.contains("<rect"), "{svg}");
    }
}
