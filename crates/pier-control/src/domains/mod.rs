//! Custom domains, after Cloud Run's domain mappings: a project proves it owns a domain (a TXT record, or
//! an installation owner's word), maps it to a service, and Pier routes it with the service's own guard
//! and keeps a certificate for it ([`pier_certs::CertManager`]).
//!
//! A mapping's status is three conditions, each with a reason and a message a person can act on:
//!
//! - `DomainRoutable`: the domain is verified for the project (`PermissionDenied` otherwise), its target
//!   exists (`RouteMissing`), and DNS points it at this server (`DnsNotPointing`, with what it resolves
//!   to and what it should).
//! - `CertificateProvisioned`: from the certificate manager (`CertificatePending`, `RateLimited`,
//!   `CertificateProvisionFailed`).
//! - `Ready`: both hold.
//!
//! Unverified domains are not routed at all. Certificates are ordered only for routable domains, so a
//! domain whose DNS points elsewhere spends none of the CA's rate limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pier_certs::{CertManager, CertStatus, Wanted};
use pier_model::domains::{
    CertificateMode, Condition, CreateDomainMappingRequest, DomainMappingView,
    DomainVerificationView, ResourceRecord, challenge_record, parse_domain,
};
use pier_model::hosts::is_within;
use pier_store::{DomainMappingRecord, DomainVerificationRecord};

use super::*;

pub mod dns;
mod views;
pub use dns::Dns;

/// What a mapped domain's DNS should say, from the server's settings (`--public-ipv4`, `--public-ipv6`,
/// `--canonical-host`).
#[derive(Clone, Debug, Default)]
pub struct ExpectedRecords {
    /// Addresses for A records.
    pub ipv4: Vec<Ipv4Addr>,
    /// Addresses for AAAA records.
    pub ipv6: Vec<Ipv6Addr>,
    /// The name for a CNAME record, when no address is given (the base domain by default).
    pub canonical_host: String,
}

impl ExpectedRecords {
    /// The records to create for `domain`: A/AAAA when addresses are set, else a CNAME.
    pub fn records(&self, domain: &str) -> Vec<ResourceRecord> {
        let mut out: Vec<ResourceRecord> = self
            .ipv4
            .iter()
            .map(|ip| (ip.to_string(), "A"))
            .chain(self.ipv6.iter().map(|ip| (ip.to_string(), "AAAA")))
            .map(|(ip, kind)| ResourceRecord {
                kind: kind.into(),
                name: domain.into(),
                rrdata: ip,
            })
            .collect();
        if out.is_empty() {
            out.push(ResourceRecord {
                kind: "CNAME".into(),
                name: domain.into(),
                rrdata: format!("{}.", self.canonical_host.trim_end_matches('.')),
            });
        }
        out
    }
}

/// How the control plane handles custom domains.
#[derive(Clone, Debug, Default)]
pub struct DomainConfig {
    /// Pier's own DNS look-ups; `None` skips the "points here" check (tests of the control plane alone).
    pub dns: Option<Arc<Dns>>,
    /// What mapped domains' DNS should say.
    pub expected: ExpectedRecords,
    /// Keeps their certificates; `None` refuses mappings (a server without TLS).
    pub certificates: Option<Arc<CertManager>>,
}

/// The last look at where a mapped domain points.
#[derive(Clone, Debug)]
pub(crate) enum Pointing {
    /// At this server.
    Here,
    /// Elsewhere, in part or whole (or nowhere): what it resolved to, and what it should.
    Elsewhere {
        found: Vec<IpAddr>,
        want: Vec<IpAddr>,
    },
    /// The look-up failed.
    Unknown(String),
}

fn verified_by<'a>(
    verifications: &'a [DomainVerificationRecord],
    project: &ProjectName,
    domain: &str,
) -> Option<&'a DomainVerificationRecord> {
    verifications
        .iter()
        .find(|v| v.verified_at.is_some() && &v.project == project && is_within(domain, &v.domain))
}

