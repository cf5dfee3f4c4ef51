//! The stages a route runs a request through, compiled into each [`Route`] when routes are published, so
//! the request path parses no configuration and takes no lock the control plane holds.
//!
//! Three kinds, in this order:
//!
//! 1. **Filters** ([`Filter`]) may refuse a request or rewrite its head, and rewrite the response head on
//!    its way back. The first filter of every route is its *admission* filter (ingress, then identity and
//!    IAM: [`crate::auth::IdentityGuard`]); [`Route`]'s constructors take it as an argument, so no route
//!    exists without one. Later filters (CORS, API keys, end-user JWTs, quotas, request validation) run
//!    only on admitted requests. Responses pass back through the filters in reverse order.
//! 2. **Responders** ([`Responder`]) may answer without a backend (a CORS preflight, a cache hit, a
//!    static file, an ACME challenge). The first that answers wins; its response still passes back
//!    through the filters.
//! 3. **The backend** ([`crate::routes::Backend`]) forwards what nobody answered: today a revision's
//!    pool picked by traffic weight; later another node's instance.
//!
//! Filters and the decision of a responder are synchronous: what they need is compiled into them or
//! cached, never fetched per request. A responder's answer itself may take time (it is a future).

use std::future::Future;
use std::pin::Pin;

use http::Response;

use crate::body::GatewayBody;
use crate::error::Refusal;
use crate::headers::Forwarding;
use crate::routes::Route;

/// An answer a responder gives: produced after the decision, so it may read a file or a cache.
pub type Answer = Pin<Box<dyn Future<Output = Response<GatewayBody>> + Send>>;

/// A stage that may refuse or rewrite a request, and rewrite the response head.
pub trait Filter: Send + Sync + 'static {
    /// A short name for logs and traces (`"identity"`, `"cors"`).
    fn name(&self) -> &'static str;

    /// Lets the request on (possibly rewritten) or refuses it. A refusal is rendered by the gateway's
    /// one exit (`error.rs`), in gRPC form to gRPC clients.
    fn on_request(
        &self,
        route: &Route,
        conn: &Forwarding,
        req: &mut http::request::Parts,
    ) -> Result<(), Refusal>;

    /// Rewrites the response head before it goes back to the client. By default, nothing.
    fn on_response(&self, _route: &Route, _resp: &mut http::response::Parts) {}
}

/// A stage that may answer a request without a backend.
pub trait Responder: Send + Sync + 'static {
    /// A short name for logs and traces (`"acme-challenge"`, `"static"`).
    fn name(&self) -> &'static str;

    /// The answer to this request, or `None` to let the next stage have it.
    fn respond(&self, route: &Route, req: &http::request::Parts) -> Option<Answer>;
}

/// An admission filter that admits every request, for tests of the forwarding path alone. Production
/// routes are built with [`crate::auth::IdentityGuard`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Filter for AllowAll {
    fn name(&self) -> &'static str {
        "allow-all"
    }

    fn on_request(
        &self,
        _: &Route,
        _: &Forwarding,
        _: &mut http::request::Parts,
    ) -> Result<(), Refusal> {
        Ok(())
    }
}
