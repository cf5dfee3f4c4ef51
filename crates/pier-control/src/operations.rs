//! Long-running operations (Google's shape, [`pier_model::operations`]) kept in memory: a deploy
//! reports its phases here as they happen, and callers wait for the next change (long polling).
//!
//! They are not durable: a server that stops fails the deploys it had in flight (see
//! [`crate::Platform::recover`]), and the revision's state, which is durable, says so. The newest
//! [`KEPT`] operations are kept, and none older than [`KEEP_FOR`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pier_model::operations::{OperationError, OperationMetadata, OperationView, Phase, PhaseState};
use tokio::sync::watch;

/// Most operations kept.
pub const KEPT: usize = 1000;
/// Longest an ended operation is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);

/// Every operation of the server.
#[derive(Default)]
pub struct Operations {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_name: HashMap<String, Arc<Operation>>,
    order: VecDeque<String>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations").finish_non_exhaustive()
    }
}

impl Operations {
    /// Starts an operation on `target` (of `service` in `project`) with `phases`, all pending.
    pub fn start(
        &self,
        project: &str,
        service: &str,
        verb: &str,
        target: String,
        phases: &[&str],
    ) -> Arc<Operation> {
        let id = random_id();
        let name = format!("projects/{project}/locations/local/operations/{id}");
        let view = OperationView {
            name: name.clone(),
            metadata: OperationMetadata {
                verb: verb.to_owned(),
                target,
                phases: phases
                    .iter()
                    .map(|p| Phase {
                        name: (*p).to_owned(),
                        state: PhaseState::Pending,
                        detail: None,
                        millis: None,
                    })
                    .collect(),
                create_time: pier_runtime::logs::timestamp(),
                end_time: None,
            },
            done: false,
            error: None,
            version: 1,
        };
        let op = Arc::new(Operation {
            project: project.to_owned(),
            service: service.to_owned(),
            state: watch::channel(view).0,
            started: Mutex::new(HashMap::new()),
            created: Instant::now(),
        });
        let mut kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        kept.by_name.insert(name.clone(), op.clone());
        kept.order.push_back(name);
        // Ended operations go, oldest first, past the count or the age; one still running stays.
        let ended = |kept: &Kept, n: &String| kept.by_name.get(n).is_none_or(|o| o.view().done);
        let old = |kept: &Kept, n: &String| {
            kept.by_name
                .get(n)
                .is_none_or(|o| o.created.elapsed() > KEEP_FOR)
        };
        let mut i = 0;
        while i < kept.order.len() {
            let name = kept.order[i].clone();
            let over = kept.order.len() > KEPT;
            if ended(&kept, &name) && (over || old(&kept, &name)) {
                kept.order.remove(i);
                kept.by_name.remove(&name);
            } else if !over {
                break;
            } else {
                i += 1;
            }
        }
        op
    }

    /// An operation of `project` by its id (the last segment of its name).
    pub fn get(&self, project: &str, id: &str) -> Option<Arc<Operation>> {
        let name = format!("projects/{project}/locations/local/operations/{id}");
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(&name)
            .cloned()
    }
}

/// One operation; every change bumps its version and wakes its waiters.
pub struct Operation {
    project: String,
    service: String,
    state: watch::Sender<OperationView>,
    started: Mutex<HashMap<String, Instant>>,
    created: Instant,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.state.borrow().name)
            .finish()
    }
}

impl Operation {
    /// Its name.
    pub fn name(&self) -> String {
        self.state.borrow().name.clone()
    }

    /// Its project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The service it works on (who may read it is decided there).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// How it stands now.
    pub fn view(&self) -> OperationView {
        self.state.borrow().clone()
    }

