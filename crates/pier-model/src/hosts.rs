//! The URL scheme, one for every kind of resource, so that no name of one kind can form the host of
//! another:
//!
//! - a service: `https://NAME-HASH.DOMAIN[:PORT]`, a tag of it `https://TAG---NAME-HASH.DOMAIN[:PORT]`
//!   (three hyphens, Cloud Run's form);
//! - an API gateway: `https://NAME-HASH.DOMAIN[:PORT]`, a hosting site `https://NAME-HASH...` and its
//!   channels `https://SITE--CHANNEL-HASH...`,
//!
//! where `HASH` depends on the installation, the project and the kind ([`HostKind`]): the project's
//! random hash for services (the form their URLs have always had), a hash of it and the kind's name for
//! the others. Names of any kind may not contain `--` ([`crate::names`]), and the control plane refuses
//! (and logs) a host two routes would share, as a last defense.

use crate::error::SpecError;
use crate::names::{MAX_DNS_LABEL, ServiceName, Tag};

/// Builds hosts and URLs for one installation: its base domain and public HTTPS port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlScheme {
    domain: String,
    https_port: u16,
}

/// The kinds of resource that get hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// A service.
    Service,
    /// An API gateway.
    Gateway,
    /// A hosting site.
    Site,
}

impl HostKind {
    /// The hash in this kind's hosts, from the project's own.
    pub fn hash(self, project_hash: &str) -> String {
        let kind = match self {
            HostKind::Service => return project_hash.to_owned(),
            HostKind::Gateway => "gateway",
            HostKind::Site => "site",
        };
        // FNV-1a over the project hash and the kind: stable, and different for every kind.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in project_hash.bytes().chain([b'/']).chain(kind.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:06x}", h & 0xff_ffff)
    }
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
        self.host(HostKind::Service, service.as_str(), project_hash)
    }

    /// `NAME-HASH.DOMAIN` for a resource of `kind`, the hash derived for that kind.
    pub fn host(&self, kind: HostKind, name: &str, project_hash: &str) -> String {
        format!("{name}-{}.{}", kind.hash(project_hash), self.domain)
    }

    /// Whether `audience` names Pier itself or one of its hosts (the issuer, `https://*.DOMAIN`, the
    /// CLI's client id): a service may not claim it as a custom audience, or tokens meant for Pier or for
    /// another service would reach it whole.
    pub fn is_own_audience(&self, audience: &str) -> bool {
        if audience == crate::CLI_CLIENT_ID {
            return true;
        }
        let Some(rest) = audience
            .strip_prefix("https://")
            .or_else(|| audience.strip_prefix("http://"))
        else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let Some(host) = normalize_host(authority) else {
            return false;
        };
        is_within(&host, &self.domain)
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

/// Whether `name` is `domain` or a name under it (`a.example.com` is within `example.com`;
/// `badexample.com` is not). Both lowercase, without a trailing dot.
pub fn is_within(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
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
    fn within_means_the_domain_or_a_name_under_it() {
        assert!(is_within("example.com", "example.com"));
        assert!(is_within("a.b.example.com", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
        assert!(!is_within("example.com", "a.example.com"));
    }

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
    fn each_kind_has_its_own_hash_and_pier_owns_its_audiences() {
        let s = UrlScheme::new("pier.localhost", 8443);
        let svc = s.host(HostKind::Service, "shop", "3f9a2c");
        let gw = s.host(HostKind::Gateway, "shop", "3f9a2c");
        let site = s.host(HostKind::Site, "shop", "3f9a2c");
        assert_eq!(svc, "shop-3f9a2c.pier.localhost");
        assert!(svc != gw && gw != site && svc != site, "{svc} {gw} {site}");
        assert_eq!(HostKind::Gateway.hash("3f9a2c").len(), 6);
        for own in [
            "pier-cli",
            "https://pier.localhost:8443",
            "https://pier.localhost/",
            "https://other-abc123.pier.localhost:8443/x",
            "https://PIER.localhost",
        ] {
            assert!(s.is_own_audience(own), "{own}");
        }
        for not in [
            "https://api.example.com",
            "my-audience",
            "https://notpier.localhost",
        ] {
            assert!(!s.is_own_audience(not), "{not}");
        }
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
