//! Selection: from a group, a metric and an address family to the
//! equivalent-server set and the pick.
//!
//! Pure code: member availability comes in as a predicate and the random
//! source as an argument, so tests fix both. Members whose agent reported
//! them down or draining are left out; if that leaves no member, every member
//! is considered again (answering with a possibly bad server beats answering
//! with none, and the TXT view says so). The measured metrics (`rt`, `load`,
//! `path`) have no estimates yet: they select as `random` does and say so
//! through [`Basis::Unmeasured`].

use anycast_proto::Metric;
use rand::RngExt;

use crate::groups::{Group, Member};

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
    fn admits(self, member: &Member) -> bool {
        match self {
            Family::V4 => member.address.is_ipv4(),
            Family::V6 => member.address.is_ipv6(),
            Family::Any => true,
        }
    }
}

/// Why the equivalent set is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The metric was applied as named.
    Applied,
    /// The metric needs push/probe estimates, which this resolver does not
    /// have; every available member is equivalent.
    Unmeasured,
    /// No member is available: every member of the family is considered.
    NoneAvailable,
}

/// The members an answer may be drawn from.
#[derive(Debug, Clone)]
pub struct EquivalentSet<'g> {
    /// The members, in configuration order (the pick first, in a [`Choice`]).
    pub members: Vec<&'g Member>,
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

/// Whether a member may be handed out now.
pub trait Availability {
    /// `false` for members known to be down or draining.
    fn is_available(&self, group: &Group, member: &Member) -> bool;
}

/// Every member is available (no measurements at all).
#[derive(Debug, Clone, Copy)]
pub struct AllAvailable;

impl Availability for AllAvailable {
    fn is_available(&self, _: &Group, _: &Member) -> bool {
        true
    }
}

/// The equivalent-server set of `group` for `metric` and `family`.
/// `None` when the group has no member of that family (a NODATA answer).
pub fn equivalent_set<'g>(
    group: &'g Group,
    metric: Metric,
    family: Family,
    availability: &impl Availability,
) -> Option<EquivalentSet<'g>> {
    let of_family: Vec<&Member> = group.members.iter().filter(|m| family.admits(m)).collect();
    if of_family.is_empty() {
        return None;
    }
    let available: Vec<&Member> = of_family
        .iter()
        .copied()
        .filter(|m| availability.is_available(group, m))
        .collect();
    if available.is_empty() {
        return Some(EquivalentSet {
            members: of_family,
            basis: Basis::NoneAvailable,
        });
    }
    Some(match metric {
        Metric::Rr | Metric::Random => EquivalentSet {
            members: available,
            basis: Basis::Applied,
        },
        Metric::Cost => {
            let least = available.iter().map(|m| m.cost).min().unwrap_or_default();
            EquivalentSet {
                members: available.into_iter().filter(|m| m.cost == least).collect(),
                basis: Basis::Applied,
            }
        }
        Metric::Rt | Metric::Load | Metric::Path => EquivalentSet {
            members: available,
            basis: Basis::Unmeasured,
        },
    })
}

/// Chooses a member of `group` of the given family by `metric`: round robin
/// for `rr`, otherwise uniformly at random from the equivalent set.
pub fn select<'g>(
    group: &'g Group,
    metric: Metric,
    family: Family,
    availability: &impl Availability,
    rng: &mut impl rand::Rng,
) -> Option<Choice<'g>> {
    let mut set = equivalent_set(group, metric, family, availability)?;
    let pick = match metric {
        Metric::Rr => group.next_rr() % set.members.len(),
        _ => rng.random_range(0..set.members.len()),
    };
    // The pick leads the set so a client that takes the first address gets it.
    set.members.swap(0, pick);
    Some(Choice {
        pick: set.members[0],
        set,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::AnswerMode;
    use anycast_proto::{AnycastName, Zone};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;
    use std::net::IpAddr;

    fn member(addr: &str, cost: u32) -> Member {
        Member {
            address: addr.parse().unwrap(),
            port: 80,
            probe: String::new(),
            cost,
            weight: 1,
        }
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

    struct Except(IpAddr);

    impl Availability for Except {
        fn is_available(&self, _: &Group, m: &Member) -> bool {
            m.address != self.0
        }
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
                select(&g, Metric::Rr, Family::V4, &AllAvailable, &mut rng)
                    .unwrap()
                    .pick
                    .address
                    .to_string()
            })
            .collect();
        assert_eq!(picks, ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]);
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
            let c = select(&g, Metric::Cost, Family::V4, &AllAvailable, &mut rng).unwrap();
            assert_eq!(c.set.members.len(), 2);
            assert_eq!(c.pick, c.set.members[0]);
            assert_eq!(c.pick.cost, 1);
            seen.insert(c.pick.address);
        }
        assert_eq!(seen.len(), 2, "ties are broken at random");
    }

    #[test]
    fn random_covers_every_member_and_measured_metrics_say_unmeasured() {
        let g = group(vec![
            member("10.0.0.1", 0),
            member("10.0.0.2", 0),
            member("10.0.0.3", 0),
        ]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = HashSet::new();
        for _ in 0..300 {
            let c = select(&g, Metric::Random, Family::V4, &AllAvailable, &mut rng).unwrap();
            assert_eq!(c.set.basis, Basis::Applied);
            assert_eq!(c.set.members.len(), 3);
            seen.insert(c.pick.address);
        }
        assert_eq!(seen.len(), 3);
        for metric in [Metric::Rt, Metric::Load, Metric::Path] {
            let c = select(&g, metric, Family::Any, &AllAvailable, &mut rng).unwrap();
            assert_eq!(c.set.basis, Basis::Unmeasured);
        }
    }

    #[test]
    fn unavailable_members_are_left_out_unless_none_is_left() {
        let g = group(vec![member("10.0.0.1", 0), member("10.0.0.2", 5)]);
        let mut rng = StdRng::seed_from_u64(5);
        let down = Except("10.0.0.1".parse().unwrap());
        for metric in Metric::ALL {
            let c = select(&g, metric, Family::V4, &down, &mut rng).unwrap();
            assert_eq!(c.pick.address.to_string(), "10.0.0.2", "{metric}");
        }
        let single = group(vec![member("10.0.0.1", 0)]);
        let c = select(&single, Metric::Random, Family::V4, &down, &mut rng).unwrap();
        assert_eq!(c.set.basis, Basis::NoneAvailable);
        assert_eq!(c.pick.address.to_string(), "10.0.0.1");
    }

    #[test]
    fn no_member_of_the_family_is_none() {
        let g = group(vec![member("10.0.0.1", 0)]);
        let mut rng = StdRng::seed_from_u64(4);
        assert!(select(&g, Metric::Random, Family::V6, &AllAvailable, &mut rng).is_none());
    }
}
