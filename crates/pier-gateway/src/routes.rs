//! The routing table: an immutable snapshot mapping each host to a service's revisions and their shares.
//!
//! The control plane builds a new table on every change and publishes it with one atomic swap; the
//! request path reads the current table without taking any lock.

use std::collections::HashMap;
use std::sync::Arc;

use pier_activator::RevisionPool;
use pier_identity::InvokerSet;
use pier_model::{Ingress, ProjectName, ServiceName, Tag};

use crate::LocalHandler;

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
        }
    }
}

/// Where one host's requests go.
#[derive(Debug)]
pub struct Route {
    /// Project.
    pub project: ProjectName,
    /// Service.
    pub service: ServiceName,
    /// The tag this host belongs to, for tag URLs.
    pub tag: Option<Tag>,
    /// Revision pools with cumulative percentages (each entry's upper bound, the last is 100).
    pub targets: Vec<(Arc<RevisionPool>, u8)>,
    /// Why the route has no target, when it has none (answered with 503).
    pub unavailable: Option<String>,
    /// Ingress, invokers and audiences.
    pub access: Arc<Access>,
}

impl Route {
    /// A route splitting traffic over `shares` (pool and percent; zero shares are dropped).
    pub fn split(
        project: ProjectName,
        service: ServiceName,
        tag: Option<Tag>,
        shares: Vec<(Arc<RevisionPool>, u8)>,
        access: Arc<Access>,
    ) -> Self {
        let mut acc = 0u8;
        let targets: Vec<(Arc<RevisionPool>, u8)> = shares
            .into_iter()
            .filter(|(_, p)| *p > 0)
            .map(|(pool, p)| {
                acc = acc.saturating_add(p);
                (pool, acc)
            })
            .collect();
        let unavailable = targets
            .is_empty()
            .then(|| format!("service {service} has no ready revision to serve this URL"));
        Self {
            project,
            service,
            tag,
            targets,
            unavailable,
            access,
        }
    }

    /// A route that answers 503 with `reason`.
    pub fn unavailable(
        project: ProjectName,
        service: ServiceName,
        tag: Option<Tag>,
        reason: String,
        access: Arc<Access>,
    ) -> Self {
        Self {
            project,
            service,
            tag,
            targets: Vec::new(),
            unavailable: Some(reason),
            access,
        }
    }

    /// Picks a revision by weight.
    pub fn pick(&self) -> Option<&Arc<RevisionPool>> {
        match self.targets.as_slice() {
            [] => None,
            [(only, _)] => Some(only),
            many => {
                let total = many.last().map(|(_, c)| *c).unwrap_or(100).max(1);
                let roll = fastrand::u8(..total);
                many.iter().find(|(_, upto)| roll < *upto).map(|(p, _)| p)
            }
        }
    }
}

/// Every host the gateway serves.
#[derive(Default)]
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

    /// The in-process handler of a host, if any.
    pub fn local(&self, host: &str) -> Option<&Arc<dyn LocalHandler>> {
        self.local.get(host)
    }

    /// Every routed host (for the hosts file instances get).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .keys()
            .chain(self.local.keys())
            .map(String::as_str)
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
