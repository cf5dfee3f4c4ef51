//! What the plain-HTTP listener answers before routing, for mapped domains (RFC 8555 §8.3, and the
//! mistakes users report of Knative's auto-TLS):
//!
//! 1. `GET /.well-known/acme-challenge/{token}` is answered first, on every host being validated, before
//!    any redirect or route: a challenge redirected to HTTPS would never validate.
//! 2. A mapped domain whose certificate is not issued yet answers 503 with `Retry-After`: never a
//!    redirect to a name whose handshake would fail, never the app's traffic in clear.
//! 3. Once it has one, the redirect to HTTPS as for every other host.

/// The prefix of HTTP-01 challenge paths (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Seconds a client is told to wait while a certificate is issued.
pub const CERTIFICATE_RETRY_AFTER_SECS: u32 = 30;

/// Pending challenges and issued certificates of mapped domains, as the gateway asks about them.
pub trait DomainEntrance: Send + Sync + 'static {
    /// The key authorization that answers HTTP-01 `token` on `host` (lowercase, no port), while pending.
    fn http01(&self, host: &str, token: &str) -> Option<String>;

    /// Whether `host` (a mapped domain) has a certificate installed.
    fn certified(&self, host: &str) -> bool;
}
