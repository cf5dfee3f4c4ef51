//! End-user JWTs (`x-google-issuer` schemes): found where the scheme says, verified against the issuer's
//! keys, their payload passed to the backend in `X-Endpoint-API-UserInfo`.
//!
//! - Algorithms: RS256 and ES256 only. `none` does not parse; HS* is refused before any key is looked
//!   at, and symmetric (`oct`) JWKs are never loaded, so a public key can never be used as an HMAC
//!   secret.
//! - `iss` must be the scheme's issuer; `exp` is required; 60 s of clock skew (ESPv2's); the audience
//!   must be one the scheme accepts, compared as ESPv2 does (scheme and trailing `/` ignored).
//! - Keys ([`Jwks`]) are fetched off the request path (see [`refresh_forever`]): at first use, again
//!   when the issuer's `Cache-Control: max-age` runs out (300 s without one), and soon after a token
//!   names a key not seen yet (at most every 30 s per key set). A request never waits for a fetch.
//!
//! Error words are ESPv2's (Envoy's `jwt_authn`): 401 `Jwt is missing`, `Jwt is expired`, `Jwt
//! verification fails`, `Jwks doesn't have key to match kid or alg from Jwt`, `Jwt issuer is not
//! configured`; 403 `Audiences in Jwt are not allowed`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::request::Parts;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::spec::{JwtLocation, JwtScheme};

/// Clock skew allowed, in seconds (ESPv2's).
pub const LEEWAY_SECS: u64 = 60;
/// How long keys are kept when the issuer says nothing.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Soonest a fetch follows the previous one when a token names an unknown key.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

/// Where a key set comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JwksSource {
    /// The issuer.
    pub issuer: String,
    /// Its JWKS URL; `None`: found by OpenID discovery (`ISSUER/.well-known/openid-configuration`).
    pub jwks_uri: Option<String>,
}

/// Why keys could not be had.
pub type FetchError = String;

/// A fetched key set and how long it may be kept.
pub type Fetched =
    Pin<Box<dyn Future<Output = Result<(Vec<u8>, Option<Duration>), FetchError>> + Send>>;

/// Fetches key sets (the server's HTTP client, or Pier's own keys for its own issuer).
pub trait JwksFetch: Send + Sync + 'static {
    /// The JWKS document of `source`, and its `max-age` if the answer gave one.
    fn fetch(&self, source: &JwksSource) -> Fetched;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
}

/// One issuer's current keys.
pub struct Jwks {
    source: JwksSource,
    keys: ArcSwap<HashMap<String, (DecodingKey, Family)>>,
    /// Bumped whenever the keys change: verifications cached under another generation are redone.
    generation: std::sync::atomic::AtomicU64,
    wants_refresh: Arc<tokio::sync::Notify>,
    last_fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl Jwks {
    /// An empty key set for `source`.
    pub fn new(source: JwksSource) -> Self {
        Self {
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            wants_refresh: Arc::new(tokio::sync::Notify::new()),
            last_fetch: Mutex::new(None),
        }
    }

    /// Where the keys come from.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// Replaces the keys with the RSA and EC keys of a JWKS document (RFC 7517 §5); symmetric keys
    /// are skipped. Returns how many were loaded; a document that does not parse changes nothing.
    pub fn set(&self, doc: &[u8]) -> Result<usize, String> {
        let set: JwkSet =
            serde_json::from_slice(doc).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                _ => continue,
            };
            if let Ok(k) = DecodingKey::from_jwk(jwk) {
                keys.insert(jwk.common.key_id.clone().unwrap_or_default(), (k, family));
            }
        }
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(n)
    }

    fn key(&self, kid: Option<&str>, family: Family) -> Option<DecodingKey> {
        let keys = self.keys.load();
        let found = match kid {
            Some(k) => keys.get(k),
            // No kid: the only key of the right kind, if there is exactly one.
            None => {
                let mut fitting = keys.values().filter(|(_, f)| *f == family);
                match (fitting.next(), fitting.next()) {
                    (Some(one), None) => Some(one),
                    _ => None,
                }
            }
        };
        found.filter(|(_, f)| *f == family).map(|(k, _)| k.clone())
    }
}

