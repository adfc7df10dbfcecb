//! The anycast-name grammar: bytes (a DNS query name, a shim argument) into
//! an `AnycastName`, in either form.
//!
//! Input: the name. Lines before the last one, if any, are extra zones
//! added to the fixture's nested ones.
//!
//! Invariants: parsing never panics; it ignores case and one trailing dot;
//! a parsed name's paper form parses back to it, and so does its DNS form
//! unless a longer zone claims that spelling (`any%example.net` is a service
//! of `example.net` whose DNS form is the apex of `any.example.net`); the
//! zone it reports is the zone `zone_of` routes it to.

#![no_main]

use anycast_proto::name::{self, NameError};
use anycast_proto::{AnycastName, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut zones = anycast_fuzz::zones();
    let input = match data.iter().rposition(|&b| b == b'\n') {
        Some(at) => {
            for line in data[..at].split(|&b| b == b'\n') {
                let Ok(text) = std::str::from_utf8(line) else {
                    continue;
                };
                if let Ok(zone) = Zone::new(text) {
                    check_zone(&zone);
                    zones.push(zone);
                }
            }
            &data[at + 1..]
        }
        None => data,
    };

    let parsed = name::parse_bytes(input, &zones);
    let Ok(text) = std::str::from_utf8(input) else {
        assert_eq!(parsed, Err(NameError::NonAscii));
        return;
    };
    assert_eq!(parsed, name::parse(text, &zones));
    assert_eq!(
        name::parse(&text.to_ascii_uppercase(), &zones),
        parsed,
        "case matters for {text:?}"
    );
    if !text.ends_with('.') {
        assert_eq!(
            name::parse(&format!("{text}."), &zones),
            parsed,
            "a trailing dot matters for {text:?}"
        );
    }
    if let Ok(zone) = Zone::new(text) {
        check_zone(&zone);
    }
    let Ok(name) = parsed else {
        return;
    };
    check_name(&name, text, &zones);
});

fn check_zone(zone: &Zone) {
    assert_eq!(Zone::new(zone.as_str()).as_ref(), Ok(zone));
    assert_eq!(zone.to_string(), zone.as_str());
}

fn check_name(name: &AnycastName, text: &str, zones: &[Zone]) {
    assert_eq!(name::zone_of(text, zones), Some(name.zone()), "{text:?}");

    let paper = name.paper_form();
    assert_eq!(
        name::parse(&paper, zones).as_ref(),
        Ok(name),
        "paper form {paper:?} of {text:?}"
    );

    let dns = name.to_string();
    assert!(dns.len() <= name::MAX_NAME_LEN, "{dns:?} too long");
    if name::zone_of(&dns, zones) == Some(name.zone()) {
        assert_eq!(
            name::parse(&dns, zones).as_ref(),
            Ok(name),
            "DNS form {dns:?} of {text:?}"
        );
    }

    assert_eq!(
        AnycastName::new(name.service(), name.explicit_metric(), name.zone().clone()).as_ref(),
        Ok(name)
    );
    let group = name.group_name();
    assert_eq!(group.explicit_metric(), None);
    assert_eq!(group.metric(), anycast_proto::Metric::DEFAULT);
    assert_eq!(
        (group.service(), group.zone()),
        (name.service(), name.zone())
    );
    assert_eq!(
        name.metric(),
        name.explicit_metric()
            .unwrap_or(anycast_proto::Metric::DEFAULT)
    );
}
