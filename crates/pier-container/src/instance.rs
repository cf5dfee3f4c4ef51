//! A running container instance: what the pool holds once [`crate::prepare::PreparedContainer::start`]
//! let its app run. Its end is its runtime process's end (the shim for gen2, `runsc run` for gen1).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use pier_runtime::logs::InstanceLog;
use pier_runtime::{Endpoint, ExitReason, Instance};
use tokio::sync::watch;

use crate::engine::Engine;

/// One container, started.
pub(crate) struct ContainerInstance {
    pub(crate) id: pier_model::InstanceId,
    pub(crate) container: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) engine: Engine,
    /// The process that forwards SIGTERM to the app (the shim, or `runsc run`).
    pub(crate) runtime_pid: i32,
    pub(crate) exit: watch::Receiver<Option<ExitReason>>,
    pub(crate) log: InstanceLog,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) times: pier_runtime::StartupTimes,
    /// Reads the container's cgroups (Pier's own for gen1, the runtime's for gen2).
    pub(crate) usage: Box<dyn Fn() -> Option<pier_runtime::Usage> + Send + Sync>,
}

#[async_trait]
impl Instance for ContainerInstance {
    fn startup_times(&self) -> pier_runtime::StartupTimes {
        self.times
    }

    fn usage(&self) -> Option<pier_runtime::Usage> {
        (self.usage)()
    }

    fn id(&self) -> &pier_model::InstanceId {
        &self.id
    }

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>> {
        self.exit.clone()
    }

    fn log_tail(&self, n: usize) -> Vec<String> {
        self.log.tail(n)
    }

    fn note(&self, line: &str) {
        self.log.system(line);
    }

    async fn stop(&self, grace: Duration) {
        let (engine, container, pid) = (
            self.engine.clone(),
            self.container.clone(),
            self.runtime_pid,
        );
        pier_runtime::stop_gracefully(
            &self.exit,
            &self.stopping,
            grace,
            &self.log,
            move || {
                tokio::spawn(async move { engine.terminate(&container, pid).await });
            },
            || async {
                if let Err(e) = self.engine.kill(&self.container, "KILL").await {
                    tracing::warn!(instance = %self.id, "killing the container failed: {e}");
                }
            },
        )
        .await;
    }
}
