//! Anycast domain names (ADNs) and metric-qualified ADNs (MQADNs).
//!
//! Two spellings name the same thing:
//!
//! | form  | ADN                   | MQADN                      |
//! |-------|-----------------------|----------------------------|
//! | DNS   | `web.any.example.net` | `load.web.any.example.net` |
//! | paper | `Web%any.example.net` | `ServerLoad.Web%any.example.net` |
//!
//! Both are case-insensitive and parse, given the configured zones, into one
//! [`AnycastName`]. `Display` writes the canonical DNS form (lower case, no
//! trailing dot, the metric only when the input named one).

use std::fmt;

use thiserror::Error;

use crate::Metric;

/// Longest label DNS allows (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest name DNS allows in presentation form without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;

/// Why a string is not an anycast name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing to parse.
    #[error("empty name")]
    Empty,
    /// Two dots in a row, a leading dot, or an empty side of `%`.
    #[error("empty label in {name:?}")]
    EmptyLabel { name: String },
    /// A label longer than 63 bytes.
    #[error("label {label:?} is {len} bytes long; at most {MAX_LABEL_LEN} are allowed")]
    LabelTooLong { label: String, len: usize },
    /// A name longer than 253 bytes.
    #[error("name is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong { len: usize },
    /// `a%b%c`.
    #[error("more than one '%' in {name:?}")]
    MultiplePercent { name: String },
    /// A byte outside ASCII.
    #[error("non-ASCII byte in name")]
    NonAscii,
    /// An ASCII character that cannot appear in a label.
    #[error("character {ch:?} is not allowed in a name (letters, digits, '-' and '_' only)")]
    InvalidChar { ch: char },
    /// `<metric>.<service>` where `<metric>` names no metric.
    #[error("unknown metric {metric:?} (known: {})", Metric::names())]
    UnknownMetric { metric: String },
    /// The name is not under any configured anycast zone.
    #[error("{name:?} is not under a configured anycast zone")]
    NotInZone { name: String },
    /// The name is the zone itself: it names no service.
    #[error("{name:?} is an anycast zone, not a service in it")]
    ZoneApex { name: String },
    /// More labels before the zone than `<metric>.<service>`.
    #[error("{name:?} has too many labels before the zone (expected [metric.]service)")]
    TooManyLabels { name: String },
}

/// An anycast zone such as `any.example.net`: lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zone(String);

impl Zone {
    /// Validates and normalises a zone name (one or more labels).
    pub fn new(name: &str) -> Result<Self, NameError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        check_length(name)?;
        let lower = name.to_ascii_lowercase();
        for label in lower.split('.') {
            check_label(label, &lower)?;
        }
        Ok(Zone(lower))
    }

    /// The zone in lower case, without the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `lower_name` (lower case, no trailing dot) is this zone or under it.
    /// Whether `name` (any case, no trailing dot) is this zone or under it.
    fn contains(&self, name: &str) -> bool {
        let zone = self.0.as_bytes();
        let name = name.as_bytes();
        let Some(split) = name.len().checked_sub(zone.len()) else {
            return false;
        };
        name[split..].eq_ignore_ascii_case(zone) && (split == 0 || name[split - 1] == b'.')
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed anycast name: a service in a zone, optionally qualified by a metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AnycastName {
    service: String,
    metric: Option<Metric>,
    zone: Zone,
}

impl AnycastName {
    /// Builds a name from parts already known to be valid labels.
    pub fn new(service: &str, metric: Option<Metric>, zone: Zone) -> Result<Self, NameError> {
        let service = service.to_ascii_lowercase();
        check_label(&service, &service)?;
        let name = Self {
            service,
            metric,
            zone,
        };
        check_length(&name.to_string())?;
        Ok(name)
    }

    /// The service label, lower case.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The zone the service lives in.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The metric to select by: the named one, or [`Metric::DEFAULT`].
    pub fn metric(&self) -> Metric {
        self.metric.unwrap_or(Metric::DEFAULT)
    }

    /// The metric exactly as the name gave it, if it gave one.
    pub fn explicit_metric(&self) -> Option<Metric> {
        self.metric
    }

    /// The same service and zone without the metric: the name of the group.
    pub fn group_name(&self) -> AnycastName {
        AnycastName {
            metric: None,
            ..self.clone()
        }
    }

    /// The zone among `zones` that this group's DNS form is the apex of, if
    /// any: `any` in `example.net` beside a zone `any.example.net`. Queries
    /// and pushes by that name reach the zone, never the group, so wherever
    /// groups are defined such a group is refused. (A longer zone under
    /// which the name falls can only be that one.)
    pub fn shadowing_zone<'z>(
        &self,
        zones: impl IntoIterator<Item = &'z Zone>,
    ) -> Option<&'z Zone> {
        let spelled = self.group_name().to_string();
        zones.into_iter().find(|z| z.as_str() == spelled)
    }

    /// The paper's spelling, `[metric.]service%zone`.
    pub fn paper_form(&self) -> String {
        match self.metric {
            Some(m) => format!("{}.{}%{}", m.label(), self.service, self.zone),
            None => format!("{}%{}", self.service, self.zone),
        }
    }
}

