//! Custom domains: the names Pier accepts as mapped domains, and the API shapes of domain mappings and
//! ownership proofs, after Cloud Run's `domains.cloudrun.com/v1` DomainMapping.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::SpecError;

/// The TXT record name whose value proves ownership of `domain`.
pub fn challenge_record(domain: &str) -> String {
    format!("_pier-challenge.{domain}")
}

/// A domain name as Pier stores it: lowercase ASCII, no trailing dot, at least two labels of letters,
/// digits and inner hyphens, each at most 63 bytes, 253 in all (RFC 1035 §2.3.1, RFC 1123 §2.1). No
/// wildcard: mappings name one host.
///
/// # Errors
/// A message that says which part is wrong.
pub fn parse_domain(input: &str) -> Result<String, SpecError> {
    let d = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| {
        SpecError::new(format!(
            "{input:?} is not a domain name Pier can map: {why} (example: shop.example.com)"
        ))
    };
    if d.is_empty() || d.len() > 253 {
        return Err(bad("it must be 1 to 253 characters"));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels"));
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err(bad("each label must be 1 to 63 characters"));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad(
                "labels hold only letters, digits and hyphens (use the punycode form of other names)",
            ));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(bad("a label may not start or end with a hyphen"));
        }
    }
    Ok(d)
}

/// Where a mapped domain's certificate comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateMode {
    /// Issued and renewed by the ACME CA the server is given (Let's Encrypt by default).
    #[default]
    Automatic,
    /// None managed: a certificate of the operator's own, read from files on the server and reloaded
    /// when they change.
    None,
    /// Issued by the server's local CA (development; clients must trust that CA).
    LocalCa,
}

impl CertificateMode {
    /// The stored and displayed form.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateMode::Automatic => "AUTOMATIC",
            CertificateMode::None => "NONE",
            CertificateMode::LocalCa => "LOCAL_CA",
        }
    }

    /// Reads the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AUTOMATIC" => Some(Self::Automatic),
            "NONE" => Some(Self::None),
            "LOCAL_CA" => Some(Self::LocalCa),
            _ => None,
        }
    }
}

/// What a mapping points at: a kind and a name, so that other kinds (API gateways, hosting sites) map
/// the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MappingTarget {
    /// `service` (today the only kind).
    pub kind: String,
    /// The target's name in the project.
    pub name: String,
}

/// Asks to map a domain.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDomainMappingRequest {
    /// The domain (`shop.example.com`).
    pub domain: String,
    /// What it serves.
    pub target: MappingTarget,
    /// Where its certificate comes from.
    #[serde(default)]
    pub certificate_mode: CertificateMode,
    /// Move the domain from another target of this project.
    #[serde(default)]
    pub force_override: bool,
    /// With `NONE`: the certificate chain (PEM) file on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    /// With `NONE`: its private key (PEM) file on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
}

/// One status condition, as Cloud Run reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `DomainRoutable` or `CertificateProvisioned`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one word (`PermissionDenied`, `RouteMissing`, `DnsNotPointing`, `CertificatePending`,
    /// `RateLimited`, `CertificateProvisionFailed`); empty when true.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What a person can do about it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Condition {
    /// A condition that holds.
    pub fn ok(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            status: "True".into(),
            reason: String::new(),
            message: String::new(),
        }
    }

    /// A condition that does not hold (`status` `False`, or `Unknown` while work is under way).
    pub fn not(kind: &str, status: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Whether it holds.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// A DNS record the domain's owner must create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRecord {
    /// `A`, `AAAA`, `CNAME` or `TXT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The record's name (the domain itself, or `_pier-challenge.DOMAIN`).
    pub name: String,
    /// Its value.
    pub rrdata: String,
}

