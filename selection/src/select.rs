//! Selection: from a group, a metric and an address family to the
//! equivalent-server set and the pick.
//!
//! Pure code: what is known of each member comes in through
//! [`Measurements`] and the random source as an argument, so tests fix both.
//!
//! * Unavailable members (draining, reported down, failing probes, silent
//!   agent) are left out. If that leaves none, every member of the family is
//!   considered again (except those the operator drained, unless all are),
//!   without estimates, and `cost` still applies: a possibly bad server beats
//!   no answer ([`Basis::NoneAvailable`]).
//! * `rt`, `load`, `path`: the **equivalent-server set** is every available
//!   member whose value is within `relative` of the best or within `slack`
//!   of it, whichever is wider. Members not measured yet wait outside the set
//!   while any member is measured; if none is, all are equivalent
//!   ([`Basis::Unmeasured`]).
//! * `cost`: the members of least cost. `rr`, `random`: every available member.
//! * The pick is drawn from the set, so that no single best member draws
//!   every client (herding): by default (`graded`) in proportion to the
//!   member's `weight` times how far its value is below the set's limit,
//!   for the measured metrics; uniform for the others (round robin for
//!   `rr`). Or uniform over the set (the paper's), or, with `pick =
//!   "weighted"`, proportional to the member's `weight` over its value (to
//!   its `weight` alone for the unmeasured metrics), so that an operator can
//!   give a bigger server a bigger share.

use std::time::Duration;

use anycast_proto::Metric;
use anycast_proto::push::ServerState;
use rand::RngExt;
use smallvec::SmallVec;

use crate::estimate::{Estimate, Health};
use crate::groups::{Group, Member};
pub use crate::groups::{Pick, SelectionConfig};

/// Which addresses a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
    /// Both (the TXT view).
    Any,
}

impl Family {
    /// Whether the family holds `member`'s address.
    pub fn admits(self, member: &Member) -> bool {
        match self {
            Family::V4 => member.address.is_ipv4(),
            Family::V6 => member.address.is_ipv6(),
            Family::Any => true,
        }
    }
}

/// Why a member may not be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// The operator drained it.
    Drained,
    /// Its agent said it is draining.
    Draining,
    /// Its agent said the server does not answer.
    ReportedDown,
    /// This resolver's probes of it fail.
    ProbesFailing,
    /// Its agent pushed before and has been silent too long.
    HeartbeatsLost,
}

impl Unavailable {
    /// For logs and the TXT view.
    pub fn label(self) -> &'static str {
        match self {
            Unavailable::Drained => "drained by the operator",
            Unavailable::Draining => "draining",
            Unavailable::ReportedDown => "reported down by its agent",
            Unavailable::ProbesFailing => "probes fail",
            Unavailable::HeartbeatsLost => "agent heartbeats stopped",
        }
    }
}

/// Whether `member` of `group` may be handed out, given its latest push's
/// state (`None`: never pushed), how long ago that push arrived, and its
/// probe health: the availability rule. The operator's drain comes first,
/// then what the agent says, then the probes, then the agent's silence.
pub fn availability(
    group: &Group,
    member: &Member,
    pushed: Option<ServerState>,
    silent_for: Option<Duration>,
    health: Health,
) -> Option<Unavailable> {
    match pushed {
        _ if member.drained => Some(Unavailable::Drained),
        Some(ServerState::Draining) => Some(Unavailable::Draining),
        Some(ServerState::Down) => Some(Unavailable::ReportedDown),
        _ if health == Health::Down => Some(Unavailable::ProbesFailing),
        _ if silent_for.is_some_and(|d| d > heartbeat_lost_after(group)) => {
            Some(Unavailable::HeartbeatsLost)
        }
        _ => None,
    }
}

/// Silence after which an agent that used to push is taken as lost: twice
/// the time after which its pushes stop being trusted.
pub fn heartbeat_lost_after(group: &Group) -> Duration {
    group.estimator.push_stale_after * 2
}

/// What selection knows of a member now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberStatus {
    /// `None` when the member may be handed out.
    pub unavailable: Option<Unavailable>,
    /// Its estimates.
    pub estimate: Estimate,
}

impl MemberStatus {
    /// The member's value for a measured metric.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Rt => self.estimate.rank_ms,
            Metric::Load => self.estimate.load_ms,
            Metric::Path => self.estimate.path_ms,
            Metric::Rr | Metric::Random | Metric::Cost => None,
        }
    }
}

