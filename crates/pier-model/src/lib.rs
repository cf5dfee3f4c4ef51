//! Pier's domain vocabulary, shared by every other crate: validated names, the revision template a deploy
//! records, traffic lists, the URL scheme, Knative manifests and the admin API's JSON shapes.
//!
//! This crate does no I/O.

pub mod api;
pub mod api_gateways;
pub mod domains;
pub mod end_user_auth;
pub mod error;
pub mod hosting;
pub mod hosts;
pub mod logs;
pub mod manifest;
pub mod names;
pub mod operations;
pub mod probe;
pub mod settings;
pub mod spec;
pub mod traffic;

pub use error::{NameError, SpecError};
pub use hosts::{HostKind, UrlScheme};
pub use names::{InstanceId, ProjectName, RevisionName, ServiceName, Tag};
pub use probe::{Probe, ProbeKind};
pub use settings::Ingress;
pub use spec::{EnvVar, ExecutionEnvironment, RevisionTemplate, VpcEgress};
pub use traffic::{Traffic, TrafficKey, TrafficTarget};

/// The OAuth client id of Pier's CLI: the audience of the identity tokens `pier auth
/// print-identity-token` prints by default (as gcloud's user tokens carry gcloud's client id).
pub const CLI_CLIENT_ID: &str = "pier-cli";

#[cfg(test)]
mod proptests;
