//! What every instance gets from Pier besides its revision's template: its own metadata server endpoint
//! (`GCE_METADATA_HOST`, `GCE_METADATA_IP` for host processes; containers find it at its usual
//! link-local address), and trust in Pier's CA (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` with the system
//! CAs plus Pier's, `NODE_EXTRA_CA_CERTS`), so apps call other services at their HTTPS URLs with no code
//! change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use pier_activator::InstanceHooks;
use pier_control::IdentityService;
use pier_identity::Principal;
use pier_metadata::{MetadataServer, TokenSource};
use pier_model::InstanceId;
use pier_runtime::InstanceSpec;

/// Where containers find the CA bundle (system CAs plus Pier's) and Pier's CA alone.
const CONTAINER_BUNDLE: &str = "/etc/pier/ca-bundle.pem";
const CONTAINER_CA: &str = "/etc/pier/ca.pem";

/// System CA bundles, first found wins.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Writes `ca-bundle.pem` (system CAs plus Pier's) into the data dir.
pub fn write_ca_bundle(data_dir: &Path, ca: &Path) -> Result<PathBuf> {
    let mut bundle = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(
        &std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?,
    );
    let path = data_dir.join("ca-bundle.pem");
    std::fs::write(&path, bundle).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Mints the metadata server's tokens through the identity service.
pub struct MetadataTokens(pub Arc<IdentityService>);

impl TokenSource for MetadataTokens {
    fn id_token(&self, service_account: &str, audience: &str) -> Result<String, String> {
        self.0
            .mint_id_token(
                &Principal::ServiceAccount(service_account.to_owned()),
                audience,
                None,
            )
            .map_err(|e| e.to_string())
    }

    fn access_token(&self, service_account: &str) -> Result<(String, u64), String> {
        let aud = self.0.issuer().url().to_owned();
        self.0
            .mint_id_token(
                &Principal::ServiceAccount(service_account.to_owned()),
                &aud,
                None,
            )
            .map(|t| (t, pier_identity::tokens::TOKEN_LIFETIME.as_secs() - 1))
            .map_err(|e| e.to_string())
    }
}

/// The instance hooks: opens and closes metadata endpoints, sets the CA variables.
pub struct InstanceEnv {
    metadata: Arc<MetadataServer>,
    identity: Arc<IdentityService>,
    bundle: String,
    ca: String,
}

impl InstanceEnv {
    /// Hooks using `metadata`, with the CA files at `bundle` and `ca`.
    pub fn new(
        metadata: Arc<MetadataServer>,
        identity: Arc<IdentityService>,
        bundle: &Path,
        ca: &Path,
    ) -> Self {
        Self {
            metadata,
            identity,
            bundle: bundle.display().to_string(),
            ca: ca.display().to_string(),
        }
    }
}

impl InstanceHooks for InstanceEnv {
    fn prepare(&self, spec: &InstanceSpec) -> Vec<(String, String)> {
        if spec.template.image.is_some() {
            // A container: the runtime mounts the CA files at fixed paths, and its own namespace has the
            // metadata server at the address Google's libraries use by default.
            return vec![
                ("SSL_CERT_FILE".to_owned(), CONTAINER_BUNDLE.to_owned()),
                ("REQUESTS_CA_BUNDLE".to_owned(), CONTAINER_BUNDLE.to_owned()),
                ("NODE_EXTRA_CA_CERTS".to_owned(), CONTAINER_CA.to_owned()),
            ];
        }
        let sa = spec
            .template
            .service_account
            .clone()
            .unwrap_or_else(|| self.identity.default_service_account(&spec.project));
        let mut env = vec![
            ("SSL_CERT_FILE".to_owned(), self.bundle.clone()),
            ("REQUESTS_CA_BUNDLE".to_owned(), self.bundle.clone()),
            ("NODE_EXTRA_CA_CERTS".to_owned(), self.ca.clone()),
        ];
        match self.metadata.open(&spec.id, &sa, spec.project.as_str()) {
            Ok(addr) => {
                env.push(("GCE_METADATA_HOST".to_owned(), addr.to_string()));
                env.push(("GCE_METADATA_IP".to_owned(), addr.to_string()));
            }
            Err(e) => tracing::error!(instance = %spec.id, "no metadata endpoint: {e}"),
        }
        env
    }

    fn ended(&self, id: &InstanceId) {
        self.metadata.close(id);
    }
}
