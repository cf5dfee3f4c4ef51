//! The seam between who builds routes and who reads them: a [`RoutePublisher`] and a [`RouteReader`]
//! made together by [`channel`]. Neither the control plane nor the gateway owns the other; each holds
//! its end.
//!
//! Two owners publish into one table, each replacing only its own part: the control plane publishes
//! services ([`RoutePublisher::publish`]); the server publishes Pier's own hosts, served in-process
//! ([`RoutePublisher::serve_local`]). Subscribers ([`RouteSubscriber`], for example the `/etc/hosts`
//! instances get) are given to [`channel`] and told of every table, in order, before readers see it.
//! Readers load the current table with one atomic read (`arc-swap`), no lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::LocalHandler;
use crate::routes::RouteTable;

/// Told of every published table, before the gateway serves it.
pub trait RouteSubscriber: Send + Sync + 'static {
    /// Called with each new table, in publication order, one at a time.
    fn published(&self, table: &RouteTable);

    /// Called once a table the control plane rebuilt is served: `took` from the start of its rebuild
    /// (reading the store included) to the swap, and the number of routed hosts in it.
    fn served(&self, _took: Duration, _hosts: usize) {}
}

struct Shared {
    current: ArcSwap<RouteTable>,
    /// The table both owners change, and the order of publications: one publication at a time.
    table: Mutex<RouteTable>,
    subscribers: Vec<Arc<dyn RouteSubscriber>>,
}

/// Publishes routing tables (held by the control plane and by the server).
#[derive(Clone)]
pub struct RoutePublisher {
    shared: Arc<Shared>,
}

/// Reads the current routing table (held by the gateway and its entrances).
#[derive(Clone)]
pub struct RouteReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RoutePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutePublisher").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RouteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteReader")
            .field("hosts", &self.shared.current.load().len())
            .finish()
    }
}

/// A publisher and a reader of one table, which starts empty; `subscribers` hear of every table.
pub fn channel(subscribers: Vec<Arc<dyn RouteSubscriber>>) -> (RoutePublisher, RouteReader) {
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(RouteTable::new()),
        table: Mutex::new(RouteTable::new()),
        subscribers,
    });
    (
        RoutePublisher {
            shared: shared.clone(),
        },
        RouteReader { shared },
    )
}

impl RoutePublisher {
    /// Replaces the services' routes (the hosts of `table`; its in-process hosts are ignored).
    /// `began` is when the rebuild that made `table` started: subscribers hear how long publishing took
    /// ([`RouteSubscriber::served`]).
    pub fn publish(&self, table: RouteTable, began: Instant) {
        let hosts = table.len();
        self.update(|current| current.replace_hosts(table));
        let took = began.elapsed();
        for s in &self.shared.subscribers {
            s.served(took, hosts);
        }
    }

    /// Serves `host` (lowercase, no port) in-process with `handler` from now on.
    pub fn serve_local(&self, host: String, handler: Arc<dyn LocalHandler>) {
        self.update(|current| current.insert_local(host, handler));
    }

    /// A reader of this table.
    pub fn reader(&self) -> RouteReader {
        RouteReader {
            shared: self.shared.clone(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut RouteTable)) {
        let mut table = self.shared.table.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut table);
        for s in &self.shared.subscribers {
            s.published(&table);
        }
        self.shared.current.store(Arc::new(table.clone()));
    }
}

impl RouteReader {
    /// The current table.
    pub fn current(&self) -> Arc<RouteTable> {
        self.shared.current.load_full()
    }

    /// The current table, for one request (cheaper than [`RouteReader::current`]; do not hold it
    /// across an await).
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.shared.current.load()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The tables it was told of, and the routed-host counts of the rebuilt ones served.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<String>>>, Mutex<Vec<usize>>);

    impl RouteSubscriber for Recorder {
        fn published(&self, table: &RouteTable) {
            let mut hosts: Vec<String> = table.hosts().map(str::to_owned).collect();
            hosts.sort();
            self.0.lock().unwrap().push(hosts);
        }

        fn served(&self, took: Duration, hosts: usize) {
            assert!(
                took >= Duration::from_millis(2),
                "{took:?} counts from the rebuild's start"
            );
            self.1.lock().unwrap().push(hosts);
        }
    }

    /// An in-process host that answers every request with an empty 200 (tests of the route seam).
    pub(crate) struct Nothing;
    impl LocalHandler for Nothing {
        fn call(
            &self,
            _: http::Request<hyper::body::Incoming>,
            _: std::net::SocketAddr,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = http::Response<crate::GatewayBody>> + Send>,
        > {
            Box::pin(async { http::Response::new(crate::GatewayBody::empty()) })
        }
    }

    fn route(service: &str) -> Arc<crate::Route> {
        Arc::new(crate::Route::new(
            "default".parse().unwrap(),
            service.parse().unwrap(),
            None,
            Arc::new(crate::Access::public()),
            Arc::new(crate::AllowAll),
            crate::routes::Backend::Unavailable("test".into()),
        ))
    }

    #[test]
    fn each_owner_replaces_only_its_part_and_subscribers_hear_first() {
        let recorder = Arc::new(Recorder::default());
        let (publisher, reader) = channel(vec![recorder.clone()]);
        assert!(reader.current().is_empty());
        publisher.serve_local("pier.localhost".into(), Arc::new(Nothing));
        let mut t = RouteTable::new();
        t.insert("a.pier.localhost".into(), route("a"));
        let began = Instant::now() - Duration::from_millis(2);
        publisher.publish(t, began);
        // A table from the control plane does not drop the server's own host, and a stray local
        // host in it is not served.
        let mut t = RouteTable::new();
        t.insert("b.pier.localhost".into(), route("b"));
        t.insert_local("stray.pier.localhost".into(), Arc::new(Nothing));
        publisher.publish(t, began);
        let now = reader.current();
        assert!(now.get("a.pier.localhost").is_none());
        assert!(now.get("b.pier.localhost").is_some());
        assert!(now.local("pier.localhost").is_some());
        assert!(now.local("stray.pier.localhost").is_none());
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                vec!["pier.localhost".to_owned()],
                vec!["a.pier.localhost".into(), "pier.localhost".into()],
                vec!["b.pier.localhost".into(), "pier.localhost".into()],
            ]
        );
        // Served counts only routed hosts, and only for the control plane's tables.
        assert_eq!(*recorder.1.lock().unwrap(), vec![1, 1]);
    }
}
