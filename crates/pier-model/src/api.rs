//! The JSON bodies of Pier's admin API, shared by the server (which produces them) and the CLI (which reads
//! them). Field names are camelCase, as in Cloud Run's and Knative's APIs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{InstanceId, ProjectName, RevisionName, ServiceName, Tag};
use crate::settings::Ingress;
use crate::spec::RevisionTemplate;
use crate::traffic::TrafficTarget;

/// Asks for a new revision of a service (creating the service on its first deploy).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    /// What the new revision runs.
    pub template: RevisionTemplate,
    /// Make the service public (`true`) or private (`false`); absent leaves it as it is (new services are
    /// private).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    /// Create the revision without sending it any traffic.
    #[serde(default)]
    pub no_traffic: bool,
    /// Give the new revision this tag (and so its own URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// Service settings to apply with the deploy (ingress, invoker check, audiences).
    #[serde(default, skip_serializing_if = "UpdateServiceRequest::is_empty")]
    pub settings: UpdateServiceRequest,
    /// Who deploys (`user:EMAIL`), set by the server from the caller's token, never read from a request.
    #[serde(skip)]
    #[schema(ignore)]
    pub creator: Option<String>,
}

/// Where a revision stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RevisionState {
    /// Its first instance is starting; traffic has not moved.
    Deploying,
    /// Proved it starts and listens; may serve traffic.
    Ready,
    /// Failed to start or to listen on PORT; never serves.
    Failed,
}

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Started, not yet accepting connections on PORT.
    Starting,
    /// Serving requests.
    Ready,
    /// Finishing its in-flight requests before it stops.
    Draining,
}

/// One running instance of a revision.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// Instance id, as it appears in logs.
    pub id: InstanceId,
    /// Its state.
    pub state: InstanceState,
    /// Requests it is serving now.
    pub in_flight: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// A revision as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// What the deploy did not do, and why (for example public access the caller may not grant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The deploy's operation, to follow its progress (`GET /v1/{operation}`), in a deploy's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Revision name.
    pub name: RevisionName,
    /// Its service.
    pub service: ServiceName,
    /// Its project.
    pub project: ProjectName,
    /// What it runs.
    pub template: RevisionTemplate,
    /// Where it stands.
    pub state: RevisionState,
    /// Why it failed, or other detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The instance's last log lines when the revision failed to start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// When it became ready (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    /// Share of the service's default URL it serves now.
    pub percent: u8,
    /// Tags pointing at it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Running instances.
    #[serde(default)]
    pub instances: Vec<InstanceView>,
    /// The image it runs, pinned to the digest its tag resolved to at deploy (`NAME@sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Who deployed it (`user:EMAIL` or `serviceAccount:EMAIL`), as Cloud Run's
    /// `serving.knative.dev/creator` annotation says; absent for revisions made before Pier recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// The last instance that ended by itself (crashed, exited, ran out of memory) since the server started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_instance_exit: Option<InstanceExitView>,
}

/// An instance that ended without being asked to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceExitView {
    /// Instance id.
    pub id: InstanceId,
    /// How it ended: "exited with status 1", "was killed: out of memory", ...
    pub reason: String,
    /// Whether it went over its memory limit.
    #[serde(default)]
    pub out_of_memory: bool,
    /// When (RFC 3339).
    pub at: String,
}

/// An image in the server's cache.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    /// Manifest digest.
    pub digest: String,
    /// What it was last pulled as.
    pub name: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// When it was last pulled (RFC 3339).
    pub pulled_at: String,
    /// Revisions that run it.
    pub used_by: u32,
}

/// What `pier images prune` freed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneView {
    /// Images no revision used, now forgotten.
    pub images: Vec<ImageView>,
    /// Blobs removed from the cache.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Unpacked layers and image roots removed.
    pub unpacked: usize,
}

/// A registry with credentials (never the secret).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryView {
    /// `host[:port]`.
    pub registry: String,
    /// User name (empty for a bare token).
    pub username: String,
    /// When the credentials were set (RFC 3339).
    pub updated_at: String,
}

/// Credentials for a registry.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryCredentialRequest {
    /// User name; empty to send `secret` as a bearer token.
    #[serde(default)]
    pub username: String,
    /// Password or token.
    pub secret: String,
}

