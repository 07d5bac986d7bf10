//! Where a batch's completion webhook may go.
//!
//! The URL is the API caller's, and a worker POSTs to it from inside the
//! deployment: unchecked, a caller could make Ferry reach its own Redis
//! host, a cloud metadata service (`169.254.169.254`) or anything else on
//! the private network (server-side request forgery). So a webhook reaches
//! public addresses only, plus the networks the operator names in
//! `FERRY_WEBHOOK_ALLOW_NETWORKS` (a receiver inside the VPC, say).
//!
//! Where it is checked: the api refuses an IP-literal URL outside those at
//! submission (a clear 400 at once); the worker checks every address a host
//! name resolves to at delivery, inside the HTTP client's resolver, so a
//! name that resolves elsewhere later (DNS rebinding) is caught where the
//! connection is made. Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::IpRange;

/// The addresses webhooks may reach.
#[derive(Debug, Clone, Default)]
pub struct WebhookTargets {
    allow: Vec<IpRange>,
}

/// Why a webhook target was refused; says which address, never the URL
/// (it may carry the caller's token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the webhook's address {0} is private, local or reserved; \
     FERRY_WEBHOOK_ALLOW_NETWORKS names the private networks webhooks may reach"
)]
pub struct TargetRefused(pub IpAddr);

impl WebhookTargets {
    /// Public addresses, and the private ones inside `allow`.
    pub fn new(allow: Vec<IpRange>) -> Self {
        Self { allow }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|range| range.contains(ip))
    }

    /// Checks `ip`, for an error that names it.
    pub fn check(&self, ip: IpAddr) -> Result<(), TargetRefused> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(TargetRefused(ip))
        }
    }

    /// Checks a URL whose host is an IP address; a host name passes here
    /// and is checked when it is resolved (see the module's doc).
    pub fn check_literal(&self, url: &url::Url) -> Result<(), TargetRefused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

/// Whether `ip` is an ordinary address of the public internet: not
/// loopback, private, link-local, carrier-grade NAT, multicast, unspecified,
/// documentation or otherwise reserved (IPv4-mapped IPv6 addresses are
/// judged as the IPv4 address they carry).
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, maps IPv4 inside
        || first == 0x2002 // 6to4, maps IPv4 inside
        || ip.segments()[..6] == [0; 6]) // IPv4-compatible (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        let targets = WebhookTargets::default();
        for public in ["8.8.8.8", "203.0.114.1", "1.1.1.1", "2606:4700::1111"] {
            assert!(targets.permits(ip(public)), "{public} is public");
        }
        for inside in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::127.0.0.1",
        ] {
            assert!(!targets.permits(ip(inside)), "{inside} is not public");
        }
        assert!(targets.permits(ip("::ffff:8.8.8.8")), "mapped public IPv4");
        assert!(targets.permits(ip("172.32.0.1")), "just outside 172.16/12");
        assert!(targets.permits(ip("100.128.0.1")), "just outside 100.64/10");
    }

    #[test]
    fn allowed_networks_open_only_themselves() {
        let targets = WebhookTargets::new(vec![
            "10.20.0.0/16".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]);
        assert!(targets.permits(ip("10.20.3.4")));
        assert!(targets.permits(ip("127.0.0.1")));
        assert!(targets.permits(ip("::ffff:127.0.0.1")));
        assert!(!targets.permits(ip("10.21.0.1")));
        assert!(!targets.permits(ip("127.0.0.2")));
        assert!(!targets.permits(ip("169.254.169.254")));
    }

    #[test]
    fn literal_urls_are_checked_and_names_left_to_resolution() {
        let targets = WebhookTargets::default();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            targets.check_literal(&url("http://169.254.169.254/latest/meta-data")),
            Err(TargetRefused(ip("169.254.169.254")))
        );
        assert_eq!(
            targets.check_literal(&url("https://[::1]:8443/hook")),
            Err(TargetRefused(ip("::1")))
        );
        // The URL parser normalises the tricks: decimal and hex IPv4.
        assert_eq!(
            targets.check_literal(&url("http://2130706433/")),
            Err(TargetRefused(ip("127.0.0.1")))
        );
        assert_eq!(
            targets.check_literal(&url("http://0x7f.1/")),
            Err(TargetRefused(ip("127.0.0.1")))
        );
        assert!(targets.check_literal(&url("https://8.8.8.8/hook")).is_ok());
        assert!(
            targets
                .check_literal(&url("https://hooks.example.com/x"))
                .is_ok()
        );
        let refused = TargetRefused(ip("10.0.0.1")).to_string();
        assert!(refused.contains("10.0.0.1") && refused.contains("FERRY_WEBHOOK_ALLOW_NETWORKS"));
    }
}
