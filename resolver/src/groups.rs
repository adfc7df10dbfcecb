//! Anycast groups and their members: who may be answered for which name.
//!
//! A [`Directory`] is an immutable snapshot of every configured zone and group.
//! The DNS front looks names up in it; later issues swap in a new snapshot on
//! reload or admin change rather than mutating one in place.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anycast_proto::{AnycastName, Zone};

use crate::estimate::EstimatorConfig;
use crate::probe::ProbeSettings;
use crate::select::SelectionConfig;

/// How many addresses an A/AAAA answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// Only the pick.
    #[default]
    One,
    /// The whole equivalent-server set, the pick first.
    Set,
}

impl AnswerMode {
    /// The config spelling.
    pub fn label(self) -> &'static str {
        match self {
            AnswerMode::One => "one",
            AnswerMode::Set => "set",
        }
    }
}

/// One server of a group: an address clients connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The address handed out in A/AAAA answers.
    pub address: IpAddr,
    /// The service port; with the address it identifies the member.
    pub port: u16,
    /// Where the resolver fetches this member's probe file.
    pub probe: String,
    /// Operator-assigned cost for the `cost` metric (lower is preferred).
    pub cost: u32,
    /// Relative share for weighted selection.
    pub weight: u32,
}

impl Member {
    /// The member's identity: address and port.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// An anycast group: equivalent servers behind one anycast name.
#[derive(Debug)]
pub struct Group {
    /// `<service>.<zone>`, without a metric.
    pub name: AnycastName,
    /// TTL of A/AAAA/TXT answers, in seconds. Short, so clients re-resolve
    /// often enough to follow load.
    pub ttl: u32,
    /// One address per answer, or the whole set.
    pub answer: AnswerMode,
    /// The members, in configuration order.
    pub members: Vec<Member>,
    /// How members are probed.
    pub probing: ProbeSettings,
    /// How pushes and probes become estimates.
    pub estimator: EstimatorConfig,
    /// How the equivalent set is formed and the pick drawn.
    pub selection: SelectionConfig,
    /// Position of the `rr` metric; shared by every client, as in DNS rotators.
    rr_next: AtomicUsize,
}

impl Group {
    /// A group with default probing, estimation and selection, its
    /// round-robin position at the start.
    pub fn new(name: AnycastName, ttl: u32, answer: AnswerMode, members: Vec<Member>) -> Self {
        Self {
            name: name.group_name(),
            ttl,
            answer,
            members,
            probing: ProbeSettings::default(),
            estimator: EstimatorConfig::default(),
            selection: SelectionConfig::default(),
            rr_next: AtomicUsize::new(0),
        }
    }

    /// Takes the next round-robin position.
    pub fn next_rr(&self) -> usize {
        self.rr_next.fetch_add(1, Ordering::Relaxed)
    }
}

/// Every zone and group the resolver answers for.
#[derive(Debug, Default)]
pub struct Directory {
    zones: Vec<Zone>,
    groups: HashMap<AnycastName, Arc<Group>>,
}

impl Directory {
    /// Builds a directory; callers (config loading) have already rejected duplicates.
    pub fn new(zones: Vec<Zone>, groups: impl IntoIterator<Item = Group>) -> Self {
        Self {
            zones,
            groups: groups
                .into_iter()
                .map(|g| (g.name.clone(), Arc::new(g)))
                .collect(),
        }
    }

    /// The anycast zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The group a (possibly metric-qualified) name refers to.
    pub fn group(&self, name: &AnycastName) -> Option<&Arc<Group>> {
        if name.explicit_metric().is_none() {
            self.groups.get(name)
        } else {
            self.groups.get(&name.group_name())
        }
    }

    /// Every group, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }
}
