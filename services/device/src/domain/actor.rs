//! Who is asking: the API key's name and the client address the caller reports.
use std::net::IpAddr;

/// Who is asking, for policy decisions and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The name of the caller's API key (or the enrollment page).
    pub name: String,
    /// The end user's address as the caller reports it, parsed at the edge (an IPv4-mapped
    /// IPv6 address as its IPv4 form); None when the caller sent none.
    pub client_ip: Option<IpAddr>,
}

impl Actor {
    /// The client address as the policy service expects it ("" when unknown).
    pub fn client_ip_text(&self) -> String {
        self.client_ip
            .map(|address| address.to_string())
            .unwrap_or_default()
    }
}

/// Parses a reported client address: empty is None, an IP address (IPv4-mapped IPv6 as its
/// IPv4 form) is kept, anything else (a port, a host name, free text) is an error, so no
/// string of the caller's choosing becomes a policy subject or a budget of its own.
pub fn parse_client_ip(raw: &str) -> Result<Option<IpAddr>, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<IpAddr>()
        .map(|address| Some(address.to_canonical()))
        .map_err(|_| "must be an IPv4 or IPv6 address, without a port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_ip_addresses_only() {
        assert_eq!(parse_client_ip(""), Ok(None));
        assert_eq!(parse_client_ip("  "), Ok(None));
        assert_eq!(
            parse_client_ip(" 192.0.2.7 "),
            Ok(Some("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(
            parse_client_ip("::ffff:192.0.2.7"),
            Ok(Some("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(
            parse_client_ip("2001:db8::1"),
            Ok(Some("2001:db8::1".parse().unwrap()))
        );
        for bad in [
            "1.2.3.4:443",
            "[2001:db8::1]:443",
            "localhost",
            "1.2.3",
            "x",
            "1.2.3.4/32",
        ] {
            assert!(parse_client_ip(bad).is_err(), "{bad}");
        }
    }
}
