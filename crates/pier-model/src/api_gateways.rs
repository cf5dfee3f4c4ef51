//! The API gateway resources of the admin API, named as Google's API Gateway names them: an **API**, its
//! immutable **API configs** (an OpenAPI document and the service account whose ID tokens its backends
//! get), **gateways** (each serving one config at its own URL), and **API keys**.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiView {
    /// Its name.
    pub name: String,
    /// Its project.
    pub project: String,
    /// Created (RFC 3339).
    pub create_time: String,
}

/// `POST /v1/projects/{project}/apis`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiRequest {
    /// Its name (lowercase letters, digits and hyphens).
    pub name: String,
}

/// `POST /v1/projects/{project}/apis/{api}/configs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiConfigRequest {
    /// Its name.
    pub name: String,
    /// The OpenAPI document (2.0, 3.0 or 3.1; JSON or YAML text).
    pub openapi_spec: String,
    /// The service account whose ID tokens the backends get; default: the project's compute account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_auth_service_account: Option<String>,
}

/// An API config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiConfigView {
    /// Its name.
    pub name: String,
    /// Its API.
    pub api: String,
    /// The document's title.
    pub title: String,
    /// `swagger 2.0`, `openapi 3.0` or `openapi 3.1`.
    pub openapi_version: String,
    /// Operations as `METHOD /path (operationId)`.
    pub operations: Vec<String>,
    /// The service account its backends get tokens of.
    pub backend_auth_service_account: String,
    /// What looks wrong but does not stop it from serving.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Created (RFC 3339).
    pub create_time: String,
}

/// A gateway's CORS setting: preflights answered by the gateway (defaults: ESPv2's `basic` preset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsSetting {
    /// Allowed origins (`https://shop.example`), `*` for any.
    pub allowed_origins: Vec<String>,
    /// Allowed methods, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_methods: Option<String>,
    /// Allowed request headers, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_headers: Option<String>,
    /// Response headers pages may read, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<String>,
    /// Whether credentials may be sent.
    #[serde(default)]
    pub allow_credentials: bool,
    /// Preflight cache time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

/// `POST /v1/projects/{project}/gateways`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGatewayRequest {
    /// Its name.
    pub name: String,
    /// The API.
    pub api: String,
    /// The config it serves.
    pub api_config: String,
    /// Whether anyone may call it (default true, as Google's gateways; needs the permission to set
    /// IAM policies). False: only holders of the invoker role on the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    /// CORS answered by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSetting>,
}

/// `PATCH /v1/projects/{project}/gateways/{name}`: what changes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateGatewayRequest {
    /// Another config of the same API (an atomic switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_config: Option<String>,
    /// Who may call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    /// A new CORS setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSetting>,
    /// Removes the CORS setting.
    #[serde(default)]
    pub clear_cors: bool,
}

/// A gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayView {
    /// Its name.
    pub name: String,
    /// The API.
    pub api: String,
    /// The config it serves.
    pub api_config: String,
    /// Its URL.
    pub default_hostname: String,
    /// Whether anyone may call it.
    pub allow_unauthenticated: bool,
    /// Its CORS setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSetting>,
    /// `ACTIVE`.
    pub state: String,
    /// Created (RFC 3339).
    pub create_time: String,
    /// Last changed (RFC 3339).
    pub update_time: String,
}

/// `POST /v1/projects/{project}/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// A name for people.
    pub display_name: String,
    /// APIs it may call (empty: any API of the project).
    #[serde(default)]
    pub api_targets: Vec<String>,
}

/// `PATCH /v1/projects/{project}/keys/{uid}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateApiKeyRequest {
    /// New restrictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_targets: Option<Vec<String>>,
}

/// An API key (its secret is shown only in [`CreatedApiKey`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    /// Its id.
    pub uid: String,
    /// A name for people.
    pub display_name: String,
    /// Its first characters, to tell keys apart.
    pub key_prefix: String,
    /// APIs it may call (empty: any API of the project).
    pub api_targets: Vec<String>,
    /// Created (RFC 3339).
    pub create_time: String,
    /// Revoked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_time: Option<String>,
}

/// A key just made or rotated: the only time its secret is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    /// The key's record.
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The key itself.
    pub key_string: String,
}