fn verification_view(
    project: &ProjectName,
    domain: &str,
    token: &str,
    by: Option<&DomainVerificationRecord>,
    message: String,
) -> DomainVerificationView {
    DomainVerificationView {
        domain: domain.to_owned(),
        project: project.to_string(),
        verified: by.is_some(),
        method: by.map(|v| {
            if v.domain == domain {
                v.method.clone().unwrap_or_default()
            } else {
                format!("parent ({})", v.domain)
            }
        }),
        record: ResourceRecord {
            kind: "TXT".into(),
            name: challenge_record(domain),
            rrdata: token.to_owned(),
        },
        message,
    }
}

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn not_found_mapping(project: &ProjectName, domain: &str) -> ControlError {
    ControlError::NotFound(format!(
        "domain {domain} is not mapped in project {project}: `pier domain-mappings list` shows the mappings"
    ))
}

impl Platform {
    fn certificates(&self) -> Result<&Arc<CertManager>> {
        self.domains.certificates.as_ref().ok_or_else(|| {
            ControlError::Invalid(
                "this server serves no HTTPS, so it cannot serve custom domains".into(),
            )
        })
    }

    /// Whether `domain` is Pier's own (the base domain or under it), which cannot be mapped.
    fn is_own_domain(&self, domain: &str) -> bool {
        is_within(domain, self.scheme.domain())
    }

    /// Proves `domain` for `project`: with its TXT record (`_pier-challenge.DOMAIN`), or, when
    /// `without_dns` (the API lets installation owners only), on the caller's word. A verified parent
    /// covers its subdomains.
    pub async fn verify_domain(
        self: &Arc<Self>,
        project: &ProjectName,
        domain: &str,
        without_dns: bool,
    ) -> Result<DomainVerificationView> {
        let domain = parse_domain(domain)?;
        if self.is_own_domain(&domain) {
            return Err(ControlError::Invalid(format!(
                "{domain} is under this server's own domain {}, which needs no mapping",
                self.scheme.domain()
            )));
        }
        self.hash_of(project).await.and_then(|h| {
            if h.is_empty() {
                Err(ControlError::NotFound(format!(
                    "project {project} does not exist: deploy a service into it first"
                )))
            } else {
                Ok(())
            }
        })?;
        let (p, d) = (project.clone(), domain.clone());
        let (record, all) = self
            .db(move |s| {
                let r = s.domain_verification(&p, &d, || {
                    random_chars(32, b"abcdefghijklmnopqrstuvwxyz0123456789")
                })?;
                Ok((r, s.domain_verifications(Some(&p))?))
            })
            .await?;
        if let Some(by) = verified_by(&all, project, &domain) {
            return Ok(verification_view(
                project,
                &domain,
                &record.token,
                Some(by),
                String::new(),
            ));
        }
        let method = if without_dns {
            "owner"
        } else {
            let Some(dns) = &self.domains.dns else {
                return Err(ControlError::Invalid(
                    "this server does no DNS look-ups; an installation owner can verify with --without-dns".into(),
                ));
            };
            let name = challenge_record(&domain);
            let found = dns.txt(&name).await.map_err(|e| {
                ControlError::Invalid(format!(
                    "cannot look up the TXT record ({e}): check that this server reaches DNS (pier server --dns-server ADDR:PORT names another resolver), then run `pier domains verify {domain}` again"
                ))
            })?;
            if !found.iter().any(|v| v.trim() == record.token) {
                let seen = if found.is_empty() {
                    "it has no TXT record yet".to_owned()
                } else {
                    format!("its TXT records are {found:?}")
                };
                let message = format!(
                    "not verified: add the TXT record {name} with the value {}, wait for DNS to publish it, then run `pier domains verify {domain}` again ({seen})",
                    record.token
                );
                return Ok(verification_view(
                    project,
                    &domain,
                    &record.token,
                    None,
                    message,
                ));
            }
            "dns"
        };
        let (p, d) = (project.clone(), domain.clone());
        let all = self
            .db(move |s| {
                s.mark_domain_verified(&p, &d, method)?;
                s.domain_verifications(Some(&p))
            })
            .await?;
        tracing::info!(%project, %domain, method, "domain verified");
        // Mappings waiting on it can now be routed.
        self.publish_routes().await?;
        self.check_domains_looking_at(Some(&domain)).await?;
        let by = verified_by(&all, project, &domain);
        Ok(verification_view(
            project,
            &domain,
            &record.token,
            by,
            String::new(),
        ))
    }

