//! The client-side filters (the paper's client filters): from the addresses
//! the resolver answered, which ones the program gets.

use std::net::IpAddr;

use crate::config::Filter;

/// Applies `filter` to `addresses` (IPv4 ones first, then IPv6 ones, each in
/// the resolver's order). `random_below(n)` picks an index below `n`.
pub fn choose(
    addresses: Vec<IpAddr>,
    filter: Filter,
    random_below: impl FnOnce(usize) -> usize,
) -> Vec<IpAddr> {
    if addresses.is_empty() {
        return addresses;
    }
    let pick = match filter {
        Filter::None => return addresses,
        Filter::Random => addresses.get(random_below(addresses.len())),
        Filter::PreferV4 => addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addresses.first()),
        Filter::PreferV6 => addresses
            .iter()
            .find(|a| a.is_ipv6())
            .or_else(|| addresses.first()),
    };
    pick.copied().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(texts: &[&str]) -> Vec<IpAddr> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn each_filter() {
        let all = ips(&["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"]);
        assert_eq!(choose(all.clone(), Filter::None, |_| unreachable!()), all);
        assert_eq!(
            choose(all.clone(), Filter::Random, |n| {
                assert_eq!(n, 4);
                2
            }),
            ips(&["2001:db8::1"])
        );
        assert_eq!(
            choose(all.clone(), Filter::PreferV4, |_| 0),
            ips(&["10.0.0.1"])
        );
        assert_eq!(
            choose(all.clone(), Filter::PreferV6, |_| 0),
            ips(&["2001:db8::1"])
        );
        // The other family when the preferred one has no address.
        let v4 = ips(&["10.0.0.2", "10.0.0.1"]);
        assert_eq!(
            choose(v4.clone(), Filter::PreferV6, |_| 0),
            ips(&["10.0.0.2"])
        );
        let v6 = ips(&["2001:db8::2"]);
        assert_eq!(choose(v6.clone(), Filter::PreferV4, |_| 0), v6);
        assert!(choose(Vec::new(), Filter::Random, |_| unreachable!()).is_empty());
    }
}