/// The source of member statuses.
pub trait Measurements {
    /// The status of `member` of `group` now.
    fn status(&self, group: &Group, member: &Member) -> MemberStatus;
}

/// Nothing is measured: every member available, no estimates.
#[derive(Debug, Clone, Copy)]
pub struct Unmeasured;

impl Measurements for Unmeasured {
    fn status(&self, _: &Group, _: &Member) -> MemberStatus {
        MemberStatus {
            unavailable: None,
            estimate: Estimate {
                rt_ms: None,
                rank_ms: None,
                load_ms: None,
                path_ms: None,
                sf: None,
                fit: None,
                queue: None,
                source: crate::estimate::Source::None,
            },
        }
    }
}

/// Why the equivalent set is what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Basis {
    /// `rr`, `random` or `cost` applied as named.
    Applied,
    /// A measured metric: members with a value up to `limit_ms`.
    Measured {
        /// The best value.
        best_ms: f64,
        /// The largest value admitted.
        limit_ms: f64,
    },
    /// A measured metric with no member measured yet: every available
    /// member is equivalent.
    Unmeasured,
    /// No member is available: every member of the family is considered.
    NoneAvailable,
}

/// Members a set holds without allocating; a larger group's set goes to
/// the heap.
const INLINE_MEMBERS: usize = 8;

/// The members an answer may be drawn from.
#[derive(Debug, Clone)]
pub struct EquivalentSet<'g> {
    /// The members (the pick first, in a [`Choice`]).
    pub members: SmallVec<[&'g Member; INLINE_MEMBERS]>,
    /// Each member's value for the metric, where it has one.
    pub values: SmallVec<[Option<f64>; INLINE_MEMBERS]>,
    /// How the set was formed.
    pub basis: Basis,
}

impl EquivalentSet<'_> {
    /// Whether `member` is in the set.
    pub fn contains(&self, member: &Member) -> bool {
        self.members
            .iter()
            .any(|m| m.endpoint() == member.endpoint())
    }
}

/// The outcome of a selection.
#[derive(Debug)]
pub struct Choice<'g> {
    /// The member to answer with.
    pub pick: &'g Member,
    /// The set the pick was drawn from, the pick first.
    pub set: EquivalentSet<'g>,
}

/// The equivalent-server set of `group` for `metric` and `family`.
/// `None` when the group has no member of that family (a NODATA answer).
pub fn equivalent_set<'g>(
    group: &'g Group,
    metric: Metric,
    family: Family,
    measurements: &impl Measurements,
) -> Option<EquivalentSet<'g>> {
    // Built in place: the available members and their values, then cut
    // down to the set (two vectors, on the heap only for a large group).
    let of_family = || group.members.iter().filter(|m| family.admits(m));
    let mut set = EquivalentSet {
        members: SmallVec::with_capacity(group.members.len()),
        values: SmallVec::with_capacity(group.members.len()),
        basis: Basis::Applied,
    };
    let mut any = false;
    for member in of_family() {
        any = true;
        let status = measurements.status(group, member);
        if status.unavailable.is_none() {
            set.members.push(member);
            set.values.push(status.value(metric));
        }
    }
    if !any {
        return None;
    }
    if set.members.is_empty() {
        // Fallback: availability is ignored, estimates too (they describe
        // members that are failing), and the metric applies to the rest.
        // Members the operator drained stay out unless every one is drained.
        let all_drained = of_family().all(|m| m.drained);
        set.members
            .extend(of_family().filter(|m| all_drained || !m.drained));
        set.values.resize(set.members.len(), None);
        set.basis = Basis::NoneAvailable;
        if metric == Metric::Cost {
            set.keep_least_cost();
        }
        return Some(set);
    }
    match metric {
        Metric::Rr | Metric::Random => {}
        Metric::Cost => set.keep_least_cost(),
        Metric::Rt | Metric::Load | Metric::Path => {
            let best = set.values.iter().filter_map(|v| *v).min_by(f64::total_cmp);
            match best {
                None => set.basis = Basis::Unmeasured,
                Some(best_ms) => {
                    let c = group.selection;
                    let limit_ms = (best_ms * (1.0 + c.relative)).max(best_ms + c.slack_ms);
                    set.retain(|_, v| v.is_some_and(|v| v <= limit_ms));
                    set.basis = Basis::Measured { best_ms, limit_ms };
                }
            }
        }
    }
    Some(set)
}

