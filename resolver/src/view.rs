//! The explained view of a group: what the resolver knows of each member and
//! why it answers as it does. One view feeds the TXT answer and the JSON API,
//! so `dig TXT` and `GET /v1/groups/<adn>` can never disagree.

use std::time::Instant;

use anycast_proto::Metric;
use anycast_proto::push::ServerState;
use serde::Serialize;
use sha2::Digest;

use crate::estimate::{Estimate, Health};
use crate::groups::{Group, GroupSpec};
use crate::observe::Observed;
use crate::push::PushBoard;
use crate::select::{Basis, EquivalentSet, Measurements, Unavailable};

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
    /// The group's whole spec: what a local resolver learns from its
    /// authority.
    pub spec: GroupSpec,
}

/// One member as explained to operators.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// `address:port`.
    pub endpoint: String,
    /// The probe file's URL.
    pub probe_url: String,
    /// Operator cost.
    pub cost: u32,
    /// Weight.
    pub weight: u32,
    /// Whether it is in the equivalent-server set for this metric.
    pub in_set: bool,
    /// Answers that named it as the pick, since start.
    pub answers: u64,
    /// Why it is in the set or not.
    pub why: String,
    /// The latest accepted push, if any.
    pub push: Option<PushView>,
    /// The last successful probe, if any.
    pub probe: Option<ProbeView>,
    /// Failed probes in a row.
    pub probe_failures: u32,
    /// Probe health.
    pub health: Health,
    /// Why it may not be handed out, if so.
    pub unavailable: Option<Unavailable>,
    /// Estimates for every measured metric.
    pub estimate: Estimate,
}

/// A member's last successful probe.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProbeView {
    /// Whole response time, milliseconds.
    pub rt_ms: f64,
    /// The TUFR read from the probe file.
    pub tufr_ms: Option<f64>,
    /// Seconds since it was made.
    pub age_s: f64,
}

/// A digest of a spec and its members' pushes (sequence and state), in
/// quotes, as an ETag.
fn tag(
    spec: &GroupSpec,
    pushes: impl Iterator<Item = (String, Option<(u64, ServerState)>)>,
) -> String {
    let pushes: Vec<_> = pushes.collect();
    let stable = serde_json::to_vec(&(spec, pushes)).unwrap_or_default();
    let digest = sha2::Sha256::digest(&stable);
    format!("\"{}\"", hex_prefix(&digest))
}

/// A member's latest push.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PushView {
    /// Up, down or draining.
    pub state: ServerState,
    /// Smoothed TUFR in milliseconds, when up.
    pub tufr_ms: Option<f64>,
    /// Requests in the server at the agent's latest status reading, when
    /// pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    /// Requests the server serves at once, when pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// The server's service time in milliseconds, when pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_ms: Option<f64>,
    /// How long the agent's status read had waited, unanswered, when the
    /// push came (it has grown by `age_s` since, unless a later push says
    /// otherwise), when pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_ms: Option<f64>,
    /// Seconds since it was accepted.
    pub age_s: f64,
    /// Its sequence number.
    pub seq: u64,
}

impl GroupView {
    /// A tag that changes when what a local resolver learns changes (the
    /// spec, or a member's push), and not when only ages and estimates move,
    /// so polling with `If-None-Match` is cheap.
    pub fn etag(&self) -> String {
        tag(
            &self.spec,
            self.members
                .iter()
                .map(|m| (m.endpoint.clone(), m.push.map(|p| (p.seq, p.state)))),
        )
    }

    /// The [`GroupView::etag`] of the view `group` has now, without building
    /// the view (no estimate, no set): what a held request compares at each
    /// push.
    pub fn etag_of(group: &Group, pushes: &PushBoard) -> String {
        tag(
            &group.spec,
            group.members.iter().map(|m| {
                let push = pushes.latest(&group.name, m.endpoint());
                (m.endpoint().to_string(), push.map(|p| (p.seq, p.state)))
            }),
        )
    }