/// A domain mapping as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainMappingView {
    /// The mapped domain.
    pub domain: String,
    /// Its project.
    pub project: String,
    /// What it serves.
    pub target: MappingTarget,
    /// Where its certificate comes from.
    pub certificate_mode: CertificateMode,
    /// `https://DOMAIN` (with the port when the server's HTTPS port is not 443).
    pub url: String,
    /// `Ready`, `DomainRoutable`, `CertificateProvisioned`.
    pub conditions: Vec<Condition>,
    /// The records to create in DNS.
    pub resource_records: Vec<ResourceRecord>,
    /// When the served certificate expires (RFC 3339), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl DomainMappingView {
    /// The condition of `kind`, if reported.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Whether it serves.
    pub fn ready(&self) -> bool {
        self.condition("Ready").is_some_and(Condition::is_true)
    }
}

/// Asks to prove ownership of a domain.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyDomainRequest {
    /// Vouch for it without DNS (installation owners only, for private networks).
    #[serde(default)]
    pub without_dns: bool,
}

/// A project's claim on a domain.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainVerificationView {
    /// The domain.
    pub domain: String,
    /// The project.
    pub project: String,
    /// Whether it is proven (directly or through a proven parent).
    pub verified: bool,
    /// How (`dns`, `owner`, or `parent` when a proven parent covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The TXT record that proves it.
    pub record: ResourceRecord,
    /// What was found, when not proven.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What a DomainMapping manifest asks for: Cloud Run's `domains.cloudrun.com/v1` (`spec.routeName`,
/// `spec.certificateMode`, `spec.forceOverride`) or Knative's `serving.knative.dev/v1beta1`
/// (`spec.ref` to a Service). `metadata.name` is the domain; `metadata.namespace`, if any, the project.
#[derive(Clone, Debug)]
pub struct DomainMappingManifest {
    /// The project it names, if it names one.
    pub project: Option<crate::names::ProjectName>,
    /// The mapping to create or replace.
    pub request: CreateDomainMappingRequest,
}

/// Cloud Run's DomainMapping API version.
pub const CLOUD_RUN_API_VERSION: &str = "domains.cloudrun.com/v1";
/// Knative's DomainMapping API version.
pub const KNATIVE_API_VERSION: &str = "serving.knative.dev/v1beta1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    route_name: Option<String>,
    certificate_mode: Option<String>,
    #[serde(default)]
    force_override: bool,
    #[serde(rename = "ref")]
    reference: Option<RawRef>,
}

#[derive(Deserialize)]
struct RawRef {
    kind: String,
    name: String,
    namespace: Option<String>,
}

impl DomainMappingManifest {
    /// Whether `text` is a DomainMapping manifest of a version Pier reads (to tell it from a Service).
    pub fn is_one(text: &str) -> bool {
        yaml_serde::from_str::<RawMapping>(text).is_ok_and(|m| m.kind == "DomainMapping")
    }