    /// The domains a project has claimed, verified or not.
    pub async fn list_domains(&self, project: &ProjectName) -> Result<Vec<DomainVerificationView>> {
        let p = project.clone();
        let all = self.db(move |s| s.domain_verifications(Some(&p))).await?;
        Ok(all
            .iter()
            .map(|v| {
                let by = verified_by(&all, project, &v.domain);
                let message = if by.is_some() {
                    String::new()
                } else {
                    format!(
                        "add the TXT record {} with the value {}, then run `pier domains verify {}`",
                        challenge_record(&v.domain),
                        v.token,
                        v.domain
                    )
                };
                verification_view(project, &v.domain, &v.token, by, message)
            })
            .collect())
    }

    /// Maps a domain to a target of `project`. Another project's domain is refused; this project's
    /// mapping to another target moves only with `force_override`.
    pub async fn create_domain_mapping(
        self: &Arc<Self>,
        project: &ProjectName,
        req: CreateDomainMappingRequest,
    ) -> Result<DomainMappingView> {
        self.certificates()?;
        let domain = parse_domain(&req.domain)?;
        if self.is_own_domain(&domain) {
            return Err(ControlError::Invalid(format!(
                "{domain} is under this server's own domain {}: its services already have URLs there",
                self.scheme.domain()
            )));
        }
        if !["service", "gateway", "site"].contains(&req.target.kind.as_str()) {
            return Err(ControlError::Invalid(format!(
                "a domain can be mapped to a service (--service NAME), an API gateway (--gateway NAME) or a hosting site (--site NAME); {:?} is none of them",
                req.target.kind
            )));
        }
        let service: ServiceName = req
            .target
            .name
            .parse()
            .map_err(|e| ControlError::Invalid(format!("{e}")))?;
        let files = match (
            req.certificate_mode,
            &req.certificate_file,
            &req.private_key_file,
        ) {
            (CertificateMode::None, Some(cert), Some(key)) => {
                for f in [cert, key] {
                    if !std::path::Path::new(f).is_absolute() {
                        return Err(ControlError::Invalid(format!(
                            "{f}: give the certificate files as absolute paths on the server"
                        )));
                    }
                }
                Some((cert.clone(), key.clone()))
            }
            (CertificateMode::None, _, _) => {
                return Err(ControlError::Invalid(
                    "certificate mode NONE serves a certificate of your own: give --certificate-file and --private-key-file (PEM files on the server)".into(),
                ));
            }
            (_, None, None) => None,
            (mode, _, _) => {
                return Err(ControlError::Invalid(format!(
                    "--certificate-file and --private-key-file go with --certificate-mode none; mode {} has its certificate issued",
                    mode.as_str()
                )));
            }
        };
        if req.target.kind == "gateway" {
            self.gateway_record(project, service.as_str()).await?;
        } else if req.target.kind == "site" {
            if !self.site_exists(project, service.as_str()).await? {
                return Err(ControlError::NotFound(format!(
                    "site {service} does not exist in project {project}: deploy it first (`pier hosting deploy --site {service}`)"
                )));
            }
        } else {
            let (p, s) = (project.clone(), service.clone());
            if self.db(move |st| st.service(&p, &s)).await?.is_none() {
                return Err(not_found_service(project, &service));
            }
        }
        let record = DomainMappingRecord {
            domain: domain.clone(),
            project: project.clone(),
            target_kind: req.target.kind.clone(),
            target_name: service.to_string(),
            certificate_mode: req.certificate_mode.as_str().into(),
            certificate_files: files,
            created_at: String::new(),
        };
        let force = req.force_override;
        let _guard = self.publish.lock().await;
        self.db(move |s| {
            let mut r = record;
            r.created_at = now_rfc3339();
            s.put_domain_mapping(&r, force)
        })
        .await?;
        self.publish_locked().await?;
        drop(_guard);
        tracing::info!(%project, %domain, %service, "mapped domain");
        self.check_domains_looking_at(Some(&domain)).await?;
        self.changed();
        self.domain_mapping(project, &domain).await
    }

