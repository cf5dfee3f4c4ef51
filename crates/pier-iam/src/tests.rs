//! Identity service tests on an in-memory store: the directory the gateway checks tokens against
//! follows the store, whatever order concurrent changes finish in.

use super::*;
use pier_identity::keys::{KeyRing, RotationPolicy};
use std::sync::atomic::{AtomicBool, Ordering};

fn service() -> (tempfile::TempDir, Arc<IdentityService>) {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(KeyRing::open(dir.path(), RotationPolicy::default()).unwrap());
    let issuer = Arc::new(Issuer::new("https://pier.localhost:8443", ring));
    let store = Arc::new(Store::open_in_memory().unwrap());
    store
        .ensure_project(&ProjectName::default(), || "0123456789ab".into())
        .unwrap();
    let ids = IdentityService::new(store, issuer, "pier.localhost").unwrap();
    (dir, ids)
}

/// Defect: reloads read the store in several calls and published whatever finished last, so a
/// reload that read the store before a delete could publish after it and bring the key back.
/// Many policies make each reload long enough for deletes to land inside it.
#[test]
fn a_deleted_key_never_comes_back_under_concurrent_changes() {
    let (_dir, ids) = service();
    let project = ProjectName::default();
    for i in 0..300 {
        let service: ServiceName = format!("svc-{i}").parse().unwrap();
        ids.modify_policy(&Resource::Service(project.clone(), service), None, |p| {
            p.add("roles/run.invoker", &Member::AllUsers)
                .map(|_| ())
                .map_err(|e| ControlError::Internal(e.to_string()))
        })
        .unwrap();
    }
    let sa = ids
        .create_service_account(&project, "racer-one", None)
        .unwrap()
        .email;
    let keys: Vec<String> = (0..24)
        .map(|_| ids.create_key(&sa).unwrap().private_key_id)
        .collect();

    let deleting = AtomicBool::new(true);
    let came_back = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // Other changes keep reloading the directory all along.
        for _ in 0..2 {
            s.spawn(|| {
                while deleting.load(Ordering::SeqCst) {
                    ids.reload().unwrap();
                }
            });
        }
        s.spawn(|| {
            for id in &keys {
                ids.delete_key(&sa, id).unwrap();
                // Once the delete has returned, the key is gone for good.
                for _ in 0..5 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    if ids.directory().active_keys.contains(id) {
                        came_back.lock().unwrap().push(id.clone());
                        break;
                    }
                }
            }
            deleting.store(false, Ordering::SeqCst);
        });
    });
    let came_back = came_back.into_inner().unwrap();
    assert!(
        came_back.is_empty(),
        "{} of {} deleted keys were valid again after their delete",
        came_back.len(),
        keys.len()
    );
    assert!(
        keys.iter()
            .all(|k| !ids.directory().active_keys.contains(k))
    );
}
