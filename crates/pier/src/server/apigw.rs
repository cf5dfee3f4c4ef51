//! The API gateways' I/O, given to the control plane: the HTTP client that fetches JWT issuers' keys
//! (Pier's own issuer is answered from its key ring, without a request to itself) and forwards to
//! backends outside Pier. Both trust the system's roots, Pier's CA and the operator's `--oidc-ca` files,
//! and resolve `*.localhost` to loopback as browsers do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pier_apigateway::jwt::{Fetched, JwksFetch, JwksSource};
use pier_apigateway::{JwksRegistry, external::HttpForward};
use pier_control::api_gateways::ApiGatewayConfig;
use pier_identity::keys::KeyRing;

/// Fetches key sets over HTTPS, or from the ring for Pier's own issuer.
struct Fetcher {
    client: reqwest::Client,
    own_issuer: String,
    ring: Arc<KeyRing>,
}

impl JwksFetch for Fetcher {
    fn fetch(&self, source: &JwksSource) -> Fetched {
        if source.issuer.trim_end_matches('/') == self.own_issuer
            && source
                .jwks_uri
                .as_deref()
                .is_none_or(|u| u.starts_with(&self.own_issuer))
        {
            let doc = serde_json::to_vec(&self.ring.jwks()).map_err(|e| e.to_string());
            return Box::pin(async move { Ok((doc?, Some(Duration::from_secs(300)))) });
        }
        let client = self.client.clone();
        let source = source.clone();
        Box::pin(async move {
            super::oidc::fetch_jwks(&client, &source.issuer, source.jwks_uri.as_deref())
                .await
                .map_err(|e| format!("{e:#}"))
        })
    }
}

fn client(pier_ca: &Path, cas: &[PathBuf], timeout: Option<Duration>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(super::oidc::LocalhostAware))
        .user_agent(concat!("pier/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    for ca in std::iter::once(pier_ca).chain(cas.iter().map(PathBuf::as_path)) {
        let pem = std::fs::read(ca).with_context(|| format!("reading CA {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not PEM certificates", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .context("building the API gateway's HTTP client")
}

/// The control plane's API gateway parts.
pub fn config(
    own_issuer: &str,
    ring: Arc<KeyRing>,
    pier_ca: &Path,
    cas: &[PathBuf],
) -> Result<ApiGatewayConfig> {
    if own_issuer.is_empty() {
        bail!("the server has no issuer URL");
    }
    let fetcher = Fetcher {
        client: client(pier_ca, cas, Some(Duration::from_secs(10)))?,
        own_issuer: own_issuer.trim_end_matches('/').to_owned(),
        ring,
    };
    Ok(ApiGatewayConfig {
        jwks: Some(Arc::new(JwksRegistry::new(Arc::new(fetcher)))),
        external: Some(HttpForward::new(client(pier_ca, cas, None)?)),
    })
}
