//! What the resolver has observed of each member, pushes and probes
//! together: the [`Measurements`] that selection and the views read; how
//! often it answered with each member ([`AnswerTally`]); and the load its
//! answers are about to bring ([`Handouts`]). [`Observations`] is the one
//! handle the DNS front, the API and the resolver's tasks share.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anycast_proto::{AnycastName, Metric};

use crate::estimate::PushedLoad;
use crate::groups::{Directory, Group, Member, PerMember};
use crate::handout::Handouts;
use crate::probe::ProbeBoard;
use crate::push::{PushBoard, PushConfig};
use crate::select::{self, Family, Measurements, MemberStatus};
use crate::telemetry;

/// Everything the resolver observes of members, one handle for all who
/// read or record it.
#[derive(Debug, Clone)]
pub struct Observations {
    /// The latest pushes.
    pub pushes: Arc<PushBoard>,
    /// The probe results and estimators.
    pub probes: Arc<ProbeBoard>,
    /// How often each member was answered.
    pub answers: Arc<AnswerTally>,
    /// The load the resolver's answers are about to bring.
    pub handouts: Arc<Handouts>,
}

impl Observations {
    /// Nothing observed yet; pushes are checked as `push` says.
    pub fn new(push: PushConfig) -> Observations {
        Observations {
            pushes: Arc::new(PushBoard::new(push)),
            probes: Arc::new(ProbeBoard::new()),
            answers: Arc::default(),
            handouts: Arc::default(),
        }
    }

    /// What is known of every member at `now`.
    pub fn at(&self, now: Instant) -> Observed<'_> {
        Observed {
            pushes: &self.pushes,
            probes: &self.probes,
            answers: &self.answers,
            handouts: &self.handouts,
            now,
        }
    }

    /// An answer naming `member` of `group` went out at `now`.
    pub fn answered(&self, group: &AnycastName, member: SocketAddr, now: Instant) {
        self.answers.record(group, member);
        self.handouts.hand_out(member, now);
    }
}

/// Pushes, probes and handouts as of one instant.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The latest pushes.
    pub pushes: &'a PushBoard,
    /// The probe results and estimators.
    pub probes: &'a ProbeBoard,
    /// How often each member was answered.
    pub answers: &'a AnswerTally,
    /// The load the resolver's answers are about to bring.
    pub handouts: &'a Handouts,
    /// The instant the statuses are for.
    pub now: Instant,
}

impl Observed<'_> {
    /// The latest push of a member, as the estimator takes it.
    pub fn pushed(&self, group: &Group, member: &Member) -> Option<PushedLoad> {
        self.pushes
            .latest(&group.name, member.endpoint())
            .map(|p| PushedLoad {
                state: p.state,
                tufr_ms: p.tufr_ms,
                received: p.received,
                in_flight: p.in_flight,
                workers: p.workers,
                service_ms: p.service_ms,
                stalled_ms: p.stalled_ms,
            })
    }

    /// Hands the scrape-time values to telemetry: the push counters, and
    /// each member's gauges with whether it is in `rt`'s set now.
    pub fn record_metrics(&self, directory: &Directory) {
        telemetry::pushes(
            self.pushes.accepted(),
            self.pushes
                .rejected()
                .into_iter()
                .map(|(rejection, n)| (rejection.reason(), n)),
        );
        for group in directory.groups() {
            let set = select::equivalent_set(group, Metric::Rt, Family::Any, self);
            let name = group.name.to_string();
            for member in &group.members {
                let status = self.status(group, member);
                let last_probe = self.probes.read(group, member, |e| e.last_probe());
                telemetry::member(
                    &name,
                    &member.endpoint().to_string(),
                    telemetry::MemberGauges {
                        pushed_tufr_ms: self.pushed(group, member).and_then(|p| p.tufr_ms),
                        probe_rt_ms: last_probe.map(|(p, _)| p.rt_ms),
                        scaling_factor: status.estimate.sf,
                        estimate_ms: status.estimate.rt_ms,
                        healthy: status.unavailable.is_none(),
                        in_set: set.as_ref().is_some_and(|s| s.contains(member)),
                        answers: self.answers.count(&group.name, member.endpoint()),
                    },
                );
            }
        }
    }
}

impl Measurements for Observed<'_> {
    fn status(&self, group: &Group, member: &Member) -> MemberStatus {
        let push = self.pushed(group, member);
        let handed = |trip| {
            self.handouts
                .handed(member.endpoint(), push.map(|p| p.received), self.now, trip)
        };
        let (estimate, health) = self.probes.read(group, member, |e| {
            (e.estimate(push.as_ref(), self.now, handed), e.health())
        });
        let silent_for = push.map(|p| self.now.saturating_duration_since(p.received));
        let unavailable =
            select::availability(group, member, push.map(|p| p.state), silent_for, health);
        MemberStatus {
            unavailable,
            estimate,
        }
    }
}

/// How many answers named each member as the pick, since start.
#[derive(Debug, Default)]
pub struct AnswerTally {
    counts: Mutex<PerMember<u64>>,
}

impl AnswerTally {
    /// Counts one answer naming `member` of `group`.
    pub fn record(&self, group: &AnycastName, member: SocketAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.get_or_insert_with(group, member, || 0) += 1;
    }

    /// Answers naming `member` of `group` so far.
    pub fn count(&self, group: &AnycastName, member: SocketAddr) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(group, member).copied().unwrap_or(0)
    }
}
