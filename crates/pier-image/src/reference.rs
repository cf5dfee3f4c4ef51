//! Where an image comes from, parsed from what the user typed after `--image`:
//!
//! - `REGISTRY/NAME:TAG`, `NAME@sha256:...` (Docker Hub short names like `busybox` work as with Docker);
//! - `oci-archive:PATH[:TAG]`: a tar of an OCI image layout, or a `docker save` archive (told apart by
//!   what is inside);
//! - `docker-archive:PATH`: a `docker save` archive;
//! - `oci:DIR[:TAG]`: an OCI image layout directory.
//!
//! A revision records the image it resolved to as [`pinned`] text ending in `@sha256:...`; only that
//! digest is needed to run it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use oci_client::Reference;

use crate::digest::Digest;

/// An image's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An image in a registry.
    Registry(Reference),
    /// A local archive or layout.
    Local {
        /// Which kind.
        kind: LocalKind,
        /// Its path (absolute once the CLI has sent it).
        path: PathBuf,
        /// The tag to pick when the layout holds several images.
        tag: Option<String>,
    },
}

/// Kinds of local image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// `oci-archive:`: a tar holding an OCI layout or a `docker save` archive.
    Archive,
    /// `docker-archive:`.
    DockerArchive,
    /// `oci:`: an OCI layout directory.
    Layout,
}

impl LocalKind {
    fn prefix(self) -> &'static str {
        match self {
            LocalKind::Archive => "oci-archive:",
            LocalKind::DockerArchive => "docker-archive:",
            LocalKind::Layout => "oci:",
        }
    }
}

/// Text that is not an image reference.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid image {input:?}: {reason}")]
pub struct BadReference {
    /// What was given.
    pub input: String,
    /// Why it is wrong.
    pub reason: String,
}

impl ImageSource {
    /// Whether this is a local archive or layout (whose path is read by the server).
    pub fn is_local(&self) -> bool {
        matches!(self, ImageSource::Local { .. })
    }

    /// The digest the reference pins, if it does (`NAME@sha256:...`).
    pub fn digest(&self) -> Option<Digest> {
        match self {
            ImageSource::Registry(r) => r.digest().and_then(|d| d.parse().ok()),
            ImageSource::Local { .. } => None,
        }
    }

    /// The registry host (`localhost:5000`, `docker.io`), for registries.
    pub fn registry(&self) -> Option<&str> {
        match self {
            ImageSource::Registry(r) => Some(r.resolve_registry()),
            ImageSource::Local { .. } => None,
        }
    }
}

impl FromStr for ImageSource {
    type Err = BadReference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadReference {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.trim() != s || s.is_empty() {
            return Err(bad("it is empty or has surrounding spaces"));
        }
        for kind in [
            LocalKind::Archive,
            LocalKind::DockerArchive,
            LocalKind::Layout,
        ] {
            if let Some(rest) = s.strip_prefix(kind.prefix()) {
                // A pinned form recorded by a revision: drop the digest, the caller checks it.
                let rest = match rest.rsplit_once('@') {
                    Some((p, d)) if d.parse::<Digest>().is_ok() => p,
                    _ => rest,
                };
                let (path, tag) = split_tag(rest);
                if path.is_empty() {
                    return Err(bad(
                        "give the path after the colon, like oci-archive:./image.tar",
                    ));
                }
                if kind == LocalKind::DockerArchive && tag.is_some() {
                    return Err(bad(
                        "docker-archive: takes no tag; use oci-archive: for layouts with several images",
                    ));
                }
                return Ok(ImageSource::Local {
                    kind,
                    path: PathBuf::from(path),
                    tag: tag.map(str::to_owned),
                });
            }
        }
        if s.contains("://") {
            return Err(bad(
                "give the image without a scheme, like localhost:5000/hello:1.0",
            ));
        }
        let reference = Reference::from_str(s).map_err(|e| bad(&e.to_string()))?;
        if let Some(d) = reference.digest()
            && d.parse::<Digest>().is_err()
        {
            return Err(bad("only sha256 digests are supported"));
        }
        Ok(ImageSource::Registry(reference))
    }
}

/// Splits `PATH:TAG`; a last part with a `/` is part of the path.
fn split_tag(rest: &str) -> (&str, Option<&str>) {
    match rest.rsplit_once(':') {
        Some((path, tag))
            if !tag.is_empty()
                && !path.is_empty()
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            (path, Some(tag))
        }
        _ => (rest, None),
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Registry(r) => write!(f, "{}", r.whole()),
            ImageSource::Local { kind, path, tag } => {
                write!(f, "{}{}", kind.prefix(), path.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
        }
    }
}

/// The text a revision records: the source pinned to the manifest digest it resolved to
/// (`localhost:5000/hello@sha256:...`, `oci-archive:/images/hello.tar@sha256:...`).
pub fn pinned(source: &ImageSource, digest: &Digest) -> String {
    match source {
        ImageSource::Registry(r) => Reference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            digest.to_string(),
        )
        .whole(),
        local => format!("{local}@{digest}"),
    }
}

/// The digest at the end of a pinned reference.
pub fn pinned_digest(text: &str) -> Option<Digest> {
    text.rsplit_once('@').and_then(|(_, d)| d.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_and_local_forms() {
        let r: ImageSource = "localhost:5000/hello:1.0".parse().unwrap();
        assert_eq!(r.registry(), Some("localhost:5000"));
        assert_eq!(r.to_string(), "localhost:5000/hello:1.0");
        let d = Digest::of(b"x");
        let pinned_text = pinned(&r, &d);
        assert_eq!(pinned_text, format!("localhost:5000/hello@{d}"));
        assert_eq!(pinned_digest(&pinned_text), Some(d.clone()));
        let p: ImageSource = pinned_text.parse().unwrap();
        assert_eq!(p.digest(), Some(d.clone()));

        let hub: ImageSource = "busybox".parse().unwrap();
        assert_eq!(hub.to_string(), "docker.io/library/busybox:latest");

        let a: ImageSource = "oci-archive:./hello.tar".parse().unwrap();
        assert_eq!(
            a,
            ImageSource::Local {
                kind: LocalKind::Archive,
                path: "./hello.tar".into(),
                tag: None
            }
        );
        let l: ImageSource = "oci:/srv/layout:v2".parse().unwrap();
        assert_eq!(
            l,
            ImageSource::Local {
                kind: LocalKind::Layout,
                path: "/srv/layout".into(),
                tag: Some("v2".into())
            }
        );
        let pinned_local = pinned(&l, &d);
        assert_eq!(pinned_local, format!("oci:/srv/layout:v2@{d}"));
        assert_eq!(pinned_local.parse::<ImageSource>().unwrap(), l);
        let slash: ImageSource = "oci:dir:with/slash".parse().unwrap();
        assert!(matches!(slash, ImageSource::Local { tag: None, .. }));
    }

    #[test]
    fn refuses_nonsense_with_reasons() {
        for bad in [
            "",
            " hello",
            "oci-archive:",
            "https://localhost:5000/hello",
            "Hello:UPPER/x",
            "hello@sha512:abcd",
            "docker-archive:/x.tar:tag",
        ] {
            let err = bad.parse::<ImageSource>().unwrap_err();
            assert!(!err.reason.is_empty(), "{bad}");
        }
    }
}
