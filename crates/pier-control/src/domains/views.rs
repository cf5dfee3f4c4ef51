//! A domain mapping as the API shows it: its three conditions (each with a reason and what to do), the
//! DNS records to create, and its certificate's expiry.

use super::*;

impl Platform {
    pub(super) fn mapping_view(
        &self,
        m: &DomainMappingRecord,
        verifs: &[DomainVerificationRecord],
        services: &[ServiceRecord],
    ) -> DomainMappingView {
        let mode = CertificateMode::parse(&m.certificate_mode).unwrap_or_default();
        let status = self
            .domains
            .certificates
            .as_ref()
            .map(|c| c.status(&m.domain));
        let records = self.domains.expected.records(&m.domain);
        let routable = if verified_by(verifs, &m.project, &m.domain).is_none() {
            Condition::not(
                "DomainRoutable",
                "False",
                "PermissionDenied",
                format!(
                    "domain {} is not verified for project {}: run `pier domains verify {}` and create the TXT record it prints",
                    m.domain, m.project, m.domain
                ),
            )
        } else if !target_exists(m, services) {
            Condition::not(
                "DomainRoutable",
                "False",
                "RouteMissing",
                format!(
                    "{} {} does not exist in project {}: deploy it, or map the domain elsewhere with --force-override",
                    m.target_kind, m.target_name, m.project
                ),
            )
        } else {
            let certified = status.as_ref().is_some_and(CertStatus::is_ready);
            match self.pointing().get(&m.domain) {
                _ if certified => Condition::ok("DomainRoutable"),
                None | Some(Pointing::Here) => Condition::ok("DomainRoutable"),
                Some(Pointing::Elsewhere { found, want }) => Condition::not(
                    "DomainRoutable",
                    "False",
                    "DnsNotPointing",
                    format!(
                        "{} resolves to {} but should resolve to {}: create {}",
                        m.domain,
                        if found.is_empty() {
                            "nothing".to_owned()
                        } else {
                            join(found)
                        },
                        join(want),
                        records
                            .iter()
                            .map(|r| format!("{} {} {}", r.name, r.kind, r.rrdata))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                ),
                Some(Pointing::Unknown(why)) => Condition::not(
                    "DomainRoutable",
                    "Unknown",
                    "DnsNotPointing",
                    format!("cannot tell where {} points yet: {why}", m.domain),
                ),
            }
        };
        let mut expires = None;
        let cert = match status {
            Some(CertStatus::Ready {
                not_after,
                renewal_error,
            }) => {
                expires = Some(rfc3339(not_after));
                match renewal_error {
                    None => Condition::ok("CertificateProvisioned"),
                    Some(e) => Condition {
                        message: format!("serving; the last renewal failed: {e}"),
                        ..Condition::ok("CertificateProvisioned")
                    },
                }
            }
            Some(CertStatus::Failed {
                reason,
                message,
                retry_at,
            }) => Condition::not(
                "CertificateProvisioned",
                "False",
                reason,
                format!("{message} (next try at {})", rfc3339(retry_at)),
            ),
            Some(CertStatus::Pending) => Condition::not(
                "CertificateProvisioned",
                "Unknown",
                "CertificatePending",
                "the certificate is being issued",
            ),
            _ => Condition::not(
                "CertificateProvisioned",
                "Unknown",
                "CertificatePending",
                "the certificate is ordered once the domain is routable",
            ),
        };
        let ready = if routable.is_true() && cert.is_true() {
            Condition::ok("Ready")
        } else {
            let first = if routable.is_true() { &cert } else { &routable };
            let status = if routable.status == "False" || cert.status == "False" {
                "False"
            } else {
                "Unknown"
            };
            Condition::not("Ready", status, &first.reason, first.message.clone())
        };
        DomainMappingView {
            domain: m.domain.clone(),
            project: m.project.to_string(),
            target: pier_model::domains::MappingTarget {
                kind: m.target_kind.clone(),
                name: m.target_name.clone(),
            },
            certificate_mode: mode,
            url: self.scheme.url(&m.domain),
            conditions: vec![ready, routable, cert],
            resource_records: records,
            certificate_expires: expires,
            created_at: m.created_at.clone(),
        }
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