impl EquivalentSet<'_> {
    /// Keeps the members (and their values) for which `keep` holds, in
    /// order.
    fn retain(&mut self, keep: impl Fn(&Member, Option<f64>) -> bool) {
        let mut kept = 0;
        for i in 0..self.members.len() {
            if keep(self.members[i], self.values[i]) {
                self.members.swap(kept, i);
                self.values.swap(kept, i);
                kept += 1;
            }
        }
        self.members.truncate(kept);
        self.values.truncate(kept);
    }

    /// Keeps the members of least cost.
    fn keep_least_cost(&mut self) {
        let least = self
            .members
            .iter()
            .map(|m| m.cost)
            .min()
            .unwrap_or_default();
        self.retain(|m, _| m.cost == least);
    }
}

/// Chooses a member of `group` of the given family by `metric`.
pub fn select<'g>(
    group: &'g Group,
    metric: Metric,
    family: Family,
    measurements: &impl Measurements,
    rng: &mut impl rand::Rng,
) -> Option<Choice<'g>> {
    let mut set = equivalent_set(group, metric, family, measurements)?;
    let n = set.members.len();
    let pick = match (metric, group.selection.pick, set.basis) {
        (Metric::Rr, _, _) => group.next_rr() % n,
        (_, Pick::Weighted, _) => weighted(&set, rng),
        (_, Pick::Least, Basis::Measured { .. }) => least(&set.values, rng),
        (_, Pick::Graded, Basis::Measured { limit_ms, .. }) => {
            draw(&set, rng, |i| limit_ms - value(&set.values, i))
        }
        (_, Pick::Two, Basis::Measured { .. }) if n > 1 => {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            if value(&set.values, b) < value(&set.values, a) {
                b
            } else {
                a
            }
        }
        _ => rng.random_range(0..n),
    };
    // The pick leads the set so a client that takes the first address gets it.
    set.members.swap(0, pick);
    set.values.swap(0, pick);
    Some(Choice {
        pick: set.members[0],
        set,
    })
}

/// A member's value for comparing picks (unmeasured ones last).
fn value(values: &[Option<f64>], i: usize) -> f64 {
    values[i].unwrap_or(f64::INFINITY)
}

/// The index of least value, ties broken at random (each of the `k` tied
/// so far replaces the choice with probability 1/k).
fn least(values: &[Option<f64>], rng: &mut impl rand::Rng) -> usize {
    let (mut best, mut chosen, mut ties) = (f64::INFINITY, 0, 0u32);
    for i in 0..values.len() {
        let v = value(values, i);
        if v < best {
            (best, chosen, ties) = (v, i, 1);
        } else if v == best {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                chosen = i;
            }
        }
    }
    chosen
}

/// An index drawn with probability proportional to the member's weight
/// over its value (over 1 where it has none: `random`, unmeasured).
fn weighted(set: &EquivalentSet<'_>, rng: &mut impl rand::Rng) -> usize {
    // A floor keeps a zero estimate from taking every pick.
    draw(set, rng, |i| 1.0 / set.values[i].unwrap_or(1.0).max(0.1))
}

