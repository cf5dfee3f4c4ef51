//! API keys as the gateway checks them. A key is shown once, when it is made; the store keeps its
//! SHA-256 digest and the gateway a directory of digests, published with the routes. A presented key
//! is found by its first characters (not secret: they only pick candidates), then its digest is
//! compared with each candidate's in constant time. Keys are never logged.
//!
//! Keys look like Google's (`AIza` and 35 URL-safe characters), so clients that check the shape accept
//! them.

use std::collections::HashMap;

use http::request::Parts;
use subtle::ConstantTimeEq;

use crate::spec::KeyLocation;

/// How many leading characters index the directory.
pub const PREFIX_LEN: usize = 12;

/// A new key (39 characters).
pub fn generate() -> Result<String, pier_identity::IdentityError> {
    let secret = pier_identity::passwords::new_secret()?;
    Ok(format!("AIza{}", &secret[..35]))
}

/// The first characters of a key, by which it is looked up.
pub fn prefix(key: &str) -> &str {
    key.get(..PREFIX_LEN).unwrap_or(key)
}

/// One usable key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's id (`pier api-keys list` shows it).
    pub uid: String,
    /// The project the key belongs to: its consumer for quotas.
    pub project: String,
    /// Hex SHA-256 of the key.
    pub digest: String,
    /// The APIs it may call (names); empty: any API of its project.
    pub api_targets: Vec<String>,
}

/// Every usable key (revoked keys are left out when it is built).
#[derive(Debug, Default)]
pub struct KeyDirectory {
    by_prefix: HashMap<String, Vec<KeyEntry>>,
}

impl KeyDirectory {
    /// A directory of `(prefix, entry)` pairs.
    pub fn new(keys: impl IntoIterator<Item = (String, KeyEntry)>) -> Self {
        let mut by_prefix: HashMap<String, Vec<KeyEntry>> = HashMap::new();
        for (p, e) in keys {
            by_prefix.entry(p).or_default().push(e);
        }
        Self { by_prefix }
    }

    /// The entry of `key`, if it is a usable key.
    pub fn lookup(&self, key: &str) -> Option<&KeyEntry> {
        let candidates = self.by_prefix.get(prefix(key))?;
        let digest = pier_identity::passwords::secret_digest(key);
        candidates
            .iter()
            .find(|e| bool::from(e.digest.as_bytes().ct_eq(digest.as_bytes())))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_prefix.values().map(Vec::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// The key a request carries, from the first of `locations` that has one.
pub fn extract(locations: &[KeyLocation], head: &Parts) -> Option<String> {
    for l in locations {
        match l {
            KeyLocation::Query(name) => {
                if let Some(q) = head.uri.query()
                    && let Some((_, v)) =
                        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name.as_str())
                {
                    return Some(v.into_owned());
                }
            }
            KeyLocation::Header(name) => {
                if let Some(v) = head
                    .headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, uid: &str) -> (String, KeyEntry) {
        (
            prefix(key).to_owned(),
            KeyEntry {
                uid: uid.into(),
                project: "default".into(),
                digest: pier_identity::passwords::secret_digest(key),
                api_targets: Vec::new(),
            },
        )
    }

    #[test]
    fn keys_are_found_by_digest_only() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 39);
        assert!(a.starts_with("AIza"));
        assert_ne!(a, b);
        // Two keys sharing a prefix are told apart by their digests.
        let twin = format!("{}{}", prefix(&a), "x".repeat(27));
        let dir = KeyDirectory::new([entry(&a, "k1"), entry(&twin, "k2")]);
        assert_eq!(dir.lookup(&a).unwrap().uid, "k1");
        assert_eq!(dir.lookup(&twin).unwrap().uid, "k2");
        assert!(dir.lookup(&b).is_none());
        // A key cut short, or one character off, is no key.
        assert!(dir.lookup(&a[..38]).is_none());
        let mut off = a.clone();
        off.pop();
        off.push(if a.ends_with('A') { 'B' } else { 'A' });
        assert!(dir.lookup(&off).is_none());
        assert!(dir.lookup("").is_none());
    }

    #[test]
    fn keys_are_read_from_the_first_location_that_has_one() {
        let locs = [
            KeyLocation::Query("key".into()),
            KeyLocation::Query("api_key".into()),
            KeyLocation::Header("x-api-key".into()),
        ];
        let head = |uri: &str, header: Option<&str>| {
            let mut b = http::Request::builder().uri(uri);
            if let Some(h) = header {
                b = b.header("x-api-key", h);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            extract(&locs, &head("/a?key=K1&api_key=K2", Some("K3"))).as_deref(),
            Some("K1")
        );
        assert_eq!(
            extract(&locs, &head("/a?api_key=K%2B2", Some("K3"))).as_deref(),
            Some("K+2")
        );
        assert_eq!(
            extract(&locs, &head("/a", Some(" K3 "))).as_deref(),
            Some("K3")
        );
        assert_eq!(extract(&locs, &head("/a?x=1", None)), None);
    }
}