/// Keeps `jwks` fresh while anything uses it (see the module's rules); `fetcher` does the I/O. The
/// task holds the key set only while fetching, and ends once no route holds it any more.
pub async fn refresh_forever(jwks: Weak<Jwks>, fetcher: Arc<dyn JwksFetch>) {
    let mut failures = 0u32;
    loop {
        let Some(jwks) = jwks.upgrade() else {
            return;
        };
        // Every attempt counts toward the refetch limit, failed ones too.
        *jwks.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let wait = match fetcher.fetch(&jwks.source).await {
            Ok((doc, max_age)) => match jwks.set(&doc) {
                Ok(n) => {
                    failures = 0;
                    tracing::info!(issuer = %jwks.source.issuer, keys = n, "API gateway: JWT keys loaded");
                    max_age
                        .unwrap_or(DEFAULT_MAX_AGE)
                        .clamp(Duration::from_secs(60), Duration::from_secs(3600))
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(issuer = %jwks.source.issuer, "API gateway: JWT keys: {e}");
                    backoff(failures)
                }
            },
            Err(e) => {
                failures += 1;
                tracing::warn!(issuer = %jwks.source.issuer, "API gateway: cannot fetch JWT keys: {e}");
                backoff(failures)
            }
        };
        let (notify, fetched_at) = (
            jwks.wants_refresh.clone(),
            jwks.last_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(Instant::now),
        );
        drop(jwks);
        // An unknown `kid` brings the next fetch forward, but never sooner than MIN_REFETCH after the
        // last one, and never later than it was due anyway (after a failure, the back-off's few seconds:
        // a request that arrived before the first fetch must not hold the keys back for 30 s).
        let due = fetched_at + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = notify.notified() => {
                let soonest = fetched_at + MIN_REFETCH;
                tokio::time::sleep_until(soonest.min(due).into()).await;
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs((2u64 << failures.min(5)).min(60))
}

/// Every key set in use, shared by the routes that name the same issuer. It holds them weakly: a key
/// set no route uses any more is dropped, and its refresher ends.
pub struct JwksRegistry {
    fetcher: Arc<dyn JwksFetch>,
    sets: Mutex<HashMap<JwksSource, Weak<Jwks>>>,
}

impl std::fmt::Debug for JwksRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksRegistry").finish_non_exhaustive()
    }
}

impl JwksRegistry {
    /// A registry fetching with `fetcher`.
    pub fn new(fetcher: Arc<dyn JwksFetch>) -> Self {
        Self {
            fetcher,
            sets: Mutex::new(HashMap::new()),
        }
    }

    /// The key set of `source`, starting its refresher the first time (call within a Tokio runtime).
    pub fn get(&self, source: &JwksSource) -> Arc<Jwks> {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = sets.get(source).and_then(Weak::upgrade) {
            return j;
        }
        sets.retain(|_, w| w.strong_count() > 0);
        let j = Arc::new(Jwks::new(source.clone()));
        tokio::spawn(refresh_forever(Arc::downgrade(&j), self.fetcher.clone()));
        sets.insert(source.clone(), Arc::downgrade(&j));
        j
    }
}

/// Why a JWT was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtFailure {
    /// No token where the scheme looks (401).
    Missing,
    /// Not acceptable (401), in ESPv2's words.
    Invalid(&'static str),
    /// Signed by a key the issuer has not published (yet) (401).
    UnknownKey,
    /// Valid, for another audience (403).
    Audience,
}

impl JwtFailure {
    /// ESPv2's status and message.
    pub fn status_and_message(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode;
        match self {
            JwtFailure::Missing => (StatusCode::UNAUTHORIZED, "Jwt is missing"),
            JwtFailure::Invalid(why) => (StatusCode::UNAUTHORIZED, why),
            JwtFailure::UnknownKey => (
                StatusCode::UNAUTHORIZED,
                "Jwks doesn't have key to match kid or alg from Jwt",
            ),
            JwtFailure::Audience => (StatusCode::FORBIDDEN, "Audiences in Jwt are not allowed"),
        }
    }
}

/// One JWT scheme, ready to check requests.
pub struct JwtVerifier {
    issuer: String,
    audiences: Vec<String>,
    locations: Vec<JwtLocation>,
    jwks: Arc<Jwks>,
    /// Tokens that passed every check, with their times and the key generation they were checked
    /// under (ESPv2 caches 1000 verified tokens): a signature is verified once per token, not per
    /// request. Times are still checked on every use.
    verified: Mutex<HashMap<Box<str>, Passed>>,
}

#[derive(Clone, Copy)]
struct Passed {
    generation: u64,
    exp: u64,
    nbf: u64,
}

