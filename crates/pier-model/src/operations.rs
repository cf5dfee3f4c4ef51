//! Long-running operations, in the shape of Google's `google.longrunning.Operation` (what `gcloud`
//! follows for a deploy): a name, metadata with the work's phases, `done`, and an `error` when it
//! failed. Pier reports a deploy this way; the CLI and the console follow it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationView {
    /// `projects/PROJECT/locations/local/operations/ID`.
    pub name: String,
    /// What it does and how far it is.
    pub metadata: OperationMetadata,
    /// Whether it ended (successfully unless `error` is set).
    pub done: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    /// Increases with every change: `GET ...?after=VERSION` waits for a newer one.
    pub version: u64,
}

/// What an operation works on, and its phases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationMetadata {
    /// `deploy`.
    pub verb: String,
    /// The resource: `projects/P/services/S/revisions/R`.
    pub target: String,
    /// Steps in order.
    pub phases: Vec<Phase>,
    /// When it started (RFC 3339).
    pub create_time: String,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// One step of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// What the step does (`Pulling image`, `Starting the instance`, `Probing`, `Routing traffic`).
    pub name: String,
    /// Where it stands.
    pub state: PhaseState,
    /// How far it is (`3/5 layers, 12.1 of 30.4 MB`), or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds it took, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
}

/// A phase's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhaseState {
    /// Not started.
    Pending,
    /// Under way.
    Running,
    /// Ended well.
    Succeeded,
    /// Ended badly (the operation failed here).
    Failed,
    /// Not needed after all (a failure before it).
    Skipped,
}

/// Why an operation failed (`google.rpc.Status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperationError {
    /// A `google.rpc.Code` (9, FAILED_PRECONDITION, for a revision that did not start).
    pub code: i32,
    /// What went wrong.
    pub message: String,
}