impl fmt::Display for AnycastName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = self.metric {
            write!(f, "{}.", m.label())?;
        }
        write!(f, "{}.{}", self.service, self.zone)
    }
}

/// Finds the configured zone that `name` falls under (the longest one wins),
/// without validating the rest of the name. The DNS front uses this to decide
/// between answering and forwarding before it parses.
pub fn zone_of<'z>(name: &str, zones: &'z [Zone]) -> Option<&'z Zone> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let domain = name.split_once('%').map_or(name, |(_, domain)| domain);
    zones
        .iter()
        .filter(|z| z.contains(domain))
        .max_by_key(|z| z.0.len())
}

/// Parses arbitrary bytes (for example a DNS query name) as an anycast name.
pub fn parse_bytes(input: &[u8], zones: &[Zone]) -> Result<AnycastName, NameError> {
    let mut buf = [0; MAX_NAME_LEN];
    parse_in(input, zones, &mut buf).map(|name| name.to_owned())
}

/// Parses either form of an anycast name, given the configured zones.
pub fn parse(input: &str, zones: &[Zone]) -> Result<AnycastName, NameError> {
    parse_bytes(input.as_bytes(), zones)
}

/// Room for a name's lower-cased text, which [`parse_in`] reads into.
pub type NameBuf = [u8; MAX_NAME_LEN];

/// An anycast name read in place by [`parse_in`]: the same name as an
/// [`AnycastName`], borrowing its text instead of owning it, so the DNS
/// path answers without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRef<'b, 'z> {
    metric: Option<Metric>,
    /// `service.zone`, lower case: the group's name.
    group: &'b str,
    service_len: usize,
    zone: &'z Zone,
}

impl NameRef<'_, '_> {
    /// The group's name, `service.zone` in lower case, whichever form the
    /// name was in (as [`AnycastName::group_name`] displays).
    pub fn group(&self) -> &str {
        self.group
    }

    /// The metric to select by: the named one, or [`Metric::DEFAULT`].
    pub fn metric(&self) -> Metric {
        self.metric.unwrap_or(Metric::DEFAULT)
    }

    /// The metric exactly as the name gave it, if it gave one.
    pub fn explicit_metric(&self) -> Option<Metric> {
        self.metric
    }

    /// The zone the service lives in.
    pub fn zone(&self) -> &Zone {
        self.zone
    }

    /// The name, owned.
    pub fn to_owned(&self) -> AnycastName {
        AnycastName {
            service: self.group[..self.service_len].to_owned(),
            metric: self.metric,
            zone: self.zone.clone(),
        }
    }
}