    /// Parses one manifest.
    ///
    /// # Errors
    /// A message naming what is missing or unsupported.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let m: RawMapping = yaml_serde::from_str(text)
            .map_err(|e| SpecError::new(format!("manifest is not a valid DomainMapping: {e}")))?;
        if m.kind != "DomainMapping" {
            return Err(SpecError::new(format!(
                "manifest is a {}, not a DomainMapping",
                m.kind
            )));
        }
        let domain = m.metadata.name.as_deref().ok_or_else(|| {
            SpecError::new("the DomainMapping has no metadata.name: it is the domain to map")
        })?;
        let (service, namespace, mode) = match m.api_version.as_str() {
            CLOUD_RUN_API_VERSION => {
                let route = m.spec.route_name.ok_or_else(|| {
                    SpecError::new("the DomainMapping has no spec.routeName: name the service")
                })?;
                let mode = match m.spec.certificate_mode.as_deref() {
                    None | Some("AUTOMATIC") => CertificateMode::Automatic,
                    Some("NONE") => CertificateMode::None,
                    Some("LOCAL_CA") => CertificateMode::LocalCa,
                    Some(other) => {
                        return Err(SpecError::new(format!(
                            "spec.certificateMode {other:?}: use AUTOMATIC, NONE or LOCAL_CA"
                        )));
                    }
                };
                (route, m.metadata.namespace, mode)
            }
            KNATIVE_API_VERSION | "serving.knative.dev/v1alpha1" => {
                let r = m.spec.reference.ok_or_else(|| {
                    SpecError::new("the DomainMapping has no spec.ref: name the Service it maps to")
                })?;
                if r.kind != "Service" {
                    return Err(SpecError::new(format!(
                        "spec.ref.kind {}: Pier maps domains to Services",
                        r.kind
                    )));
                }
                (
                    r.name,
                    m.metadata.namespace.or(r.namespace),
                    CertificateMode::Automatic,
                )
            }
            other => {
                return Err(SpecError::new(format!(
                    "DomainMapping {other}: Pier reads {CLOUD_RUN_API_VERSION} and {KNATIVE_API_VERSION}"
                )));
            }
        };
        let project = namespace
            .map(|n| n.parse())
            .transpose()
            .map_err(|e: crate::NameError| SpecError::new(e.to_string()))?;
        Ok(Self {
            project,
            request: CreateDomainMappingRequest {
                domain: parse_domain(domain)?,
                target: MappingTarget {
                    kind: "service".into(),
                    name: service,
                },
                certificate_mode: mode,
                force_override: m.spec.force_override,
                certificate_file: None,
                private_key_file: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_run_and_knative_mappings_read_alike() {
        let cr = DomainMappingManifest::from_yaml(
            "apiVersion: domains.cloudrun.com/v1\nkind: DomainMapping\nmetadata:\n  name: Shop.Example.com\n  namespace: team\nspec:\n  routeName: shop\n  certificateMode: AUTOMATIC\n  forceOverride: true\n",
        )
        .unwrap();
        assert_eq!(cr.project.unwrap().as_str(), "team");
        assert_eq!(cr.request.domain, "shop.example.com");
        assert_eq!(cr.request.target.name, "shop");
        assert!(cr.request.force_override);
        let kn = DomainMappingManifest::from_yaml(
            "apiVersion: serving.knative.dev/v1beta1\nkind: DomainMapping\nmetadata:\n  name: shop.example.com\nspec:\n  ref:\n    apiVersion: serving.knative.dev/v1\n    kind: Service\n    name: shop\n",
        )
        .unwrap();
        assert!(kn.project.is_none());
        assert_eq!(kn.request.target.name, "shop");
        assert_eq!(kn.request.certificate_mode, CertificateMode::Automatic);
        assert!(DomainMappingManifest::is_one(
            "apiVersion: serving.knative.dev/v1beta1\nkind: DomainMapping\n"
        ));
        assert!(!DomainMappingManifest::is_one(
            "apiVersion: serving.knative.dev/v1\nkind: Service\n"
        ));
        for (bad, says) in [
            (
                "apiVersion: domains.cloudrun.com/v1\nkind: DomainMapping\nmetadata:\n  name: a.example.com\n",
                "spec.routeName",
            ),
            (
                "apiVersion: serving.knative.dev/v1beta1\nkind: DomainMapping\nmetadata:\n  name: a.example.com\nspec:\n  ref:\n    kind: Route\n    name: r\n",
                "Pier maps domains to Services",
            ),
            (
                "apiVersion: example.com/v9\nkind: DomainMapping\nmetadata:\n  name: a.example.com\n",
                "Pier reads",
            ),
            (
                "apiVersion: domains.cloudrun.com/v1\nkind: DomainMapping\nspec:\n  routeName: s\n",
                "metadata.name",
            ),
        ] {
            let e = DomainMappingManifest::from_yaml(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn domains_are_normalized_or_refused_with_the_reason() {
        assert_eq!(
            parse_domain("Shop.Example.COM.").unwrap(),
            "shop.example.com"
        );
        for bad in [
            "",
            "localhost",
            "-a.example.com",
            "a_b.example.com",
            "*.example.com",
            "a..b",
        ] {
            let e = parse_domain(bad).unwrap_err().to_string();
            assert!(e.contains("shop.example.com"), "{bad}: {e}");
        }
        assert!(parse_domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn certificate_modes_round_trip() {
        for m in [
            CertificateMode::Automatic,
            CertificateMode::None,
            CertificateMode::LocalCa,
        ] {
            assert_eq!(CertificateMode::parse(m.as_str()), Some(m));
        }
    }
}
