//! Validation errors for names, templates and traffic: each says what was wrong and how to fix it.

use thiserror::Error;

/// A name that does not follow Pier's (Cloud Run's) naming rules.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid {kind} name {value:?}: {reason}")]
pub struct NameError {
    /// What the name was for: `service`, `project`, `tag`, ...
    pub kind: &'static str,
    /// The offending value (truncated).
    pub value: String,
    /// Why it was refused, phrased so the user knows what to change.
    pub reason: String,
}

/// A revision template or traffic assignment that cannot be accepted.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SpecError(pub String);

impl SpecError {
    /// Builds an error from any message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl From<NameError> for SpecError {
    fn from(e: NameError) -> Self {
        Self(e.to_string())
    }
}
