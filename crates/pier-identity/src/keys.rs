//! Pier's token signing keys: RSA 2048, one signing at a time, rotated on a schedule.
//!
//! A new key is created and published in the JWKS `publish_ahead` before it starts signing, so verifiers
//! that cache the JWKS know it before they see a token it signed. A retired key stays published until every
//! token it signed has expired (`token lifetime + leeway`), then it is deleted. Private keys live in the
//! data dir as PKCS#8 PEM files, mode 0600; the schedule beside each in a small JSON file.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::IdentityError;

/// Lifetime of the ID tokens Pier's keys sign (a retired key stays published at least this long).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How keys rotate.
#[derive(Clone, Copy, Debug)]
pub struct RotationPolicy {
    /// How long one key signs.
    pub signing_period: Duration,
    /// How long before signing a new key is published.
    pub publish_ahead: Duration,
    /// How long a retired key stays published (longest token lifetime plus leeway).
    pub retention: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            signing_period: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(3600),
            retention: TOKEN_LIFETIME + Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyMeta {
    kid: String,
    activates_at: u64,
    retires_at: u64,
}

/// One key: its schedule, and what signs or verifies with it.
pub struct RingKey {
    /// Key id (the JWT `kid`).
    pub kid: String,
    activates_at: u64,
    retires_at: u64,
    encoding: EncodingKey,
    /// Verifies tokens signed by this key.
    pub decoding: DecodingKey,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey")
            .field("kid", &self.kid)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

/// The keys currently published, and the one that signs.
#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<Arc<RingKey>>,
    signing: Option<Arc<RingKey>>,
}

/// The key ring.
pub struct KeyRing {
    dir: PathBuf,
    policy: RotationPolicy,
    set: ArcSwap<KeySet>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("dir", &self.dir).finish()
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |e| IdentityError::Internal(format!("{}: {e}", path.display()))
}

/// A fresh RSA 2048 key: PKCS#8 PEM of the private key and the public modulus and exponent.
pub fn generate_rsa() -> Result<(String, Vec<u8>, Vec<u8>), IdentityError> {
    let kp = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| IdentityError::Internal("RSA key generation failed".into()))?;
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
        .map_err(|_| IdentityError::Internal("encoding the RSA key failed".into()))?;
    let pem = pem_wrap("PRIVATE KEY", der.as_ref());
    let (n, e) = rsa_components(&kp);
    Ok((pem, n, e))
}

fn rsa_components(kp: &KeyPair) -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::signature::KeyPair as _;
    let public = kp.public_key();
    (
        public.modulus().big_endian_without_leading_zero().to_vec(),
        public.exponent().big_endian_without_leading_zero().to_vec(),
    )
}

/// Wraps DER bytes in PEM armor.
pub fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads the DER inside PEM armor with the given label.
pub fn pem_unwrap(label: &str, pem: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn load_key(pem: &str, meta: &KeyMeta) -> Result<RingKey, IdentityError> {
    let der = pem_unwrap("PRIVATE KEY", pem)
        .ok_or_else(|| IdentityError::Internal(format!("key {} is not PKCS#8 PEM", meta.kid)))?;
    let kp = KeyPair::from_pkcs8(&der)
        .map_err(|e| IdentityError::Internal(format!("key {}: {e}", meta.kid)))?;
    let (n, e) = rsa_components(&kp);
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| IdentityError::Internal(format!("key {}: {e}", meta.kid)))?;
    Ok(RingKey {
        kid: meta.kid.clone(),
        activates_at: meta.activates_at,
        retires_at: meta.retires_at,
        encoding,
        decoding: DecodingKey::from_rsa_raw_components(&n, &e),
        n,
        e,
    })
}