/// An index drawn with probability proportional to the member's weight
/// times `share(index)` (shares below 0 count as 0; all of them 0: the
/// first member).
fn draw(set: &EquivalentSet<'_>, rng: &mut impl rand::Rng, share: impl Fn(usize) -> f64) -> usize {
    let weight = |i: usize| f64::from(set.members[i].weight) * share(i).max(0.0);
    let n = set.members.len();
    let total: f64 = (0..n).map(weight).sum();
    let mut point = rng.random::<f64>() * total;
    for i in 0..n {
        let w = weight(i);
        if point < w {
            return i;
        }
        point -= w;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::Source;
    use crate::groups::AnswerMode;
    use anycast_proto::{AnycastName, Zone};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::{HashMap, HashSet};
    use std::net::{IpAddr, SocketAddr};

    fn member(addr: &str, cost: u32) -> Member {
        let mut m = Member::new(SocketAddr::new(addr.parse().unwrap(), 80));
        m.cost = cost;
        m
    }

    fn group(members: Vec<Member>) -> Group {
        let zone = Zone::new("any.example.net").unwrap();
        Group::new(
            AnycastName::new("web", None, zone).unwrap(),
            5,
            AnswerMode::One,
            members,
        )
    }

    #[test]
    fn availability_puts_the_drain_first_then_the_agent_then_the_probes_then_silence() {
        let g = group(vec![]);
        let up = Some(ServerState::Up);
        let lost = heartbeat_lost_after(&g) + Duration::from_secs(1);
        let mut drained = member("10.0.0.1", 0);
        drained.drained = true;
        let m = member("10.0.0.2", 0);
        let rule = |m: &Member, state, silent, health| availability(&g, m, state, silent, health);
        assert_eq!(
            rule(&drained, Some(ServerState::Down), Some(lost), Health::Down),
            Some(Unavailable::Drained)
        );
        assert_eq!(
            rule(&m, Some(ServerState::Draining), None, Health::Down),
            Some(Unavailable::Draining)
        );
        assert_eq!(
            rule(&m, Some(ServerState::Down), None, Health::Down),
            Some(Unavailable::ReportedDown)
        );
        assert_eq!(
            rule(&m, up, Some(lost), Health::Down),
            Some(Unavailable::ProbesFailing)
        );
        assert_eq!(
            rule(&m, up, Some(lost), Health::Up),
            Some(Unavailable::HeartbeatsLost)
        );
        assert_eq!(rule(&m, up, Some(Duration::ZERO), Health::Up), None);
        // Never pushed: the probes alone decide.
        assert_eq!(rule(&m, None, None, Health::Unknown), None);
    }

    /// Fixed statuses by address; unlisted members are available, unmeasured.
    #[derive(Default)]
    struct Fixed(HashMap<IpAddr, MemberStatus>);

    impl Fixed {
        fn rt(mut self, addr: &str, rt: f64) -> Self {
            let mut s = Unmeasured.status(&group(vec![]), &member(addr, 0));
            s.estimate.rt_ms = Some(rt);
            s.estimate.rank_ms = Some(rt);
            s.estimate.source = Source::Hybrid;
            self.0.insert(addr.parse().unwrap(), s);
            self
        }

        fn out(mut self, addr: &str, why: Unavailable) -> Self {
            let mut s = Unmeasured.status(&group(vec![]), &member(addr, 0));
            s.unavailable = Some(why);
            self.0.insert(addr.parse().unwrap(), s);
            self
        }
    }

    impl Measurements for Fixed {
        fn status(&self, g: &Group, m: &Member) -> MemberStatus {
            self.0
                .get(&m.address)
                .copied()
                .unwrap_or_else(|| Unmeasured.status(g, m))
        }
    }

    fn addrs(set: &EquivalentSet<'_>) -> HashSet<String> {
        set.members.iter().map(|m| m.address.to_string()).collect()
    }

    #[test]
    fn rr_cycles_through_the_family() {
        let g = group(vec![
            member("10.0.0.1", 0),
            member("::1", 0),
            member("10.0.0.2", 0),
        ]);
        let mut rng = StdRng::seed_from_u64(1);
        let picks: Vec<String> = (0..4)
            .map(|_| {
                select(&g, Metric::Rr, Family::V4, &Unmeasured, &mut rng)
                    .unwrap()
                    .pick
                    .address
                    .to_string()
            })
            .collect();
        assert_eq!(picks, ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn rt_forms_the_set_on_the_rank_not_on_the_own_time() {
        // The nearer member would answer this request sooner (50 against 90
        // ms), but its queue would make the requests after it wait 70 ms
        // more: the farther one costs the clients less.
        let g = group(vec![member("10.0.0.1", 0), member("10.0.0.2", 0)]);
        let mut measured = Fixed::default().rt("10.0.0.1", 50.0).rt("10.0.0.2", 90.0);
        let near = measured.0.get_mut(&"10.0.0.1".parse().unwrap()).unwrap();
        near.estimate.rank_ms = Some(120.0);
        let set = equivalent_set(&g, Metric::Rt, Family::V4, &measured).unwrap();
        assert_eq!(set.members.len(), 1);
        assert_eq!(set.members[0].address.to_string(), "10.0.0.2");
        assert_eq!(set.values[..], [Some(90.0)]);
    }
    #[test]
    fn cost_picks_only_the_cheapest() {
        let g = group(vec![
            member("10.0.0.1", 5),
            member("10.0.0.2", 1),
            member("10.0.0.3", 1),
        ]);
        let mut rng = StdRng::seed_from_u64(2);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let c = select(&g, Metric::Cost, Family::V4, &Unmeasured, &mut rng).unwrap();
            assert_eq!(c.set.members.len(), 2);
            assert_eq!(c.pick, c.set.members[0]);
            assert_eq!(c.pick.cost, 1);
            seen.insert(c.pick.address);
        }
        assert_eq!(seen.len(), 2, "ties are broken at random");
    }

    #[test]
    fn the_equivalent_set_is_every_member_near_the_best() {
        let g = group(vec![
            member("10.0.0.1", 0),
            member("10.0.0.2", 0),
            member("10.0.0.3", 0),
            member("10.0.0.4", 0),
        ]);
        // Default: within 30 % or 5 ms of the best. Best 20: limit max(26, 25) = 26.
        let m = Fixed::default()
            .rt("10.0.0.1", 20.0)
            .rt("10.0.0.2", 26.0)
            .rt("10.0.0.3", 27.0);
        let set = equivalent_set(&g, Metric::Rt, Family::V4, &m).unwrap();
        assert_eq!(
            addrs(&set),
            HashSet::from(["10.0.0.1".into(), "10.0.0.2".into()])
        );
        assert_eq!(
            set.basis,
            Basis::Measured {
                best_ms: 20.0,
                limit_ms: 26.0
            }
        );
        // With a tiny best the slack decides: best 1, limit max(1.3, 6) = 6.
        let m = Fixed::default()
            .rt("10.0.0.1", 1.0)
            .rt("10.0.0.2", 5.9)
            .rt("10.0.0.3", 6.1);
        let set = equivalent_set(&g, Metric::Rt, Family::V4, &m).unwrap();
        assert_eq!(set.members.len(), 2, "the unmeasured member waits outside");
        // Two queries can get different members: no herding on the best.
        let mut rng = StdRng::seed_from_u64(9);
        let picks: HashSet<_> = (0..50)
            .map(|_| {
                select(&g, Metric::Rt, Family::V4, &m, &mut rng)
                    .unwrap()
                    .pick
                    .address
            })
            .collect();
        assert_eq!(picks.len(), 2);
    }

    #[test]
    fn weighted_pick_prefers_the_faster_member_in_proportion() {
        let mut g = group(vec![member("10.0.0.1", 0), member("10.0.0.2", 0)]);
        g.selection.pick = Pick::Weighted;
        g.selection.relative = 10.0;
        let m = Fixed::default().rt("10.0.0.1", 10.0).rt("10.0.0.2", 30.0);
        let mut rng = StdRng::seed_from_u64(7);
        let fast = (0..4000)
            .filter(|_| {
                select(&g, Metric::Rt, Family::V4, &m, &mut rng)
                    .unwrap()
                    .pick
                    .address
                    .to_string()
                    == "10.0.0.1"
            })
            .count();
        // 1/10 : 1/30 = 3 : 1.
        assert!((2850..=3150).contains(&fast), "{fast}");
    }

    /// How often the first of two members is the pick over 6000 answers,
    /// it of weight 2 and the other of weight 1, with a weighted pick.
    fn heavier_of_two(metric: Metric, m: &Fixed) -> usize {
        let mut heavy = member("10.0.0.1", 0);
        heavy.weight = 2;
        let mut g = group(vec![heavy, member("10.0.0.2", 0)]);
        g.selection.pick = Pick::Weighted;
        g.selection.relative = 10.0;
        let mut rng = StdRng::seed_from_u64(11);
        (0..6000)
            .filter(|_| {
                select(&g, metric, Family::V4, m, &mut rng)
                    .unwrap()
                    .pick
                    .address
                    .to_string()
                    == "10.0.0.1"
            })
            .count()
    }

    #[test]
    fn a_weight_2_member_is_drawn_twice_as_often_among_equals() {
        // Equal estimates, then no estimate at all (random), then unmeasured
        // members of a measured metric: 2 : 1 each time (about 4000 of 6000;
        // a binomial's standard deviation is 37).
        let equal = Fixed::default().rt("10.0.0.1", 20.0).rt("10.0.0.2", 20.0);
        for (metric, m) in [
            (Metric::Rt, &equal),
            (Metric::Random, &Fixed::default()),
            (Metric::Rt, &Fixed::default()),
        ] {
            let n = heavier_of_two(metric, m);
            assert!((3850..=4150).contains(&n), "{metric:?}: {n}");
        }
        // Weight and estimate together: weight 2 at 40 ms is as likely as
        // weight 1 at 20 ms.
        let slower = Fixed::default().rt("10.0.0.1", 40.0).rt("10.0.0.2", 20.0);
        let n = heavier_of_two(Metric::Rt, &slower);
        assert!((2850..=3150).contains(&n), "{n}");
    }

    /// How often each of three members (10, 11 and 12 ms: all in the set)
    /// is the pick over 3000 answers with `pick`.
    fn picks_of_three(pick: Pick) -> [usize; 3] {
        picks_of_three_within(pick, 10.0)
    }

    /// [`picks_of_three`] with the set's limit at `relative` above the
    /// best (or 5 ms, the slack, if wider).
    fn picks_of_three_within(pick: Pick, relative: f64) -> [usize; 3] {
        let mut g = group(vec![
            member("10.0.0.1", 0),
            member("10.0.0.2", 0),
            member("10.0.0.3", 0),
        ]);
        g.selection.pick = pick;
        g.selection.relative = relative;
        let m = Fixed::default()
            .rt("10.0.0.1", 10.0)
            .rt("10.0.0.2", 11.0)
            .rt("10.0.0.3", 12.0);
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            let pick = select(&g, Metric::Rt, Family::V4, &m, &mut rng)
                .unwrap()
                .pick;
            let last = pick.address.to_string().pop().unwrap();
            counts[last.to_digit(10).unwrap() as usize - 1] += 1;
        }
        counts
    }

    #[test]
    fn least_pick_takes_the_best_member_of_the_set() {
        assert_eq!(picks_of_three(Pick::Least), [3000, 0, 0]);
    }

    #[test]
    fn two_choices_take_the_better_of_two_drawn_at_random() {
        // Of the three pairs, the best member wins two, the middle one one,
        // the worst none: 2/3, 1/3, 0.
        let [best, middle, worst] = picks_of_three(Pick::Two);
        assert_eq!(worst, 0);
        assert!((1850..=2150).contains(&best), "{best}");
        assert!((850..=1150).contains(&middle), "{middle}");
    }

    #[test]
    fn a_graded_pick_shares_by_the_distance_to_the_limit() {
        // Limit 15 ms (10 ms + the 5 ms slack): shares 5, 4 and 3 of 12.
        let [best, middle, worst] = picks_of_three_within(Pick::Graded, 0.2);
        assert!((1150..=1350).contains(&best), "{best}");
        assert!((900..=1100).contains(&middle), "{middle}");
        assert!((650..=850).contains(&worst), "{worst}");
        // Far below a wide limit, the three are about equal.
        let wide = picks_of_three(Pick::Graded);
        assert!(wide.iter().all(|n| (900..=1100).contains(n)), "{wide:?}");
    }

    #[test]
    fn unmeasured_metrics_treat_all_as_equivalent() {
        let g = group(vec![member("10.0.0.1", 0), member("10.0.0.2", 0)]);
        for metric in [Metric::Rt, Metric::Load, Metric::Path] {
            let set = equivalent_set(&g, metric, Family::Any, &Unmeasured).unwrap();
            assert_eq!((set.basis, set.members.len()), (Basis::Unmeasured, 2));
        }
    }

    #[test]
    fn unavailable_members_are_left_out_unless_none_is_left() {
        let g = group(vec![member("10.0.0.1", 0), member("10.0.0.2", 5)]);
        let mut rng = StdRng::seed_from_u64(5);
        let m = Fixed::default()
            .out("10.0.0.1", Unavailable::Draining)
            .rt("10.0.0.2", 100.0);
        for metric in Metric::ALL {
            let c = select(&g, metric, Family::V4, &m, &mut rng).unwrap();
            assert_eq!(c.pick.address.to_string(), "10.0.0.2", "{metric}");
        }
        let m = Fixed::default()
            .out("10.0.0.1", Unavailable::ProbesFailing)
            .out("10.0.0.2", Unavailable::ReportedDown);
        let c = select(&g, Metric::Rt, Family::V4, &m, &mut rng).unwrap();
        assert_eq!(c.set.basis, Basis::NoneAvailable);
        assert_eq!(c.set.members.len(), 2);
    }

    #[test]
    fn no_member_of_the_family_is_none() {
        let g = group(vec![member("10.0.0.1", 0)]);
        let mut rng = StdRng::seed_from_u64(4);
        assert!(select(&g, Metric::Random, Family::V6, &Unmeasured, &mut rng).is_none());
    }
}
