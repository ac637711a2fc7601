//! Subject patterns: realm and user names (exact, `*` wildcard, `!` exclusion, normalised
//! like the names they match) and client addresses (IPv4/IPv6 addresses and CIDRs, `!`
//! exclusion).
use std::net::IpAddr;

use enroll_shared::names::{NameError, normalize_name};

/// One name pattern, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Exact(String),
    /// The literal pieces between `*`s: `ad*n` is `["ad", "n"]`.
    Glob(Vec<String>),
}

impl NamePattern {
    fn parse(raw: &str) -> NamePattern {
        if raw.contains('*') {
            NamePattern::Glob(raw.split('*').map(str::to_owned).collect())
        } else {
            NamePattern::Exact(raw.to_owned())
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(exact) => exact == name,
            NamePattern::Glob(pieces) => glob_matches(pieces, name),
        }
    }

    fn exact(&self) -> Option<&str> {
        match self {
            NamePattern::Exact(exact) => Some(exact),
            NamePattern::Glob(_) => None,
        }
    }
}

fn glob_matches(pieces: &[String], name: &str) -> bool {
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        return true;
    };
    if pieces.len() == 1 {
        return first == name;
    }
    if !name.starts_with(first.as_str())
        || !name.ends_with(last.as_str())
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// The realm or user patterns of one policy. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePatterns {
    include: Vec<NamePattern>,
    exclude: Vec<NamePattern>,
}

impl NamePatterns {
    /// Normalises one pattern the way names are (`enroll_shared::names`: ASCII case folded,
    /// characters with ambiguous case refused), keeping a leading `!`. A pattern that could
    /// only match names the services refuse is an error, not a policy that silently never
    /// applies.
    pub fn normalize(raw: &str) -> Result<String, String> {
        let trimmed = raw.trim();
        let (negated, body) = match trimmed.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, trimmed),
        };
        // `! bob` is a typo, not `!bob`: whitespace after the `!` is refused, not trimmed.
        if body.contains([',', '!']) || body.starts_with(char::is_whitespace) {
            return Err(format!(
                "`{raw}` may not contain whitespace, `,` or a `!` after the first character"
            ));
        }
        let body = normalize_name(body).map_err(|error| match error {
            NameError::Empty => format!("`{raw}` is empty"),
            other => format!("`{raw}` {other}"),
        })?;
        Ok(if negated { format!("!{body}") } else { body })
    }

    /// Parses patterns; the error is (index, reason) of the first bad one.
    pub fn parse(patterns: &[String]) -> Result<NamePatterns, (usize, String)> {
        let mut parsed = NamePatterns::default();
        for (index, raw) in patterns.iter().enumerate() {
            let normalized = Self::normalize(raw).map_err(|reason| (index, reason))?;
            let (negated, body) = match normalized.strip_prefix('!') {
                Some(body) => (true, body),
                None => (false, normalized.as_str()),
            };
            let pattern = NamePattern::parse(body);
            if negated {
                parsed.exclude.push(pattern);
            } else {
                parsed.include.push(pattern);
            }
        }
        Ok(parsed)
    }

    /// `name` must already be normalised (`enroll_shared::names`).
    pub fn matches(&self, name: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|p| p.matches(name));
        included && !self.exclude.iter().any(|p| p.matches(name))
    }

    /// The exact names this matches when it matches nothing else (for indexing), or `None`
    /// when some pattern is a wildcard or there are only exclusions.
    pub fn exact_names(&self) -> Option<Vec<&str>> {
        if self.include.is_empty() {
            return None;
        }
        self.include.iter().map(NamePattern::exact).collect()
    }

    /// Whether some name could match both (conservative: true when unsure).
    pub fn may_overlap(&self, other: &NamePatterns) -> bool {
        match (self.exact_names(), other.exact_names()) {
            (Some(mine), Some(theirs)) => mine.iter().any(|name| theirs.contains(name)),
            (Some(names), None) => names.iter().any(|name| other.matches(name)),
            (None, Some(names)) => names.iter().any(|name| self.matches(name)),
            (None, None) => true,
        }
    }
}

