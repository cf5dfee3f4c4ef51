//! Issuing from the server's local CA (certificate mode `LOCAL_CA`, for development: clients must trust
//! that CA, as they already do for the base domain).

use std::sync::Arc;

use pier_tls::LocalCa;

use crate::{BoxFuture, IssueError, Issued, Issuer};

/// The local CA as an [`Issuer`].
#[derive(Debug)]
pub struct LocalCaIssuer {
    ca: Arc<LocalCa>,
}

impl LocalCaIssuer {
    /// Issues from `ca`.
    pub fn new(ca: Arc<LocalCa>) -> Self {
        Self { ca }
    }
}

impl Issuer for LocalCaIssuer {
    fn name(&self) -> &str {
        "local-ca"
    }

    fn issue<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Issued, IssueError>> {
        Box::pin(async move {
            let leaf = self
                .ca
                .issue(&[domain.to_owned()], pier_tls::LEAF_VALIDITY)
                .map_err(|e| IssueError::Unavailable(e.to_string()))?;
            let (not_before, not_after) =
                crate::validity(&leaf.chain_pem).map_err(IssueError::Unavailable)?;
            Ok(Issued {
                chain_pem: leaf.chain_pem,
                key_pem: leaf.key_pem,
                not_before,
                not_after,
            })
        })
    }
}
