//! Keeps the keys of trusted external OpenID Connect issuers fresh: fetches each issuer's discovery
//! document (whose `issuer` must be the configured URL) and its JWKS at start, every ten minutes, and soon
//! after a token names a key not seen yet (at most every 30 seconds per issuer).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pier_identity::external::ExternalIssuer;

/// How often keys are fetched again.
const REFRESH: Duration = Duration::from_secs(600);
/// Soonest a fetch follows the previous one when a token names an unknown key.
const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// `*.localhost` names resolve to loopback (RFC 6761), as curl and browsers do; others through the system.
pub(crate) struct LocalhostAware;

impl reqwest::dns::Resolve for LocalhostAware {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs = Box::new(lookup(&host).await?.into_iter());
            Ok(addrs)
        })
    }
}

/// The addresses of `host` as [`LocalhostAware`] resolves it.
pub(crate) async fn lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    if host == "localhost" || host.ends_with(".localhost") {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
    }
    Ok(tokio::net::lookup_host((host, 0)).await?.collect())
}

/// An HTTP client builder for Pier's own outgoing calls: names resolved by `resolver`, Pier's user
/// agent, and the system's roots plus the PEM certificates of `cas` (`what` names them in errors).
pub(crate) fn client_builder(
    resolver: Arc<dyn reqwest::dns::Resolve>,
    cas: &[&Path],
    what: &str,
) -> Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(resolver)
        .user_agent(concat!("pier/", env!("CARGO_PKG_VERSION")));
    for ca in cas {
        let pem = std::fs::read(ca).with_context(|| format!("{what} {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{what} {}: not PEM certificates", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// The issuers for `urls`, each with a task keeping its keys fresh.
pub fn start(urls: &[String], cas: &[PathBuf]) -> Result<Vec<Arc<ExternalIssuer>>> {
    if urls.is_empty() {
        return Ok(Vec::new());
    }
    let cas: Vec<&Path> = cas.iter().map(PathBuf::as_path).collect();
    let client = client_builder(Arc::new(LocalhostAware), &cas, "--oidc-ca")?
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the OIDC client")?;
    let mut out = Vec::new();
    for url in urls {
        if !url.starts_with("https://") {
            bail!("--trusted-issuer {url}: an issuer URL must start with https://");
        }
        let issuer = Arc::new(ExternalIssuer::new(url));
        tokio::spawn(refresh_forever(client.clone(), issuer.clone()));
        out.push(issuer);
    }
    Ok(out)
}

async fn refresh_forever(client: reqwest::Client, issuer: Arc<ExternalIssuer>) {
    loop {
        match fetch(&client, issuer.url()).await {
            Ok(jwks) => match issuer.set_jwks(&jwks) {
                Ok(n) => tracing::info!(
                    issuer = issuer.url(),
                    keys = n,
                    "external issuer keys loaded"
                ),
                Err(e) => tracing::warn!(issuer = issuer.url(), "external issuer keys: {e}"),
            },
            Err(e) => tracing::warn!(
                issuer = issuer.url(),
                "cannot fetch the issuer's keys: {e:#}"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = issuer.refresh_wanted() => {
                let since = issuer.last_refresh().map(|t| t.elapsed()).unwrap_or(MIN_INTERVAL);
                tokio::time::sleep(MIN_INTERVAL.saturating_sub(since)).await;
            }
        }
    }
}

/// The issuer's JWKS, found through its discovery document.
async fn fetch(client: &reqwest::Client, issuer: &str) -> Result<Vec<u8>> {
    Ok(fetch_jwks(client, issuer, None).await?.0)
}

/// An issuer's JWKS and its `Cache-Control: max-age`: from `jwks_uri` when given, else found through
/// the issuer's discovery document, whose `issuer` must be `issuer` and whose `jwks_uri` must be https.
/// Shared by trusted issuers and by the API gateway's and services' end-user checks.
pub(crate) async fn fetch_jwks(
    client: &reqwest::Client,
    issuer: &str,
    jwks_uri: Option<&str>,
) -> Result<(Vec<u8>, Option<Duration>)> {
    let issuer = issuer.trim_end_matches('/');
    let jwks_uri = match jwks_uri {
        Some(u) => u.to_owned(),
        None => {
            let discovery: serde_json::Value = client
                .get(format!("{issuer}/.well-known/openid-configuration"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let claimed = discovery["issuer"].as_str().unwrap_or_default();
            if claimed.trim_end_matches('/') != issuer {
                bail!("its discovery document names issuer {claimed:?}, not {issuer}");
            }
            let uri = discovery["jwks_uri"]
                .as_str()
                .ok_or_else(|| anyhow!("its discovery document has no jwks_uri"))?;
            if !uri.starts_with("https://") {
                bail!("its jwks_uri {uri} is not https");
            }
            uri.to_owned()
        }
    };
    let resp = client.get(&jwks_uri).send().await?.error_for_status()?;
    let max_age = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|cc| {
            cc.split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .find_map(|n| n.parse().ok())
        })
        .map(Duration::from_secs);
    Ok((resp.bytes().await?.to_vec(), max_age))
}