/// Most verified tokens kept per scheme (ESPv2's `jwt_cache_size`).
const VERIFIED_MAX: usize = 1000;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// ESPv2's audience comparison: no scheme, no trailing `/`.
fn normalize_audience(a: &str) -> String {
    a.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

impl JwtVerifier {
    /// A verifier for `scheme`, accepting `default_audiences` when the scheme names none.
    pub fn new(scheme: &JwtScheme, default_audiences: &[String], jwks: Arc<Jwks>) -> Self {
        let auds = if scheme.audiences.is_empty() {
            default_audiences
        } else {
            &scheme.audiences
        };
        Self {
            issuer: scheme.issuer.clone(),
            audiences: auds.iter().map(|a| normalize_audience(a)).collect(),
            locations: scheme.locations.clone(),
            jwks,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The token a request carries for this scheme, and where it was.
    pub fn find<'a>(&self, head: &'a Parts) -> Option<std::borrow::Cow<'a, str>> {
        for l in &self.locations {
            match l {
                JwtLocation::Header { name, prefix } => {
                    let Some(v) = head
                        .headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                    else {
                        continue;
                    };
                    let token = if prefix.is_empty() {
                        Some(v.trim())
                    } else if v.len() >= prefix.len()
                        && v[..prefix.len()].eq_ignore_ascii_case(prefix)
                    {
                        Some(v[prefix.len()..].trim())
                    } else {
                        None
                    };
                    if let Some(t) = token.filter(|t| !t.is_empty()) {
                        return Some(std::borrow::Cow::Borrowed(t));
                    }
                }
                JwtLocation::Query(name) => {
                    if let Some(q) = head.uri.query()
                        && let Some((_, v)) =
                            form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name.as_str())
                    {
                        return Some(std::borrow::Cow::Owned(v.into_owned()));
                    }
                }
            }
        }
        None
    }

    /// Verifies `token`; on success returns its payload segment (base64url, unpadded), which is what
    /// `X-Endpoint-API-UserInfo` carries.
    pub fn verify<'t>(&self, token: &'t str) -> Result<&'t str, JwtFailure> {
        let payload = token
            .split('.')
            .nth(1)
            .ok_or(JwtFailure::Invalid("Jwt verification fails"))?;
        let generation = self
            .jwks
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .copied();
        if let Some(p) = cached.filter(|p| p.generation == generation) {
            let now = now_secs();
            if now > p.exp.saturating_add(LEEWAY_SECS) {
                return Err(JwtFailure::Invalid("Jwt is expired"));
            }
            if p.nbf > now.saturating_add(LEEWAY_SECS) {
                return Err(JwtFailure::Invalid("Jwt not yet valid"));
            }
            return Ok(payload);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| JwtFailure::Invalid("Jwt verification fails"))?;
        // Another issuer's token is not this scheme's to judge (nor a reason to fetch keys again).
        if pier_identity::external::unverified_issuer(token).as_deref()
            != Some(self.issuer.trim_end_matches('/'))
        {
            return Err(JwtFailure::Invalid("Jwt issuer is not configured"));
        }
        let family = match header.alg {
            Algorithm::RS256 => Family::Rsa,
            Algorithm::ES256 => Family::Ec,
            _ => return Err(JwtFailure::Invalid("Jwt verification fails")),
        };
        let Some(key) = self.jwks.key(header.kid.as_deref(), family) else {
            self.jwks.wants_refresh.notify_one();
            return Err(JwtFailure::UnknownKey);
        };
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_issuer(&[self.issuer.clone(), format!("{}/", self.issuer)]);
        v.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => JwtFailure::Invalid("Jwt is expired"),
                ErrorKind::ImmatureSignature => JwtFailure::Invalid("Jwt not yet valid"),
                ErrorKind::InvalidIssuer => JwtFailure::Invalid("Jwt issuer is not configured"),
                _ => JwtFailure::Invalid("Jwt verification fails"),
            }
        })?;
        let auds: Vec<String> = match data.claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(l)) => l
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if !auds
            .iter()
            .any(|a| self.audiences.contains(&normalize_audience(a)))
        {
            return Err(JwtFailure::Audience);
        }
        let time = |k: &str| data.claims.get(k).and_then(serde_json::Value::as_u64);
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(
            token.into(),
            Passed {
                generation,
                exp: time("exp").unwrap_or(0),
                nbf: time("nbf").unwrap_or(0),
            },
        );
        Ok(payload)
    }
}

#[cfg(test)]
mod tests;
