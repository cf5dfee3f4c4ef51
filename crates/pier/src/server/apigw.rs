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

/// Resolves names as [`super::oidc::LocalhostAware`] does, then drops loopback and link-local
/// addresses unless the operator allowed them (an API config must not make the server call itself or
/// a cloud's metadata server through a name that resolves there).
struct BackendResolver {
    allow_local: bool,
}

impl reqwest::dns::Resolve for BackendResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (host, allow_local) = (name.as_str().to_owned(), self.allow_local);
        Box::pin(async move {
            let found = super::oidc::lookup(&host).await?;
            let kept: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|a| allow_local || !pier_apigateway::external::is_local(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback or link-local addresses, which API configs may not reach (--api-gateway-local-backends allows it)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The client of the API gateways' calls: Pier's CA and the `--oidc-ca` files trusted beside the
/// system's roots, redirects not followed.
fn client(
    pier_ca: &Path,
    cas: &[PathBuf],
    timeout: Option<Duration>,
    resolver: Arc<dyn reqwest::dns::Resolve>,
) -> Result<reqwest::Client> {
    let mut roots = vec![pier_ca];
    roots.extend(cas.iter().map(PathBuf::as_path));
    let mut builder =
        super::oidc::client_builder(resolver, &roots, "CA file (Pier's or --oidc-ca)")?
            .redirect(reqwest::redirect::Policy::none());
    if let Some(t) = timeout {
        builder = builder.timeout(t);
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
    allow_local: bool,
) -> Result<ApiGatewayConfig> {
    if own_issuer.is_empty() {
        bail!("the server has no issuer URL");
    }
    let fetcher = Fetcher {
        client: client(
            pier_ca,
            cas,
            Some(Duration::from_secs(10)),
            Arc::new(super::oidc::LocalhostAware),
        )?,
        own_issuer: own_issuer.trim_end_matches('/').to_owned(),
        ring,
    };
    Ok(ApiGatewayConfig {
        jwks: Some(Arc::new(JwksRegistry::new(Arc::new(fetcher)))),
        external: Some(HttpForward::new(
            client(
                pier_ca,
                cas,
                None,
                Arc::new(BackendResolver { allow_local }),
            )?,
            allow_local,
        )),
    })
}
