//! Pulling from OCI/Docker registries (distribution v2 API) with `oci-client`: anonymous, basic and
//! bearer-token authentication, HTTPS (with extra trusted CAs), or plain HTTP for explicitly insecure
//! registries and for loopback ones that do not speak HTTPS. A tag is resolved to its manifest digest once; the manifest, the config
//! and every layer land in the blob cache checked against their digests.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::manifest::{
    ACCEPTED_MANIFESTS, DOCKER_SCHEMA1, Descriptor, Index, Manifest, Versioned, host_platform,
    pick_platform,
};
use crate::{ImageError, Pulled};

/// Layers downloaded at once.
const PARALLEL_LAYERS: usize = 3;

/// User name and password (or token) for one registry.
#[derive(Clone)]
pub struct RegistryCredential {
    /// User name; empty with a bare token.
    pub username: String,
    /// Password or identity token.
    pub secret: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Finds the credential for a registry host.
pub type CredentialLookup = Arc<dyn Fn(&str) -> Option<RegistryCredential> + Send + Sync>;

/// How Pier talks to registries.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Registries (`host:port`) reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) trusted for registries.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// Credentials per registry.
    pub credentials: CredentialLookup,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            extra_ca_pem: Vec::new(),
            credentials: Arc::new(|_| None),
        }
    }
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// Whether a registry may be reached over plain HTTP: loopback hosts (as Docker does; HTTPS is tried
/// first) and the configured ones.
pub fn is_insecure(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|r| r == registry) {
        return true;
    }
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn client_for(registry: &str, options: &RegistryOptions, plain_http: bool) -> Client {
    let protocol = if plain_http {
        ClientProtocol::HttpsExcept(vec![registry.to_owned()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        extra_root_certificates: options
            .extra_ca_pem
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: concat!("pier/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

/// Pulls `reference` into `blobs`: resolves the manifest digest (through an index to this host's
/// platform), then fetches the config and the layers not yet cached.
pub(crate) async fn pull(
    reference: &Reference,
    options: &RegistryOptions,
    blobs: &BlobStore,
    progress: &crate::Progress<'_>,
) -> Result<Pulled, ImageError> {
    let registry = reference.resolve_registry();
    if options.insecure.iter().any(|r| r == registry) {
        return pull_over(reference, options, blobs, true, progress).await;
    }
    if is_insecure(registry, &[]) {
        // A loopback registry: HTTPS if it speaks it, else plain HTTP, as Docker does.
        return match pull_over(reference, options, blobs, false, progress).await {
            // Not a certificate problem: the registry does not speak TLS at all.
            Err(ImageError::Unreachable(why)) if !why.to_lowercase().contains("certificate") => {
                tracing::debug!(registry, "no HTTPS ({why}): trying plain HTTP");
                pull_over(reference, options, blobs, true, progress).await
            }
            other => other,
        };
    }
    pull_over(reference, options, blobs, false, progress).await
}

async fn pull_over(
    reference: &Reference,
    options: &RegistryOptions,
    blobs: &BlobStore,
    plain_http: bool,
    progress: &crate::Progress<'_>,
) -> Result<Pulled, ImageError> {
    let registry = reference.resolve_registry().to_owned();
    let client = client_for(&registry, options, plain_http);
    let auth = match (options.credentials)(&registry) {
        Some(c) if c.username.is_empty() => RegistryAuth::Bearer(c.secret),
        Some(c) => RegistryAuth::Basic(c.username, c.secret),
        None => RegistryAuth::Anonymous,
    };
    let fail = |e: OciDistributionError| explain(reference, &registry, e);

    let (bytes, digest) = client
        .pull_manifest_raw(reference, &auth, &ACCEPTED_MANIFESTS)
        .await
        .map_err(fail)?;
    let mut digest: Digest = digest
        .parse()
        .map_err(|_| ImageError::Unsupported(format!("registry answered with digest {digest}")))?;
    let mut bytes = bytes.to_vec();
    let versioned = versioned(&bytes)?;
    if versioned.is_index() {
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::Corrupt(format!(
                "the image index of {reference} does not parse ({})",
                shape(&e)
            ))
        })?;
        let entry = pick_platform(&index, &host_platform()).map_err(ImageError::Unsupported)?;
        let by_digest = reference.clone_with_digest(entry.digest.clone());
        let (b, d) = client
            .pull_manifest_raw(&by_digest, &auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(fail)?;
        bytes = b.to_vec();
        digest = d
            .parse()
            .map_err(|_| ImageError::Unsupported(format!("registry answered with digest {d}")))?;
        if versioned_ok(&bytes)?.is_index() {
            return Err(ImageError::Unsupported(
                "nested image indexes are not supported".into(),
            ));
        }
    }
    // The registry's bytes are checked against the digest again as they enter the cache.
    blobs.put(Some(&digest), &bytes)?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        ImageError::Corrupt(format!(
            "the manifest of {reference} does not parse ({})",
            shape(&e)
        ))
    })?;

    let by_digest = reference.clone_with_digest(digest.to_string());
    let wanted: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    let mut downloaded = 0u64;
    let total = crate::PullProgress {
        layers_done: 0,
        layers: wanted.len(),
        bytes_done: 0,
        bytes: wanted.iter().map(|d| d.size.max(0) as u64).sum(),
    };
    progress(&total);
    let done = std::sync::Mutex::new(total);
    // Owned clones per download keep the futures free of borrowed closures (they run in spawned tasks).
    let downloads = wanted.into_iter().map(|d| {
        let (client, by_digest, blobs) = (client.clone(), by_digest.clone(), blobs.clone());
        let done = &done;
        async move {
            let got = fetch_blob(&client, &by_digest, &d, &blobs).await;
            if got.is_ok() {
                let now = {
                    let mut p = done.lock().unwrap_or_else(|p| p.into_inner());
                    p.layers_done += 1;
                    p.bytes_done += d.size.max(0) as u64;
                    *p
                };
                progress(&now);
            }
            got
        }
    });
    let results: Vec<u64> = futures_util::stream::iter(downloads)
        .buffer_unordered(PARALLEL_LAYERS)
        .try_collect()
        .await
        .map_err(|e| match e {
            Fetch::Registry(e) => fail(e),
            Fetch::Image(e) => e,
        })?;
    downloaded += results.iter().sum::<u64>();
    tracing::info!(image = %reference, %digest, bytes = downloaded, "pulled");
    Ok(Pulled {
        digest,
        manifest,
        downloaded,
    })
}

enum Fetch {
    Registry(OciDistributionError),
    Image(ImageError),
}

/// Downloads one blob unless cached; returns the bytes downloaded.
async fn fetch_blob(
    client: &Client,
    reference: &Reference,
    desc: &Descriptor,
    blobs: &BlobStore,
) -> Result<u64, Fetch> {
    let digest = desc
        .digest()
        .map_err(|e| Fetch::Image(ImageError::Unsupported(e.to_string())))?;
    if blobs.contains(&digest) {
        return Ok(0);
    }
    let mut stream = client
        .pull_blob_stream(reference, desc.digest.as_str())
        .await
        .map_err(Fetch::Registry)?;
    let mut writer = blobs
        .writer(Some(&digest))
        .map_err(|e| Fetch::Image(e.into()))?;
    // Writes are to the local disk in large buffered chunks; hashing happens as the bytes arrive.
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let text = e.to_string();
            Fetch::Image(if text.to_ascii_lowercase().contains("digest") {
                ImageError::Corrupt(format!(
                    "the registry sent content for {digest} that does not match its digest: {text}"
                ))
            } else {
                ImageError::Unreachable(format!("download of {digest} broke off: {text}"))
            })
        })?;
        std::io::Write::write_all(&mut writer, &chunk)
            .map_err(|e| Fetch::Image(ImageError::Io(format!("writing blob {digest}: {e}"))))?;
    }
    let len = writer.len();
    writer.commit().map_err(|e| Fetch::Image(e.into()))?;
    Ok(len)
}