/// Parses either form of an anycast name from arbitrary bytes, writing its
/// lower-cased text into `buf`; allocates only to describe an error.
pub fn parse_in<'b, 'z>(
    input: &[u8],
    zones: &'z [Zone],
    buf: &'b mut NameBuf,
) -> Result<NameRef<'b, 'z>, NameError> {
    if !input.is_ascii() {
        return Err(NameError::NonAscii);
    }
    let trimmed = input.strip_suffix(b".").unwrap_or(input);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong { len: trimmed.len() });
    }
    let len = trimmed.len();
    for (to, from) in buf.iter_mut().zip(trimmed) {
        *to = from.to_ascii_lowercase();
    }
    let lower = std::str::from_utf8(&buf[..len]).map_err(|_| NameError::NonAscii)?;

    // Where the head (`[metric.]service`) ends, and where the zone starts.
    let (head_end, zone) = match lower.split_once('%') {
        Some((head, domain)) => {
            if domain.contains('%') {
                return Err(NameError::MultiplePercent { name: lower.into() });
            }
            if head.is_empty() || domain.is_empty() {
                return Err(NameError::EmptyLabel { name: lower.into() });
            }
            for label in domain.split('.') {
                check_label(label, lower)?;
            }
            let zone = zones
                .iter()
                .find(|z| z.0 == domain)
                .ok_or_else(|| NameError::NotInZone { name: lower.into() })?;
            (head.len(), zone)
        }
        None => {
            for label in lower.split('.') {
                check_label(label, lower)?;
            }
            let zone = zones
                .iter()
                .filter(|z| z.contains(lower))
                .max_by_key(|z| z.0.len())
                .ok_or_else(|| NameError::NotInZone { name: lower.into() })?;
            if lower.len() == zone.0.len() {
                return Err(NameError::ZoneApex { name: lower.into() });
            }
            // `lower` ends with ".<zone>"; drop it.
            (lower.len() - zone.0.len() - 1, zone)
        }
    };

    let head = &lower[..head_end];
    let mut labels = head.split('.');
    let (metric, service) = match (labels.next(), labels.next(), labels.next()) {
        (Some(service), None, _) => (None, service),
        (Some(metric), Some(service), None) => (Some(metric), service),
        _ => return Err(NameError::TooManyLabels { name: lower.into() }),
    };
    check_label(service, lower)?;
    let metric = match metric {
        None => None,
        Some(label) => {
            check_label(label, lower)?;
            Some(
                Metric::from_label(label).ok_or_else(|| NameError::UnknownMetric {
                    metric: label.to_owned(),
                })?,
            )
        }
    };
    let (service_start, service_len) = (head_end - service.len(), service.len());
    // The paper's form joins service and zone with `%`: spell the group's
    // name with a dot, as the DNS form does.
    buf[head_end] = b'.';
    let group = std::str::from_utf8(&buf[service_start..len]).map_err(|_| NameError::NonAscii)?;
    Ok(NameRef {
        metric,
        group,
        service_len,
        zone,
    })
}

fn check_length(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong { len: name.len() });
    }
    Ok(())
}

