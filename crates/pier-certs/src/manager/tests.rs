//! The manager with the local CA and a failing issuer in place of an ACME CA (pebble covers ACME in the
//! server's end-to-end tests).

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// An issuer that refuses every order (a CA that is down).
struct Down(AtomicU32);

impl Issuer for Down {
    fn name(&self) -> &str {
        "down"
    }
    fn issue<'a>(&'a self, _: &'a str) -> crate::BoxFuture<'a, Result<Issued, IssueError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(IssueError::Unavailable("connection refused".into())) })
    }
}

fn parts() -> (
    tempfile::TempDir,
    Arc<Store>,
    Arc<SniResolver>,
    Arc<dyn Issuer>,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(pier_tls::LocalCa::load_or_create(dir.path(), "test").unwrap());
    let store = Arc::new(Store::open_in_memory().unwrap());
    (
        dir,
        store,
        Arc::new(SniResolver::default()),
        Arc::new(crate::local::LocalCaIssuer::new(ca)),
    )
}

async fn until(
    manager: &CertManager,
    domain: &str,
    ok: impl Fn(&CertStatus) -> bool,
) -> CertStatus {
    let mut changes = manager.subscribe();
    for _ in 0..100 {
        let s = manager.status(domain);
        if ok(&s) {
            return s;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
    panic!("status of {domain} stayed {:?}", manager.status(domain));
}

/// Records a mapping of `domain` (certificates are stored only for mapped domains).
fn map(store: &Store, domain: &str) {
    let project: pier_model::ProjectName = "default".parse().unwrap();
    store.ensure_project(&project, || "abc123".into()).unwrap();
    store
        .put_domain_mapping(
            &pier_store::DomainMappingRecord {
                domain: domain.into(),
                project,
                target_kind: "service".into(),
                target_name: "shop".into(),
                certificate_mode: "AUTOMATIC".into(),
                certificate_files: None,
                created_at: String::new(),
            },
            true,
        )
        .unwrap();
}

fn want(domain: &str, mode: CertificateMode, ready: bool) -> Vec<Wanted> {
    vec![Wanted {
        domain: domain.into(),
        mode,
        ready,
        files: None,
    }]
}

#[tokio::test]
async fn a_ready_domain_gets_a_stored_served_certificate_and_an_unready_one_waits() {
    let (_dir, store, resolver, local) = parts();
    let m = CertManager::new(store.clone(), resolver.clone(), None, local);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(m.clone().run(stopped));
    map(&store, "shop.example.com");
    m.want(want("shop.example.com", CertificateMode::LocalCa, false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.status("shop.example.com"), CertStatus::Waiting);
    assert!(!resolver.has("shop.example.com"));

    m.want(want("shop.example.com", CertificateMode::LocalCa, true));
    until(&m, "shop.example.com", |s| {
        matches!(s, CertStatus::Ready { .. })
    })
    .await;
    assert!(resolver.has("shop.example.com"));
    assert_eq!(store.certificates().unwrap()[0].domain, "shop.example.com");

    // A restart serves what was stored, before any mapping is looked at.
    let resolver2 = Arc::new(SniResolver::default());
    let (_d, _, _, local2) = parts();
    let m2 = CertManager::new(store.clone(), resolver2.clone(), None, local2);
    assert_eq!(m2.load().unwrap(), 1);
    assert!(resolver2.has("shop.example.com"));

    // Unmapped: no longer served.
    m.want(Vec::new());
    assert!(!resolver.has("shop.example.com"));
    assert_eq!(m.status("shop.example.com"), CertStatus::Unmanaged);
    stop.send_replace(true);
}

#[tokio::test]
async fn a_ca_that_is_down_backs_off_and_says_why_and_a_stored_certificate_keeps_serving() {
    let (_dir, store, resolver, local) = parts();
    let down = Arc::new(Down(AtomicU32::new(0)));
    let m = CertManager::new(store.clone(), resolver.clone(), Some(down.clone()), local);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(m.clone().run(stopped));
    map(&store, "new.example.com");
    m.want(want("new.example.com", CertificateMode::Automatic, true));
    let s = until(&m, "new.example.com", |s| {
        matches!(s, CertStatus::Failed { .. })
    })
    .await;
    let CertStatus::Failed {
        reason,
        message,
        retry_at,
    } = s
    else {
        unreachable!()
    };
    assert_eq!(reason, "CertificateProvisionFailed");
    assert!(message.contains("connection refused"), "{message}");
    // The first retry is about a minute away, not a busy loop.
    let wait = retry_at.duration_since(SystemTime::now()).unwrap();
    assert!(
        wait > Duration::from_secs(40) && wait <= Duration::from_secs(72),
        "{wait:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(down.0.load(Ordering::SeqCst), 1);

    // A domain whose certificate (from the local CA) is stored, switched to a CA that is down: a new
    // certificate is ordered at once, fails, and the old one keeps serving meanwhile, with the reason.
    map(&store, "old.example.com");
    m.want(want("old.example.com", CertificateMode::LocalCa, true));
    until(&m, "old.example.com", |s| {
        matches!(s, CertStatus::Ready { .. })
    })
    .await;
    m.want(want("old.example.com", CertificateMode::Automatic, true));
    let s = until(&m, "old.example.com", |s| {
        matches!(
            s,
            CertStatus::Ready {
                renewal_error: Some(_),
                ..
            }
        )
    })
    .await;
    assert!(resolver.has("old.example.com"), "{s:?}");
    assert_eq!(down.0.load(Ordering::SeqCst), 2);
    stop.send_replace(true);
}

#[test]
fn due_follows_the_schedule() {
    let now = SystemTime::now();
    let mut e = Entry {
        mode: CertificateMode::Automatic,
        ready: true,
        jitter: 0.0,
        ..Entry::default()
    };
    assert_eq!(
        e.due(now),
        Some(SystemTime::UNIX_EPOCH),
        "no certificate: at once"
    );
    e.cert = Some((now, now + Duration::from_secs(300)));
    assert_eq!(e.due(now), Some(now + Duration::from_secs(200)));
    // The CA's renewal window wins over the third-of-lifetime rule.
    e.window = Some((now + Duration::from_secs(50), now + Duration::from_secs(60)));
    assert_eq!(e.due(now), Some(now + Duration::from_secs(50)));
    e.window = None;
    e.retry_at = Some(now + Duration::from_secs(1000));
    assert_eq!(
        e.due(now),
        Some(now + Duration::from_secs(1000)),
        "a back-off is respected"
    );
    e.in_flight = true;
    assert_eq!(e.due(now), None);
    e.in_flight = false;
    e.ready = false;
    assert_eq!(e.due(now), None);
    e.ready = true;
    e.mode = CertificateMode::None;
    assert_eq!(e.due(now), None);
}
