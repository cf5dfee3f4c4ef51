//! Pier as its own OpenID Connect identity provider, and its IAM.
//!
//! - [`principal`]: users and service accounts, and policy members.
//! - [`iam`]: roles, policies with etags, and the pure "is this allowed" decision.
//! - [`keys`]: the RS256 signing keys, rotated with publish-ahead and retention.
//! - [`tokens`]: ID tokens (mint, verify with a cache), and service-account assertions.
//! - [`passwords`]: argon2 password hashes and opaque secrets.
//! - [`keyfile`]: Google's service-account key file format.
//!
//! No HTTP and no database here: the control plane stores state, the gateway and the API call in.

use thiserror::Error;

pub mod external;
pub mod iam;
pub mod keyfile;
pub mod keys;
pub mod passwords;
pub mod pkce;
pub mod principal;
pub mod tokens;

pub use iam::{InvokerSet, Permission, Policy};
pub use principal::{Member, Principal};
pub use tokens::{Issuer, TokenError, Verified};

/// What can go wrong in identity operations.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// Bad input; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// Pier failed (key files, randomness).
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod proptests;
