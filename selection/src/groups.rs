//! Anycast groups and their members: who may be answered for which name.
//!
//! A group is described by a [`GroupSpec`], the one form shared by the config
//! file, the operator's runtime changes, the state file and the admin API. A
//! [`Directory`] is an immutable snapshot of every zone and group built from
//! specs; the resolver swaps in a new snapshot on reload or admin change
//! rather than mutating one in place, so a query always sees one consistent
//! membership.

use std::collections::BTreeMap;

// The maps the answer path reads are hashed with foldhash (seeded per
// process), several times faster than the default SipHash on short keys.
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anycast_proto::name::NameRef;
use anycast_proto::{AnycastName, Zone};
use serde::{Deserialize, Serialize};

use crate::estimate::{Calibration, EstimatorConfig, LoadModel};

/// How many heartbeats may be missed before pushes are not trusted.
pub const HEARTBEATS_BEFORE_STALE: u32 = 3;

/// How many addresses an A/AAAA answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Taken out of answers by the operator (kept in the group, still probed).
    #[serde(default)]
    pub drained: bool,
}

impl Member {
    /// A member with the default probe URL, cost 0, weight 1, not drained.
    pub fn new(endpoint: SocketAddr) -> Member {
        Member {
            address: endpoint.ip(),
            port: endpoint.port(),
            probe: default_probe_url(endpoint),
            cost: 0,
            weight: 1,
            drained: false,
        }
    }

    /// The member's identity: address and port.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// Where a member serves its probe file when none is named.
pub fn default_probe_url(endpoint: SocketAddr) -> String {
    format!("http://{endpoint}/.well-known/anycast-probe.json")
}

/// A group's whole description: settings and members. Durations are in
/// milliseconds so the JSON form (state file, admin API) stays plain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSpec {
    /// Answer TTL in seconds.
    pub ttl: u32,
    /// One address or the whole set.
    pub answer: AnswerMode,
    /// Time between probes of one member.
    pub probe_interval_ms: u64,
    /// A probe not complete within this has failed.
    pub probe_timeout_ms: u64,
    /// Failed probes in a row that take a member out.
    pub fail_after: u32,
    /// Successful probes in a row that bring it back.
    pub recover_after: u32,
    /// Ratio (the paper's) or affine calibration.
    pub calibration: Calibration,
    /// The pushed TUFR as it is (the paper's) or the queue model.
    pub load_model: LoadModel,
    /// Resolvers answering the group's clients, this one included.
    pub resolvers: u32,
    /// TUFR floor in the ratio, milliseconds.
    pub tufr_floor_ms: f64,
    /// The agents' push heartbeat.
    pub heartbeat_ms: u64,
    /// Relative width of the equivalent set.
    pub threshold: f64,
    /// Absolute width of the equivalent set, milliseconds.
    pub slack_ms: f64,
    /// Uniform or weighted pick.
    pub pick: Pick,
    /// The members, in order.
    pub members: Vec<Member>,
}

