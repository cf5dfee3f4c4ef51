//! Pending ACME challenges, shared by the issuer (which adds and removes them) and the gateway (which
//! answers validators): HTTP-01 key authorizations by token (RFC 8555 §8.3), TLS-ALPN-01 certificates by
//! name (RFC 8737 §3).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

/// The pending challenges.
#[derive(Debug, Default)]
pub struct Challenges {
    http01: RwLock<HashMap<String, (String, String)>>,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Answers `GET /.well-known/acme-challenge/{token}` on `domain` with `key_authorization`.
    pub fn add_http01(&self, domain: &str, token: &str, key_authorization: &str) {
        self.http01
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                token.to_owned(),
                (domain.to_owned(), key_authorization.to_owned()),
            );
    }

    /// The key authorization for `token`, when asked on the domain it was issued for (`host`, lowercase,
    /// no port).
    pub fn http01(&self, host: &str, token: &str) -> Option<String> {
        let map = self.http01.read().unwrap_or_else(|p| p.into_inner());
        let (domain, ka) = map.get(token)?;
        (domain == host).then(|| ka.clone())
    }

    /// Presents `cert` to TLS-ALPN-01 validators of `domain`.
    pub fn add_tls_alpn01(&self, domain: &str, cert: Arc<CertifiedKey>) {
        self.alpn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain.to_owned(), cert);
    }

    /// Forgets every challenge of `domain`.
    pub fn remove(&self, domain: &str) {
        self.http01
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (d, _)| d != domain);
        self.alpn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(domain);
    }
}

impl pier_tls::ChallengeCerts for Challenges {
    fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http01_answer_is_given_only_on_its_own_domain_and_forgotten_after() {
        let c = Challenges::new();
        c.add_http01("shop.example.com", "tok", "tok.thumb");
        assert_eq!(
            c.http01("shop.example.com", "tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(c.http01("other.example.com", "tok"), None);
        assert_eq!(c.http01("shop.example.com", "nope"), None);
        c.remove("shop.example.com");
        assert_eq!(c.http01("shop.example.com", "tok"), None);
    }
}
