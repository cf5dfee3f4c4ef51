//! Managed certificates for mapped domains: who issues them ([`Issuer`]: an ACME CA through
//! [`acme::AcmeIssuer`], or the server's local CA through [`local::LocalCaIssuer`]), when to issue and renew
//! ([`schedule`], pure), and the loop that keeps every mapped domain's certificate current in the store and
//! in the gateway's SNI resolver ([`manager::CertManager`]).
//!
//! ACME challenges are answered by the gateway from [`challenges::Challenges`]: HTTP-01 on the plain-HTTP
//! listener before any redirect, TLS-ALPN-01 in the certificate resolver (RFC 8737).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub mod acme;
pub mod challenges;
pub mod local;
pub mod manager;
pub mod schedule;

pub use challenges::Challenges;
pub use manager::{CertManager, CertStatus, Wanted};

/// A certificate chain and its key, as issued.
#[derive(Clone)]
pub struct Issued {
    /// The chain, leaf first (PEM).
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8 PEM).
    pub key_pem: String,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA limits this account or name; try again after the time given (RFC 8555 §6.6).
    #[error("the CA's rate limit: {message}")]
    RateLimited {
        /// The CA's words.
        message: String,
        /// When the CA said to retry, if it did.
        retry_after: Option<Duration>,
    },
    /// The CA refused or validation failed: its words, which say what to fix.
    #[error("{0}")]
    Refused(String),
    /// The CA could not be reached or answered nonsense: retried with back-off.
    #[error("{0}")]
    Unavailable(String),
}

/// A boxed future, for the object-safe [`Issuer`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A CA's suggested renewal window for a certificate (ACME Renewal Information, RFC 9773 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: SystemTime,
    /// Renew before this.
    pub end: SystemTime,
    /// When to ask again (the CA's `Retry-After`, RFC 9773 §4.3.2).
    pub ask_again: Duration,
}

/// Issues certificates for single domain names.
pub trait Issuer: Send + Sync + 'static {
    /// Who issues (stored beside each certificate: the ACME directory URL, or `local-ca`).
    fn name(&self) -> &str;

    /// A certificate for `domain`. May take seconds (ACME validation).
    fn issue<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Issued, IssueError>>;

    /// The issuer's suggested renewal window for a certificate it issued (`chain_pem`, leaf first), when
    /// it offers one; `None` otherwise (then a third of the lifetime left is the rule).
    fn renewal_window<'a>(&'a self, _chain_pem: &'a str) -> BoxFuture<'a, Option<RenewalWindow>> {
        Box::pin(async { None })
    }
}

/// The validity of the first certificate of a PEM chain.
///
/// # Errors
/// A message when the PEM holds no parsable certificate.
pub fn validity(chain_pem: &str) -> Result<(SystemTime, SystemTime), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("the chain holds no certificate")?
        .map_err(|e| format!("the chain is not PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp().max(0) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    };
    Ok((
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    ))
}

/// Seconds since the Unix epoch (for the store).
pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The time `secs` seconds after the Unix epoch.
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}
