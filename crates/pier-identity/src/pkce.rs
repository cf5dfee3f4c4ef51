//! Proof Key for Code Exchange (RFC 7636): the shape of a code challenge and verifier, and the `S256`
//! check the token endpoint makes. Pier supports `S256` only: RFC 7636 §4.2 lets a server refuse
//! `plain`, and §4.4.1 says how (`invalid_request`).

use base64::Engine;

/// The one transformation Pier accepts (RFC 7636 §4.2).
pub const S256: &str = "S256";

/// Whether `s` has the shape RFC 7636 §4.1 gives a verifier (and §4.2 a challenge): 43 to 128
/// characters from `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
pub fn well_formed(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL-ENCODE(SHA256(ASCII(verifier)))`, no padding (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// Whether `verifier` answers `challenge` under `S256` (RFC 7636 §4.6), compared in constant time. A
/// verifier of the wrong shape never does.
pub fn verifies(verifier: &str, challenge: &str) -> bool {
    well_formed(verifier)
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            s256(verifier).as_bytes(),
            challenge.as_bytes(),
        )
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_verifies() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256(verifier), challenge);
        assert!(verifies(verifier, challenge));
        assert!(!verifies(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
    }

    #[test]
    fn shapes_follow_section_4_1() {
        assert!(well_formed(&"a".repeat(43)));
        assert!(well_formed(&"a~._-".repeat(26)[..128]));
        assert!(!well_formed(&"a".repeat(42)));
        assert!(!well_formed(&"a".repeat(129)));
        assert!(!well_formed(&format!("{}+", "a".repeat(43))));
        assert!(!well_formed(&format!("{}=", "a".repeat(43))));
        // A challenge is not its own verifier.
        let c = s256(&"v".repeat(43));
        assert!(!verifies(&c, &c));
    }
}
