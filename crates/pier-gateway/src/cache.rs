//! The seam of a shared (edge) cache on a route: consulted after the filters and responders (so the
//! guard checks every caller, hit or not) and before the backend (so a hit never wakes an instance).
//! `pier-cache` implements it; the gateway only asks and offers:
//!
//! - [`RouteCache::lookup`] answers a hit, asks the request to wait for another request that is
//!   fetching the same thing (coalescing), hands out a [`Ticket`] to fetch and fill it, or lets the
//!   request bypass the cache.
//! - [`RouteCache::offer`] gets the backend's answer with the ticket; it returns the response to send
//!   (its body possibly copied into the cache as it streams).
//! - [`RouteCache::on_error`] may answer a failed fetch with a stale copy (`stale-if-error`).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use http::Response;
use http::request::Parts;

use crate::body::GatewayBody;

/// What a lookup decided.
pub enum Lookup {
    /// Served from the cache.
    Hit(Box<Response<GatewayBody>>),
    /// Another request is fetching this; wait for it (bounded), then look up again.
    Wait(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Fetch it, and offer the answer with this ticket.
    Miss(Ticket),
    /// Not for the cache (a method, a header or a setting keeps it out).
    Bypass,
}

/// A fetch in flight for the cache: whatever the cache needs to store the answer (its key, the
/// request's headers); dropping it ends the flight, which wakes the requests waiting on it.
pub struct Ticket(pub Box<dyn Any + Send>);

/// A route's cache.
pub trait RouteCache: Send + Sync + 'static {
    /// Decides for a request that passed the filters.
    fn lookup(&self, req: &Parts) -> Lookup;

    /// The answer fetched for `ticket`, to send back (and to store, if it may be stored).
    fn offer(&self, ticket: Ticket, resp: Response<GatewayBody>) -> Response<GatewayBody>;

    /// A fetch for `ticket` failed: a stale copy to answer with instead, if the cache may.
    fn on_error(&self, ticket: Ticket) -> Option<Response<GatewayBody>>;

    /// Marks an answer that did not go through the cache (`x-cache: bypass`).
    fn bypassed(&self, resp: &mut Response<GatewayBody>);
}
