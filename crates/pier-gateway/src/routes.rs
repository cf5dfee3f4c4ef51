//! The routing table: an immutable snapshot mapping each host to a service's revisions and their shares.
//!
//! The control plane builds a new table on every change and publishes it with one atomic swap (see
//! [`crate::publish`]); the request path reads the current table without taking any lock.

use std::collections::HashMap;
use std::sync::Arc;

use pier_activator::RevisionPool;
use pier_identity::InvokerSet;
use pier_model::{Ingress, ProjectName, ServiceName, Tag};

use crate::LocalHandler;
use crate::error::ErrorStyle;
use crate::stages::{Filter, Responder};

/// Who and what may reach a route, checked by the guard before anything is forwarded.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Which requests may reach it at all (checked first).
    pub ingress: Ingress,
    /// Whether to check the invoker permission (off: the service does its own auth).
    pub invoker_check: bool,
    /// Who holds `run.routes.invoke` on the service.
    pub invokers: InvokerSet,
    /// Audiences its tokens may carry: its URLs, custom audiences, the CLI's client id.
    pub audiences: Vec<String>,
    /// Audiences of end users' tokens a later filter checks (an API's JWT schemes, a service's
    /// `--end-user-auth`): a Pier token addressed to one keeps its signature past the guard, but is
    /// never taken as an IAM token.
    pub passthrough: Vec<String>,
}

impl Access {
    /// A public route: anyone, no token needed (tests and internal routes).
    pub fn public() -> Self {
        Self {
            ingress: Ingress::All,
            invoker_check: true,
            invokers: InvokerSet {
                all_users: true,
                ..InvokerSet::default()
            },
            audiences: Vec::new(),
            passthrough: Vec::new(),
        }
    }
}

/// Where the requests a route lets through go.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Revision pools with cumulative percentages (each entry's upper bound, the last is 100).
    Revisions(Vec<(Arc<RevisionPool>, u8)>),
    /// Nothing can serve: answered with 503 and this reason.
    Unavailable(String),
    /// Wherever the route's filters said, per request, with a [`crate::dispatch::Destination`] (an
    /// API's operations each have their backend).
    Dispatch,
}

impl Backend {
    /// Traffic split over `shares` (pool and percent; zero shares are dropped). No share left: the
    /// service has no ready revision for this URL.
    pub fn split(service: &ServiceName, shares: Vec<(Arc<RevisionPool>, u8)>) -> Self {
        let mut acc = 0u8;
        let targets: Vec<(Arc<RevisionPool>, u8)> = shares
            .into_iter()
            .filter(|(_, p)| *p > 0)
            .map(|(pool, p)| {
                acc = acc.saturating_add(p);
                (pool, acc)
            })
            .collect();
        if targets.is_empty() {
            Backend::Unavailable(format!(
                "service {service} has no ready revision to serve this URL"
            ))
        } else {
            Backend::Revisions(targets)
        }
    }
}

