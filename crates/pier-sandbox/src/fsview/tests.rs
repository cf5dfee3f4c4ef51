//! Planning: what is refused before anything runs. The view itself is exercised by a real sandboxed
//! process in `launch/tests.rs`.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn workdirs_that_would_show_secrets_or_cannot_be_shown_are_refused() {
    let userns = UserNsCache::default();
    let view = HostView::new(&[], &PierFiles::default());
    let missing = view
        .plan(
            Path::new("/no/such/dir"),
            None,
            &[],
            true,
            &[],
            1,
            1,
            &userns,
        )
        .unwrap_err();
    assert!(matches!(missing, ViewError::NoWorkdir(_)), "{missing}");

    // Someone's home would show their keys.
    let root_home = view
        .plan(Path::new("/root"), None, &[], true, &[], 1, 1, &userns)
        .unwrap_err();
    assert!(root_home.to_string().contains("--workdir"), "{root_home}");

    // A folder inside a visible one that others cannot enter: Pier cannot open the way. (Made under
    // /opt, which the view shows as it is: under /tmp, which the view replaces, the way is rebuilt.)
    std::fs::create_dir_all("/opt").unwrap();
    let outer = tempfile::Builder::new()
        .prefix("pier-test-")
        .tempdir_in("/opt")
        .unwrap();
    let inner = outer.path().join("app");
    std::fs::create_dir(&inner).unwrap();
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let closed = view
        .plan(&inner, None, &[], true, &[], 1, 1, &userns)
        .unwrap_err();
    assert!(
        matches!(closed, ViewError::ClosedParent { .. })
            && closed.to_string().contains("chmod o+x"),
        "{closed}"
    );
}

#[test]
fn hidden_areas_are_real_directories_only() {
    let view = HostView::new(&[PathBuf::from("/no/such/data/dir")], &PierFiles::default());
    let hidden: Vec<&Path> = view.hidden().collect();
    assert!(hidden.contains(&Path::new("/root")));
    assert!(
        !hidden.contains(&Path::new("/var/run")),
        "a symlink to /run, hidden as /run"
    );
    assert!(!hidden.iter().any(|p| p.starts_with("/no/such")));
}
