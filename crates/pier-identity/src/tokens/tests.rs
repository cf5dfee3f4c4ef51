//! Token tests, including the forgeries a verifier must refuse.

use super::*;
use crate::keys::{KeyRing, RotationPolicy};
use base64::Engine;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn issuer() -> (tempfile::TempDir, Issuer) {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(KeyRing::open(dir.path(), RotationPolicy::default()).unwrap());
    (dir, Issuer::new("https://pier.localhost:8443", ring))
}

fn alice() -> Principal {
    Principal::User("alice@example.com".into())
}

/// A token with the given header and claims, signed by the ring's current key.
fn signed(iss: &Issuer, claims: serde_json::Value) -> String {
    iss.ring().sign(&claims).unwrap()
}

fn base_claims(iss: &Issuer) -> serde_json::Value {
    let now = now_secs();
    serde_json::json!({
        "iss": iss.url(), "aud": "https://a.example", "sub": "1", "email": "alice@example.com",
        "email_verified": true, "azp": "x", "iat": now, "exp": now + 600,
    })
}

#[test]
fn minted_tokens_verify_with_their_claims() {
    let (_d, iss) = issuer();
    let t = iss
        .mint(&alice(), "u1", "https://a.example", CLI_CLIENT_ID, None)
        .unwrap();
    let v = iss.verify(&t).unwrap();
    assert_eq!(v.principal, alice());
    assert_eq!(v.claims.aud, "https://a.example");
    assert_eq!(v.claims.iss, "https://pier.localhost:8443");
    assert_eq!(v.claims.exp - v.claims.iat, 3600);
    assert!(v.claims.email_verified);
    check_audience(&v.claims, &["https://a.example".into()]).unwrap();
    assert!(matches!(
        check_audience(&v.claims, &["https://b.example".into()]),
        Err(TokenError::Audience(_))
    ));
    // Service accounts are marked so.
    let sa = Principal::ServiceAccount("c@default.iam.pier.localhost".into());
    let t = iss.mint(&sa, "2", "aud", "2", Some("k1")).unwrap();
    let v = iss.verify(&t).unwrap();
    assert_eq!(v.principal, sa);
    assert_eq!(v.claims.pier_key.as_deref(), Some("k1"));
}

#[test]
fn alg_none_is_refused() {
    let (_d, iss) = issuer();
    let kid = iss.ring().signing().unwrap().kid.clone();
    let header = b64(format!(r#"{{"alg":"none","kid":"{kid}"}}"#).as_bytes());
    let payload = b64(base_claims(&iss).to_string().as_bytes());
    for t in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(matches!(
            iss.verify(&t),
            Err(TokenError::Algorithm(_)) | Err(TokenError::Malformed)
        ));
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let (_d, iss) = issuer();
    let jwks = iss.ring().jwks();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    // The classic confusion attack: use the published key material as an HMAC secret.
    let secret = jwks["keys"][0].to_string();
    let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
    let payload = b64(base_claims(&iss).to_string().as_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = aws_lc_rs::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    let t = format!("{header}.{payload}.{}", b64(sig.as_ref()));
    assert_eq!(
        iss.verify(&t).unwrap_err(),
        TokenError::Algorithm("HS256".into())
    );
}

#[test]
fn time_issuer_key_and_tampering_are_checked() {
    let (_d, iss) = issuer();
    let now = now_secs();
    let mut expired = base_claims(&iss);
    expired["exp"] = (now - 600).into();
    expired["iat"] = (now - 4200).into();
    assert_eq!(
        iss.verify(&signed(&iss, expired)).unwrap_err(),
        TokenError::Expired
    );

    let mut future = base_claims(&iss);
    future["nbf"] = (now + 600).into();
    assert_eq!(
        iss.verify(&signed(&iss, future)).unwrap_err(),
        TokenError::NotYetValid
    );

    let mut issued_later = base_claims(&iss);
    issued_later["iat"] = (now + 600).into();
    assert_eq!(
        iss.verify(&signed(&iss, issued_later)).unwrap_err(),
        TokenError::NotYetValid
    );

    let mut other_iss = base_claims(&iss);
    other_iss["iss"] = "https://evil.example".into();
    assert!(matches!(
        iss.verify(&signed(&iss, other_iss)).unwrap_err(),
        TokenError::Issuer(_)
    ));

    // Tamper with the payload of a good token: the signature no longer matches.
    let good = iss.mint(&alice(), "u1", "aud", "x", None).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = base_claims(&iss);
    claims["email"] = "mallory@example.com".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(iss.verify(&forged).unwrap_err(), TokenError::Signature);

    // Signed by a key this issuer never published.
    let (_d2, other) = issuer();
    let t = other.mint(&alice(), "u1", "aud", "x", None).unwrap();
    assert_eq!(iss.verify(&t).unwrap_err(), TokenError::UnknownKey);

    for junk in ["", "a.b", "a.b.c", "....", "eyJ.eyJ.sig"] {
        assert!(iss.verify(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn verification_is_cached_until_expiry() {
    let (_d, iss) = issuer();
    let t = iss.mint(&alice(), "u1", "aud", "x", None).unwrap();
    let a = iss.verify(&t).unwrap();
    let b = iss.verify(&t).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "second verification came from the cache"
    );
    assert!(a.stripped.ends_with(b".SIGNATURE_REMOVED_BY_PIER"));
    let signature = t.split('.').nth(2).unwrap();
    assert!(
        !std::str::from_utf8(&a.stripped)
            .unwrap()
            .contains(signature)
    );
    iss.flush();
    let c = iss.verify(&t).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
}

#[test]
fn service_account_assertions_like_google_auth_sends() {
    let (pem, n, e) = crate::keys::generate_rsa().unwrap();
    let enc = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let dec = DecodingKey::from_rsa_raw_components(&n, &e);
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("key-1".into());
    let now = now_secs();
    let claims = serde_json::json!({
        "iss": "caller@default.iam.pier.localhost", "aud": GOOGLE_TOKEN_URI,
        "iat": now, "exp": now + 3600, "target_audience": "https://api.example",
    });
    let t = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    let uris = [GOOGLE_TOKEN_URI, "https://pier.localhost:8443/token"];
    let a = verify_assertion(&t, &dec, &uris).unwrap();
    assert_eq!(a.iss, "caller@default.iam.pier.localhost");
    assert_eq!(a.target_audience.as_deref(), Some("https://api.example"));
    // Addressed elsewhere: refused.
    assert!(verify_assertion(&t, &dec, &["https://other/token"]).is_err());
    // Too long-lived: refused.
    let long =
        serde_json::json!({"iss": "c@x", "aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 86400});
    let t = jsonwebtoken::encode(&header, &long, &enc).unwrap();
    assert!(verify_assertion(&t, &dec, &uris).is_err());
    // Signed by another key: refused.
    let (pem2, _, _) = crate::keys::generate_rsa().unwrap();
    let enc2 = jsonwebtoken::EncodingKey::from_rsa_pem(pem2.as_bytes()).unwrap();
    let t = jsonwebtoken::encode(&header, &claims, &enc2).unwrap();
    assert_eq!(
        verify_assertion(&t, &dec, &uris).unwrap_err(),
        TokenError::Signature
    );
}