/// Where one host's requests go, and the stages on the way (see [`crate::stages`]).
pub struct Route {
    /// Project.
    pub project: ProjectName,
    /// Service.
    pub service: ServiceName,
    /// The tag this host belongs to, for tag URLs.
    pub tag: Option<Tag>,
    /// Ingress, invokers and audiences.
    pub access: Arc<Access>,
    /// Filters in order; the first is the route's admission filter.
    filters: Vec<Arc<dyn Filter>>,
    /// Responders in order.
    responders: Vec<Arc<dyn Responder>>,
    /// What forwards the rest.
    pub backend: Backend,
    /// Whether the host is a mapped domain (its certificate is managed: see [`crate::entrance`]).
    pub mapped_domain: bool,
    /// How the gateway's own errors are rendered here.
    pub errors: ErrorStyle,
    /// The shared cache between the responders and the backend, if any.
    cache: Option<Arc<dyn crate::cache::RouteCache>>,
    /// The service's own metric handles (requests answered before a revision is picked), resolved
    /// when the route is published (see [`crate::observe::MetricsSubscriber`]).
    metrics: std::sync::OnceLock<Arc<pier_metrics::RevisionMetrics>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("project", &self.project)
            .field("service", &self.service)
            .field("tag", &self.tag)
            .field(
                "filters",
                &self.filters.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field(
                "responders",
                &self.responders.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("backend", &self.backend)
            .finish()
    }
}

impl Route {
    /// A route whose requests pass `admission` first (there is no route without one: a wiring mistake
    /// must not serve a private service to everyone), then go to `backend`.
    pub fn new(
        project: ProjectName,
        service: ServiceName,
        tag: Option<Tag>,
        access: Arc<Access>,
        admission: Arc<dyn Filter>,
        backend: Backend,
    ) -> Self {
        Self {
            project,
            service,
            tag,
            access,
            filters: vec![admission],
            responders: Vec::new(),
            backend,
            mapped_domain: false,
            errors: ErrorStyle::Plain,
            cache: None,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// The same service's route at a mapped domain: the same access and backend (so the same guard),
    /// marked as a mapped domain.
    pub fn for_mapped_domain(&self) -> Self {
        Self {
            project: self.project.clone(),
            service: self.service.clone(),
            tag: None,
            access: self.access.clone(),
            filters: self.filters.clone(),
            responders: self.responders.clone(),
            backend: self.backend.clone(),
            mapped_domain: true,
            errors: self.errors,
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Puts a shared cache between the responders and the backend.
    pub fn with_cache(mut self, cache: Arc<dyn crate::cache::RouteCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The route's own metric handles, once published with metrics kept.
    pub fn metrics(&self) -> Option<&Arc<pier_metrics::RevisionMetrics>> {
        self.metrics.get()
    }

    /// Sets the route's own metric handles (at publication; a second call is ignored).
    pub fn set_metrics(&self, m: impl FnOnce() -> Arc<pier_metrics::RevisionMetrics>) {
        self.metrics.get_or_init(m);
    }

    /// The route's cache, if any.
    pub fn cache(&self) -> Option<&Arc<dyn crate::cache::RouteCache>> {
        self.cache.as_ref()
    }

    /// Renders the gateway's own errors on this route in `style`.
    pub fn with_errors(mut self, style: ErrorStyle) -> Self {
        self.errors = style;
        self
    }

    /// Adds a filter after those already there.
    pub fn with_filter(mut self, filter: Arc<dyn Filter>) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds a responder after those already there.
    pub fn with_responder(mut self, responder: Arc<dyn Responder>) -> Self {
        self.responders.push(responder);
        self
    }

    /// The filters in order, admission first.
    pub fn filters(&self) -> &[Arc<dyn Filter>] {
        &self.filters
    }

    /// The responders in order.
    pub fn responders(&self) -> &[Arc<dyn Responder>] {
        &self.responders
    }

    /// Passes a response head back through the filters, in reverse order (every answer does: the
    /// backend's, a responder's, an error's).
    pub fn on_response(&self, head: &mut http::response::Parts) {
        for filter in self.filters.iter().rev() {
            filter.on_response(self, head);
        }
    }

    /// Why the route cannot serve, when it cannot.
    pub fn unavailable(&self) -> Option<&str> {
        match &self.backend {
            Backend::Unavailable(why) => Some(why),
            Backend::Revisions(_) | Backend::Dispatch => None,
        }
    }

    /// The revision pools and their cumulative percentages (empty when unavailable).
    pub fn targets(&self) -> &[(Arc<RevisionPool>, u8)] {
        match &self.backend {
            Backend::Revisions(t) => t,
            Backend::Unavailable(_) | Backend::Dispatch => &[],
        }
    }

    /// Picks a revision by weight, or says why there is none.
    pub fn pick(&self) -> Result<&Arc<RevisionPool>, &str> {
        match &self.backend {
            Backend::Unavailable(why) => Err(why),
            Backend::Dispatch => Err("no operation was chosen for this request"),
            Backend::Revisions(targets) => match targets.as_slice() {
                [] => Err("no revision serves this URL"),
                [(only, _)] => Ok(only),
                many => {
                    let total = many.last().map(|(_, c)| *c).unwrap_or(100).max(1);
                    let roll = fastrand::u8(..total);
                    many.iter()
                        .find(|(_, upto)| roll < *upto)
                        .map(|(p, _)| p)
                        .ok_or("no revision serves this URL")
                }
            },
        }
    }
}

/// Every host the gateway serves.
#[derive(Default, Clone)]
pub struct RouteTable {
    hosts: HashMap<String, Arc<Route>>,
    local: HashMap<String, Arc<dyn LocalHandler>>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("hosts", &self.hosts.len())
            .field("local", &self.local.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a host (lowercase, no port).
    pub fn insert(&mut self, host: String, route: Arc<Route>) {
        self.hosts.insert(host, route);
    }

    /// The route for a normalized host.
    pub fn get(&self, host: &str) -> Option<&Arc<Route>> {
        self.hosts.get(host)
    }

    /// Serves `host` in-process with `handler` (Pier's own endpoints: identity provider, admin API).
    pub fn insert_local(&mut self, host: String, handler: Arc<dyn LocalHandler>) {
        self.local.insert(host, handler);
    }

    /// Takes `other`'s routed hosts in place of this table's, keeping this table's in-process hosts.
    pub(crate) fn replace_hosts(&mut self, other: RouteTable) {
        self.hosts = other.hosts;
    }

    /// The in-process handler of a host, if any.
    pub fn local(&self, host: &str) -> Option<&Arc<dyn LocalHandler>> {
        self.local.get(host)
    }

    /// Whether `host` is one of Pier's own hosts or a name under one (the base domain and the names its
    /// wildcard certificate covers).
    pub fn under_local(&self, host: &str) -> bool {
        self.local
            .keys()
            .any(|l| pier_model::hosts::is_within(host, l))
    }

    /// Every routed host (for the hosts file instances get).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .keys()
            .chain(self.local.keys())
            .map(String::as_str)
    }

    /// Every routed host's route (a service's route appears once per host it serves).
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.hosts.values()
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}
