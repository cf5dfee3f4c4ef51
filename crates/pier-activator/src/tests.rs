//! Activator tests. Instances come from `SocketRuntime`, a test double that "starts" an instance by
//! opening a real loopback listener in this process, so slot accounting, queueing and scaling run at full
//! speed; the process runtime itself is tested for real in its own crate and end to end.

use super::*;
use async_trait::async_trait;
use pier_runtime::{Endpoint, ExitReason, Instance, RuntimeError};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::watch;

#[derive(Default)]
struct SocketRuntime {
    started: AtomicU32,
    running: Arc<AtomicU32>,
    fail: bool,
    start_delay: Duration,
    /// Whether it makes sandboxes ahead of demand, how long that takes, whether it fails; what became
    /// of them.
    warm: bool,
    prepare_delay: Duration,
    prepare_fails: bool,
    sandboxes: Arc<Sandboxes>,
}

#[derive(Default)]
struct Sandboxes {
    /// Instance ids of the sandboxes made, in order.
    made: std::sync::Mutex<Vec<pier_model::InstanceId>>,
    started: AtomicU32,
    discarded: AtomicU32,
}

/// A sandbox of the test double: the listener opens when it starts.
struct SocketSandbox {
    spec: InstanceSpec,
    running: Arc<AtomicU32>,
    sandboxes: Arc<Sandboxes>,
}

#[async_trait]
impl pier_runtime::Prepared for SocketSandbox {
    fn id(&self) -> &pier_model::InstanceId {
        &self.spec.id
    }
    async fn start(self: Box<Self>) -> Result<Arc<dyn Instance>, RuntimeError> {
        self.sandboxes.started.fetch_add(1, Ordering::SeqCst);
        Ok(listen(self.spec, &self.running).await)
    }
    async fn discard(self: Box<Self>) {
        self.sandboxes.discarded.fetch_add(1, Ordering::SeqCst);
    }
}

async fn listen(spec: InstanceSpec, running: &Arc<AtomicU32>) -> Arc<dyn Instance> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::Tcp(l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    running.fetch_add(1, Ordering::SeqCst);
    Arc::new(SocketInstance {
        id: spec.id,
        endpoint,
        exit_tx: watch::channel(None).0,
        running: running.clone(),
        task,
    })
}

struct SocketInstance {
    id: pier_model::InstanceId,
    endpoint: Endpoint,
    exit_tx: watch::Sender<Option<ExitReason>>,
    running: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl Runtime for SocketRuntime {
    fn name(&self) -> &'static str {
        "socket-test-double"
    }
    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(RuntimeError::CommandNotFound {
                program: "nope".into(),
            });
        }
        tokio::time::sleep(self.start_delay).await;
        Ok(listen(spec, &self.running).await)
    }
    async fn prepare(
        &self,
        spec: InstanceSpec,
    ) -> Option<Result<Box<dyn pier_runtime::Prepared>, RuntimeError>> {
        if !self.warm {
            return None;
        }
        tokio::time::sleep(self.prepare_delay).await;
        if self.prepare_fails {
            return Some(Err(RuntimeError::Unsupported(
                "no room for a sandbox".into(),
            )));
        }
        self.sandboxes.made.lock().unwrap().push(spec.id.clone());
        Some(Ok(Box::new(SocketSandbox {
            spec,
            running: self.running.clone(),
            sandboxes: self.sandboxes.clone(),
        })))
    }
    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

#[async_trait]
impl Instance for SocketInstance {
    fn id(&self) -> &pier_model::InstanceId {
        &self.id
    }
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>> {
        self.exit_tx.subscribe()
    }
    fn log_tail(&self, _: usize) -> Vec<String> {
        vec!["test double".into()]
    }
    async fn stop(&self, _: Duration) {
        if self.exit_tx.borrow().is_none() {
            self.task.abort();
            self.running.fetch_sub(1, Ordering::SeqCst);
            let _ = self.exit_tx.send(Some(ExitReason::Stopped));
        }
    }
}

fn fast_config() -> ActivatorConfig {
    ActivatorConfig {
        tick: Duration::from_millis(20),
        scale_to_zero_grace: Duration::from_millis(300),
        pending_timeout: Duration::from_millis(300),
        stable_window: Duration::from_secs(2),
        panic_window: Duration::from_millis(200),
        stop_grace: Duration::from_millis(100),
        startup_timeout: Duration::from_secs(5),
        ..ActivatorConfig::default()
    }
}

fn template(concurrency: u32, min: u32, max: u32) -> Arc<RevisionTemplate> {
    Arc::new(RevisionTemplate {
        command: vec!["x".into()],
        container_concurrency: concurrency,
        min_instances: min,
        max_instances: max,
        timeout_seconds: 5,
        ..Default::default()
    })
}

