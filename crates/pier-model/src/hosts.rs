//! The URL scheme: `https://SERVICE-HASH.DOMAIN[:PORT]` for a service and
//! `https://TAG---SERVICE-HASH.DOMAIN[:PORT]` for a tag (three hyphens, Cloud Run's form).

use crate::error::SpecError;
use crate::names::{MAX_DNS_LABEL, ServiceName, Tag};

/// Builds hosts and URLs for one installation: its base domain and public HTTPS port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlScheme {
    domain: String,
    https_port: u16,
}

impl UrlScheme {
    /// A scheme for `domain` (lowercased, without a trailing dot) served on `https_port`.
    pub fn new(domain: &str, https_port: u16) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            https_port,
        }
    }

    /// The base domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The HTTPS port URLs carry (omitted from URLs when 443).
    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    /// `SERVICE-HASH.DOMAIN`.
    pub fn service_host(&self, service: &ServiceName, project_hash: &str) -> String {
        format!("{service}-{project_hash}.{}", self.domain)
    }

    /// `TAG---SERVICE-HASH.DOMAIN`, refused when the first label would exceed 63 characters.
    pub fn tag_host(
        &self,
        tag: &Tag,
        service: &ServiceName,
        project_hash: &str,
    ) -> Result<String, SpecError> {
        let label = format!("{tag}---{service}-{project_hash}");
        if label.len() > MAX_DNS_LABEL {
            return Err(SpecError::new(format!(
                "tag {tag} is too long for service {service}: the tag URL's first label would be {} characters, at most {MAX_DNS_LABEL} fit; use a shorter tag",
                label.len()
            )));
        }
        Ok(format!("{label}.{}", self.domain))
    }

    /// `https://HOST[:PORT]`.
    pub fn url(&self, host: &str) -> String {
        if self.https_port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{}", self.https_port)
        }
    }
}

/// Normalizes a `Host` header or `:authority` for routing: lowercase, port and trailing dot removed.
/// Returns `None` for values that cannot be a host name (empty, bracketed IPv6 with garbage, spaces).
/// Borrows when nothing needs lowercasing (the common case on the request path).
pub fn normalize_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        &rest[..end]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.trim_end_matches('.');
    if host.is_empty()
        || host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_cloud_run_style_urls() {
        let s = UrlScheme::new("pier.localhost", 8443);
        let svc: ServiceName = "hello".parse().unwrap();
        let host = s.service_host(&svc, "3f9a2c");
        assert_eq!(host, "hello-3f9a2c.pier.localhost");
        assert_eq!(s.url(&host), "https://hello-3f9a2c.pier.localhost:8443");
        let tag: Tag = "green".parse().unwrap();
        assert_eq!(
            s.tag_host(&tag, &svc, "3f9a2c").unwrap(),
            "green---hello-3f9a2c.pier.localhost"
        );
        assert_eq!(
            UrlScheme::new("Run.Example.com.", 443).url("a"),
            "https://a"
        );
    }

    #[test]
    fn long_tags_are_refused() {
        let s = UrlScheme::new("pier.localhost", 443);
        let svc: ServiceName = "x".repeat(49).parse().unwrap();
        let tag: Tag = "abcdefghij".parse().unwrap();
        assert!(s.tag_host(&tag, &svc, "3f9a2c").is_err());
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(
            normalize_host("Hello-1.Pier.Localhost:8443").unwrap(),
            "hello-1.pier.localhost"
        );
        assert_eq!(normalize_host("a.b.").unwrap(), "a.b");
        assert_eq!(normalize_host("[::1]:8443").unwrap(), "::1");
        assert!(normalize_host("").is_none());
        assert!(normalize_host("a b").is_none());
        assert!(normalize_host("a:port").is_none());
        assert!(normalize_host("evil/x").is_none());
    }
}
