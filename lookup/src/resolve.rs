//! An anycast name to addresses: which questions to ask for the family the
//! caller wants, what the answers add up to, and the client-side filter.

use std::net::IpAddr;
use std::time::Instant;

use hickory_proto::rr::RecordType;

use crate::choose::choose;
use crate::config::Config;
use crate::dns::{self, Outcome};
use crate::route;
use crate::sys;

/// Which addresses the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// IPv4 only (`AF_INET`).
    V4,
    /// IPv6 only (`AF_INET6`); `v4_mapped` adds IPv4 ones as `::ffff:a.b.c.d`
    /// when there is no IPv6 one (`AI_V4MAPPED`), or always (with `AI_ALL`).
    V6 { v4_mapped: bool, all: bool },
    /// Both (`AF_UNSPEC`).
    Any,
}

/// Why there are no addresses; each maps to an `EAI_*` and an `h_errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No such name (NXDOMAIN, or not a well-formed anycast name).
    NoName,
    /// The name exists, with no address of the family asked for.
    NoData,
    /// The resolver did not answer in time, is unreachable, or SERVFAIL.
    Again,
    /// A permanent failure (refused, bad configuration).
    Fail,
}

impl Failure {
    pub fn eai(self) -> i32 {
        match self {
            Failure::NoName => libc::EAI_NONAME,
            Failure::NoData => libc::EAI_NODATA,
            Failure::Again => libc::EAI_AGAIN,
            Failure::Fail => libc::EAI_FAIL,
        }
    }

    pub fn h_errno(self) -> i32 {
        match self {
            Failure::NoName => sys::HOST_NOT_FOUND,
            Failure::NoData => sys::NO_DATA,
            Failure::Again => sys::TRY_AGAIN,
            Failure::Fail => sys::NO_RECOVERY,
        }
    }
}

/// The answer for an anycast name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The DNS-form name asked for: the canonical name.
    pub name: String,
    /// The addresses the program gets, after the filter. For [`Want::V6`]
    /// every one is IPv6 (IPv4 ones mapped).
    pub addresses: Vec<IpAddr>,
}

/// Resolves the anycast name `name` (C string bytes) for `want`.
pub fn resolve(config: &Config, name: &[u8], want: Want) -> Result<Resolved, Failure> {
    let start = config.debug.then(Instant::now);
    let result = resolve_inner(config, name, want);
    if let Some(start) = start {
        let shown = String::from_utf8_lossy(name);
        let line = match &result {
            Ok(r) => {
                let addresses: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
                format!(
                    "{shown} ({want:?}) -> {} = [{}] in {:?}",
                    r.name,
                    addresses.join(", "),
                    start.elapsed()
                )
            }
            Err(f) => format!("{shown} ({want:?}) -> {f:?} in {:?}", start.elapsed()),
        };
        config.log(&line);
    }
    result
}

fn resolve_inner(config: &Config, name: &[u8], want: Want) -> Result<Resolved, Failure> {
    let qname = route::query_name(name, &config.zones).map_err(|_| Failure::NoName)?;
    let (v4, v6) = match want {
        Want::V4 => (one(config, &qname, RecordType::A), Err(Failure::NoData)),
        Want::Any => both(config, &qname),
        Want::V6 {
            v4_mapped: false, ..
        } => (Err(Failure::NoData), one(config, &qname, RecordType::AAAA)),
        Want::V6 { all: true, .. } => both(config, &qname),
        Want::V6 { .. } => {
            let v6 = one(config, &qname, RecordType::AAAA);
            match v6 {
                Err(Failure::NoData) => (one(config, &qname, RecordType::A), v6),
                _ => (Err(Failure::NoData), v6),
            }
        }
    };
    let (v4, v6) = match (v4, v6) {
        (Err(a), Err(b)) => return Err(combine(a, b)),
        (v4, v6) => (v4.unwrap_or_default(), v6.unwrap_or_default()),
    };
    let addresses = match want {
        // IPv6 first, then the mapped IPv4 ones (glibc's order for AI_ALL).
        Want::V6 { .. } => {
            let mapped = v4.iter().map(|a| match a {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => *v6,
            });
            let all: Vec<IpAddr> = v6.into_iter().chain(mapped).collect();
            // The filter sees native IPv6 as v6 and mapped IPv4 as v4.
            let plain: Vec<IpAddr> = all.iter().map(unmap).collect();
            choose(plain, config.filter, sys::random_below)
                .into_iter()
                .map(|a| match a {
                    IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                    v6 => v6,
                })
                .collect()
        }
        _ => choose(
            v4.into_iter().chain(v6).collect(),
            config.filter,
            sys::random_below,
        ),
    };
    Ok(Resolved {
        name: qname,
        addresses,
    })
}

fn unmap(address: &IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*address, IpAddr::V4),
        v4 => *v4,
    }
}

type Family = Result<Vec<IpAddr>, Failure>;

fn family(outcome: Outcome) -> Family {
    match outcome {
        Outcome::Addresses(a) => Ok(a),
        Outcome::NoData => Err(Failure::NoData),
        Outcome::NoName => Err(Failure::NoName),
        Outcome::Again => Err(Failure::Again),
        Outcome::Fail => Err(Failure::Fail),
    }
}

fn one(config: &Config, qname: &str, rtype: RecordType) -> Family {
    dns::lookup(config, qname, &[rtype])
        .into_iter()
        .next()
        .map_or(Err(Failure::Again), family)
}

/// A and AAAA at once.
fn both(config: &Config, qname: &str) -> (Family, Family) {
    let mut outcomes = dns::lookup(config, qname, &[RecordType::A, RecordType::AAAA]).into_iter();
    let v4 = outcomes.next().map_or(Err(Failure::Again), family);
    let v6 = outcomes.next().map_or(Err(Failure::Again), family);
    (v4, v6)
}

/// Two failures into one: no such name wins (the name does not exist), then
/// a temporary failure (trying again may help), then a permanent one; two
/// "no data" are "no data".
fn combine(a: Failure, b: Failure) -> Failure {
    for failure in [Failure::NoName, Failure::Again, Failure::Fail] {
        if a == failure || b == failure {
            return failure;
        }
    }
    Failure::NoData
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_combine() {
        use Failure::*;
        assert_eq!(combine(NoData, NoName), NoName);
        assert_eq!(combine(Again, NoData), Again);
        assert_eq!(combine(Fail, Again), Again);
        assert_eq!(combine(NoData, Fail), Fail);
        assert_eq!(combine(NoData, NoData), NoData);
        assert_eq!(NoName.eai(), libc::EAI_NONAME);
        assert_eq!(Again.h_errno(), sys::TRY_AGAIN);
    }

    #[test]
    fn malformed_names_fail_without_a_query() {
        let config = Config {
            resolver: Err("no resolver: a query would fail".into()),
            ..Config::default()
        };
        assert_eq!(
            resolve(&config, b"fastest.web%any.example.net", Want::Any),
            Err(Failure::NoName)
        );
        assert_eq!(
            resolve(&config, b"web%any.example.net", Want::Any),
            Err(Failure::Fail)
        );
    }

    #[test]
    fn unmapping() {
        assert_eq!(
            unmap(&"::ffff:10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
        assert_eq!(unmap(&"::1".parse().unwrap()).to_string(), "::1");
    }
}
