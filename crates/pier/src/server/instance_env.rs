//! What every instance gets from Pier besides its revision's template: trust in Pier's CA
//! (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` with the system CAs plus Pier's, `NODE_EXTRA_CA_CERTS`), at the
//! paths where its runtime mounts them, so apps call other services at their HTTPS URLs with no code
//! change. The metadata server needs no variable: every instance finds it at its usual link-local
//! address (`metadata.google.internal`, 169.254.169.254), inside its own network namespace.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use pier_activator::InstanceHooks;
use pier_control::IdentityService;
use pier_identity::Principal;
use pier_metadata::{TokenRefusal, TokenSource};
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
    fn id_token(&self, service_account: &str, audience: &str) -> Result<String, TokenRefusal> {
        self.0
            .mint_identity_token(
                &Principal::ServiceAccount(service_account.to_owned()),
                audience,
                None,
            )
            .map_err(token_refusal)
    }

    fn access_token(&self, service_account: &str) -> Result<(String, u64), TokenRefusal> {
        let aud = self.0.issuer().url().to_owned();
        self.0
            .mint_id_token(
                &Principal::ServiceAccount(service_account.to_owned()),
                &aud,
                None,
            )
            .map(|t| (t, pier_identity::tokens::TOKEN_LIFETIME.as_secs() - 1))
            .map_err(token_refusal)
    }
}

/// The account's fault (403) or the server's (503), as the identity service classified it.
fn token_refusal(e: pier_control::ControlError) -> TokenRefusal {
    match e.into_callers_fault() {
        Ok(why) => TokenRefusal::Refused(why),
        Err(other) => {
            tracing::error!("the metadata server could not mint a token: {other}");
            TokenRefusal::Unavailable("the server could not mint a token now".into())
        }
    }
}

/// The instance hooks: the CA variables, by where the instance's runtime puts the CA files, and the
/// service's log for instances that could not start.
pub struct InstanceEnv {
    bundle: String,
    ca: String,
    logs: Arc<pier_runtime::logs::LogStore>,
}

impl InstanceEnv {
    /// Hooks with the server's CA files at `bundle` and `ca` (what unsandboxed processes read).
    pub fn new(bundle: &Path, ca: &Path, logs: Arc<pier_runtime::logs::LogStore>) -> Self {
        Self {
            bundle: bundle.display().to_string(),
            ca: ca.display().to_string(),
            logs,
        }
    }
}

impl InstanceHooks for InstanceEnv {
    fn prepare(&self, spec: &InstanceSpec) -> Vec<(String, String)> {
        let (bundle, ca) = if spec.template.image.is_some() {
            (CONTAINER_BUNDLE, CONTAINER_CA)
        } else if spec.template.unsandboxed {
            (self.bundle.as_str(), self.ca.as_str())
        } else {
            (
                pier_sandbox::fsview::CA_BUNDLE,
                pier_sandbox::fsview::CA_CERT,
            )
        };
        vec![
            ("SSL_CERT_FILE".to_owned(), bundle.to_owned()),
            ("REQUESTS_CA_BUNDLE".to_owned(), bundle.to_owned()),
            ("NODE_EXTRA_CA_CERTS".to_owned(), ca.to_owned()),
        ]
    }

    fn ended(&self, _id: &InstanceId) {}

    fn start_failed(&self, spec: &InstanceSpec, why: &str) {
        self.logs
            .instance_writer(&spec.project, &spec.service, &spec.revision, &spec.id)
            .system(&format!(
                "the instance could not start: {}",
                pier_control::machine::explain(why)
            ));
    }
}
