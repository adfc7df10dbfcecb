//! Metrics (the paper's "filters"): how a resolver chooses among a group's members.

use std::fmt;
use std::str::FromStr;

/// A selection metric, named by the first label of a metric-qualified ADN.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Estimated response time from hybrid push/probe (the default).
    Rt,
    /// Server-pushed processing time only: path-independent.
    Load,
    /// Probe response time only: the nearest server.
    Path,
    /// Round robin among healthy members.
    Rr,
    /// Uniformly random among healthy members.
    Random,
    /// Least operator-assigned cost, ties broken at random.
    Cost,
}

impl Metric {
    /// What an ADN without a metric label selects by.
    pub const DEFAULT: Metric = Metric::Rt;

    /// Every metric, in documentation order.
    pub const ALL: [Metric; 6] = [
        Metric::Rt,
        Metric::Load,
        Metric::Path,
        Metric::Rr,
        Metric::Random,
        Metric::Cost,
    ];

    /// The canonical label.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Rt => "rt",
            Metric::Load => "load",
            Metric::Path => "path",
            Metric::Rr => "rr",
            Metric::Random => "random",
            Metric::Cost => "cost",
        }
    }

    /// Reads a label, case-insensitively, with the aliases `serverload` (= `load`)
    /// and `responsetime` (= `rt`).
    pub fn from_label(label: &str) -> Option<Metric> {
        let found = Metric::ALL
            .into_iter()
            .find(|m| label.eq_ignore_ascii_case(m.label()));
        found.or_else(|| {
            if label.eq_ignore_ascii_case("serverload") {
                Some(Metric::Load)
            } else if label.eq_ignore_ascii_case("responsetime") {
                Some(Metric::Rt)
            } else {
                None
            }
        })
    }

    /// Whether this metric needs measurements (pushes or probes) to mean anything.
    pub fn is_measured(self) -> bool {
        matches!(self, Metric::Rt | Metric::Load | Metric::Path)
    }

    /// The known labels, for error messages.
    pub fn names() -> &'static str {
        "rt (responsetime), load (serverload), path, rr, random, cost"
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The error of [`Metric::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {name:?} (known: {known})", name = .0, known = Metric::names())]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::from_label(s).ok_or_else(|| UnknownMetric(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_aliases() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_label(m.label()), Some(m));
            assert_eq!(Metric::from_label(&m.label().to_uppercase()), Some(m));
        }
        assert_eq!(Metric::from_label("ServerLoad"), Some(Metric::Load));
        assert_eq!(Metric::from_label("ResponseTime"), Some(Metric::Rt));
        assert_eq!("nope".parse::<Metric>(), Err(UnknownMetric("nope".into())));
    }
}
