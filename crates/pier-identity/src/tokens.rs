//! OpenID Connect ID tokens: minting (RS256, one hour) and verification, plus the service-account JWT
//! assertions of the JWT-bearer grant (RFC 7523) that Google's client libraries send.
//!
//! Verification trusts only what the key says: the algorithm must be RS256 (`none`, HS* and anything else are
//! refused before any key is looked at), the `kid` must be a published Pier key, and `exp`, `nbf`, `iat`
//! and `iss` are checked with a small leeway. The audience is checked by the caller, who knows which
//! audiences a service accepts. Successful verifications are cached (keyed by the whole token, compared
//! byte for byte) until the token expires, so a private service pays for RSA once per token, not per
//! request; the cache entry also holds the token with its signature removed, ready to forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::keys::KeyRing;
pub use crate::keys::TOKEN_LIFETIME;
use crate::principal::Principal;

/// What a JWT claims to be, read without verifying it: only for deciding how to pass a token along,
/// never for trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// `iss`, without a trailing slash.
    pub issuer: String,
    /// `aud`, one or several.
    pub audiences: Vec<String>,
}

/// Reads `iss` and `aud` from a JWT's payload without checking anything.
pub fn peek(token: &str) -> Option<Unverified> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let issuer = v.get("iss")?.as_str()?.trim_end_matches('/').to_owned();
    let audiences = match v.get("aud")? {
        serde_json::Value::String(a) => vec![a.clone()],
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Some(Unverified { issuer, audiences })
}

/// Clock leeway for `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The audience of tokens the CLI mints for its user by default, accepted by every service for developer
/// testing (as Cloud Run accepts gcloud's client id), never by the admin API.
pub use pier_model::CLI_CLIENT_ID;
/// The token endpoint Google's libraries put in assertions, whatever the key file's `token_uri` says.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Most entries in the verification cache.
const CACHE_MAX: usize = 10_000;

/// Why a token was refused. The gateway answers 401 with these messages.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with JSON inside.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not RS256.
    #[error("the token's algorithm {0} is not accepted: Pier tokens are RS256")]
    Algorithm(String),
    /// `kid` is missing or not a published key.
    #[error("the token was not signed by a current Pier key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf` or issued in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("the token was issued by {0}, not by this Pier")]
    Issuer(String),
    /// Wrong `aud`.
    #[error("the token's audience {0:?} is not this service")]
    Audience(String),
    /// The principal or the key it was obtained with no longer exists or is disabled.
    #[error("the token's principal or key has been deleted or disabled")]
    Revoked,
    /// An external token without a verified email, so no principal to check.
    #[error("the token carries no verified email")]
    NoVerifiedEmail,
    /// An external token claiming one of Pier's own accounts.
    #[error("an external issuer cannot speak for {0}, an account of this Pier")]
    ReservedIdentity(String),
}

/// The claims of a Pier ID token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// Issuer URL.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The principal's stable unique id.
    pub sub: String,
    /// The principal's email.
    pub email: String,
    /// Always true for Pier principals.
    pub email_verified: bool,
    /// Authorized party: who asked for the token.
    pub azp: String,
    /// Issued at (seconds).
    pub iat: u64,
    /// Expires (seconds).
    pub exp: u64,
    /// `serviceAccount` for service accounts; absent for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pier_principal: Option<String>,
    /// The service account key the token was obtained with, if any (revoked with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pier_key: Option<String>,
}

impl IdClaims {
    /// The principal the token speaks for.
    pub fn principal(&self) -> Principal {
        match self.pier_principal.as_deref() {
            Some("serviceAccount") => Principal::ServiceAccount(self.email.clone()),
            _ => Principal::User(self.email.clone()),
        }
    }
}

/// What a verified token says.
#[derive(Debug)]
pub struct Verified {
    /// Who.
    pub principal: Principal,
    /// The claims.
    pub claims: IdClaims,
    /// `Bearer HEADER.PAYLOAD.SIGNATURE_REMOVED_BY_PIER`: what the app gets instead of the token.
    pub stripped: bytes::Bytes,
}

/// What replaces a verified token's signature before it reaches an app.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_PIER";

type Cache = HashMap<Box<str>, Arc<Verified>, foldhash::fast::RandomState>;

/// Shards of the verification cache: a request locks one, chosen by the token's hash, for a lookup
/// (no I/O, no await), so concurrent requests with different tokens rarely meet on a lock.
const SHARDS: usize = 16;

/// The verification cache, split in [`SHARDS`] maps each behind its own short mutex.
struct ShardedCache {
    hasher: foldhash::fast::RandomState,
    shards: [Mutex<Cache>; SHARDS],
}

impl Default for ShardedCache {
    fn default() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: std::array::from_fn(|_| Mutex::new(Cache::default())),
        }
    }
}

impl ShardedCache {
    fn shard(&self, token: &str) -> std::sync::MutexGuard<'_, Cache> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(token) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::Algorithm("mismatched".into())
        }
        ErrorKind::InvalidIssuer => TokenError::Issuer("another issuer".into()),
        ErrorKind::InvalidAudience => TokenError::Audience("another audience".into()),
        _ => TokenError::Malformed,
    }
}

/// Reads the header's `alg` and `kid` without trusting anything, refusing every algorithm but RS256.
pub fn header_kid(token: &str) -> Result<String, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    let alg = v.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    if alg != "RS256" {
        return Err(TokenError::Algorithm(if alg.is_empty() {
            "(none)".into()
        } else {
            alg.to_owned()
        }));
    }
    v.get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_owned)
        .ok_or(TokenError::UnknownKey)
}

