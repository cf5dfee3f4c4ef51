//! Extractors that turn malformed input into [`ApiError`]s in the API's JSON shape: names are parsed into
//! their validated types, bodies into model types, and the messages say what was wrong.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use pier_model::{ProjectName, RevisionName, ServiceName};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; errors become 400 with serde's explanation.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::invalid(
                "the body must be JSON: send Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::invalid(format!(
                "invalid request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// `/v1/projects/{project}/...`.
pub struct ProjectPath(pub ProjectName);

/// `/v1/projects/{project}/services/{service}...`.
pub struct ServicePath(pub ProjectName, pub ServiceName);

/// `/v1/projects/{project}/revisions/{revision}`.
pub struct RevisionPath(pub ProjectName, pub RevisionName);

async fn segments<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<Vec<String>, ApiError> {
    let Path(v): Path<Vec<String>> = Path::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::invalid(format!("invalid path: {}", e.body_text())))?;
    Ok(v)
}

fn name<T: std::str::FromStr<Err = pier_model::NameError>>(s: &str) -> Result<T, ApiError> {
    s.parse()
        .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))
}

impl<S: Send + Sync> FromRequestParts<S> for ProjectPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let v = segments(parts, state).await?;
        Ok(Self(name(&v[0])?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ServicePath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let v = segments(parts, state).await?;
        Ok(Self(name(&v[0])?, name(&v[1])?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RevisionPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let v = segments(parts, state).await?;
        Ok(Self(name(&v[0])?, name(&v[1])?))
    }
}

/// The authenticated caller (set by the auth middleware).
pub struct Caller(pub pier_identity::Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<pier_identity::Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::unauthenticated("no authenticated caller"))
    }
}

/// A service account email from the path.
pub struct AccountPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AccountPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let v = segments(parts, state).await?;
        Ok(Self(v[0].clone()))
    }
}

/// A service account email and a key id from the path.
pub struct KeyPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let v = segments(parts, state).await?;
        Ok(Self(v[0].clone(), v[1].clone()))
    }
}

/// Requires `p` of `who` on `project` (handlers of project-wide resources: APIs, gateways, sites).
pub(crate) fn require_on_project(
    s: &crate::AppState,
    who: &pier_identity::Principal,
    p: pier_identity::Permission,
    project: &ProjectName,
) -> Result<(), ApiError> {
    Ok(s.platform
        .identity()
        .require(who, p, &pier_control::Resource::Project(project.clone()))?)
}

/// A project named in a path.
pub(crate) fn project_of(path: &str) -> Result<ProjectName, ApiError> {
    path.parse()
        .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))
}