impl Default for GroupSpec {
    fn default() -> Self {
        let probing = ProbeSettings::default();
        let estimator = EstimatorConfig::default();
        let selection = SelectionConfig::default();
        Self {
            // Zero: a client that honours it asks before each connection, so
            // it follows the set as it moves, as Consul's DNS does by
            // default. A TTL keeps clients on a server for up to the TTL
            // after it left the set: on the testbed 5 s against 1 s cost 89
            // against 78 ms, and 1 s against 0 cost 2.2 ms on average over
            // nine paired runs (docs/results.md). The price is a query per
            // connection (0.2-0.3 ms to a resolver nearby); set `ttl` where
            // that matters more.
            ttl: 0,
            answer: AnswerMode::One,
            probe_interval_ms: millis(probing.interval),
            probe_timeout_ms: millis(probing.timeout),
            fail_after: estimator.fail_after,
            recover_after: estimator.recover_after,
            calibration: estimator.calibration,
            load_model: estimator.load_model,
            resolvers: estimator.resolvers,
            tufr_floor_ms: estimator.tufr_floor_ms,
            heartbeat_ms: 10_000,
            threshold: selection.relative,
            slack_ms: selection.slack_ms,
            pick: selection.pick,
            members: Vec::new(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The longest TTL a group's answers may have: a day, in seconds.
pub const MAX_TTL: u32 = 86_400;

/// Why a spec cannot be a group.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A number out of its range.
    #[error("{field} {value} is out of range: {expected}")]
    OutOfRange {
        field: &'static str,
        value: String,
        expected: String,
    },
    /// Two members with one endpoint.
    #[error("member {0} is listed twice")]
    DuplicateMember(SocketAddr),
    /// A probe URL that is not http(s).
    #[error("probe URL {0:?} is not an http(s) URL")]
    BadProbeUrl(String),
}

impl SpecError {
    /// The spec's field the error is about (`address` for a member listed
    /// twice).
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::OutOfRange { field, .. } => field,
            SpecError::DuplicateMember(_) => "address",
            SpecError::BadProbeUrl(_) => "probe",
        }
    }
}

/// `Ok` if `ok`, else `field`'s value out of `expected`.
fn range(
    field: &'static str,
    ok: bool,
    value: impl ToString,
    expected: impl Into<String>,
) -> Result<(), SpecError> {
    if ok {
        Ok(())
    } else {
        Err(SpecError::OutOfRange {
            field,
            value: value.to_string(),
            expected: expected.into(),
        })
    }
}

impl Member {
    /// Checks the member's own fields.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(self.probe.starts_with("http://") || self.probe.starts_with("https://")) {
            return Err(SpecError::BadProbeUrl(self.probe.clone()));
        }
        range("weight", self.weight > 0, self.weight, "> 0")
    }
}

impl GroupSpec {
    /// Checks every field; the config, the admin API and the state file all
    /// go through this. Each rule is written here once.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.check().map_err(|(_, e)| e)
    }

    /// [`GroupSpec::validate`], saying which member (its index) an error is
    /// about, if one is: the config file points at that member's line.
    pub fn check(&self) -> Result<(), (Option<usize>, SpecError)> {
        let group = |r: Result<(), SpecError>| r.map_err(|e| (None, e));
        group(range(
            "ttl",
            self.ttl <= MAX_TTL,
            self.ttl,
            format!("0..={MAX_TTL} s"),
        ))?;
        for (field, value) in [
            ("probe_interval_ms", self.probe_interval_ms),
            ("probe_timeout_ms", self.probe_timeout_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("fail_after", u64::from(self.fail_after)),
            ("recover_after", u64::from(self.recover_after)),
            ("resolvers", u64::from(self.resolvers)),
        ] {
            group(range(field, value > 0, value, "> 0"))?;
        }
        for (field, value) in [
            ("tufr_floor_ms", self.tufr_floor_ms),
            ("threshold", self.threshold),
            ("slack_ms", self.slack_ms),
        ] {
            group(range(
                field,
                value.is_finite() && value >= 0.0,
                value,
                ">= 0",
            ))?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            m.validate().map_err(|e| (Some(i), e))?;
            if !seen.insert(m.endpoint()) {
                return Err((Some(i), SpecError::DuplicateMember(m.endpoint())));
            }
        }
        Ok(())
    }

    /// The member with `endpoint`, if any.
    pub fn member_mut(&mut self, endpoint: SocketAddr) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.endpoint() == endpoint)
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
    /// The spec it was built from, for the admin API and the state file.
    pub spec: GroupSpec,
    /// Position of the `rr` metric; shared by every client, as in DNS rotators.
    rr_next: AtomicUsize,
}

impl Group {
    /// How long this resolver waits between two probes of one member: the
    /// probe interval times the resolvers that share the group's clients
    /// (`resolvers`), so the members carry one resolver's probes however
    /// many resolvers probe them. Each resolver's view of its own paths is
    /// that much older.
    pub fn probe_every(&self) -> Duration {
        self.probing.interval * self.estimator.resolvers.max(1)
    }

    /// A group with default settings and the given members.
    pub fn new(name: AnycastName, ttl: u32, answer: AnswerMode, members: Vec<Member>) -> Self {
        Group::from_spec(
            name,
            GroupSpec {
                ttl,
                answer,
                members,
                ..GroupSpec::default()
            },
        )
    }

