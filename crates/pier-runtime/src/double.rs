//! A test double for instances, named as such: an instance that is a task of this process listening on
//! a loopback port, for tests of the layers above the runtimes (the gateway, the control plane). The
//! real runtimes are tested with real processes and containers. Built with the `test-double` feature.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{Endpoint, ExitReason, Instance};

/// An instance that is `task`, reached at `endpoint`; stopping it aborts the task.
pub struct TaskInstance {
    id: pier_model::InstanceId,
    endpoint: Endpoint,
    exit: watch::Sender<Option<ExitReason>>,
    task: tokio::task::JoinHandle<()>,
}

impl TaskInstance {
    /// Wraps a task already serving at `endpoint`.
    pub fn new(
        id: pier_model::InstanceId,
        endpoint: Endpoint,
        task: tokio::task::JoinHandle<()>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            endpoint,
            exit: watch::channel(None).0,
            task,
        })
    }
}

#[async_trait]
impl Instance for TaskInstance {
    fn id(&self) -> &pier_model::InstanceId {
        &self.id
    }
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>> {
        self.exit.subscribe()
    }
    fn log_tail(&self, _: usize) -> Vec<String> {
        Vec::new()
    }
    async fn stop(&self, _: Duration) {
        self.task.abort();
        let _ = self.exit.send(Some(ExitReason::Stopped));
    }
}
