//! The JSON documents of an image: index (manifest list), manifest and config, in their OCI and Docker
//! schema 2 forms (same shape, different media types), and the choice of an index entry for this host.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 1 (signed) manifest, which Pier refuses.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Media types a registry may answer a manifest request with.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

/// A reference to a blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
    /// For index entries: the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (an OCI layout names its images with `org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

impl Descriptor {
    /// The digest, checked.
    pub fn digest(&self) -> Result<Digest, crate::digest::BadDigest> {
        self.digest.parse()
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get("org.opencontainers.image.ref.name")
            .map(String::as_str)
    }
}

/// An index entry's platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, ...
    pub os: String,
    /// `v8`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Fields shared by every manifest kind, to tell them apart.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Versioned {
    /// 2 for everything Pier reads.
    pub schema_version: u32,
    /// Not always present in OCI documents.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Present in indexes.
    #[serde(default)]
    pub manifests: Option<serde_json::Value>,
}

impl Versioned {
    /// Whether the document is an index.
    pub fn is_index(&self) -> bool {
        match self.media_type.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
            Some(_) => false,
            None => self.manifests.is_some(),
        }
    }
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// 2.
    pub schema_version: u32,
    /// Its media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The images.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// 2.
    pub schema_version: u32,
    /// Its media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// The image config blob (the parts Pier uses).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConfigFile {
    /// `amd64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// How to run it.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// Layer digests of the uncompressed tars.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// How the image runs: Docker's `Config` object.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `uid`, `uid:gid`, `name`, `name:group`.
    #[serde(default)]
    pub user: Option<String>,
    /// `NAME=value` pairs.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The signal that stops it (Pier sends SIGTERM, as Cloud Run does).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The config's layer list.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// One per layer.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// This host's platform in OCI terms.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.to_owned(),
        os: "linux".to_owned(),
        variant: None,
    }
}

/// The index entry for this host: same OS and architecture (the first if several variants), skipping
/// attestation manifests. The error lists what the index has.
pub fn pick_platform<'a>(index: &'a Index, host: &Platform) -> Result<&'a Descriptor, String> {
    let matching = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == host.os && p.architecture == host.architecture)
    });
    if let Some(d) = matching {
        return Ok(d);
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    Err(format!(
        "the image has no {host} variant (it has: {}); build it for {host}",
        if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_host_platform_from_an_index() {
        let index: Index = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"platform":{"architecture":"amd64","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":1,"platform":{"architecture":"unknown","os":"unknown"}}]}"#,
        )
        .unwrap();
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(pick_platform(&index, &amd).unwrap().digest, "sha256:bb");
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
        };
        let err = pick_platform(&index, &s390).unwrap_err();
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    }

    #[test]
    fn tells_indexes_from_manifests() {
        let v: Versioned = serde_json::from_str(r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert!(v.is_index());
        let v: Versioned = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
        )
        .unwrap();
        assert!(!v.is_index());
    }

    #[test]
    fn reads_a_docker_config() {
        let c: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["/app"],"Cmd":null,"WorkingDir":"/srv","User":"1000:1000"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
        )
        .unwrap();
        let run = c.config.unwrap();
        assert_eq!(run.entrypoint, Some(vec!["/app".to_owned()]));
        assert_eq!(run.cmd, None);
        assert_eq!(run.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.rootfs.unwrap().diff_ids.len(), 1);
    }
}