fn pool_with(
    rt: Arc<SocketRuntime>,
    config: ActivatorConfig,
    t: Arc<RevisionTemplate>,
    serving: bool,
) -> (Arc<Activator>, Arc<RevisionPool>) {
    let act = Activator::new(config, Arc::new(rt));
    let pool = act
        .ensure_pool(
            &ProjectName::default(),
            &"svc".parse().unwrap(),
            &"svc-00001-abc".parse().unwrap(),
            t,
            pier_runtime::Isolation::default(),
            serving,
        )
        .unwrap();
    (act, pool)
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn cold_start_holds_the_request_then_serves_it() {
    let rt = Arc::new(SocketRuntime {
        start_delay: Duration::from_millis(50),
        ..Default::default()
    });
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(10, 0, 5), true);
    assert_eq!(pool.instance_count(), 0);
    let lease = pool.acquire(soon(5000)).await.unwrap();
    assert_eq!(rt.started.load(Ordering::SeqCst), 1);
    // The slot points at a live instance.
    lease.slot().endpoint().connect().await.unwrap();
}

#[tokio::test]
async fn concurrency_is_a_hard_limit_and_the_queue_is_fifo() {
    let rt = Arc::new(SocketRuntime::default());
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(2, 0, 1), true);
    let a = pool.acquire(soon(2000)).await.unwrap();
    let b = pool.acquire(soon(2000)).await.unwrap();
    let p2 = pool.clone();
    let third = tokio::spawn(async move { p2.acquire(soon(2000)).await });
    eventually("third request queued", || pool.queued() == 1).await;
    assert!(!third.is_finished());
    drop(a);
    let c = third.await.unwrap().unwrap();
    assert!(
        Arc::ptr_eq(c.slot(), b.slot()),
        "the freed slot went to the queued request"
    );
    assert_eq!(
        rt.started.load(Ordering::SeqCst),
        1,
        "max-instances 1 holds"
    );
}

#[tokio::test]
async fn least_outstanding_requests_spreads_load() {
    let rt = Arc::new(SocketRuntime::default());
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(10, 2, 2), true);
    eventually("two warm instances", || pool.instances().len() == 2).await;
    let leases: Vec<Lease> = futures_collect(&pool, 6).await;
    let first = leases
        .iter()
        .filter(|l| Arc::ptr_eq(l.slot(), leases[0].slot()))
        .count();
    assert_eq!(
        first, 3,
        "six requests over two instances split three and three"
    );
}

async fn futures_collect(pool: &Arc<RevisionPool>, n: usize) -> Vec<Lease> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.acquire(soon(2000)).await.unwrap());
    }
    out
}

#[tokio::test]
async fn burst_from_zero_scales_to_max_and_serves_everyone() {
    let rt = Arc::new(SocketRuntime {
        start_delay: Duration::from_millis(30),
        ..Default::default()
    });
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(10, 0, 20), true);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            let lease = p.acquire(soon(10_000)).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(lease);
            Ok::<(), AcquireError>(())
        }));
    }
    let mut errors = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 0);
    let started = rt.started.load(Ordering::SeqCst);
    assert!(started <= 20, "never above max-instances: {started}");
    assert!(started >= 15, "a burst uses the headroom: {started}");
}

#[tokio::test]
async fn full_queue_is_refused_at_once() {
    let rt = Arc::new(SocketRuntime::default());
    let config = ActivatorConfig {
        queue_limit: 2,
        ..fast_config()
    };
    let (_act, pool) = pool_with(rt, config, template(1, 0, 1), true);
    let _a = pool.acquire(soon(2000)).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let p = pool.clone();
        waiting.push(tokio::spawn(async move { p.acquire(soon(2000)).await }));
    }
    eventually("two queued", || pool.queued() == 2).await;
    assert_eq!(
        pool.acquire(soon(2000)).await.unwrap_err(),
        AcquireError::QueueFull
    );
}

