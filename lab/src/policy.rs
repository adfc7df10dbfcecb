//! The server-selection policies the lab compares, and the DNS name each
//! one asks the resolver for.
//!
//! Every policy but the oracle is one resolver serving one metric, so the
//! comparison runs the real system each time: one `anycast-resolver` serves
//! three groups over the same members, and a policy is a choice of name:
//!
//! | policy | name | what picks |
//! |---|---|---|
//! | `random` | `random.web-static.ZONE` | uniform among members |
//! | `round-robin` | `rr.web-static.ZONE` | round robin among members |
//! | `nearest` | `cost.web-static.ZONE` | each member's cost is its path RTT: the classic static nearest server |
//! | `push-only` | `load.web.ZONE` | the servers' pushed TUFR, blind to the path |
//! | `probe-only` | `path.web.ZONE` | the resolver's smoothed probe response time |
//! | `hybrid` | `rt.web-paper.ZONE` | the paper's hybrid: a group with `calibration = "ratio"` |
//! | `default` | `rt.web.ZONE` | the resolver's defaults, whatever they are today |
//! | `least-request` | none | each client: the fewer of its own requests in flight of two random servers (Envoy's `least_request`) |
//! | `p2c-peak-ewma` | none | each client: the lower peak-EWMA latency x (in flight + 1) of two random servers (Linkerd, tower, Finagle) |
//! | `prequal` | none | each client: probes servers for requests in flight and latency, hot-cold rule (Prequal, NSDI 2024) |
//! | `oracle` | none | the lab itself, from every server's true queue |
//! | `external` | `web.ZONE` | whatever DNS server `--dns` names |
//!
//! The three client-side balancers (`src/balance/`) are what users would
//! pick instead of DNS: they see every request their client sends, which a
//! resolver does not, and nothing else but what they measure or probe.
//!
//! The three classic policies use their own group, `web-static`, which the
//! agents do not push to and whose probes time out only after 30 s: in the
//! paper (and in DNS round robin) they are blind to load, and the resolver's
//! health checks would otherwise take an overloaded server out of their
//! answers, which is a load signal of its own. A dead server still leaves
//! that group (its refused probes fail at once).

use std::fmt;
use std::str::FromStr;

/// A way of choosing a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    /// Uniform among healthy members (`random.`).
    Random,
    /// Round robin (`rr.`).
    RoundRobin,
    /// Least path RTT, configured as cost (`cost.`).
    Nearest,
    /// Pushed load only (`load.`).
    PushOnly,
    /// Probes only (`path.`).
    ProbeOnly,
    /// The paper's hybrid push/probe (`rt.` on a ratio-calibrated group).
    Hybrid,
    /// The resolver's defaults (`rt.` on a group with no settings).
    Default,
    /// Client-side: least of the client's own requests in flight, of two
    /// random servers (Envoy's `least_request`).
    LeastRequest,
    /// Client-side: power of two choices on peak-EWMA latency (Linkerd).
    P2cPeakEwma,
    /// Client-side: Prequal's probes and hot-cold rule.
    Prequal,
    /// The lab picks from true queue lengths, without DNS.
    Oracle,
    /// Any DNS server given with `--dns`, asked for the plain group name.
    External,
}

impl Policy {
    /// The policies a scenario runs unless it lists its own, in order: the
    /// classic DNS schemes, the client-side balancers, the paper's hybrid,
    /// ours, and the oracle.
    pub const COMPARED: [Policy; 9] = [
        Policy::Random,
        Policy::RoundRobin,
        Policy::Nearest,
        Policy::LeastRequest,
        Policy::P2cPeakEwma,
        Policy::Prequal,
        Policy::Hybrid,
        Policy::Default,
        Policy::Oracle,
    ];