    /// The group a (validated) spec describes.
    pub fn from_spec(name: AnycastName, spec: GroupSpec) -> Self {
        let heartbeat = Duration::from_millis(spec.heartbeat_ms);
        Self {
            name: name.group_name(),
            ttl: spec.ttl,
            answer: spec.answer,
            members: spec.members.clone(),
            probing: ProbeSettings {
                interval: Duration::from_millis(spec.probe_interval_ms),
                timeout: Duration::from_millis(spec.probe_timeout_ms),
            },
            estimator: EstimatorConfig {
                calibration: spec.calibration,
                load_model: spec.load_model,
                resolvers: spec.resolvers,
                tufr_floor_ms: spec.tufr_floor_ms,
                push_stale_after: heartbeat * HEARTBEATS_BEFORE_STALE,
                fail_after: spec.fail_after,
                recover_after: spec.recover_after,
                ..EstimatorConfig::default()
            },
            selection: SelectionConfig {
                relative: spec.threshold,
                slack_ms: spec.slack_ms,
                pick: spec.pick,
            },
            spec,
            rr_next: AtomicUsize::new(0),
        }
    }

    /// Takes the next round-robin position.
    pub fn next_rr(&self) -> usize {
        self.rr_next.fetch_add(1, Ordering::Relaxed)
    }
}

/// Something kept per member of a group, looked up by reference: the DNS
/// path reads these for every member of every answer, and a map keyed by
/// `(AnycastName, SocketAddr)` would need an owned name, an allocation,
/// for each lookup.
#[derive(Debug)]
pub struct PerMember<V> {
    groups: HashMap<AnycastName, HashMap<SocketAddr, V>>,
}

impl<V> Default for PerMember<V> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
        }
    }
}

impl<V> PerMember<V> {
    /// The value of `member` of `group`, if any.
    pub fn get(&self, group: &AnycastName, member: SocketAddr) -> Option<&V> {
        self.groups.get(group)?.get(&member)
    }

    /// The value of `member` of `group`, inserted by `new` if absent.
    pub fn get_or_insert_with(
        &mut self,
        group: &AnycastName,
        member: SocketAddr,
        new: impl FnOnce() -> V,
    ) -> &mut V {
        if !self.groups.contains_key(group) {
            self.groups.insert(group.clone(), HashMap::new());
        }
        self.groups
            .get_mut(group)
            .map(|members| members.entry(member).or_insert_with(new))
            .unwrap_or_else(|| unreachable!("inserted above"))
    }
}

/// An anycast zone and what the DNS front needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone's name.
    pub name: Zone,
    /// TTL of negative answers (NXDOMAIN, NODATA) under the zone, in seconds.
    pub negative_ttl: u32,
    /// Whether this resolver owns the zone or learns it from its authority.
    pub role: ZoneRole,
}

/// A resolver's role for one zone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ZoneRole {
    /// This resolver owns the zone's membership and receives its pushes.
    #[default]
    Authoritative,
    /// This resolver learns the zone's groups and pushed loads from the
    /// zone's authority, and probes the members itself.
    Local(LocalZone),
}

/// How a local resolver reaches and caches a zone's authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalZone {
    /// The authorities' base URLs, the first preferred (see the
    /// `authority` module); empty to find them in DNS (TXT records
    /// `_anycast.<zone>` holding `url=...`).
    pub authorities: Vec<String>,
    /// How long a fetched group is fresh; refreshed ahead of that.
    pub cache_ttl: Duration,
    /// How long a group is still answered from when the authority cannot be
    /// reached (serve-stale, RFC 8767); past it, SERVFAIL.
    pub max_stale: Duration,
}

/// Every zone and group the resolver answers for.
#[derive(Debug, Default)]
pub struct Directory {
    zone_configs: Vec<ZoneConfig>,
    zones: Vec<Zone>,
    /// By group name (`service.zone`, as [`NameRef::group`] spells it).
    groups: HashMap<Box<str>, Arc<Group>>,
}

impl Directory {
    /// A directory of the given zones and groups (callers have rejected
    /// duplicates and groups outside the zones).
    pub fn new(zones: Vec<ZoneConfig>, groups: impl IntoIterator<Item = Group>) -> Self {
        Directory::from_shared(zones, groups.into_iter().map(Arc::new))
    }