/// An address or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `1.2.3.4`, `10.0.0.0/8`, `2001:db8::/32`. Host bits are cleared.
    pub fn parse(raw: &str) -> Option<Cidr> {
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let address: IpAddr = address.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => {
                prefix.parse::<u8>().ok().filter(|p| *p <= max)?
            }
            Some(_) => return None,
            None => max,
        };
        Some(Cidr {
            network: mask(address, prefix),
            prefix,
        })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.prefix) == self.network
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// The client patterns of one policy. Empty (or just `*`) matches every client, including
/// requests that carry no client address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPatterns {
    any: bool,
    include: Vec<Cidr>,
    exclude: Vec<Cidr>,
}

impl ClientPatterns {
    pub fn parse(patterns: &[String]) -> Result<ClientPatterns, (usize, String)> {
        let mut parsed = ClientPatterns::default();
        for (index, raw) in patterns.iter().enumerate() {
            let trimmed = raw.trim();
            if trimmed == "*" {
                parsed.any = true;
                continue;
            }
            let (negated, body) = match trimmed.strip_prefix('!') {
                Some(body) => (true, body),
                None => (false, trimmed),
            };
            let cidr = Cidr::parse(body).ok_or_else(|| {
                (
                    index,
                    format!("`{raw}` is not an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32), `*`, or one of those after `!`"),
                )
            })?;
            if negated {
                parsed.exclude.push(cidr);
            } else {
                parsed.include.push(cidr);
            }
        }
        Ok(parsed)
    }

    /// Whether the policy applies to every client, known or not.
    pub fn is_unrestricted(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    pub fn matches(&self, client: Option<IpAddr>) -> bool {
        if self.is_unrestricted() {
            return true;
        }
        let Some(address) = client else {
            return false;
        };
        let included =
            self.any || self.include.is_empty() || self.include.iter().any(|c| c.contains(address));
        included && !self.exclude.iter().any(|c| c.contains(address))
    }

    /// Whether some client could match both (conservative).
    pub fn may_overlap(&self, other: &ClientPatterns) -> bool {
        if self.any || other.any || self.include.is_empty() || other.include.is_empty() {
            return true;
        }
        self.include
            .iter()
            .any(|mine| other.include.iter().any(|theirs| mine.overlaps(theirs)))
    }
}

/// Parses a request's client address; IPv4-mapped IPv6 addresses become IPv4.
pub fn parse_client_ip(raw: &str) -> Option<IpAddr> {
    raw.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(patterns: &[&str]) -> NamePatterns {
        NamePatterns::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn clients(patterns: &[&str]) -> ClientPatterns {
        ClientPatterns::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn name_matching_table() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "anyone", true),
            (&["alice"], "alice", true),
            (&["Alice"], "alice", true),
            (&["alice"], "bob", false),
            (&["*"], "bob", true),
            (&["*", "!bob"], "bob", false),
            (&["*", "!bob"], "alice", true),
            (&["!bob"], "alice", true),
            (&["!bob"], "bob", false),
            (&["!BOB"], "bob", false),
            (&["adm*"], "admin", true),
            (&["adm*"], "adm", true),
            (&["adm*"], "xadmin", false),
            (&["*min"], "admin", true),
            (&["a*n"], "admin", true),
            (&["a*n"], "an", true),
            (&["a*n"], "a", false),
            (&["a*d*n"], "admin", true),
            (&["a*d*n"], "amin", false),
            (&["alice", "bob"], "bob", true),
            (&["*", "!adm*"], "admin", false),
        ];
        for (patterns, name, expected) in cases {
            assert_eq!(
                names(patterns).matches(name),
                *expected,
                "{patterns:?} vs {name}"
            );
        }
    }