    /// Every policy a scenario may list.
    pub const ALL: [Policy; 11] = [
        Policy::Random,
        Policy::RoundRobin,
        Policy::Nearest,
        Policy::PushOnly,
        Policy::ProbeOnly,
        Policy::Hybrid,
        Policy::Default,
        Policy::LeastRequest,
        Policy::P2cPeakEwma,
        Policy::Prequal,
        Policy::Oracle,
    ];

    /// Its name in tables, files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::RoundRobin => "round-robin",
            Policy::Nearest => "nearest",
            Policy::PushOnly => "push-only",
            Policy::ProbeOnly => "probe-only",
            Policy::Hybrid => "hybrid",
            Policy::Default => "default",
            Policy::LeastRequest => "least-request",
            Policy::P2cPeakEwma => "p2c-peak-ewma",
            Policy::Prequal => "prequal",
            Policy::Oracle => "oracle",
            Policy::External => "external",
        }
    }

    /// The name a client of this policy resolves, or `None` when the client
    /// picks for itself.
    pub fn qname(self, groups: &Groups) -> Option<String> {
        let with = |metric: &str| Some(format!("{metric}.{}", groups.default));
        let fixed = |metric: &str| Some(format!("{metric}.{}", groups.static_));
        match self {
            Policy::Random => fixed("random"),
            Policy::RoundRobin => fixed("rr"),
            Policy::Nearest => fixed("cost"),
            Policy::PushOnly => with("load"),
            Policy::ProbeOnly => with("path"),
            Policy::Hybrid => Some(format!("rt.{}", groups.hybrid)),
            Policy::Default => with("rt"),
            Policy::LeastRequest | Policy::P2cPeakEwma | Policy::Prequal | Policy::Oracle => None,
            Policy::External => Some(groups.default.clone()),
        }
    }
}

/// The names of the three groups the lab's resolver serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// `<service>.<zone>`: the resolver's defaults.
    pub default: String,
    /// `<service>-paper.<zone>`: the paper's ratio calibration.
    pub hybrid: String,
    /// `<service>-static.<zone>`: no pushes, no load-driven health.
    pub static_: String,
}

impl Groups {
    /// The groups of `service` in `zone`.
    pub fn new(service: &str, zone: &str) -> Groups {
        Groups {
            default: format!("{service}.{zone}"),
            hybrid: format!("{service}-paper.{zone}"),
            static_: format!("{service}-static.{zone}"),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    /// The names of [`Policy::name`], and the resolver's metric names as
    /// aliases (`rr`, `cost`, `load`, `path`, `rt`).
    fn from_str(s: &str) -> Result<Policy, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "random" => Policy::Random,
            "round-robin" | "rr" => Policy::RoundRobin,
            "nearest" | "cost" => Policy::Nearest,
            "push-only" | "load" => Policy::PushOnly,
            "probe-only" | "path" => Policy::ProbeOnly,
            "hybrid" | "paper" => Policy::Hybrid,
            "default" | "rt" => Policy::Default,
            "least-request" | "least_request" | "lor" => Policy::LeastRequest,
            "p2c-peak-ewma" | "p2c" | "peak-ewma" => Policy::P2cPeakEwma,
            "prequal" => Policy::Prequal,
            "oracle" => Policy::Oracle,
            "external" => Policy::External,
            other => {
                let known: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
                return Err(format!(
                    "unknown policy {other:?} (known: {})",
                    known.join(", ")
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_map_to_metrics() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert_eq!("rr".parse::<Policy>(), Ok(Policy::RoundRobin));
        let g = Groups::new("web", "any.example.net");
        assert_eq!(
            Policy::Nearest.qname(&g).as_deref(),
            Some("cost.web-static.any.example.net")
        );
        assert_eq!(
            Policy::Hybrid.qname(&g).as_deref(),
            Some("rt.web-paper.any.example.net")
        );
        assert_eq!(
            Policy::Default.qname(&g).as_deref(),
            Some("rt.web.any.example.net")
        );
        assert_eq!(Policy::Oracle.qname(&g), None);
        assert!("fastest".parse::<Policy>().is_err());
    }
}
