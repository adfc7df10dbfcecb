//! Selection: from a group, a metric and an address family to the answer.
//!
//! Pure code: it takes the random source as an argument so tests can fix it.
//! The measured metrics (`rt`, `load`, `path`) have no estimates yet, so they
//! select as `random` does and say so through [`Basis::Unmeasured`].

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
    /// have; every member is equivalent and the pick is uniform.
    Unmeasured,
}

/// The outcome of a selection.
#[derive(Debug)]
pub struct Choice<'g> {
    /// The member to answer with.
    pub pick: &'g Member,
    /// The equivalent-server set the pick was drawn from, the pick first.
    pub set: Vec<&'g Member>,
    /// How the set was formed.
    pub basis: Basis,
}

/// Chooses a member of `group` of the given family by `metric`.
///
/// `None` when the group has no member of that family (a NODATA answer).
pub fn select<'g>(
    group: &'g Group,
    metric: Metric,
    family: Family,
    rng: &mut impl rand::Rng,
) -> Option<Choice<'g>> {
    let candidates: Vec<&Member> = group.members.iter().filter(|m| family.admits(m)).collect();
    if candidates.is_empty() {
        return None;
    }
    let (mut set, pick, basis) = match metric {
        Metric::Rr => {
            let pick = group.next_rr() % candidates.len();
            (candidates, pick, Basis::Applied)
        }
        Metric::Random => {
            let pick = rng.random_range(0..candidates.len());
            (candidates, pick, Basis::Applied)
        }
        Metric::Cost => {
            let least = candidates.iter().map(|m| m.cost).min().unwrap_or_default();
            let set: Vec<&Member> = candidates.into_iter().filter(|m| m.cost == least).collect();
            let pick = rng.random_range(0..set.len());
            (set, pick, Basis::Applied)
        }
        Metric::Rt | Metric::Load | Metric::Path => {
            let pick = rng.random_range(0..candidates.len());
            (candidates, pick, Basis::Unmeasured)
        }
    };
    // The pick leads the set so a client that takes the first address gets it.
    set.swap(0, pick);
    Some(Choice {
        pick: set[0],
        set,
        basis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::AnswerMode;
    use anycast_proto::{AnycastName, Zone};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

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
                select(&g, Metric::Rr, Family::V4, &mut rng)
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
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let c = select(&g, Metric::Cost, Family::V4, &mut rng).unwrap();
            assert_eq!(c.set.len(), 2);
            assert_eq!(c.pick, c.set[0]);
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
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let c = select(&g, Metric::Random, Family::V4, &mut rng).unwrap();
            assert_eq!(c.basis, Basis::Applied);
            assert_eq!(c.set.len(), 3);
            seen.insert(c.pick.address);
        }
        assert_eq!(seen.len(), 3);
        for metric in [Metric::Rt, Metric::Load, Metric::Path] {
            let c = select(&g, metric, Family::Any, &mut rng).unwrap();
            assert_eq!(c.basis, Basis::Unmeasured);
        }
    }

    #[test]
    fn no_member_of_the_family_is_none() {
        let g = group(vec![member("10.0.0.1", 0)]);
        let mut rng = StdRng::seed_from_u64(4);
        assert!(select(&g, Metric::Random, Family::V6, &mut rng).is_none());
    }
}