/// Mints and verifies Pier's ID tokens.
pub struct Issuer {
    url: String,
    ring: Arc<KeyRing>,
    cache: ShardedCache,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("url", &self.url).finish()
    }
}

impl Issuer {
    /// An issuer at `url` (the `iss` of its tokens) signing with `ring`.
    pub fn new(url: &str, ring: Arc<KeyRing>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            ring,
            cache: ShardedCache::default(),
        }
    }

    /// The issuer URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key ring.
    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    /// Mints an ID token for `principal` (whose stable id is `sub`) with audience `aud`.
    pub fn mint(
        &self,
        principal: &Principal,
        sub: &str,
        aud: &str,
        azp: &str,
        key: Option<&str>,
    ) -> Result<String, crate::IdentityError> {
        if aud.is_empty() {
            return Err(crate::IdentityError::Invalid(
                "an ID token needs an audience".into(),
            ));
        }
        let iat = now_secs();
        let claims = IdClaims {
            iss: self.url.clone(),
            aud: aud.to_owned(),
            sub: sub.to_owned(),
            email: principal.email().to_owned(),
            email_verified: true,
            azp: azp.to_owned(),
            iat,
            exp: iat + TOKEN_LIFETIME.as_secs(),
            pier_principal: matches!(principal, Principal::ServiceAccount(_))
                .then(|| "serviceAccount".to_owned()),
            pier_key: key.map(str::to_owned),
        };
        self.ring.sign(&claims)
    }

    /// Verifies a token's signature and times and returns its claims (audience unchecked: see
    /// [`check_audience`]).
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        let now = now_secs();
        if let Some(v) = self.cache.shard(token).get(token).cloned() {
            if v.claims.exp + LEEWAY_SECS <= now {
                return Err(TokenError::Expired);
            }
            return Ok(v);
        }
        let kid = header_kid(token)?;
        let key = self.ring.key(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = decode_claims::<IdClaims>(token, &key.decoding, Some(&self.url), None)?;
        if claims.iat > now + LEEWAY_SECS {
            return Err(TokenError::NotYetValid);
        }
        let cut = token.rfind('.').ok_or(TokenError::Malformed)?;
        let stripped = bytes::Bytes::from(format!("Bearer {}.{SIGNATURE_REMOVED}", &token[..cut]));
        let verified = Arc::new(Verified {
            principal: claims.principal(),
            claims,
            stripped,
        });
        let mut cache = self.cache.shard(token);
        if cache.len() >= CACHE_MAX / SHARDS {
            cache.retain(|_, v| v.claims.exp + LEEWAY_SECS > now);
            if cache.len() >= CACHE_MAX / SHARDS {
                cache.clear();
            }
        }
        cache.insert(token.into(), verified.clone());
        Ok(verified)
    }

    /// Forgets every cached verification (after a key is revoked).
    pub fn flush(&self) {
        self.cache.clear();
    }
}

/// Checks `aud` against what a service accepts.
pub fn check_audience(claims: &IdClaims, accepted: &[String]) -> Result<(), TokenError> {
    if accepted.contains(&claims.aud) {
        Ok(())
    } else {
        Err(TokenError::Audience(claims.aud.clone()))
    }
}

/// Verifies an RS256 JWT with `key`, checking `exp`/`nbf` with leeway, the issuer when given and the
/// audience when given.
pub fn decode_claims<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    issuer: Option<&str>,
    audiences: Option<&[&str]>,
) -> Result<T, TokenError> {
    let mut v = Validation::new(Algorithm::RS256);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.validate_exp = true;
    match audiences {
        Some(a) => v.set_audience(a),
        None => v.validate_aud = false,
    }
    match issuer {
        Some(i) => {
            v.set_issuer(&[i]);
            v.set_required_spec_claims(&["exp", "iss"]);
        }
        None => v.set_required_spec_claims(&["exp"]),
    }
    // Refuse other algorithms before handing the token to the library.
    header_kid(token).or_else(|e| match e {
        TokenError::UnknownKey => Ok(String::new()),
        other => Err(other),
    })?;
    let data = jsonwebtoken::decode::<T>(token, key, &v).map_err(|e| {
        let mapped = map_jwt_error(e);
        if let (TokenError::Issuer(_), Some(i)) = (&mapped, issuer) {
            return TokenError::Issuer(format!("an issuer other than {i}"));
        }
        mapped
    })?;
    Ok(data.claims)
}

/// The claims of a service-account assertion (the JWT-bearer grant).
#[derive(Clone, Debug, Deserialize)]
pub struct AssertionClaims {
    /// The service account's email.
    pub iss: String,
    /// Usually absent or equal to `iss`.
    #[serde(default)]
    pub sub: Option<String>,
    /// Issued at.
    pub iat: u64,
    /// Expires.
    pub exp: u64,
    /// Present when an ID token is wanted.
    #[serde(default)]
    pub target_audience: Option<String>,
    /// Present when an access token is wanted.
    #[serde(default)]
    pub scope: Option<String>,
}

/// Verifies a service-account assertion signed with `key`, addressed to one of `token_uris`.
pub fn verify_assertion(
    token: &str,
    key: &DecodingKey,
    token_uris: &[&str],
) -> Result<AssertionClaims, TokenError> {
    let claims: AssertionClaims = decode_claims(token, key, None, Some(token_uris))?;
    if claims.exp.saturating_sub(claims.iat) > TOKEN_LIFETIME.as_secs() + LEEWAY_SECS {
        return Err(TokenError::Malformed);
    }
    if claims.iat > now_secs() + LEEWAY_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests;
