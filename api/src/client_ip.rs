//! Who is asking: the peer address of the connection, or, only when that
//! peer is a proxy we trust (`FERRY_TRUSTED_PROXIES`), the client it names
//! in `X-Forwarded-For` or `X-Real-IP`. Those headers from anyone else are
//! ignored: a client must not choose its own identity to slip past the
//! per-IP limiter or to borrow an allowlisted address.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ferry_common::config::IpRange;

/// The client address a request was resolved to (a request extension set by
/// the [`crate::limiter`] middleware, read by handlers for their logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Resolves client addresses given the proxies we trust.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpRange>,
}

impl ClientIpResolver {
    pub fn new(trusted: Vec<IpRange>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|range| range.contains(ip))
    }

    /// The client behind `peer`. From a trusted proxy: the right-most
    /// `X-Forwarded-For` address that is not itself a trusted proxy (the ones
    /// further left were written by the client and prove nothing), else
    /// `X-Real-IP`, else the peer. Anything unreadable falls back to the peer.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        for hop in forwarded.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if self.is_trusted(ip) => continue,
                Some(ip) => return ip,
                None => return peer,
            }
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_hop(v.trim()))
            .unwrap_or(peer)
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn behind_proxy() -> ClientIpResolver {
        ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "101.226.1.1"),
            ("x-real-ip", "101.226.1.1"),
        ]);
        assert_eq!(
            behind_proxy().resolve(ip("198.51.100.7"), &h),
            ip("198.51.100.7")
        );
        assert_eq!(
            ClientIpResolver::default().resolve(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_right_most_untrusted_first() {
        let r = behind_proxy();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 101.226.1.1, 10.0.0.2")]);
        assert_eq!(r.resolve(ip("10.0.0.1"), &h), ip("101.226.1.1"));
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "101.226.1.1:443"),
        ]);
        assert_eq!(r.resolve(ip("10.0.0.1"), &split), ip("101.226.1.1"));
        let real = headers(&[("x-real-ip", "2001:db8::5")]);
        assert_eq!(r.resolve(ip("10.0.0.1"), &real), ip("2001:db8::5"));
        assert_eq!(r.resolve(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn unreadable_forwarding_falls_back_to_the_peer() {
        let h = headers(&[("x-forwarded-for", "101.226.1.1, not-an-ip")]);
        assert_eq!(behind_proxy().resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_are_plain_ipv4() {
        let r = ClientIpResolver::new(vec!["127.0.0.1".parse().unwrap()]);
        let h = headers(&[("x-forwarded-for", "[::ffff:101.226.1.1]:80")]);
        assert_eq!(r.resolve(ip("::ffff:127.0.0.1"), &h), ip("101.226.1.1"));
    }
}
