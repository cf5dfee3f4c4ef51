//! Issuing through an ACME CA (RFC 8555) with `instant-acme`: one account per directory, kept in the
//! store; one order per certificate, validated by HTTP-01 on the plain-HTTP port when the server has one,
//! else TLS-ALPN-01 on the HTTPS port (RFC 8737), so a server with only 443 open still gets certificates.
//! The private key is made here (`rcgen`) and sent to the CA only as a CSR.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use pier_store::Store;
use tokio::sync::OnceCell;

use crate::challenges::Challenges;
use crate::{BoxFuture, IssueError, Issued, Issuer, RenewalWindow};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Which challenge the CA is asked to validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// HTTP-01 on port 80 (the server has a plain-HTTP listener).
    Http01,
    /// TLS-ALPN-01 on port 443.
    TlsAlpn01,
}

/// Settings of an [`AcmeIssuer`].
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The directory URL.
    pub directory: String,
    /// Contact address for the account (`ops@example.com`), if any.
    pub email: Option<String>,
    /// A PEM file with the CA that signs the directory's own HTTPS certificate (a private or test CA);
    /// `None` trusts the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The challenge to answer.
    pub validation: Validation,
    /// Longest wait for the CA to validate and to issue.
    pub timeout: Duration,
}

/// An ACME issuer.
pub struct AcmeIssuer {
    config: AcmeConfig,
    store: Arc<Store>,
    challenges: Arc<Challenges>,
    account: OnceCell<Account>,
    /// An HTTP client to use instead of the default one (tests of a fake directory).
    http: std::sync::Mutex<Option<Box<dyn instant_acme::HttpClient>>>,
    /// Told how each order ended: `valid` (a certificate), `invalid` (the CA refused) or `error`.
    outcomes: Option<OrderOutcomes>,
}

/// Hears how each ACME order ended (`valid`, `invalid`, `error`): the server counts them.
pub type OrderOutcomes = Arc<dyn Fn(&'static str) + Send + Sync>;

impl std::fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn classify(what: &str, e: instant_acme::Error) -> IssueError {
    match e {
        instant_acme::Error::Api(p) => {
            let kind = p.r#type.clone().unwrap_or_default();
            let detail = p.detail.clone().unwrap_or_else(|| kind.clone());
            if kind.ends_with(":rateLimited") {
                IssueError::RateLimited {
                    message: format!("{what}: {detail}"),
                    retry_after: None,
                }
            } else if matches!(p.status, Some(s) if s >= 500) || kind.ends_with(":serverInternal") {
                IssueError::Unavailable(format!("{what}: the CA failed: {detail}"))
            } else {
                IssueError::Refused(format!("{what}: the CA refused: {detail}"))
            }
        }
        other => IssueError::Unavailable(format!("{what}: {other}")),
    }
}

impl AcmeIssuer {
    /// An issuer for `config.directory`, keeping its account in `store` and its pending challenges in
    /// `challenges`.
    pub fn new(config: AcmeConfig, store: Arc<Store>, challenges: Arc<Challenges>) -> Self {
        Self {
            config,
            store,
            challenges,
            account: OnceCell::new(),
            http: std::sync::Mutex::new(None),
            outcomes: None,
        }
    }

    /// Reports each order's outcome to `outcomes`.
    pub fn reporting_orders(mut self, outcomes: OrderOutcomes) -> Self {
        self.outcomes = Some(outcomes);
        self
    }

    /// An issuer that speaks to its directory through `http` (an in-process fake in tests).
    pub fn with_http_client(
        config: AcmeConfig,
        store: Arc<Store>,
        challenges: Arc<Challenges>,
        http: Box<dyn instant_acme::HttpClient>,
    ) -> Self {
        let this = Self::new(config, store, challenges);
        *this.http.lock().unwrap_or_else(|p| p.into_inner()) = Some(http);
        this
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, IssueError> {
        if let Some(http) = self.http.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Ok(Account::builder_with_http(http));
        }
        match &self.config.ca_file {
            Some(path) => Account::builder_with_root(path).map_err(|e| {
                IssueError::Unavailable(format!(
                    "cannot trust the ACME CA in {}: {e}",
                    path.display()
                ))
            }),
            None => Account::builder().map_err(|e| {
                IssueError::Unavailable(format!("cannot load the system's root certificates: {e}"))
            }),
        }
    }

    async fn account(&self) -> Result<&Account, IssueError> {
        self.account
            .get_or_try_init(|| async {
                let key = format!("acme-account:{}", self.config.directory);
                let store = self.store.clone();
                let k = key.clone();
                let saved = store
                    .call(move |s| s.meta(&k))
                    .await
                    .map_err(|e| IssueError::Unavailable(e.to_string()))?;
                if let Some(json) = saved
                    && let Ok(creds) = serde_json::from_str::<AccountCredentials>(&json)
                {
                    return self
                        .builder()?
                        .from_credentials(creds)
                        .await
                        .map_err(|e| classify("restoring the ACME account", e));
                }
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, creds) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| classify("creating the ACME account", e))?;
                let json = serde_json::to_string(&creds)
                    .map_err(|e| IssueError::Unavailable(e.to_string()))?;
                store
                    .call(move |s| s.set_meta(&key, &json))
                    .await
                    .map_err(|e| IssueError::Unavailable(e.to_string()))?;
                tracing::info!(directory = %self.config.directory, "created ACME account");
                Ok(account)
            })
            .await
    }

    async fn order(&self, domain: &str) -> Result<Issued, IssueError> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(domain.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| classify("placing the order", e))?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| classify("reading the authorization", e))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(IssueError::Refused(format!(
                        "the CA's authorization for {domain} is {other:?}"
                    )));
                }
            }
            let kind = match self.config.validation {
                Validation::Http01 => ChallengeType::Http01,
                Validation::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                IssueError::Refused(format!("the CA offers no {kind:?} challenge for {domain}"))
            })?;
            let ka = challenge.key_authorization();
            match self.config.validation {
                Validation::Http01 => {
                    self.challenges
                        .add_http01(domain, &challenge.token, ka.as_str())
                }
                Validation::TlsAlpn01 => {
                    let cert = alpn_certificate(domain, ka.digest().as_ref())?;
                    self.challenges.add_tls_alpn01(domain, Arc::new(cert));
                }
            }
            tracing::info!(%domain, challenge = ?kind, "answering ACME challenge");
            challenge
                .set_ready()
                .await
                .map_err(|e| classify("answering the challenge", e))?;
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(200))
            .backoff(1.5)
            .timeout(self.config.timeout);
        let status = order
            .poll_ready(&policy)
            .await
            .map_err(|e| classify("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            let why = order
                .state()
                .error
                .as_ref()
                .and_then(|p| p.detail.clone())
                .unwrap_or_else(|| format!("the order is {status:?}"));
            return Err(IssueError::Refused(format!(
                "the CA could not validate {domain}: {why}"
            )));
        }
        let key = rcgen::KeyPair::generate()
            .map_err(|e| IssueError::Unavailable(format!("cannot make a key: {e}")))?;
        let csr = rcgen::CertificateParams::new(vec![domain.to_owned()])
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| IssueError::Unavailable(format!("cannot make the CSR: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| classify("finalizing the order", e))?;
        let chain_pem = order
            .poll_certificate(&policy)
            .await
            .map_err(|e| classify("downloading the certificate", e))?;
        let (not_before, not_after) =
            crate::validity(&chain_pem).map_err(IssueError::Unavailable)?;
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
            not_before,
            not_after,
        })
    }
}

