//! Trusted external OpenID Connect issuers: end users signed in with another identity platform present its
//! ID tokens to Pier's services. An issuer is configured by its URL; the server fetches its discovery
//! document and JWKS (see the binary's refresher) and hands the keys here.
//!
//! What an external token may do is narrower than a Pier token:
//!
//! - it is RS256, signed by a key in the issuer's current JWKS, in time, with `iss` exactly the issuer and
//!   one audience;
//! - it speaks for `user:EMAIL` only when it carries `email` with `email_verified: true`;
//! - it never speaks for Pier's own accounts (emails in Pier's domain or its service-account domains);
//! - it is accepted by the gateway only, never by the admin API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use crate::principal::Principal;
use crate::tokens::{IdClaims, SIGNATURE_REMOVED, TokenError, Verified, decode_claims, header_kid};

/// Most cached verifications per issuer.
const CACHE_MAX: usize = 10_000;

/// An external token's claims (the parts Pier reads).
#[derive(Debug, Deserialize)]
struct ExternalClaims {
    iss: String,
    aud: Audience,
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    iat: u64,
    exp: u64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// One trusted issuer and its current keys.
pub struct ExternalIssuer {
    url: String,
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    cache: Mutex<HashMap<Box<str>, Arc<Verified>>>,
    /// Set when a token names a key the issuer has not published to us yet: the refresher fetches again.
    wants_refresh: tokio::sync::Notify,
    last_refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ExternalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalIssuer")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

/// A JWKS document that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("not a JWKS document: {0}")]
pub struct JwksError(#[source] serde_json::Error);

impl ExternalIssuer {
    /// An issuer at `url`, with no keys yet.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            keys: ArcSwap::from_pointee(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            wants_refresh: tokio::sync::Notify::new(),
            last_refresh: Mutex::new(None),
        }
    }

    /// The issuer URL (`iss`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the keys with the RSA keys of a JWKS document (RFC 7517 §5); returns how many were
    /// usable. A document that does not parse leaves the keys as they were.
    pub fn set_jwks(&self, jwks: &[u8]) -> Result<usize, JwksError> {
        let set: JwkSet = serde_json::from_slice(jwks).map_err(JwksError)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if let Ok(k) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, k);
            }
        }
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.last_refresh.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(n)
    }

    /// Waits until a token named an unknown key (the refresher then fetches the JWKS again).
    pub async fn refresh_wanted(&self) {
        self.wants_refresh.notified().await;
    }

    /// When the keys were last replaced.
    pub fn last_refresh(&self) -> Option<Instant> {
        *self.last_refresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies `token` (signature, times, issuer) and maps it to a principal; `reserved` are the email
    /// domains an external token may not speak for.
    pub fn verify(&self, token: &str, reserved: &[String]) -> Result<Arc<Verified>, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            if v.claims.exp + crate::tokens::LEEWAY_SECS <= now {
                return Err(TokenError::Expired);
            }
            return Ok(v.clone());
        }
        let kid = header_kid(token)?;
        let keys = self.keys.load();
        let Some(key) = keys.get(&kid) else {
            self.wants_refresh.notify_one();
            return Err(TokenError::UnknownKey);
        };
        let c: ExternalClaims = decode_claims(token, key, Some(&self.url), None)?;
        if c.iat > now + crate::tokens::LEEWAY_SECS {
            return Err(TokenError::NotYetValid);
        }
        let aud = match c.aud {
            Audience::One(a) => a,
            Audience::Many(mut v) if v.len() == 1 => v.remove(0),
            Audience::Many(_) => return Err(TokenError::Audience("several audiences".into())),
        };
        let verified_email = matches!(c.email_verified, Some(serde_json::Value::Bool(true)))
            || matches!(&c.email_verified, Some(serde_json::Value::String(s)) if s == "true");
        let email = match (c.email, verified_email) {
            (Some(e), true) if !e.is_empty() => e.to_ascii_lowercase(),
            _ => return Err(TokenError::NoVerifiedEmail),
        };
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if reserved
            .iter()
            .any(|r| pier_model::hosts::is_within(domain, r))
        {
            return Err(TokenError::ReservedIdentity(email));
        }
        let cut = token.rfind('.').ok_or(TokenError::Malformed)?;
        let stripped = bytes::Bytes::from(format!("Bearer {}.{SIGNATURE_REMOVED}", &token[..cut]));
        let claims = IdClaims {
            iss: c.iss,
            aud,
            sub: c.sub,
            email: email.clone(),
            email_verified: true,
            azp: c.azp.unwrap_or_default(),
            iat: c.iat,
            exp: c.exp,
            pier_principal: None,
            pier_key: None,
        };
        let verified = Arc::new(Verified {
            principal: Principal::User(email),
            claims,
            stripped,
        });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.into(), verified.clone());
        Ok(verified)
    }
}

/// The `iss` of a token, read without trusting it (to pick who verifies it).
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v.get("iss")?
        .as_str()
        .map(|s| s.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRing, RotationPolicy};
    use crate::tokens::Issuer;

    /// A real Pier key ring plays the external issuer: its JWKS and tokens are what another provider
    /// would serve.
    fn provider(dir: &std::path::Path, url: &str) -> (Issuer, Vec<u8>) {
        let ring = Arc::new(KeyRing::open(dir, RotationPolicy::default()).unwrap());
        let jwks = serde_json::to_vec(&ring.jwks()).unwrap();
        (Issuer::new(url, ring), jwks)
    }

    #[test]
    fn verifies_tokens_of_a_trusted_issuer_and_maps_them_to_users() {
        let dir = tempfile::tempdir().unwrap();
        let (idp, jwks) = provider(dir.path(), "https://idp.example");
        let ext = ExternalIssuer::new("https://idp.example/");
        let alice = Principal::User("alice@example.com".into());
        let token = idp
            .mint(&alice, "u-1", "https://svc.example", "web", None)
            .unwrap();
        // No keys yet: refused, and a refresh is asked for.
        assert_eq!(ext.verify(&token, &[]).unwrap_err(), TokenError::UnknownKey);
        assert_eq!(ext.set_jwks(&jwks).unwrap(), 1);
        let v = ext.verify(&token, &[]).unwrap();
        assert_eq!(v.principal, alice);
        assert_eq!(v.claims.aud, "https://svc.example");
        assert!(v.stripped.ends_with(SIGNATURE_REMOVED.as_bytes()));
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("https://idp.example")
        );

        // Pier's own domains are off limits to an external issuer.
        let owner = Principal::User("owner@pier.localhost".into());
        let t = idp
            .mint(&owner, "u-2", "https://svc.example", "web", None)
            .unwrap();
        assert!(matches!(
            ext.verify(&t, &["pier.localhost".into()]),
            Err(TokenError::ReservedIdentity(_))
        ));
        let sa = Principal::User("compute@default.iam.pier.localhost".into());
        let t = idp
            .mint(&sa, "u-3", "https://svc.example", "web", None)
            .unwrap();
        assert!(ext.verify(&t, &["pier.localhost".into()]).is_err());

        // Another issuer's token, even signed by the same keys, is refused.
        let (other, _) = provider(dir.path(), "https://evil.example");
        let t = other
            .mint(&alice, "u-1", "https://svc.example", "web", None)
            .unwrap();
        assert!(matches!(ext.verify(&t, &[]), Err(TokenError::Issuer(_))));
    }
}
