//! JWT checks with real keys: RS256 from a Pier key ring, ES256 from aws-lc-rs, and the classic attacks.

use super::*;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use pier_identity::keys::{KeyRing, RotationPolicy};

const ISS: &str = "https://idp.example";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn verifier(jwks: &Arc<Jwks>, auds: &[&str]) -> JwtVerifier {
    let scheme = JwtScheme {
        issuer: ISS.into(),
        jwks_uri: None,
        audiences: auds.iter().map(|a| a.to_string()).collect(),
        locations: crate::spec::default_jwt_locations(),
    };
    JwtVerifier::new(&scheme, &["https://gw.example".into()], jwks.clone())
}

fn claims(aud: &str, exp_in: i64) -> serde_json::Value {
    serde_json::json!({"iss": ISS, "aud": aud, "sub": "u1", "email": "a@example.com",
        "iat": now(), "exp": (now() as i64 + exp_in) as u64})
}

#[test]
fn rs256_tokens_pass_and_attacks_fail() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(dir.path(), RotationPolicy::default()).unwrap();
    let jwks = Arc::new(Jwks::new(JwksSource {
        issuer: ISS.into(),
        jwks_uri: None,
    }));
    let v = verifier(&jwks, &["shop-api"]);
    let good = ring.sign(&claims("shop-api", 600)).unwrap();
    // No keys yet: unknown key, and a fetch is asked for.
    assert_eq!(v.verify(&good), Err(JwtFailure::UnknownKey));
    let doc = serde_json::to_vec(&ring.jwks()).unwrap();
    assert_eq!(jwks.set(&doc).unwrap(), 1);
    let payload = v.verify(&good).unwrap();
    assert_eq!(payload, good.split('.').nth(1).unwrap());
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    assert!(
        String::from_utf8(decoded)
            .unwrap()
            .contains("a@example.com")
    );
    // Audience compared as ESPv2 does: scheme and trailing slash ignored.
    let v2 = verifier(&jwks, &["https://api.example/"]);
    assert!(
        v2.verify(&ring.sign(&claims("api.example", 600)).unwrap())
            .is_ok()
    );

    assert_eq!(
        v.verify(&ring.sign(&claims("other", 600)).unwrap()),
        Err(JwtFailure::Audience)
    );
    assert_eq!(
        v.verify(&ring.sign(&claims("shop-api", -3600)).unwrap()),
        Err(JwtFailure::Invalid("Jwt is expired"))
    );
    let mut other_iss = claims("shop-api", 600);
    other_iss["iss"] = "https://evil.example".into();
    assert_eq!(
        v.verify(&ring.sign(&other_iss).unwrap()),
        Err(JwtFailure::Invalid("Jwt issuer is not configured"))
    );
    // `alg: none`: no signature at all.
    let enc = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let kid = ring.signing().unwrap().kid.clone();
    let none = format!(
        "{}.{}.",
        enc(&serde_json::json!({"alg": "none", "kid": kid})),
        enc(&claims("shop-api", 600))
    );
    assert!(matches!(v.verify(&none), Err(JwtFailure::Invalid(_))));
    // HS256 keyed with the public key's bytes (the algorithm-confusion attack).
    let public = serde_json::to_vec(&ring.jwks()).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.clone());
    let hs = jsonwebtoken::encode(
        &h,
        &claims("shop-api", 600),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert!(matches!(v.verify(&hs), Err(JwtFailure::Invalid(_))));
    // A token signed by a key the issuer never published.
    let dir2 = tempfile::tempdir().unwrap();
    let stranger = KeyRing::open(dir2.path(), RotationPolicy::default()).unwrap();
    assert_eq!(
        v.verify(&stranger.sign(&claims("shop-api", 600)).unwrap()),
        Err(JwtFailure::UnknownKey)
    );
    // Verified once, then served from the cache; a new key set invalidates what was cached under the
    // old one, so a key the issuer withdrew stops working at once.
    assert!(v.verify(&good).is_ok());
    jwks.set(&serde_json::to_vec(&stranger.jwks()).unwrap())
        .unwrap();
    assert_eq!(v.verify(&good), Err(JwtFailure::UnknownKey));
    jwks.set(&doc).unwrap();
    assert!(v.verify(&good).is_ok());
    // A tampered payload breaks the signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = enc(&claims("shop-api", 9999));
    assert_eq!(
        v.verify(&parts.join(".")),
        Err(JwtFailure::Invalid("Jwt verification fails"))
    );
}

#[test]
fn es256_tokens_pass_and_symmetric_jwks_are_never_loaded() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref(); // 0x04 || X || Y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let doc = serde_json::json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
         "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        {"kty": "oct", "kid": "hmac", "k": b64(b"a shared secret")}
    ]});
    let jwks = Arc::new(Jwks::new(JwksSource {
        issuer: ISS.into(),
        jwks_uri: None,
    }));
    assert_eq!(jwks.set(&serde_json::to_vec(&doc).unwrap()).unwrap(), 1);
    let v = verifier(&jwks, &["shop-api"]);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("ec1".into());
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let t = jsonwebtoken::encode(&h, &claims("shop-api", 600), &key).unwrap();
    assert!(v.verify(&t).is_ok());
    // The oct key was skipped: an HS256 token naming it finds nothing to be checked with.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("hmac".into());
    let hs = jsonwebtoken::encode(
        &h,
        &claims("shop-api", 600),
        &EncodingKey::from_secret(b"a shared secret"),
    )
    .unwrap();
    assert!(v.verify(&hs).is_err());
}

#[test]
fn tokens_are_found_where_the_scheme_says() {
    let jwks = Arc::new(Jwks::new(JwksSource {
        issuer: ISS.into(),
        jwks_uri: None,
    }));
    let v = verifier(&jwks, &[]);
    let head = |uri: &str, h: &[(&str, &str)]| {
        let mut b = http::Request::builder().uri(uri);
        for (k, val) in h {
            b = b.header(*k, *val);
        }
        b.body(()).unwrap().into_parts().0
    };
    assert_eq!(
        v.find(&head("/", &[("authorization", "Bearer a.b.c")]))
            .unwrap(),
        "a.b.c"
    );
    assert_eq!(
        v.find(&head("/", &[("authorization", "bearer a.b.c")]))
            .unwrap(),
        "a.b.c"
    );
    assert_eq!(
        v.find(&head("/", &[("x-goog-iap-jwt-assertion", "d.e.f")]))
            .unwrap(),
        "d.e.f"
    );
    assert_eq!(v.find(&head("/?access_token=g.h.i", &[])).unwrap(), "g.h.i");
    assert!(
        v.find(&head("/", &[("authorization", "Basic xyz")]))
            .is_none()
    );
}