    /// Waits until its version passes `after` (or `timeout` passes), then returns how it stands.
    pub async fn wait_after(&self, after: u64, timeout: Duration) -> OperationView {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| v.version > after || v.done)).await;
        self.view()
    }

    fn change(&self, f: impl FnOnce(&mut OperationView)) {
        self.state.send_modify(|v| {
            if v.done {
                return;
            }
            f(v);
            v.version += 1;
        });
    }

    /// Phase `name` starts.
    pub fn begin(&self, name: &str) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Instant::now());
        self.change(|v| {
            if let Some(p) = v.metadata.phases.iter_mut().find(|p| p.name == name) {
                p.state = PhaseState::Running;
            }
        });
    }

    /// Phase `name` has gone this far.
    pub fn detail(&self, name: &str, detail: String) {
        self.change(|v| {
            if let Some(p) = v.metadata.phases.iter_mut().find(|p| p.name == name) {
                p.detail = Some(detail);
            }
        });
    }

    fn took(&self, name: &str) -> Option<u64> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|t| t.elapsed().as_millis() as u64)
    }

    /// Phase `name` ended well.
    pub fn end(&self, name: &str) {
        let millis = self.took(name);
        self.change(|v| {
            if let Some(p) = v.metadata.phases.iter_mut().find(|p| p.name == name) {
                p.state = PhaseState::Succeeded;
                p.millis = millis;
            }
        });
    }

    /// The operation ended well: every phase that did not run is marked succeeded too.
    pub fn succeed(&self) {
        self.change(|v| {
            v.done = true;
            v.metadata.end_time = Some(pier_runtime::logs::timestamp());
        });
    }

    /// The operation failed in its running phase (or its first pending one) with `why`; later phases
    /// are skipped.
    pub fn fail(&self, why: &str) {
        let running = {
            let v = self.state.borrow();
            v.metadata
                .phases
                .iter()
                .find(|p| p.state == PhaseState::Running)
                .or_else(|| {
                    v.metadata
                        .phases
                        .iter()
                        .find(|p| p.state == PhaseState::Pending)
                })
                .map(|p| p.name.clone())
        };
        let millis = running.as_deref().and_then(|n| self.took(n));
        self.change(|v| {
            let mut after = false;
            for p in &mut v.metadata.phases {
                if Some(&p.name) == running.as_ref() {
                    p.state = PhaseState::Failed;
                    p.detail = Some(why.to_owned());
                    p.millis = millis;
                    after = true;
                } else if after || p.state == PhaseState::Pending {
                    p.state = PhaseState::Skipped;
                }
            }
            v.done = true;
            v.error = Some(OperationError {
                // google.rpc.Code FAILED_PRECONDITION: the revision could not be made to serve.
                code: 9,
                message: why.to_owned(),
            });
            v.metadata.end_time = Some(pier_runtime::logs::timestamp());
        });
    }
}

/// Uniqueness, not secrecy: an operation's name grants nothing (reading it needs the project's read
/// permission).
fn random_id() -> String {
    crate::random_chars(16, b"abcdefghijklmnopqrstuvwxyz0123456789")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_move_and_waiters_wake() {
        let ops = Operations::default();
        let op = ops.start(
            "p",
            "s",
            "deploy",
            "projects/p/services/s/revisions/r".into(),
            &["Pulling image", "Starting the instance", "Routing traffic"],
        );
        let id = op.name().rsplit('/').next().unwrap().to_owned();
        assert!(ops.get("p", &id).is_some());
        assert!(
            ops.get("other", &id).is_none(),
            "an operation is found in its project only"
        );
        let v1 = op.view().version;
        let waiter = {
            let op = op.clone();
            tokio::spawn(async move { op.wait_after(v1, Duration::from_secs(5)).await })
        };
        op.begin("Pulling image");
        let seen = waiter.await.unwrap();
        assert!(seen.version > v1);
        assert_eq!(seen.metadata.phases[0].state, PhaseState::Running);
        op.detail("Pulling image", "1/2 layers".into());
        op.end("Pulling image");
        op.begin("Starting the instance");
        op.fail("the instance exited with code 3");
        let v = op.view();
        assert!(v.done);
        assert_eq!(v.error.as_ref().unwrap().code, 9);
        let states: Vec<PhaseState> = v.metadata.phases.iter().map(|p| p.state).collect();
        assert_eq!(
            states,
            [
                PhaseState::Succeeded,
                PhaseState::Failed,
                PhaseState::Skipped
            ]
        );
        assert_eq!(
            v.metadata.phases[1].detail.as_deref(),
            Some("the instance exited with code 3")
        );
        // A finished operation does not change again.
        let done = op.view().version;
        op.succeed();
        assert_eq!(op.view().version, done);
        // A waiter on a finished operation returns at once.
        let t = Instant::now();
        op.wait_after(done, Duration::from_secs(5)).await;
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