impl std::fmt::Debug for RegistryCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentialRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A traffic entry with LATEST resolved and its URL when tagged.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStatus {
    /// The revision serving (LATEST resolved); absent while no revision is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<RevisionName>,
    /// Whether this entry follows the latest ready revision.
    #[serde(default)]
    pub latest_revision: bool,
    /// Share of the default URL.
    pub percent: u8,
    /// Tag, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// The tag's own URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A service as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// Service name.
    pub name: ServiceName,
    /// Its project.
    pub project: ProjectName,
    /// The stable URL.
    pub url: String,
    /// Whether the service is public (allUsers holds the invoker role).
    pub allow_unauthenticated: bool,
    /// Which requests may reach it.
    pub ingress: Ingress,
    /// Whether the gateway checks the invoker permission.
    pub invoker_iam_check: bool,
    /// Audiences accepted besides the service's URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_audiences: Vec<String>,
    /// The end-user token check, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_auth: Option<crate::end_user_auth::EndUserAuth>,
    /// Its edge cache, if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::hosting::CacheSetting>,
    /// The template of the latest revision created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<RevisionTemplate>,
    /// The traffic list as configured.
    pub traffic_spec: Vec<TrafficTarget>,
    /// The traffic as it is served now.
    pub traffic: Vec<TrafficStatus>,
    /// Newest revision created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision: Option<RevisionName>,
    /// Newest revision that became ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision: Option<RevisionName>,
    /// True when the latest created revision is ready and serving as configured.
    pub ready: bool,
    /// Why the service is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// The most recent instance of a serving revision that ended by itself (crash, out of memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_instance_exit: Option<InstanceExitView>,
}

/// One `--to-revisions` assignment: a revision name, a tag or `LATEST`, and its percent.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficAssignment {
    /// Revision name, tag name or `LATEST`.
    pub target: String,
    /// Share, 0 to 100.
    pub percent: u8,
}

/// One tag assignment: the tag and the revision name (or `LATEST`) it points at.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagAssignment {
    /// Tag name.
    pub tag: Tag,
    /// Revision name or `LATEST`.
    pub revision: String,
}

/// Changes a service's traffic, as `update-traffic` does.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTrafficRequest {
    /// Percent assignments; a sum under 100 leaves the rest to what serves now, in proportion.
    #[serde(default)]
    pub to_revisions: Vec<TrafficAssignment>,
    /// Send all traffic to the latest ready revision.
    #[serde(default)]
    pub to_latest: bool,
    /// Tags to create or move.
    #[serde(default)]
    pub update_tags: Vec<TagAssignment>,
    /// Tags to remove.
    #[serde(default)]
    pub remove_tags: Vec<Tag>,
    /// Remove every tag.
    #[serde(default)]
    pub clear_tags: bool,
}

impl UpdateTrafficRequest {
    /// The request that makes a service's traffic exactly `traffic` (a manifest's `traffic:` list):
    /// its percents, its tags and no others.
    pub fn replacing_with(traffic: &crate::Traffic) -> Self {
        Self {
            to_revisions: traffic
                .percents()
                .into_iter()
                .map(|(k, p)| TrafficAssignment {
                    target: k.to_string(),
                    percent: p,
                })
                .collect(),
            update_tags: traffic
                .tags()
                .into_iter()
                .map(|(t, k)| TagAssignment {
                    tag: t,
                    revision: k.to_string(),
                })
                .collect(),
            clear_tags: true,
            ..Default::default()
        }
    }
}

/// Service settings that change without a new revision.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateServiceRequest {
    /// Make the service public (grant allUsers the invoker role) or private (revoke it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    /// Which requests may reach the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    /// Turn the gateway's invoker check on or off (off: the service does its own auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoker_iam_check: Option<bool>,
    /// Audiences to accept in addition to the service's URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_custom_audiences: Vec<String>,
    /// Audiences to stop accepting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_custom_audiences: Vec<String>,
    /// Drop every custom audience.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_custom_audiences: bool,
    /// Check end users' ID tokens before requests reach the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_auth: Option<crate::end_user_auth::EndUserAuth>,
    /// Stop checking end users' tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_end_user_auth: bool,
    /// Turn the edge cache on (or change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::hosting::CacheSetting>,
    /// Turn the edge cache off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_cache: bool,
}