    /// Like [`Directory::new`], reusing groups already built, so what did
    /// not change keeps its identity (and its round-robin position).
    pub fn from_shared(
        zones: Vec<ZoneConfig>,
        groups: impl IntoIterator<Item = Arc<Group>>,
    ) -> Self {
        Self {
            zones: zones.iter().map(|z| z.name.clone()).collect(),
            zone_configs: zones,
            groups: groups
                .into_iter()
                .map(|g| (g.name.to_string().into_boxed_str(), g))
                .collect(),
        }
    }

    /// The anycast zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zones with their settings.
    pub fn zone_configs(&self) -> &[ZoneConfig] {
        &self.zone_configs
    }

    /// The group a (possibly metric-qualified) name refers to.
    pub fn group(&self, name: &AnycastName) -> Option<&Arc<Group>> {
        self.groups.get(name.group_name().to_string().as_str())
    }

    /// The group a name read in place refers to; looked up without
    /// allocating.
    pub fn group_of(&self, name: &NameRef<'_, '_>) -> Option<&Arc<Group>> {
        self.groups.get(name.group())
    }

    /// Every group, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    /// Every group's spec, by name.
    pub fn specs(&self) -> BTreeMap<String, GroupSpec> {
        self.groups
            .values()
            .map(|g| (g.name.to_string(), g.spec.clone()))
            .collect()
    }
}

/// Probe settings of a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSettings {
    /// Time between probes of one member.
    pub interval: Duration,
    /// A probe not complete within this has failed.
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}
/// A group's selection parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectionConfig {
    /// A member is equivalent if its value is at most `best * (1 + relative)` ...
    pub relative: f64,
    /// ... or at most `best + slack_ms`.
    pub slack_ms: f64,
    /// Uniform or weighted pick.
    pub pick: Pick,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self {
            relative: 0.3,
            slack_ms: 5.0,
            pick: Pick::Graded,
        }
    }
}
/// How the pick is drawn from the equivalent set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// Every member of the set equally likely (the paper's).
    Uniform,
    /// Likelihood proportional to the member's weight / its estimate (its
    /// weight alone without an estimate).
    Weighted,
    /// The member of least value (ties at random; measured metrics only).
    Least,
    /// The lesser of two members of the set drawn at random (measured
    /// metrics only).
    Two,
    /// Likelihood proportional to the member's weight times how far its
    /// value is below the set's limit (measured metrics only): the best
    /// members most likely, and a member's share falling to nothing as it
    /// nears the limit, rather than jumping from its share to nothing as
    /// it crosses it (the default).
    #[default]
    Graded,
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolvers_sharing_the_clients_share_the_probing() {
        let name = anycast_proto::name::parse(
            "web.any.example.net",
            &[Zone::new("any.example.net").unwrap()],
        )
        .unwrap();
        let spec = |resolvers| GroupSpec {
            probe_interval_ms: 2000,
            resolvers,
            ..GroupSpec::default()
        };
        assert_eq!(
            Group::from_spec(name.clone(), spec(1)).probe_every(),
            Duration::from_secs(2)
        );
        assert_eq!(
            Group::from_spec(name, spec(4)).probe_every(),
            Duration::from_secs(8)
        );
    }

    use super::*;

    #[test]
    fn specs_round_trip_through_json_and_are_validated() {
        let mut spec = GroupSpec {
            members: vec![Member::new("127.0.0.1:80".parse().unwrap())],
            ..GroupSpec::default()
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<GroupSpec>(&json).unwrap(), spec);
        assert_eq!(spec.validate(), Ok(()));
        spec.members
            .push(Member::new("127.0.0.1:80".parse().unwrap()));
        assert!(matches!(
            spec.validate(),
            Err(SpecError::DuplicateMember(_))
        ));
        spec.members.pop();
        spec.threshold = -1.0;
        assert!(matches!(
            spec.validate(),
            Err(SpecError::OutOfRange {
                field: "threshold",
                ..
            })
        ));
        assert!(serde_json::from_str::<GroupSpec>(r#"{"ttl": 5, "bogus": 1}"#).is_err());
    }
}
