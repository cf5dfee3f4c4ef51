//! Custom domains' parts of the server: the pending ACME challenges, the SNI resolver that also answers
//! TLS-ALPN-01, the certificate manager (ACME for `AUTOMATIC` mappings, the local CA for `LOCAL_CA`),
//! Pier's DNS look-ups, and what the gateway's plain-HTTP listener asks about mapped domains.

use pier_certs::acme::{AcmeConfig, AcmeIssuer, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, Validation};
use pier_certs::local::LocalCaIssuer;
use pier_certs::{CertManager, Challenges};
use pier_control::domains::{Dns, DomainConfig, ExpectedRecords};

use super::*;

/// What the rest of the server is built with.
pub(super) struct DomainParts {
    pub resolver: Arc<SniResolver>,
    pub manager: Arc<CertManager>,
    pub entrance: Arc<dyn pier_gateway::DomainEntrance>,
    pub config: DomainConfig,
}

/// The ACME directory a `--acme-directory` value names.
fn directory(value: &str) -> Result<String> {
    Ok(match value {
        "letsencrypt" => LETS_ENCRYPT.to_owned(),
        "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_owned(),
        url if url.starts_with("https://") => url.to_owned(),
        other => bail!(
            "--acme-directory {other}: give an https:// directory URL, or letsencrypt or letsencrypt-staging"
        ),
    })
}

pub(super) fn build(
    args: &ServerArgs,
    store: &Arc<Store>,
    ca: &Arc<LocalCa>,
    metrics: Option<&Arc<pier_metrics::Metrics>>,
) -> Result<DomainParts> {
    let challenges = Challenges::new();
    let resolver = Arc::new(SniResolver::with_challenges(challenges.clone()));
    if let Some(ca_file) = &args.acme_ca
        && !ca_file.is_file()
    {
        bail!("--acme-ca {}: no such file", ca_file.display());
    }
    let acme = AcmeIssuer::new(
        AcmeConfig {
            directory: directory(&args.acme_directory)?,
            email: args.acme_email.clone(),
            ca_file: args.acme_ca.clone(),
            validation: if args.acme_challenge == "tls-alpn-01" {
                Validation::TlsAlpn01
            } else {
                Validation::Http01
            },
            timeout: Duration::from_secs(90),
        },
        store.clone(),
        challenges.clone(),
    );
    let acme = match metrics {
        Some(m) => {
            let gateway = m.gateway().clone();
            acme.reporting_orders(Arc::new(move |outcome| gateway.acme_order(outcome)))
        }
        None => acme,
    };
    let manager = CertManager::new(
        store.clone(),
        resolver.clone(),
        Some(Arc::new(acme)),
        Arc::new(LocalCaIssuer::new(ca.clone())),
    );
    let served = manager.load()?;
    if served > 0 {
        tracing::info!(
            count = served,
            "serving stored certificates of mapped domains"
        );
    }
    let dns = Dns::new(args.dns_server).map_err(|e| anyhow!(e))?;
    let config = DomainConfig {
        dns: Some(Arc::new(dns)),
        expected: ExpectedRecords {
            ipv4: args.public_ipv4.clone(),
            ipv6: args.public_ipv6.clone(),
            canonical_host: args
                .canonical_host
                .clone()
                .unwrap_or_else(|| args.domain.clone()),
        },
        certificates: Some(manager.clone()),
    };
    Ok(DomainParts {
        entrance: Arc::new(Entrance {
            challenges,
            resolver: resolver.clone(),
        }),
        resolver,
        manager,
        config,
    })
}

/// What the gateway asks about mapped domains, answered from the pending challenges and the resolver.
struct Entrance {
    challenges: Arc<Challenges>,
    resolver: Arc<SniResolver>,
}

impl pier_gateway::DomainEntrance for Entrance {
    fn http01(&self, host: &str, token: &str) -> Option<String> {
        self.challenges.http01(host, token)
    }

    fn certified(&self, host: &str) -> bool {
        self.resolver.has(host)
    }
}
