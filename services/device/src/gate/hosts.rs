//! The hosts the gate protects: where a return URL may point (no open redirect), which
//! `Origin` the page's API accepts, and the original URL a proxy reports.
use http::HeaderMap;

/// One allowed host: exact (`app.example.com`, with an optional `:port`) or a wildcard
/// for subdomains (`*.example.com`, never the bare domain itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Subdomains(String),
}

#[derive(Debug, Clone, Default)]
pub struct HostAllowList(Vec<HostPattern>);

impl HostAllowList {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for entry in entries {
            let entry = entry.trim().to_ascii_lowercase();
            let valid = |host: &str| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
            };
            let pattern = match entry.strip_prefix("*.") {
                Some(domain) if valid(domain) && domain.contains('.') => {
                    HostPattern::Subdomains(domain.to_owned())
                }
                None if valid(&entry) => HostPattern::Exact(entry),
                _ => {
                    return Err(format!(
                        "gate.hosts: `{entry}` is not a host (app.example.com, \
                         app.example.com:8443, *.example.com)"
                    ));
                }
            };
            patterns.push(pattern);
        }
        if patterns.is_empty() {
            return Err("gate.hosts must list the hosts the gate protects".to_owned());
        }
        Ok(Self(patterns))
    }

    /// Whether `host` (`name` or `name:port`, as in a URL's authority) is protected.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host.as_str()
            }
        });
        self.0.iter().any(|pattern| match pattern {
            HostPattern::Exact(exact) => *exact == host || *exact == name,
            HostPattern::Subdomains(domain) => name
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        })
    }

    /// A return URL the page may send the browser to: http(s), on a protected host, with
    /// no credentials in it. Anything else is refused (an open redirect otherwise).
    pub fn return_url(&self, text: &str) -> Option<url::Url> {
        if text.len() > 4096 {
            return None;
        }
        let url = url::Url::parse(text).ok()?;
        if !matches!(url.scheme(), "https" | "http")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        self.allows(&authority).then_some(url)
    }
}

/// The URL of the request the proxy checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalUrl {
    pub scheme: String,
    /// The authority (`host` or `host:port`).
    pub host: String,
    /// Path and query.
    pub path: String,
}

impl OriginalUrl {
    pub fn full(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// From an absolute URL (nginx's `X-Original-URL`).
    pub fn parse(text: &str) -> Option<Self> {
        let url = url::Url::parse(text).ok()?;
        let host = url.host_str()?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host,
            path,
        })
    }

    /// From a forward-auth request: `X-Original-URL` (nginx, as the shipped configuration
    /// sets it), else `X-Forwarded-Proto`, `-Host` and `-Uri` (Caddy, Traefik).
    pub fn from_forwarded(headers: &HeaderMap) -> Option<Self> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        if let Some(url) = header("x-original-url") {
            return Self::parse(url);
        }
        let scheme = header("x-forwarded-proto").unwrap_or("https");
        let host = header("x-forwarded-host")?;
        let path = header("x-forwarded-uri").unwrap_or("/");
        if !path.starts_with('/') {
            return None;
        }
        Self::parse(&format!("{scheme}://{host}{path}"))
    }
}

/// Whether the request is a browser navigation that can follow a redirect to the page,
/// rather than `fetch`/XHR, a WebSocket or an API client.
pub fn is_navigation(headers: &HeaderMap) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    if headers.contains_key("x-requested-with") || !header("upgrade").is_empty() {
        return false;
    }
    match header("sec-fetch-mode").as_str() {
        "navigate" => true,
        "" => header("accept").contains("text/html"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_stay_on_protected_hosts() {
        let hosts = HostAllowList::parse(&[
            "app.example.com".into(),
            "*.corp.example".into(),
            "localhost:8443".into(),
        ])
        .unwrap();
        for good in [
            "https://app.example.com/x?y=1",
            "https://a.corp.example/",
            "https://b.a.corp.example/",
            "http://localhost:8443/",
        ] {
            assert!(hosts.return_url(good).is_some(), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://corp.example/",
            "https://xcorp.example/",
            "//evil.example/",
            "/relative",
            "javascript:alert(1)",
            "https://user:pw@app.example.com/",
            "http://localhost:9999/",
            "data:text/html,hi",
        ] {
            assert!(hosts.return_url(bad).is_none(), "{bad}");
        }
        assert!(HostAllowList::parse(&[]).is_err());
        assert!(HostAllowList::parse(&["*.com".into()]).is_err());
        assert!(HostAllowList::parse(&["a/b".into()]).is_err());
    }

    #[test]
    fn the_original_url_comes_from_the_forwarding_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "app.example.com".parse().unwrap());
        headers.insert("x-forwarded-uri", "/a?b=c".parse().unwrap());
        let url = OriginalUrl::from_forwarded(&headers).unwrap();
        assert_eq!(url.full(), "https://app.example.com/a?b=c");
        headers.insert("x-original-url", "http://localhost:8080/p".parse().unwrap());
        let url = OriginalUrl::from_forwarded(&headers).unwrap();
        assert_eq!(
            (url.host.as_str(), url.path.as_str()),
            ("localhost:8080", "/p")
        );
    }

    #[test]
    fn only_navigations_are_redirected() {
        let mut headers = HeaderMap::new();
        headers.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert!(is_navigation(&headers));
        headers.insert("sec-fetch-mode", "cors".parse().unwrap());
        assert!(!is_navigation(&headers));
        let mut curl = HeaderMap::new();
        curl.insert("accept", "*/*".parse().unwrap());
        assert!(!is_navigation(&curl));
        curl.insert("accept", "text/html".parse().unwrap());
        assert!(is_navigation(&curl));
        curl.insert("upgrade", "websocket".parse().unwrap());
        assert!(!is_navigation(&curl));
    }
}