fn check_label(label: &str, name: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel {
            name: name.to_owned(),
        });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong {
            label: label.to_owned(),
            len: label.len(),
        });
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if label.bytes().all(allowed) {
        return Ok(());
    }
    // The first character that is not allowed, whole (it may not be ASCII).
    match label.chars().find(|c| !u8::try_from(*c).is_ok_and(allowed)) {
        Some(ch) if !ch.is_ascii() => Err(NameError::NonAscii),
        Some(ch) => Err(NameError::InvalidChar { ch }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zones() -> Vec<Zone> {
        vec![
            Zone::new("any.example.net").unwrap(),
            Zone::new("example.net").unwrap(),
            Zone::new("cc.gatech.edu.").unwrap(),
        ]
    }

    fn p(s: &str) -> Result<AnycastName, NameError> {
        parse(s, &zones())
    }

    #[test]
    fn a_name_read_in_place_names_its_group_in_either_form() {
        let zones = zones();
        for (input, group, metric) in [
            (
                "rt.Web.Any.Example.NET.",
                "web.any.example.net",
                Some(Metric::Rt),
            ),
            (
                "rt.web%any.example.net",
                "web.any.example.net",
                Some(Metric::Rt),
            ),
            ("web%any.example.net", "web.any.example.net", None),
            ("web.example.net", "web.example.net", None),
        ] {
            let mut buf = [0; MAX_NAME_LEN];
            let name = parse_in(input.as_bytes(), &zones, &mut buf).unwrap();
            assert_eq!(name.group(), group, "{input}");
            assert_eq!(name.explicit_metric(), metric, "{input}");
            assert_eq!(name.to_owned(), p(input).unwrap(), "{input}");
            assert_eq!(name.to_owned().group_name().to_string(), group, "{input}");
        }
    }

    #[test]
    fn dns_form_adn_and_mqadn() {
        let n = p("web.any.example.net").unwrap();
        assert_eq!(n.service(), "web");
        assert_eq!(n.zone().as_str(), "any.example.net");
        assert_eq!(n.explicit_metric(), None);
        assert_eq!(n.metric(), Metric::Rt);

        let n = p("load.web.any.example.net.").unwrap();
        assert_eq!(n.explicit_metric(), Some(Metric::Load));
        assert_eq!(n.to_string(), "load.web.any.example.net");
    }

    #[test]
    fn paper_form_matches_dns_form() {
        assert_eq!(
            p("ServerLoad.Daily-News%any.example.net").unwrap(),
            p("serverload.daily-news.any.example.net").unwrap()
        );
        assert_eq!(
            p("Daily_News%cc.gatech.edu").unwrap(),
            p("daily_news.cc.gatech.edu").unwrap()
        );
        assert_eq!(
            p("responsetime.web.any.example.net").unwrap().metric(),
            Metric::Rt
        );
    }

    #[test]
    fn longest_zone_wins() {
        // `web.any.example.net` is under both `any.example.net` and `example.net`.
        assert_eq!(
            p("web.any.example.net").unwrap().zone().as_str(),
            "any.example.net"
        );
        assert_eq!(p("web.example.net").unwrap().zone().as_str(), "example.net");
        // Under `example.net`, `rt.any` is metric `rt` of service `any`... but
        // `any.example.net` is a zone, so it is that zone's apex instead.
        assert!(matches!(
            p("any.example.net"),
            Err(NameError::ZoneApex { .. })
        ));
    }

    #[test]
    fn every_malformed_input_has_its_error() {
        assert_eq!(p(""), Err(NameError::Empty));
        assert_eq!(p("."), Err(NameError::Empty));
        assert!(matches!(
            p("web..any.example.net"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            p("%any.example.net"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(p("web%"), Err(NameError::EmptyLabel { .. })));
        let long = "a".repeat(64);
        assert!(matches!(
            p(&format!("{long}.any.example.net")),
            Err(NameError::LabelTooLong { len: 64, .. })
        ));
        let huge = format!("{}any.example.net", "abcdefghi.".repeat(25));
        assert!(matches!(p(&huge), Err(NameError::NameTooLong { .. })));
        assert!(matches!(
            p("a%b%any.example.net"),
            Err(NameError::MultiplePercent { .. })
        ));
        assert!(matches!(
            p("fastest.web.any.example.net"),
            Err(NameError::UnknownMetric { metric }) if metric == "fastest"
        ));
        assert!(matches!(
            p("web.example.org"),
            Err(NameError::NotInZone { .. })
        ));
        assert!(matches!(
            p("web%example.org"),
            Err(NameError::NotInZone { .. })
        ));
        // The paper form names the zone exactly, not a name under it.
        assert!(matches!(
            p("web%x.any.example.net"),
            Err(NameError::NotInZone { .. })
        ));
        assert_eq!(p("wéb.any.example.net"), Err(NameError::NonAscii));
        assert_eq!(
            parse_bytes(b"w\xffb.any.example.net", &zones()),
            Err(NameError::NonAscii)
        );
        assert!(matches!(
            p("a.b.web.any.example.net"),
            Err(NameError::TooManyLabels { .. })
        ));
        assert_eq!(
            p("we b.any.example.net"),
            Err(NameError::InvalidChar { ch: ' ' })
        );
    }

    #[test]
    fn zone_of_routes_before_parsing() {
        let z = zones();
        assert_eq!(
            zone_of("X.Web.Any.Example.Net.", &z).map(Zone::as_str),
            Some("any.example.net")
        );
        assert_eq!(
            zone_of("web%any.example.net", &z).map(Zone::as_str),
            Some("any.example.net")
        );
        assert_eq!(zone_of("www.example.org", &z), None);
        assert_eq!(zone_of("notexample.net", &z), None);
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,20}"
    }

    fn metric() -> impl Strategy<Value = Option<Metric>> {
        prop_oneof![
            Just(None),
            proptest::sample::select(Metric::ALL.to_vec()).prop_map(Some)
        ]
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(service in label(), metric in metric(), zi in 0usize..3) {
            let zone = zones()[zi].clone();
            // A service named like a zone's first label would be that zone's apex.
            prop_assume!(!(zi == 1 && service.eq_ignore_ascii_case("any")));
            let name = AnycastName::new(&service, metric, zone).unwrap();
            prop_assert_eq!(p(&name.to_string()), Ok(name.clone()));
            prop_assert_eq!(p(&name.paper_form()), Ok(name));
        }

        #[test]
        fn both_forms_give_the_same_value(service in label(), metric in label(), zi in 0usize..3) {
            let zone = zones()[zi].clone();
            prop_assume!(!(zi == 1 && service.eq_ignore_ascii_case("any")));
            let dns = format!("{metric}.{service}.{zone}");
            let paper = format!("{metric}.{service}%{}", zone.as_str().to_uppercase());
            prop_assert_eq!(p(&dns), p(&paper));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_bytes(&bytes, &zones());
            let _ = zone_of(&String::from_utf8_lossy(&bytes), &zones());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "[a-z%._-]{0,80}") {
            let _ = p(&s);
        }
    }
}
