//! User passwords, stored as argon2id hashes (PHC strings) and checked in constant time by the argon2
//! crate; opaque secrets (refresh tokens) stored as SHA-256 digests.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::IdentityError;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

/// Hashes a password for storage.
pub fn hash_password(password: &str) -> Result<String, IdentityError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(IdentityError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD} characters"
        )));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| IdentityError::Internal(format!("randomness: {e}")))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| IdentityError::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(format!("hashing: {e}")))
}

/// Whether `password` matches a stored hash.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new random secret (URL-safe, 256 bits).
pub fn new_secret() -> Result<String, IdentityError> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Internal(format!("randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The digest a secret is stored and looked up by (hex SHA-256).
pub fn secret_digest(secret: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(hash_password("short").is_err());
        assert_ne!(hash_password("correct horse").unwrap(), h, "salted");
    }

    #[test]
    fn secrets_are_random_and_digested() {
        let a = new_secret().unwrap();
        assert_ne!(a, new_secret().unwrap());
        assert_eq!(secret_digest(&a).len(), 64);
        assert_eq!(secret_digest(&a), secret_digest(&a));
    }
}
