//! The API's one error type and its one JSON shape. Internal errors are logged and answered with a
//! generic message, never with their details.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pier_control::ControlError;
use pier_model::api::{ErrorBody, ErrorDetail};

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds a client should wait before retrying (503 for exhaustion that passes).
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    /// 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => Self::not_found(m),
            ControlError::Invalid(m) => Self::invalid(m),
            ControlError::Conflict(m) => Self::new(StatusCode::CONFLICT, "FAILED_PRECONDITION", m),
            ControlError::Forbidden(m) => Self::forbidden(m),
            ControlError::Machine(f) => {
                tracing::warn!("{}", f.message());
                if f.passes() {
                    let mut e =
                        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", f.message());
                    e.retry_after = Some(5);
                    e
                } else {
                    Self::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "RESOURCE_EXHAUSTED",
                        f.message(),
                    )
                }
            }
            ControlError::Internal(m) => {
                if let Some(f) = pier_control::machine::MachineFault::recognize(&m) {
                    return Self::from(ControlError::Machine(f));
                }
                tracing::error!("internal error: {m}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "internal error: see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.status.as_u16(),
                status: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}
