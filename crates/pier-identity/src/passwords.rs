//! User passwords, stored as argon2id hashes (PHC strings) and checked in constant time by the argon2
//! crate; opaque secrets (refresh tokens) stored as SHA-256 digests.
//!
//! Argon2 is memory-hard on purpose (about 19 MiB per hash with the defaults), so a flood of sign-ins
//! could take the server's memory: checks run on [`max_concurrent`] threads of their own (the
//! allocator keeps freed memory per thread), and a caller that waits longer than [`WAIT`], or finds
//! the queue full, gets [`Busy`]. [`verify_or_pretend`] takes as long for an
//! unknown account as for a known one, so timing tells nobody which accounts exist.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::IdentityError;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

/// Longest a sign-in waits for a turn at argon2 before the server says it is busy.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The server is hashing as many passwords as it allows at once; retry shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Hashes that may run at once: the machine's cores, at least two.
pub fn max_concurrent() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads: a fixed few, so the memory argon2 takes (which the allocator keeps per
/// thread once freed) is bounded by their number, not by how many requests arrive.
fn workers() -> &'static std::sync::mpsc::SyncSender<Job> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<Job>> =
        std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let n = max_concurrent();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(n * 8);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("pier-argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
        }
        tx
    })
}

/// Runs `f` on a hashing thread and waits for it (blocking), or gives up after [`WAIT`] or when too
/// many wait already.
fn with_turn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
    let (tx, rx) = std::sync::mpsc::channel();
    workers()
        .try_send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| Busy)?;
    rx.recv_timeout(WAIT).map_err(|_| Busy)
}

/// Checks `password` against `stored`, or against a throwaway hash when there is no account, so both
/// take the same time; `false` for no account. Waits for a turn ([`Busy`] after [`WAIT`]).
pub fn verify_or_pretend(password: &str, stored: Option<&str>) -> Result<bool, Busy> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        let mut salt = [0u8; 16];
        let _ = getrandom::fill(&mut salt);
        SaltString::encode_b64(&salt)
            .ok()
            .and_then(|s| {
                Argon2::default()
                    .hash_password(b"no account has this password", &s)
                    .ok()
                    .map(|h| h.to_string())
            })
            .unwrap_or_default()
    });
    let (password, stored) = (password.to_owned(), stored.map(str::to_owned));
    with_turn(move || match stored {
        Some(h) => verify_password(&password, &h),
        None => {
            let _ = verify_password(&password, dummy);
            false
        }
    })
}

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
