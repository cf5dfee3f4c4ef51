//! The hosting resources of the admin API, named as Firebase Hosting names them: a **site**, its
//! **versions** (files named by SHA-256 plus the `firebase.json` hosting entry), its **channels** (`live`
//! at the site's own URL, previews at `SITE--CHANNEL-HASH`) and their **releases**.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest a preview channel lives: Firebase's 30 days.
pub const MAX_CHANNEL_TTL_SECS: u64 = 30 * 24 * 3600;

/// A new preview channel's life when none is given: Firebase's 7 days.
pub const DEFAULT_CHANNEL_TTL_SECS: u64 = 7 * 24 * 3600;

/// `POST /v1/projects/{project}/sites/{site}/versions`: a new version (the site is created on its first).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSiteVersionRequest {
    /// The site's entry of `firebase.json`'s `hosting` (redirects, rewrites, headers, cleanUrls, …).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Every file of the version: its path in the site (`/index.html`) and the hex SHA-256 of its content.
    pub files: BTreeMap<String, String>,
    /// The service account rewrites call services as; default: the project's compute account (kept
    /// from the site's last deploy otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// The answer to a new version: what to upload before releasing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSiteVersion {
    /// Its number.
    pub version: i64,
    /// Digests the server lacks (upload each to `…/sites/{site}/files/{digest}`).
    pub missing: Vec<String>,
}

/// The answer to an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    /// Its SHA-256.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The size of its gzip variant, when one is kept.
    pub gzip_size: Option<u64>,
    /// The size of its brotli variant, when one is kept.
    pub brotli_size: Option<u64>,
}

/// `POST /v1/projects/{project}/sites/{site}/channels/{channel}/releases`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The version to serve.
    pub version: i64,
    /// A message for people.
    #[serde(default)]
    pub message: String,
    /// A preview channel's life from now, in seconds (at most 30 days); default 7 days for a new
    /// channel, unchanged for an existing one. Refused for `live`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// `POST /v1/projects/{project}/sites/{site}/channels/{channel}/clone`: serve what another channel serves.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneRequest {
    /// The source site (of the same project).
    pub source_site: String,
    /// The source channel.
    pub source_channel: String,
    /// As in [`ReleaseRequest::ttl_seconds`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A service's edge cache (`pier services update S --cache …`): off unless set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSetting {
    /// `origin-headers` (keep what the answers' `Cache-Control` allows a shared cache to keep) or
    /// `force` (also keep answers that say nothing, for `default_ttl_seconds`).
    pub mode: CacheMode,
    /// The largest body kept, in bytes (default 10 MiB).
    #[serde(default = "default_max_object")]
    pub max_object_bytes: u64,
    /// With `force`: how long an answer without freshness of its own is kept, in seconds (default 60).
    #[serde(default = "default_ttl")]
    pub default_ttl_seconds: u64,
}

fn default_max_object() -> u64 {
    10 << 20
}

fn default_ttl() -> u64 {
    60
}

/// What a service's edge cache keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// What the answers' headers allow (RFC 9111, as a shared cache).
    OriginHeaders,
    /// Also answers without cache headers, for the default TTL (never `private`, `no-store`, a
    /// `Set-Cookie`, or a caller's credentials unless the answer says `public`).
    Force,
}

impl CacheMode {
    /// As the CLI writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::OriginHeaders => "origin-headers",
            CacheMode::Force => "force",
        }
    }
}

/// `POST /v1/projects/{project}/sites/{site}/cache/invalidate`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvalidateRequest {
    /// What to drop: `/x/*` (everything under `/x/`) or an exact path; the query is ignored.
    pub path: String,
}

/// A release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseView {
    /// The channel.
    pub channel: String,
    /// Its number in the channel.
    pub seq: i64,
    /// The version it serves.
    pub version: i64,
    /// `DEPLOY`, `ROLLBACK` or `CLONE`.
    pub kind: String,
    /// Its message.
    pub message: String,
    /// Made (RFC 3339).
    pub create_time: String,
    /// By whom.
    pub created_by: String,
    /// The channel's URL.
    pub url: String,
}

/// A channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// The version it serves, if any.
    pub version: Option<i64>,
    /// When it expires (RFC 3339), for previews.
    pub expire_time: Option<String>,
    /// When it was last released (RFC 3339).
    pub release_time: Option<String>,
}

/// A site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteView {
    /// Its name.
    pub name: String,
    /// Its project.
    pub project: String,
    /// The live channel's URL.
    pub url: String,
    /// The account its rewrites call services as.
    pub service_account: String,
    /// Its channels.
    pub channels: Vec<ChannelView>,
    /// Created (RFC 3339).
    pub create_time: String,
}