fn random_kid() -> Result<String, IdentityError> {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Internal(format!("randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl KeyRing {
    /// Opens the ring in `dir`, creating the first key if there is none, and applies the schedule.
    pub fn open(dir: &Path, policy: RotationPolicy) -> Result<Self, IdentityError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let ring = Self {
            dir: dir.to_owned(),
            policy,
            set: ArcSwap::from_pointee(KeySet::default()),
        };
        ring.rotate(SystemTime::now())?;
        Ok(ring)
    }

    fn read_all(&self) -> Result<Vec<RingKey>, IdentityError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let meta: KeyMeta = match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(m) => m,
                None => {
                    tracing::warn!(path = %path.display(), "ignoring an unreadable key schedule");
                    continue;
                }
            };
            let pem_path = self.dir.join(format!("{}.pem", meta.kid));
            let pem = fs::read_to_string(&pem_path).map_err(io(&pem_path))?;
            keys.push(load_key(&pem, &meta)?);
        }
        keys.sort_by_key(|k| k.activates_at);
        Ok(keys)
    }

    fn create(&self, activates_at: u64) -> Result<(), IdentityError> {
        let kid = random_kid()?;
        let (pem, _, _) = generate_rsa()?;
        let meta = KeyMeta {
            kid: kid.clone(),
            activates_at,
            retires_at: activates_at + self.policy.signing_period.as_secs(),
        };
        // The private key first: a schedule without its key is never read.
        pier_tls::write_private(&self.dir.join(format!("{kid}.pem")), pem.as_bytes(), 0o600)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        pier_tls::write_private(&self.dir.join(format!("{kid}.json")), &json, 0o600)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        tracing::info!(kid = %kid, "created a token signing key");
        Ok(())
    }

    /// Applies the schedule at `now`: creates the next key when due, drops expired ones, picks the signing
    /// key. Returns whether the published set changed.
    pub fn rotate(&self, now: SystemTime) -> Result<bool, IdentityError> {
        let t = secs(now);
        let mut keys = self.read_all()?;
        let mut changed = false;
        // Drop keys whose tokens have all expired.
        let retention = self.policy.retention.as_secs();
        for k in keys.iter().filter(|k| k.retires_at + retention <= t) {
            let _ = fs::remove_file(self.dir.join(format!("{}.pem", k.kid)));
            let _ = fs::remove_file(self.dir.join(format!("{}.json", k.kid)));
            tracing::info!(kid = %k.kid, "deleted an expired token signing key");
            changed = true;
        }
        keys.retain(|k| k.retires_at + retention > t);
        let active = keys.iter().any(|k| k.activates_at <= t && t < k.retires_at);
        if !active {
            self.create(t)?;
            changed = true;
        } else {
            let latest_end = keys.iter().map(|k| k.retires_at).max().unwrap_or(t);
            if latest_end.saturating_sub(t) <= self.policy.publish_ahead.as_secs() {
                self.create(latest_end)?;
                changed = true;
            }
        }
        if changed {
            keys = self.read_all()?;
        }
        let keys: Vec<Arc<RingKey>> = keys.into_iter().map(Arc::new).collect();
        let signing = keys
            .iter()
            .filter(|k| k.activates_at <= t && t < k.retires_at)
            .max_by_key(|k| k.activates_at)
            .cloned();
        let old: Vec<String> = self.set.load().keys.iter().map(|k| k.kid.clone()).collect();
        let new: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
        self.set.store(Arc::new(KeySet { keys, signing }));
        Ok(changed || old != new)
    }

    /// The key that signs now.
    pub fn signing(&self) -> Result<Arc<RingKey>, IdentityError> {
        self.set
            .load()
            .signing
            .clone()
            .ok_or_else(|| IdentityError::Internal("no active signing key".into()))
    }

    /// A published key by id.
    pub fn key(&self, kid: &str) -> Option<Arc<RingKey>> {
        self.set.load().keys.iter().find(|k| k.kid == kid).cloned()
    }

    /// The published keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let keys: Vec<serde_json::Value> = self
            .set
            .load()
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": k.kid,
                    "n": b64(&k.n),
                    "e": b64(&k.e),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs claims with the current key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, IdentityError> {
        let key = self.signing()?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| IdentityError::Internal(format!("signing a token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            signing_period: Duration::from_secs(100),
            publish_ahead: Duration::from_secs(20),
            retention: Duration::from_secs(30),
        }
    }

    #[test]
    fn first_open_creates_one_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), policy()).unwrap();
        let k = ring.signing().unwrap();
        let mode = fs::metadata(dir.path().join(format!("{}.pem", k.kid)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
        // Reopening keeps the same key.
        let again = KeyRing::open(dir.path(), policy()).unwrap();
        assert_eq!(again.signing().unwrap().kid, k.kid);
    }

    #[test]
    fn next_key_is_published_before_it_signs_and_old_kept_until_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), policy()).unwrap();
        let first = ring.signing().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(first.activates_at);
        // 85 s in (15 s left, inside the 20 s publish-ahead): the next key is published, not signing.
        assert!(ring.rotate(t0 + Duration::from_secs(85)).unwrap());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(ring.signing().unwrap().kid, first.kid);
        // 101 s in: the new key signs, the old one is still published (retention 30 s).
        ring.rotate(t0 + Duration::from_secs(101)).unwrap();
        let second = ring.signing().unwrap();
        assert_ne!(second.kid, first.kid);
        assert!(ring.key(&first.kid).is_some());
        // 131 s in: the old key's tokens have all expired; it is gone, from disk too.
        ring.rotate(t0 + Duration::from_secs(131)).unwrap();
        assert!(ring.key(&first.kid).is_none());
        assert!(!dir.path().join(format!("{}.pem", first.kid)).exists());
    }

    #[test]
    fn pem_round_trips() {
        let (pem, n, e) = generate_rsa().unwrap();
        let der = pem_unwrap("PRIVATE KEY", &pem).unwrap();
        let kp = KeyPair::from_pkcs8(&der).unwrap();
        assert_eq!(rsa_components(&kp), (n, e));
    }
}