    /// Explains `group` for `metric`, given its equivalent set (none when
    /// the group has no member of the asked family).
    pub fn build(
        group: &Group,
        metric: Metric,
        set: Option<&EquivalentSet<'_>>,
        observed: &Observed<'_>,
    ) -> GroupView {
        let now: Instant = observed.now;
        let basis = match set.map(|s| s.basis) {
            Some(Basis::Applied) => describe(metric).to_owned(),
            Some(Basis::Measured { best_ms, limit_ms }) => format!(
                "{}: best {best_ms:.1} ms, set up to {limit_ms:.1} ms (+{:.0} % or +{:.1} ms)",
                describe(metric),
                group.selection.relative * 100.0,
                group.selection.slack_ms
            ),
            Some(Basis::NoneAvailable) => {
                "no member is available: answering from every member (fallback)".to_owned()
            }
            Some(Basis::Unmeasured) => format!(
                "{}: no member measured yet, all equivalent",
                describe(metric)
            ),
            None => "no member of the asked address family".to_owned(),
        };
        let members = group
            .members
            .iter()
            .map(|m| {
                let status = observed.status(group, m);
                let estimator = observed.probes.estimator(group, m);
                let in_set = set.is_some_and(|s| s.contains(m));
                let value = status.value(metric);
                let why = match (in_set, status.unavailable, set.map(|s| s.basis)) {
                    (true, _, Some(Basis::NoneAvailable)) => "in: fallback".to_owned(),
                    (_, Some(why), _) => format!("out: {}", why.label()),
                    (true, None, Some(Basis::Measured { limit_ms, .. })) => {
                        format!("in: {:.1} <= {limit_ms:.1} ms", value.unwrap_or_default())
                    }
                    (false, None, Some(Basis::Measured { limit_ms, .. })) => match value {
                        Some(v) => format!("out: {v:.1} > {limit_ms:.1} ms"),
                        None => "out: not measured yet".to_owned(),
                    },
                    (true, None, _) => "in".to_owned(),
                    (false, None, Some(Basis::Applied)) if metric == Metric::Cost => {
                        "out: costlier".to_owned()
                    }
                    (false, None, _) => "out".to_owned(),
                };
                MemberView {
                    endpoint: m.endpoint().to_string(),
                    probe_url: m.probe.clone(),
                    cost: m.cost,
                    weight: m.weight,
                    in_set,
                    answers: observed.answers.count(&group.name, m.endpoint()),
                    why,
                    push: observed
                        .pushes
                        .latest(&group.name, m.endpoint())
                        .map(|p| PushView {
                            state: p.state,
                            tufr_ms: p.tufr_ms,
                            in_flight: p.in_flight,
                            workers: p.workers,
                            service_ms: p.service_ms,
                            stalled_ms: p.stalled_ms,
                            age_s: now.saturating_duration_since(p.received).as_secs_f64(),
                            seq: p.seq,
                        }),
                    probe: estimator.last_probe().map(|(p, at)| ProbeView {
                        rt_ms: p.rt_ms,
                        tufr_ms: p.tufr_ms,
                        age_s: now.saturating_duration_since(at).as_secs_f64(),
                    }),
                    probe_failures: estimator.failures(),
                    health: estimator.health(),
                    unavailable: status.unavailable,
                    estimate: status.estimate,
                }
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
            spec: group.spec.clone(),
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
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        for m in &self.members {
            let push = match &m.push {
                None => "push=none".to_owned(),
                Some(p) => format!(
                    "push={} tufr_ms={}{} age_s={:.1}",
                    state_label(p.state),
                    ms(p.tufr_ms),
                    load_words(p),
                    p.age_s
                ),
            };
            let probe = match &m.probe {
                None => format!("probe=none failures={}", m.probe_failures),
                Some(p) => format!(
                    "probe_rt_ms={:.1} age_s={:.1} failures={}",
                    p.rt_ms, p.age_s, m.probe_failures
                ),
            };
            let queue = m.estimate.queue.map_or(String::new(), |q| {
                format!(
                    " queue={} since_push={:+.1} server_ms={:.1} added_ms={:.1}",
                    ms(q.queue),
                    q.since_push,
                    q.server_ms,
                    q.added_ms
                )
            });
            lines.push(format!(
                "member={} cost={} weight={} in_set={} ({}) {push} {probe} sf={} est_ms={}{queue} health={}",
                m.endpoint,
                m.cost,
                m.weight,
                if m.in_set { "yes" } else { "no" },
                m.why,
                m.estimate.sf.map_or("-".to_owned(), |v| format!("{v:.2}")),
                ms(m.estimate.rt_ms),
                health_label(m.health),
            ));
        }
        lines
    }
}

/// ` in_flight=N workers=W service_ms=S stalled_ms=T`, each only when
/// pushed.
fn load_words(push: &PushView) -> String {
    let mut words = String::new();
    if let Some(n) = push.in_flight {
        words.push_str(&format!(" in_flight={n}"));
    }
    if let Some(w) = push.workers {
        words.push_str(&format!(" workers={w}"));
    }
    if let Some(s) = push.service_ms {
        words.push_str(&format!(" service_ms={s:.1}"));
    }
    if let Some(s) = push.stalled_ms {
        words.push_str(&format!(" stalled_ms={s:.1}"));
    }
    words
}

fn health_label(health: Health) -> &'static str {
    match health {
        Health::Unknown => "unknown",
        Health::Up => "up",
        Health::Down => "down",
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

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(in_flight: Option<u32>, workers: Option<u32>, service_ms: Option<f64>) -> PushView {
        PushView {
            state: ServerState::Up,
            tufr_ms: Some(12.25),
            in_flight,
            workers,
            service_ms,
            stalled_ms: None,
            age_s: 0.5,
            seq: 7,
        }
    }

    /// The tag a held request compares at each push is the tag of the view
    /// it would send.
    #[test]
    fn the_tag_without_the_view_is_the_views() {
        use crate::groups::{AnswerMode, Member};
        use crate::observe::Observations;
        use crate::push::{MemberPush, PushConfig, PushLimit};
        use crate::select::{self, Family};
        use anycast_proto::{AnycastName, Zone};

        let zone = Zone::new("any.example.net").unwrap();
        let member = |a: &str| Member::new(a.parse().unwrap());
        let group = Group::new(
            AnycastName::new("web", None, zone).unwrap(),
            5,
            AnswerMode::One,
            vec![member("127.0.1.1:80"), member("127.0.1.2:80")],
        );
        let observations = Observations::new(PushConfig {
            keys: Vec::new(),
            window: std::time::Duration::from_secs(30),
            limit: PushLimit::default(),
        });
        let view_tag = || {
            let observed = observations.at(Instant::now());
            let set = select::equivalent_set(&group, Metric::Rt, Family::Any, &observed);
            GroupView::build(&group, Metric::Rt, set.as_ref(), &observed).etag()
        };
        let unpushed = view_tag();
        assert_eq!(GroupView::etag_of(&group, &observations.pushes), unpushed);
        observations.pushes.adopt(
            &group.name,
            "127.0.1.2:80".parse().unwrap(),
            MemberPush {
                state: ServerState::Up,
                tufr_ms: Some(4.0),
                in_flight: Some(1),
                workers: Some(4),
                stalled_ms: None,
                service_ms: None,
                seq: 9,
                received: Instant::now(),
            },
        );
        let pushed = view_tag();
        assert_ne!(pushed, unpushed);
        assert_eq!(GroupView::etag_of(&group, &observations.pushes), pushed);
    }

    #[test]
    fn the_load_of_a_push_shows_only_when_pushed() {
        let json = serde_json::to_value(push(Some(6), Some(4), Some(11.5))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "up", "tufr_ms": 12.25, "in_flight": 6, "workers": 4,
                "service_ms": 11.5, "age_s": 0.5, "seq": 7})
        );
        assert_eq!(
            load_words(&push(Some(6), Some(4), Some(11.5))),
            " in_flight=6 workers=4 service_ms=11.5"
        );
        let stalled = PushView {
            stalled_ms: Some(42.0),
            ..push(None, Some(4), Some(11.5))
        };
        assert_eq!(
            serde_json::to_value(stalled).unwrap()["stalled_ms"],
            serde_json::json!(42.0)
        );
        assert_eq!(
            load_words(&stalled),
            " workers=4 service_ms=11.5 stalled_ms=42.0"
        );
        // Absent: neither in the JSON nor in the TXT line.
        let json = serde_json::to_value(push(None, None, None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "up", "tufr_ms": 12.25, "age_s": 0.5, "seq": 7})
        );
        assert_eq!(load_words(&push(None, None, None)), "");
        assert_eq!(load_words(&push(Some(0), None, None)), " in_flight=0");
    }
}