    #[test]
    fn bad_name_patterns_name_their_index() {
        for (patterns, bad) in [
            (vec!["ok", ""], 1),
            (vec!["!"], 0),
            (vec!["a b"], 0),
            (vec!["a,b"], 0),
            (vec!["x", "!!x"], 1),
            (vec!["! bob"], 0),
            (vec!["ok", "\u{212A}ate"], 1),
            (vec!["!\u{2126}"], 0),
            (vec!["\u{0130}*"], 0),
            (vec!["\u{FF21}*"], 0),
            (vec!["stra\u{00DF}e"], 0),
        ] {
            let patterns: Vec<String> = patterns.into_iter().map(String::from).collect();
            assert_eq!(
                NamePatterns::parse(&patterns).unwrap_err().0,
                bad,
                "{patterns:?}"
            );
        }
    }

    #[test]
    fn patterns_normalise_like_names() {
        let normalize = |raw: &str| NamePatterns::normalize(raw).unwrap();
        assert_eq!(normalize(" !KATE "), "!kate");
        assert_eq!(normalize("Svc-*"), "svc-*");
        assert_eq!(normalize("m\u{00FC}ller"), "m\u{00FC}ller");
        // The Kelvin sign is refused rather than folded into `kate`'s pattern.
        let refused = NamePatterns::normalize("\u{212A}ate").unwrap_err();
        assert!(refused.contains("U+212A"), "{refused}");
        assert!(names(&["KATE"]).matches("kate"));
    }

    #[test]
    fn client_matching_table() {
        let v4 = |s: &str| parse_client_ip(s);
        let cases: &[(&[&str], Option<&str>, bool)] = &[
            (&[], None, true),
            (&[], Some("1.2.3.4"), true),
            (&["*"], None, true),
            (&["10.0.0.0/8"], Some("10.1.2.3"), true),
            (&["10.0.0.0/8"], Some("11.1.2.3"), false),
            (&["10.0.0.0/8"], None, false),
            (&["10.0.0.0/8", "!10.66.0.0/16"], Some("10.66.1.1"), false),
            (&["10.0.0.0/8", "!10.66.0.0/16"], Some("10.67.1.1"), true),
            (&["!10.66.0.0/16"], Some("192.168.1.1"), true),
            (&["!10.66.0.0/16"], Some("10.66.0.9"), false),
            (&["192.168.1.7"], Some("192.168.1.7"), true),
            (&["192.168.1.7"], Some("192.168.1.8"), false),
            (&["10.1.2.3/8"], Some("10.9.9.9"), true),
            (&["0.0.0.0/0"], Some("8.8.8.8"), true),
            (&["2001:db8::/32"], Some("2001:db8:1::1"), true),
            (&["2001:db8::/32"], Some("2001:db9::1"), false),
            (&["2001:db8::/32"], Some("10.0.0.1"), false),
            (&["::/0"], Some("::1"), true),
            (&["10.0.0.0/8"], Some("::ffff:10.0.0.1"), true),
            (&["*", "!10.0.0.0/8"], Some("10.0.0.1"), false),
            (&["*", "!10.0.0.0/8"], Some("11.0.0.1"), true),
        ];
        for (patterns, client, expected) in cases {
            let address = client.map(|c| v4(c).unwrap());
            assert_eq!(
                clients(patterns).matches(address),
                *expected,
                "{patterns:?} vs {client:?}"
            );
        }
    }

    #[test]
    fn bad_clients_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "::/129",
            "host.example",
            "10.0.0.0/",
            "!",
            "1.2.3.4/x",
        ] {
            assert!(ClientPatterns::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(parse_client_ip("300.1.1.1").is_none());
    }

    #[test]
    fn overlap_is_conservative() {
        assert!(names(&["alice"]).may_overlap(&names(&["ALICE", "bob"])));
        assert!(!names(&["alice"]).may_overlap(&names(&["bob"])));
        assert!(!names(&["bob"]).may_overlap(&names(&["*", "!bob"])));
        assert!(names(&["a*"]).may_overlap(&names(&["*b"])));
        assert!(clients(&["10.0.0.0/8"]).may_overlap(&clients(&["10.1.0.0/16"])));
        assert!(!clients(&["10.0.0.0/8"]).may_overlap(&clients(&["192.168.0.0/16"])));
        assert!(clients(&[]).may_overlap(&clients(&["192.168.0.0/16"])));
    }
}
