//! Which names are anycast names, and what to ask the resolver for them.
//!
//! [`is_anycast`] runs on every lookup of every program the shim is loaded
//! into, so it works on the C string's bytes and never allocates. Only for
//! anycast names does [`query_name`] parse (with `anycast_proto::name`).

use anycast_proto::Zone;
use anycast_proto::name::{self, NameError};

/// Whether `name` (the bytes of a C string, without its NUL) is an anycast
/// name: the paper's `%` form, or a name in or under one of `zones`
/// (compared without case, a trailing dot ignored).
///
/// A name with a `:` is never one: it is an IPv6 literal, and
/// `fe80::1%eth0` is a scoped one, not the paper's form.
pub fn is_anycast(name: &[u8], zones: &[Zone]) -> bool {
    if name.is_empty() || name.contains(&b':') {
        return false;
    }
    if name.contains(&b'%') {
        return true;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    zones
        .iter()
        .any(|zone| in_zone(name, zone.as_str().as_bytes()))
}

/// Whether `name` is `zone` or ends with `.zone`, without case.
fn in_zone(name: &[u8], zone: &[u8]) -> bool {
    let Some(head_len) = name.len().checked_sub(zone.len()) else {
        return false;
    };
    name[head_len..].eq_ignore_ascii_case(zone) && (head_len == 0 || name[head_len - 1] == b'.')
}

/// The DNS-form name to ask the resolver for an anycast name
/// (`[metric.]service.zone`, lower case, no trailing dot).
///
/// The `%` form names its zone after the `%`; that zone need not be
/// configured. A DNS-form name must be under a configured zone; the zone
/// apex itself is passed on as it is (the resolver answers it, with no
/// address). Anything else that does not parse is an error: no such name.
pub fn query_name(name: &[u8], zones: &[Zone]) -> Result<String, NameError> {
    let text = std::str::from_utf8(name).map_err(|_| NameError::NonAscii)?;
    if let Some((_, domain)) = text.split_once('%') {
        let zone = Zone::new(domain).map_err(|_| NameError::NotInZone {
            name: text.to_owned(),
        })?;
        return name::parse(text, &[zone]).map(|n| n.to_string());
    }
    match name::parse(text, zones) {
        Ok(n) => Ok(n.to_string()),
        Err(NameError::ZoneApex { name }) => Ok(name),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<Zone> {
        vec![
            Zone::new("any.example.net").unwrap(),
            Zone::new("cc.gatech.edu").unwrap(),
        ]
    }

    #[test]
    fn anycast_names_are_recognised() {
        let z = zones();
        for name in [
            "web.any.example.net",
            "Load.Web.ANY.example.net.",
            "Web%any.example.net",
            "ServerLoad.Daily-News%whatever.example",
            "x%y",
            "any.example.net",
            "daily.cc.gatech.edu",
        ] {
            assert!(is_anycast(name.as_bytes(), &z), "{name}");
        }
        for name in [
            "",
            "localhost",
            "example.net",
            "notany.example.net",
            "any.example.net.evil.org",
            "www.example.org",
            "127.0.0.1",
            "fe80::1%eth0",
            "::1",
            "net",
        ] {
            assert!(!is_anycast(name.as_bytes(), &z), "{name}");
        }
        assert!(!is_anycast(b"web.any.example.net", &[]));
        assert!(is_anycast(b"web%any.example.net", &[]));
    }

    #[test]
    fn both_forms_ask_for_the_dns_form() {
        let z = zones();
        let q = |s: &str| query_name(s.as_bytes(), &z);
        assert_eq!(q("Web%any.example.net").unwrap(), "web.any.example.net");
        assert_eq!(
            q("ServerLoad.Web%Any.Example.Net").unwrap(),
            "load.web.any.example.net"
        );
        assert_eq!(
            q("RR.web.any.example.net.").unwrap(),
            "rr.web.any.example.net"
        );
        // The `%` form's zone need not be configured.
        assert_eq!(
            query_name(b"web%other.test", &[]).unwrap(),
            "web.other.test"
        );
        assert_eq!(q("Any.Example.Net.").unwrap(), "any.example.net");
    }

    #[test]
    fn malformed_names_are_errors() {
        let z = zones();
        for name in [
            "fastest.web.any.example.net",
            "a.b.web.any.example.net",
            "web%a%b",
            "%any.example.net",
            "web%",
            "we b.any.example.net",
            "web%bad..zone",
            "w\u{e9}b%any.example.net",
        ] {
            assert!(query_name(name.as_bytes(), &z).is_err(), "{name}");
        }
        assert!(query_name(b"w\xffb%any.example.net", &z).is_err());
    }
}
