//! The client address of an HTTP request (the enrollment page's, the gate's): the TCP
//! peer, unless the peer is a configured trusted proxy, in which case `X-Forwarded-For` is read from the right (each proxy appends
//! the address it saw) and the first address that is not a trusted proxy is the client.
//! Entries left of it were written by the client itself and prove nothing.
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// One trusted network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`; IPv4-mapped IPv6 is taken as IPv4.
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = addr.trim().parse::<IpAddr>().ok()?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let drop = u32::from(width - prefix);
    (bits >> drop) << drop
}

/// A configured list of trusted proxies (`web.trusted_proxies`, `gate.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// Refuses the whole list when one entry is not an address or CIDR: a typo must not
    /// silently trust nobody (or, worse, be read as something broader).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                Network::parse(entry).ok_or_else(|| {
                    format!("web.trusted_proxies: `{entry}` is not an IP address or CIDR")
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }

    /// The client's address for `peer` sending `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if !self.trusts(peer) {
            if self.0.is_empty() && headers.contains_key(FORWARDED_FOR) {
                warn_untrusted_proxy();
            }
            return peer;
        }
        // Several header lines are one list, in order.
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match forwarded_ip(hop) {
                Some(ip) if self.trusts(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage where an address should be: the last trusted hop is as far as
                // the chain can be believed.
                None => return client,
            }
        }
        client
    }
}

/// Once per process: the page is behind a proxy (requests carry `X-Forwarded-For`) and no
/// proxy is trusted, so every user behind it is the proxy's one address and shares its rate
/// limits (HTTP 429 for everyone). Not refused: the header alone proves nothing.
fn warn_untrusted_proxy() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "the enrollment page receives X-Forwarded-For but web.trusted_proxies is empty: \
             every client behind that proxy counts as the proxy's address and shares its \
             rate limits; list the proxy (or its network) in web.trusted_proxies"
        );
    });
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`).
fn forwarded_ip(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        TrustedProxies::parse(&entries).unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4711)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&["198.51.100.9"]);
        assert_eq!(trusted.client(peer("192.0.2.7"), &headers), ip("192.0.2.7"));
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(peer("10.1.1.1"), &headers), ip("10.1.1.1"));
    }

    #[test]
    fn a_trusted_peer_gives_the_right_most_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        // The client forged the left entry; the proxies appended the rest.
        let headers = forwarded(&["203.0.113.66, 198.51.100.9", "10.2.2.2"]);
        assert_eq!(
            trusted.client(peer("10.1.1.1"), &headers),
            ip("198.51.100.9")
        );
        let headers = forwarded(&["[2001:db9::5]:443, 2001:db8::7"]);
        assert_eq!(
            trusted.client(peer("::ffff:10.1.1.1"), &headers),
            ip("2001:db9::5")
        );
    }

    #[test]
    fn a_trusted_peer_without_a_usable_header_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client(peer("10.1.1.1"), &HeaderMap::new()),
            ip("10.1.1.1")
        );
        let headers = forwarded(&["unknown, 10.3.3.3"]);
        assert_eq!(trusted.client(peer("10.1.1.1"), &headers), ip("10.3.3.3"));
        let headers = forwarded(&["10.4.4.4, 10.3.3.3"]);
        assert_eq!(trusted.client(peer("10.1.1.1"), &headers), ip("10.4.4.4"));
    }

    #[test]
    fn networks_parse_and_match_exactly() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal".into()]).is_err());
        let trusted = proxies(&["192.0.2.1", "0.0.0.0/0"]);
        assert!(trusted.trusts(ip("8.8.8.8")));
        let trusted = proxies(&["192.0.2.1"]);
        assert!(trusted.trusts(ip("192.0.2.1")));
        assert!(!trusted.trusts(ip("192.0.2.2")));
        assert!(!trusted.trusts(ip("::1")));
    }
}