    /// A project's mappings with their status.
    pub async fn domain_mappings(&self, project: &ProjectName) -> Result<Vec<DomainMappingView>> {
        self.mapping_views(project, None).await
    }

    /// One mapping with its status.
    pub async fn domain_mapping(
        &self,
        project: &ProjectName,
        domain: &str,
    ) -> Result<DomainMappingView> {
        let domain = parse_domain(domain)?;
        self.mapping_views(project, Some(&domain))
            .await?
            .pop()
            .ok_or_else(|| not_found_mapping(project, &domain))
    }

    /// The views of a project's mappings, or of its mapping of `only`: only those are rendered.
    async fn mapping_views(
        &self,
        project: &ProjectName,
        only: Option<&str>,
    ) -> Result<Vec<DomainMappingView>> {
        let p = project.clone();
        let (maps, verifs, services) = self
            .db(move |s| {
                Ok((
                    s.domain_mappings(Some(&p))?,
                    s.domain_verifications(Some(&p))?,
                    s.services(Some(&p))?,
                ))
            })
            .await?;
        Ok(maps
            .iter()
            .filter(|m| only.is_none_or(|d| d == m.domain))
            .map(|m| self.mapping_view(m, &verifs, &services))
            .collect())
    }

    /// Deletes a mapping: the domain stops being routed, and its certificate is forgotten.
    pub async fn delete_domain_mapping(
        self: &Arc<Self>,
        project: &ProjectName,
        domain: &str,
    ) -> Result<()> {
        let domain = parse_domain(domain)?;
        let (p, d) = (project.clone(), domain.clone());
        let _guard = self.publish.lock().await;
        if !self.db(move |s| s.delete_domain_mapping(&p, &d)).await? {
            return Err(not_found_mapping(project, &domain));
        }
        self.publish_locked().await?;
        drop(_guard);
        self.pointing().remove(&domain);
        self.check_domains_looking_at(Some(&domain)).await?;
        self.changed();
        tracing::info!(%project, %domain, "deleted domain mapping");
        Ok(())
    }

