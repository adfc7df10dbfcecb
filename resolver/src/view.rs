//! The explained view of a group: what the resolver knows of each member and
//! why it answers as it does. One view feeds the TXT answer and the JSON API,
//! so `dig TXT` and `GET /v1/groups/<adn>` can never disagree.

use std::time::Instant;

use anycast_proto::Metric;
use anycast_proto::push::ServerState;
use serde::Serialize;

use crate::groups::Group;
use crate::push::PushBoard;
use crate::select::{Basis, EquivalentSet};

/// A group as explained to operators.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The ADN, DNS form.
    pub name: String,
    /// The ADN, the paper's form.
    pub paper_name: String,
    /// The metric the view was made for.
    pub metric: Metric,
    /// How the equivalent set was formed.
    pub basis: String,
    /// Answer TTL in seconds.
    pub ttl: u32,
    /// `one` or `set`.
    pub answer: &'static str,
    /// Every member.
    pub members: Vec<MemberView>,
}

/// One member as explained to operators.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// `address:port`.
    pub endpoint: String,
    /// The probe file's URL.
    pub probe: String,
    /// Operator cost.
    pub cost: u32,
    /// Weight.
    pub weight: u32,
    /// Whether it is in the equivalent-server set for this metric.
    pub in_set: bool,
    /// The latest accepted push, if any.
    pub push: Option<PushView>,
}

/// A member's latest push.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PushView {
    /// Up, down or draining.
    pub state: ServerState,
    /// Smoothed TUFR in milliseconds, when up.
    pub tufr_ms: Option<f64>,
    /// Seconds since it was accepted.
    pub age_s: f64,
    /// Its sequence number.
    pub seq: u64,
}

impl GroupView {
    /// Explains `group` for `metric`, given its equivalent set (none when
    /// the group has no member of the asked family).
    pub fn build(
        group: &Group,
        metric: Metric,
        set: Option<&EquivalentSet<'_>>,
        pushes: &PushBoard,
        now: Instant,
    ) -> GroupView {
        let basis = match set.map(|s| s.basis) {
            Some(Basis::Applied) => describe(metric).to_owned(),
            Some(Basis::NoneAvailable) => {
                "no member is up: answering from every member (fallback)".to_owned()
            }
            Some(Basis::Unmeasured) => format!(
                "{metric} needs push/probe estimates, which are not available yet: answering as random"
            ),
            None => "no member of the asked address family".to_owned(),
        };
        let members = group
            .members
            .iter()
            .map(|m| MemberView {
                endpoint: m.endpoint().to_string(),
                probe: m.probe.clone(),
                cost: m.cost,
                weight: m.weight,
                in_set: set.is_some_and(|s| s.contains(m)),
                push: pushes.latest(&group.name, m.endpoint()).map(|p| PushView {
                    state: p.state,
                    tufr_ms: p.tufr_ms,
                    age_s: now.saturating_duration_since(p.received).as_secs_f64(),
                    seq: p.seq,
                }),
            })
            .collect();
        GroupView {
            name: group.name.to_string(),
            paper_name: group.name.paper_form(),
            metric,
            basis,
            ttl: group.ttl,
            answer: group.answer.label(),
            members,
        }
    }

    /// The TXT rendering: one string per line, each well under 255 bytes.
    pub fn txt_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "group={} metric={} ttl={} answer={} members={}",
                self.name,
                self.metric,
                self.ttl,
                self.answer,
                self.members.len()
            ),
            format!("basis: {}", self.basis),
        ];
        for m in &self.members {
            let push = match &m.push {
                None => "push=none".to_owned(),
                Some(p) => format!(
                    "push={} tufr_ms={} age_s={:.1}",
                    state_label(p.state),
                    p.tufr_ms.map_or("-".to_owned(), |t| format!("{t:.3}")),
                    p.age_s
                ),
            };
            lines.push(format!(
                "member={} cost={} weight={} in_set={} {push}",
                m.endpoint,
                m.cost,
                m.weight,
                if m.in_set { "yes" } else { "no" }
            ));
        }
        lines
    }
}

fn state_label(state: ServerState) -> &'static str {
    match state {
        ServerState::Up => "up",
        ServerState::Down => "down",
        ServerState::Draining => "draining",
    }
}

fn describe(metric: Metric) -> &'static str {
    match metric {
        Metric::Rr => "round robin over every member",
        Metric::Random => "uniform random over every member",
        Metric::Cost => "random among the members of least cost",
        Metric::Rt => "estimated response time (hybrid push/probe)",
        Metric::Load => "pushed server processing time",
        Metric::Path => "probe response time (nearest)",
    }
}