#[tokio::test]
async fn start_failures_reach_waiting_requests() {
    let rt = Arc::new(SocketRuntime {
        fail: true,
        ..Default::default()
    });
    let (_act, pool) = pool_with(rt, fast_config(), template(1, 0, 1), true);
    let err = pool.acquire(soon(3000)).await.unwrap_err();
    match err {
        AcquireError::StartFailed(msg) => assert!(msg.contains("not found"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn at_max_instances_waiters_get_no_capacity() {
    let rt = Arc::new(SocketRuntime::default());
    let (_act, pool) = pool_with(rt, fast_config(), template(1, 0, 1), true);
    let _busy = pool.acquire(soon(5000)).await.unwrap();
    let err = pool.acquire(soon(5000)).await.unwrap_err();
    assert_eq!(err, AcquireError::NoCapacity { max: 1 });
    assert!(err.to_string().contains("no available instance"));
}

#[tokio::test]
async fn deadline_gives_timeout() {
    let rt = Arc::new(SocketRuntime::default());
    let config = ActivatorConfig {
        pending_timeout: Duration::from_secs(60),
        ..fast_config()
    };
    let (_act, pool) = pool_with(rt, config, template(1, 0, 1), true);
    let _busy = pool.acquire(soon(5000)).await.unwrap();
    assert_eq!(
        pool.acquire(soon(100)).await.unwrap_err(),
        AcquireError::Timeout
    );
    eventually("abandoned waiter is forgotten", || pool.queued() == 0).await;
}

#[tokio::test]
async fn idle_revisions_scale_to_zero_after_grace() {
    let rt = Arc::new(SocketRuntime::default());
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(10, 0, 3), true);
    drop(pool.acquire(soon(2000)).await.unwrap());
    assert_eq!(rt.running.load(Ordering::SeqCst), 1);
    let released = Instant::now();
    eventually("scaled to zero", || rt.running.load(Ordering::SeqCst) == 0).await;
    assert!(
        released.elapsed() >= Duration::from_millis(250),
        "not before the grace"
    );
    // And the next request cold-starts again.
    drop(pool.acquire(soon(2000)).await.unwrap());
    assert_eq!(rt.started.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_revision_at_rest_still_scales_a_deployed_instance_down_and_serves_requests() {
    let rt = Arc::new(SocketRuntime::default());
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(10, 0, 3), true);
    assert!(pool.at_rest(), "nothing to watch at zero");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A deploy's first instance, started while the scaler waits without ticking: it must still go
    // once idle past the grace.
    pool.start_one().await.unwrap();
    assert!(!pool.at_rest());
    assert_eq!(rt.running.load(Ordering::SeqCst), 1);
    eventually("the deploy's instance scaled to zero", || {
        rt.running.load(Ordering::SeqCst) == 0
    })
    .await;
    eventually("at rest again", || pool.at_rest()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A request wakes it: a cold start, then the instance goes again.
    drop(pool.acquire(soon(2000)).await.unwrap());
    assert_eq!(rt.started.load(Ordering::SeqCst), 2);
    eventually("scaled to zero after the request", || {
        rt.running.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn min_instances_apply_only_while_serving() {
    let rt = Arc::new(SocketRuntime::default());
    let (_act, pool) = pool_with(rt.clone(), fast_config(), template(10, 2, 3), true);
    eventually("two warm", || rt.running.load(Ordering::SeqCst) == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rt.running.load(Ordering::SeqCst), 2, "kept past the grace");
    pool.set_serving(false);
    eventually("released when traffic moves away", || {
        rt.running.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn closing_drains_in_flight_requests_first() {
    let rt = Arc::new(SocketRuntime::default());
    let (act, pool) = pool_with(rt.clone(), fast_config(), template(10, 0, 3), true);
    let lease = pool.acquire(soon(2000)).await.unwrap();
    let key = PoolKey {
        project: ProjectName::default(),
        revision: "svc-00001-abc".parse().unwrap(),
    };
    let act2 = act.clone();
    let closing = tokio::spawn(async move { act2.remove_pool(&key).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!closing.is_finished(), "waits for the request in flight");
    assert_eq!(rt.running.load(Ordering::SeqCst), 1);
    assert_eq!(
        pool.acquire(soon(100)).await.unwrap_err(),
        AcquireError::Closed,
        "new requests are refused"
    );
    drop(lease);
    closing.await.unwrap();
    assert_eq!(rt.running.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn deploy_probe_reports_failure_with_reason() {
    let rt = Arc::new(SocketRuntime {
        fail: true,
        ..Default::default()
    });
    let (_act, pool) = pool_with(rt, fast_config(), template(1, 0, 1), false);
    let (msg, _) = pool.start_one().await.unwrap_err();
    assert!(msg.contains("not found"));
}

fn warm_runtime() -> Arc<SocketRuntime> {
    Arc::new(SocketRuntime {
        warm: true,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_cold_start_takes_the_sandbox_made_after_the_last_start_and_a_closing_pool_discards_it() {
    let rt = warm_runtime();
    let config = ActivatorConfig {
        warm_sandboxes: 4,
        ..fast_config()
    };
    let (act, pool) = pool_with(rt.clone(), config, template(10, 0, 5), true);
    pool.start_one().await.unwrap();
    let sb = rt.sandboxes.clone();
    eventually("a sandbox after the first start", || {
        pool.live().warm_sandboxes == 1
    })
    .await;
    let made = sb.made.lock().unwrap()[0].clone();
    assert!(made.as_str().starts_with("svc-00001-abc-"), "{made}");
    eventually("scale to zero", || pool.instance_count() == 0).await;

    let lease = pool.acquire(soon(5000)).await.unwrap();
    assert_eq!(lease.slot().id(), &made, "the cold start used the sandbox");
    assert_eq!(sb.started.load(Ordering::SeqCst), 1);
    assert_eq!(
        rt.started.load(Ordering::SeqCst),
        1,
        "only the deploy's start began from nothing"
    );
    drop(lease);
    // The next start's sandbox is made once this one is ready.
    eventually("another sandbox", || sb.made.lock().unwrap().len() == 2).await;
    eventually("it is ready", || pool.live().warm_sandboxes == 1).await;

    let key = PoolKey {
        project: ProjectName::default(),
        revision: "svc-00001-abc".parse().unwrap(),
    };
    act.remove_pool(&key).await;
    assert_eq!(
        sb.discarded.load(Ordering::SeqCst),
        1,
        "the closed pool discarded its sandbox"
    );
}

#[tokio::test]
async fn the_budget_keeps_sandboxes_for_the_most_recently_started_revisions_only() {
    let rt = warm_runtime();
    let config = ActivatorConfig {
        warm_sandboxes: 1,
        ..fast_config()
    };
    let act = Activator::new(config, Arc::new(rt.clone()));
    let pool = |rev: &str| {
        act.ensure_pool(
            &ProjectName::default(),
            &"svc".parse().unwrap(),
            &rev.parse().unwrap(),
            template(10, 0, 5),
            pier_runtime::Isolation::default(),
            true,
        )
        .unwrap()
    };
    let (a, b) = (pool("svc-00001-aaa"), pool("svc-00002-bbb"));
    a.start_one().await.unwrap();
    eventually("a's sandbox", || a.live().warm_sandboxes == 1).await;
    b.start_one().await.unwrap();
    eventually("b's sandbox", || b.live().warm_sandboxes == 1).await;
    eventually("a lost its sandbox to b", || {
        a.live().warm_sandboxes == 0 && rt.sandboxes.discarded.load(Ordering::SeqCst) == 1
    })
    .await;
    // Each sandbox was made for its own revision.
    let made = rt.sandboxes.made.lock().unwrap().clone();
    assert!(made[0].as_str().starts_with("svc-00001-aaa-"), "{made:?}");
    assert!(made[1].as_str().starts_with("svc-00002-bbb-"), "{made:?}");

    // Off: no sandbox at all.
    let off = warm_runtime();
    let (_act, p) = pool_with(off.clone(), fast_config(), template(10, 0, 5), true);
    p.start_one().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(off.sandboxes.made.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_pool_closing_while_its_sandbox_is_made_waits_for_it_to_be_discarded() {
    let rt = Arc::new(SocketRuntime {
        warm: true,
        prepare_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let config = ActivatorConfig {
        warm_sandboxes: 4,
        ..fast_config()
    };
    let (act, pool) = pool_with(rt.clone(), config, template(10, 0, 5), true);
    pool.start_one().await.unwrap();
    // The sandbox is being made (300 ms) when the pool closes: close returns once it is gone.
    let key = PoolKey {
        project: ProjectName::default(),
        revision: "svc-00001-abc".parse().unwrap(),
    };
    act.remove_pool(&key).await;
    assert_eq!(rt.sandboxes.made.lock().unwrap().len(), 1);
    assert_eq!(rt.sandboxes.discarded.load(Ordering::SeqCst), 1);
    assert_eq!(pool.live().warm_sandboxes, 0);
}

#[tokio::test]
async fn a_sandbox_that_cannot_be_made_leaves_cold_starts_as_they_were() {
    let rt = Arc::new(SocketRuntime {
        warm: true,
        prepare_fails: true,
        ..Default::default()
    });
    let config = ActivatorConfig {
        warm_sandboxes: 4,
        ..fast_config()
    };
    let (_act, pool) = pool_with(rt.clone(), config, template(10, 0, 5), true);
    pool.start_one().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.live().warm_sandboxes, 0);
    eventually("scale to zero", || pool.instance_count() == 0).await;
    let lease = pool.acquire(soon(5000)).await.unwrap();
    lease.slot().endpoint().connect().await.unwrap();
    assert_eq!(
        rt.started.load(Ordering::SeqCst),
        2,
        "both starts began from nothing"
    );
}