impl UpdateServiceRequest {
    /// What in this request would widen who may reach a service whose settings are now `ingress`,
    /// `invoker_check` and `audiences`: turning the invoker check off, a wider ingress, new custom
    /// audiences, public access. Cloud Run asks for `run.services.setIamPolicy` for each.
    pub fn widening(
        &self,
        ingress: Ingress,
        invoker_check: bool,
        audiences: &[String],
    ) -> Vec<&'static str> {
        let rank = |i: Ingress| match i {
            Ingress::Internal => 0,
            Ingress::InternalAndCloudLoadBalancing => 1,
            Ingress::All => 2,
        };
        let mut out = Vec::new();
        if self.allow_unauthenticated.is_some() {
            out.push("public access (--allow-unauthenticated)");
        }
        if self.invoker_iam_check == Some(false) && invoker_check {
            out.push("turning the invoker check off (--no-invoker-iam-check)");
        }
        if self.ingress.is_some_and(|i| rank(i) > rank(ingress)) {
            out.push("a wider ingress");
        }
        if self
            .add_custom_audiences
            .iter()
            .any(|a| !audiences.contains(a))
        {
            out.push("new custom audiences");
        }
        if self.clear_end_user_auth {
            out.push("removing the end-user token check (--end-user-auth none)");
        }
        out
    }

    /// Drops every part of this request that would widen access (see [`UpdateServiceRequest::widening`]).
    pub fn without_widening(
        &mut self,
        ingress: Ingress,
        invoker_check: bool,
        audiences: &[String],
    ) {
        let rank = |i: Ingress| match i {
            Ingress::Internal => 0,
            Ingress::InternalAndCloudLoadBalancing => 1,
            Ingress::All => 2,
        };
        self.allow_unauthenticated = None;
        if self.invoker_iam_check == Some(false) && invoker_check {
            self.invoker_iam_check = None;
        }
        if self.ingress.is_some_and(|i| rank(i) > rank(ingress)) {
            self.ingress = None;
        }
        self.add_custom_audiences.retain(|a| audiences.contains(a));
        self.clear_end_user_auth = false;
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.allow_unauthenticated.is_none()
            && self.ingress.is_none()
            && self.invoker_iam_check.is_none()
            && self.add_custom_audiences.is_empty()
            && self.remove_custom_audiences.is_empty()
            && !self.clear_custom_audiences
            && self.end_user_auth.is_none()
            && !self.clear_end_user_auth
            && self.cache.is_none()
            && !self.clear_cache
    }
}

pub use crate::logs::{LogEntry, LogStream};

/// The body of every API error, in the shape of Google APIs' errors.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One service's recent figures, column by column (what a chart library takes): each list has one
/// value per step, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsHistoryView {
    /// Seconds between two points.
    pub step_seconds: u64,
    /// Each step's end, in seconds since the Unix epoch.
    pub time: Vec<u64>,
    /// Requests answered per second.
    pub requests_per_second: Vec<f32>,
    /// Median latency in milliseconds (the upper bound of its bucket); null without requests.
    pub latency_p50_ms: Vec<Option<f32>>,
    /// 95th percentile latency in milliseconds; null without requests.
    pub latency_p95_ms: Vec<Option<f32>>,
    /// 99th percentile latency in milliseconds; null without requests.
    pub latency_p99_ms: Vec<Option<f32>>,
    /// Instances (starting, idle or active) at the step's end.
    pub instances: Vec<f32>,
    /// Cold starts during the step.
    pub cold_starts: Vec<f32>,
}

/// Detail of an API error.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// HTTP status code.
    pub code: u16,
    /// Canonical status (`NOT_FOUND`, `INVALID_ARGUMENT`, ...).
    pub status: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// What the server tells a client about itself.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// Pier's version.
    pub version: String,
    /// Base domain of service URLs.
    pub domain: String,
    /// Gateway HTTPS port.
    pub https_port: u16,
    /// Gateway HTTP port.
    pub http_port: u16,
    /// Path of the CA certificate clients should trust.
    pub ca_path: String,
    /// Where this server mounts container roots and writes bundles (`/run/pier/INSTALLATION`).
    #[serde(default)]
    pub run_dir: String,
    /// Where Prometheus scrapes this server's metrics (`http://ADDR:PORT/metrics`), if they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

/// A service account.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountView {
    /// `NAME@PROJECT.iam.DOMAIN`.
    pub email: String,
    /// NAME.
    pub name: String,
    /// Its project.
    pub project: String,
    /// Stable unique id.
    pub unique_id: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Whether it is disabled.
    pub disabled: bool,
}

/// Creates a service account.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateServiceAccountRequest {
    /// NAME: 6 to 30 lowercase letters, digits and hyphens, starting with a letter.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A service-account key (public metadata only).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Key id.
    pub id: String,
    /// The service account.
    pub service_account: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Creation time.
    pub created_at: String,
}

/// A user.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// Email.
    pub email: String,
    /// Stable unique id.
    pub unique_id: String,
}

/// Creates a user.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Email.
    pub email: String,
    /// Password (at least 8 characters).
    pub password: String,
}

/// Asks for an ID token for a service account (impersonation).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateIdTokenRequest {
    /// The token's audience.
    pub audience: String,
    /// Accepted for compatibility with Google's IAM Credentials API; Pier always includes the email.
    #[serde(default)]
    pub include_email: bool,
}

/// A minted token.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// The token.
    pub token: String,
}

/// Who the caller is.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `user:EMAIL` or `serviceAccount:EMAIL`.
    pub principal: String,
}

/// Grants or revokes one role for one member.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingChange {
    /// `user:...`, `serviceAccount:...`, `allUsers`, `allAuthenticatedUsers`.
    pub member: String,
    /// `roles/...`.
    pub role: String,
}