fn versioned(bytes: &[u8]) -> Result<Versioned, ImageError> {
    let v = versioned_ok(bytes)?;
    if v.media_type.as_deref() == Some(DOCKER_SCHEMA1) || v.schema_version == 1 {
        return Err(ImageError::Unsupported(
            "Docker schema 1 images are not supported: push the image again with a current Docker, buildah or skopeo".into(),
        ));
    }
    Ok(v)
}

fn versioned_ok(bytes: &[u8]) -> Result<Versioned, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ImageError::Corrupt(format!(
            "the registry's answer is not a manifest ({})",
            shape(&e)
        ))
    })
}

/// Where and how a registry's JSON is wrong, without quoting it: a registry the deployer names could
/// be anything on the server's network, and its answers must not come back through error messages.
fn shape(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "JSON of another shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Turns a registry client error into one that says what to do.
fn explain(reference: &Reference, registry: &str, e: OciDistributionError) -> ImageError {
    use OciDistributionError as E;
    match e {
        E::ImageManifestNotFoundError(_) => ImageError::NotFound(format!(
            "image {reference} not found in registry {registry}: check the name and tag (push it first?)"
        )),
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            ImageError::Unauthorized(format!(
                "registry {registry} refused access to {reference}: give it credentials with `pier auth configure-docker {registry}` (or check them)"
            ))
        }
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|err| format!("{:?}", err.code))
                .collect();
            let text = codes.join("; ");
            let lower = text.to_ascii_lowercase();
            if lower.contains("unknown") || lower.contains("notfound") {
                ImageError::NotFound(format!(
                    "image {reference} not found in registry {registry} ({text}): check the name and tag"
                ))
            } else if lower.contains("unauthorized") || lower.contains("denied") {
                ImageError::Unauthorized(format!(
                    "registry {registry} refused access to {reference} ({text}): check the credentials given with `pier auth configure-docker {registry}`"
                ))
            } else {
                ImageError::Registry(format!("registry {registry} refused {reference}: {text}"))
            }
        }
        // The registry's own words stay in the server's log: the deployer chose the address, which may
        // be anything on the server's network, so its answers do not come back through errors.
        E::ServerError { code: 404, .. } => ImageError::NotFound(format!(
            "image {reference} not found in registry {registry} (HTTP 404): check the name and tag"
        )),
        E::ServerError {
            code: code @ (401 | 403),
            ..
        } => ImageError::Unauthorized(format!(
            "registry {registry} refused access to {reference} (HTTP {code}): give or check its credentials with `pier auth configure-docker {registry}`"
        )),
        E::ServerError { code, message, .. } => {
            tracing::debug!(%registry, code, %message, "registry error");
            ImageError::Registry(format!(
                "registry {registry} answered HTTP {code}: see the server's log for its message"
            ))
        }
        E::RequestError(e) => {
            let mut why = e.to_string();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            let hint = if why.to_lowercase().contains("certificate") {
                "; a registry whose certificate comes from a private CA needs the server's --registry-ca"
            } else if is_insecure(registry, &[]) {
                ""
            } else {
                "; a registry without TLS must be named with the server's --insecure-registry"
            };
            ImageError::Unreachable(format!(
                "cannot reach registry {registry} ({why}): check the address and that it is running{hint}"
            ))
        }
        E::DigestError(e) => ImageError::Corrupt(format!(
            "registry {registry} sent content that does not match its digest for {reference}: {e}"
        )),
        E::UnsupportedMediaTypeError(t) => ImageError::Unsupported(format!(
            "{reference} is not a container image (media type {t})"
        )),
        E::UnsupportedSchemaVersionError(v) => ImageError::Unsupported(format!(
            "{reference} uses manifest schema {v}; only schema 2 is supported"
        )),
        other => ImageError::Registry(format!("pulling {reference} from {registry}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("[::1]:5000", &[]));
        assert!(!is_insecure("registry.example.com", &[]));
        assert!(!is_insecure("10.0.0.5:5000", &[]));
        assert!(is_insecure("10.0.0.5:5000", &["10.0.0.5:5000".to_owned()]));
    }
}