    pub(crate) fn pointing(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pointing>> {
        self.pointing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks again where mapped domains point (those without a certificate yet), and tells the
    /// certificate manager which domains should have one. Run after every mapping change and
    /// periodically by the server.
    pub async fn check_domains(&self) -> Result<()> {
        self.check_domains_looking_at(None).await
    }

    /// [`Platform::check_domains`], looking in DNS only at `only` (after a change to one domain: the
    /// others keep what the last periodic look found, so one call never waits on many look-ups).
    async fn check_domains_looking_at(&self, only: Option<&str>) -> Result<()> {
        let Some(certs) = &self.domains.certificates else {
            return Ok(());
        };
        let _one_at_a_time = self.domain_checks.lock().await;
        let read = |s: &Store| {
            Ok((
                s.domain_mappings(None)?,
                s.domain_verifications(None)?,
                s.services(None)?,
            ))
        };
        let (maps, verifs, services) = self.db(read).await?;
        // Per mapping: whether it routes, and whether a certificate already serves it.
        let states: Vec<(&DomainMappingRecord, bool, bool)> = maps
            .iter()
            .map(|m| {
                let routable = verified_by(&verifs, &m.project, &m.domain).is_some()
                    && target_exists(m, &services);
                (m, routable, certs.status(&m.domain).is_ready())
            })
            .collect();
        // Where the routable domains without a certificate point: all of them, 16 at a time, or, after
        // a change to one domain, that one only (the others keep the last periodic look).
        if let Some(dns) = &self.domains.dns {
            let to_look: Vec<&str> = states
                .iter()
                .filter(|(m, routable, certified)| {
                    *routable && !*certified && only.is_none_or(|d| d == m.domain)
                })
                .map(|(m, _, _)| m.domain.as_str())
                .collect();
            if !to_look.is_empty() {
                // What "here" is, looked up once for the whole pass.
                let here = self.expected_addresses(dns).await;
                for chunk in to_look.chunks(16) {
                    let looks = chunk.iter().map(|d| {
                        let here = &here;
                        async move { (*d, where_points(dns, d, here).await) }
                    });
                    for (d, p) in futures_util::future::join_all(looks).await {
                        self.pointing().insert(d.to_owned(), p);
                    }
                }
            }
        }
        let wanted = states
            .into_iter()
            .map(|(m, routable, certified)| {
                let pointing = match (&self.domains.dns, self.pointing().get(&m.domain)) {
                    (None, _) => true,
                    (Some(_), Some(Pointing::Here)) => true,
                    // A certificate already served keeps being renewed while DNS is looked at.
                    _ => certified,
                };
                Wanted {
                    domain: m.domain.clone(),
                    mode: CertificateMode::parse(&m.certificate_mode).unwrap_or_default(),
                    ready: routable && pointing,
                    files: m
                        .certificate_files
                        .as_ref()
                        .map(|(c, k)| (c.into(), k.into())),
                }
            })
            .collect();
        certs.want(wanted);
        Ok(())
    }

    /// The addresses a mapped domain must resolve to: the server's public ones when set, else those of
    /// the canonical host.
    async fn expected_addresses(&self, dns: &Dns) -> Result<Vec<IpAddr>, String> {
        let set: Vec<IpAddr> = self
            .domains
            .expected
            .ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.domains.expected.ipv6.iter().map(|a| IpAddr::V6(*a)))
            .collect();
        if !set.is_empty() {
            return Ok(set);
        }
        dns.addresses(&self.domains.expected.canonical_host).await
    }
}

/// Where `domain` points, against `here` (the expected addresses, or why they are unknown).
async fn where_points(dns: &Dns, domain: &str, here: &Result<Vec<IpAddr>, String>) -> Pointing {
    let want = match here {
        Ok(w) => w,
        Err(e) => return Pointing::Unknown(e.clone()),
    };
    match dns.addresses(domain).await {
        // Every address: a validator (and a client) may pick any of them.
        Ok(found) if !found.is_empty() && found.iter().all(|a| want.contains(a)) => Pointing::Here,
        Ok(found) => Pointing::Elsewhere {
            found,
            want: want.clone(),
        },
        Err(e) => Pointing::Unknown(e),
    }
}

/// Whether a mapping's target exists (a gateway's is checked when it is routed: a mapping outlives
/// neither kind, since deleting the target is what removes its route).
pub(crate) fn target_exists(m: &DomainMappingRecord, services: &[ServiceRecord]) -> bool {
    m.target_kind == "gateway"
        || m.target_kind == "site"
        || (m.target_kind == "service"
            && services
                .iter()
                .any(|s| s.project == m.project && s.name.as_str() == m.target_name))
}

/// The mappings to route: those whose domain the project has verified (the target is looked up when
/// routed).
pub(crate) fn routed_mappings<'a>(
    maps: &'a [DomainMappingRecord],
    verifs: &[DomainVerificationRecord],
) -> impl Iterator<Item = &'a DomainMappingRecord> {
    maps.iter()
        .filter(|m| verified_by(verifs, &m.project, &m.domain).is_some())
}

fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}
