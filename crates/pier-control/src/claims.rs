//! One host, one route: the last defense against one resource answering at another's address. Names
//! are shaped so that no two kinds of resource can form the same host (see `pier_model::UrlScheme`), but
//! if two routes ever claim one host anyway, neither is served: the host answers 503 with the reason
//! and the server logs an error, rather than routing one of them's callers (and their tokens) to the
//! other.

use std::collections::HashMap;
use std::sync::Arc;

use pier_gateway::{Backend, Filter, Route, RouteTable};

/// A route table being built, host by host.
#[derive(Default)]
pub(crate) struct Claims {
    table: RouteTable,
    /// Who holds each host so far, for the messages.
    holders: HashMap<String, String>,
}

fn describe(route: &Route) -> String {
    match &route.tag {
        Some(tag) => format!(
            "tag {tag} of service {} in project {}",
            route.service, route.project
        ),
        None => format!("service {} in project {}", route.service, route.project),
    }
}

impl Claims {
    /// Routes `host` to `route`, unless another route has it: then neither gets it.
    pub(crate) fn claim(&mut self, host: String, route: Arc<Route>, admission: &Arc<dyn Filter>) {
        let who = describe(&route);
        match self.holders.get(&host) {
            None => {
                self.holders.insert(host.clone(), who);
                self.table.insert(host, route);
            }
            Some(first) => {
                tracing::error!(
                    %host,
                    first = %first,
                    second = %who,
                    "two routes claim one host: serving neither; rename one of them"
                );
                let reason = format!(
                    "{host} is claimed by both {first} and {who}: Pier serves neither; rename one of them"
                );
                let access = self
                    .table
                    .get(&host)
                    .map_or_else(|| route.access.clone(), |r| r.access.clone());
                let blocked = Route::new(
                    route.project.clone(),
                    route.service.clone(),
                    None,
                    access,
                    admission.clone(),
                    Backend::Unavailable(reason),
                );
                self.table.insert(host, Arc::new(blocked));
            }
        }
    }

    /// The finished table.
    pub(crate) fn into_table(self) -> RouteTable {
        self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_gateway::{Access, AllowAll};

    fn route(service: &str, tag: Option<&str>) -> Arc<Route> {
        Arc::new(Route::new(
            "default".parse().unwrap(),
            service.parse().unwrap(),
            tag.map(|t| t.parse().unwrap()),
            Arc::new(Access::public()),
            Arc::new(AllowAll),
            Backend::Unavailable("no ready revision".into()),
        ))
    }

    #[test]
    fn a_shared_host_serves_neither_route() {
        let mut c = Claims::default();
        let admit: Arc<dyn Filter> = Arc::new(AllowAll);
        c.claim("b-1.example".into(), route("b", None), &admit);
        c.claim(
            "green---b-1.example".into(),
            route("b", Some("green")),
            &admit,
        );
        // Names cannot form this today; the table holds the line if they ever could.
        c.claim("green---b-1.example".into(), route("x", None), &admit);
        c.claim("green---b-1.example".into(), route("other", None), &admit);
        let t = c.into_table();
        let own = t
            .get("b-1.example")
            .unwrap()
            .unavailable()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !own.contains("claimed"),
            "an unshared host is untouched: {own}"
        );
        let shared = t.get("green---b-1.example").unwrap();
        let why = shared.unavailable().unwrap();
        assert!(why.contains("tag green of service b"), "{why}");
        assert!(why.contains("Pier serves neither"), "{why}");
    }
}
