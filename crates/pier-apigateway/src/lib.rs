//! API gateways from OpenAPI documents, compatible with Google's API Gateway and Cloud Endpoints (ESPv2)
//! configs, with request validation beyond them.
//!
//! - [`spec`] reads a document (2.0, 3.0, 3.1, JSON or YAML) into an [`ApiSpec`], refusing faults with
//!   their JSON pointer; it is done once per config.
//! - [`filter`] compiles a spec for one gateway into an [`ApiFilter`], a [`pier_gateway::Filter`] that
//!   runs after the route's admission filter: operations ([`router`]), API keys ([`keys`]), end-user
//!   JWTs ([`jwt`]), quotas ([`quota`]), CORS ([`cors`]) and validation ([`spec::schema`]), then a
//!   [`pier_gateway::Destination`] for the route's dispatching backend.
//! - [`external`] forwards to backends outside Pier.
//!
//! Nothing here touches the store: the control plane gives keys, token minting and backend resolution.

pub mod cors;
pub mod end_user;
pub mod external;
pub mod filter;
pub mod jwt;
pub mod keys;
pub mod quota;
pub mod router;
pub mod spec;

pub use cors::{CorsPolicy, PreflightResponder};
pub use end_user::EndUserFilter;
pub use filter::{ApiFilter, BackendTokens, Context};
pub use jwt::{JwksFetch, JwksRegistry, JwksSource};
pub use keys::{KeyDirectory, KeyEntry};
pub use quota::QuotaBook;
pub use spec::{ApiSpec, SpecFault};
