//! The errors the control plane reports, classified for the API's status codes, and the faults of the
//! machine ([`machine`]) named instead of "internal error". Shared by the control plane and the identity
//! service, which both answer the admin API.

use pier_model::SpecError;
use pier_store::StoreError;
use thiserror::Error;

pub mod machine;

/// What went wrong, classified for the API's status codes.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Pier failed (500); the message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// The machine ran out of something (507, or 503 when it passes): see [`machine`].
    #[error("{}", .0.message())]
    Machine(machine::MachineFault),
}

impl ControlError {
    /// The message of an error the caller's own request caused (the 4xx kinds: not found, invalid,
    /// conflict, forbidden), or the error back when Pier or the machine is at fault. For answers in
    /// other protocols (OAuth's `invalid_grant`, the metadata server's 403) that must not blame the
    /// caller for the server.
    pub fn into_callers_fault(self) -> Result<String, ControlError> {
        match self {
            ControlError::NotFound(m)
            | ControlError::Invalid(m)
            | ControlError::Conflict(m)
            | ControlError::Forbidden(m) => Ok(m),
            other => Err(other),
        }
    }

    /// An internal error, unless its text names a fault of the machine.
    pub fn internal(message: impl Into<String>) -> ControlError {
        let message = message.into();
        match machine::MachineFault::recognize(&message) {
            Some(f) => ControlError::Machine(f),
            None => ControlError::Internal(message),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ControlError::NotFound(m),
            StoreError::Conflict(m) => ControlError::Conflict(m),
            StoreError::Invalid(m) => ControlError::Invalid(m),
            other => ControlError::internal(other.to_string()),
        }
    }
}

impl From<SpecError> for ControlError {
    fn from(e: SpecError) -> Self {
        ControlError::Invalid(e.to_string())
    }
}