/// The self-signed certificate a TLS-ALPN-01 validator must see (RFC 8737 §3): one DNS name, and the
/// critical acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<rustls::sign::CertifiedKey, IssueError> {
    let fail = |e: String| {
        IssueError::Unavailable(format!("cannot make the TLS-ALPN-01 certificate: {e}"))
    };
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| fail(e.to_string()))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    pier_tls::challenge_certified_key(cert.der().clone(), key_der).map_err(|e| fail(e.to_string()))
}

impl Issuer for AcmeIssuer {
    fn name(&self) -> &str {
        &self.config.directory
    }

    fn issue<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Issued, IssueError>> {
        Box::pin(async move {
            let out = self.order(domain).await;
            self.challenges.remove(domain);
            if let Some(report) = &self.outcomes {
                report(match &out {
                    Ok(_) => "valid",
                    Err(IssueError::Refused(_)) => "invalid",
                    Err(_) => "error",
                });
            }
            out
        })
    }

    fn renewal_window<'a>(&'a self, chain_pem: &'a str) -> BoxFuture<'a, Option<RenewalWindow>> {
        Box::pin(async move {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let account = self.account().await.ok()?;
            let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .next()?
                .ok()?;
            let id = instant_acme::CertificateIdentifier::try_from(&leaf).ok()?;
            match account.renewal_info(&id).await {
                Ok((info, retry)) => Some(RenewalWindow {
                    start: info.suggested_window.start.into(),
                    end: info.suggested_window.end.into(),
                    // RFC 9773 §4.3.2: clamp the CA's hint to something sane.
                    ask_again: retry.clamp(Duration::from_secs(60), Duration::from_secs(86_400)),
                }),
                Err(instant_acme::Error::Unsupported(_)) => None,
                Err(e) => {
                    tracing::debug!(directory = %self.config.directory, "no renewal information: {e}");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
