//! The store's conformance suite, run here against real SQLite databases (in memory and on disk).
//!
//! Every test gets its store from [`empty_store`] (or opens a file, for the tests of durability and
//! migrations that only mean something for SQLite): a second backend (PostgreSQL) passes by answering
//! these same calls the same way, in-transaction checks included.

use super::*;
use pier_model::TrafficKey;

fn p() -> ProjectName {
    ProjectName::default_project()
}
fn svc(s: &str) -> ServiceName {
    s.parse().unwrap()
}
fn template(cmd: &str) -> RevisionTemplate {
    RevisionTemplate {
        command: vec![cmd.to_owned()],
        ..Default::default()
    }
}

/// The backend under test, empty.
fn empty_store() -> Store {
    Store::open_in_memory().unwrap()
}

/// The backend under test with the default project.
fn store() -> Store {
    let s = empty_store();
    s.ensure_project(&p(), || "abc123".into()).unwrap();
    s
}

#[test]
fn project_hash_is_stable_and_unique() {
    let s = empty_store();
    let a = s.ensure_project(&p(), || "aaaaaa".into()).unwrap();
    let again = s.ensure_project(&p(), || "zzzzzz".into()).unwrap();
    assert_eq!(a, again, "an existing project keeps its hash");
    let mut hashes = vec!["aaaaaa".to_owned(), "bbbbbb".to_owned()].into_iter();
    let b = s
        .ensure_project(&"other".parse().unwrap(), || hashes.next().unwrap())
        .unwrap();
    assert_eq!(b.hash, "bbbbbb", "a taken hash is skipped");
}

#[test]
fn first_deploy_creates_service_and_numbered_revision() {
    let s = store();
    let (service, rev) = s
        .create_revision(
            &p(),
            &svc("hello"),
            &template("a"),
            &NewRevision::default(),
            "xyz",
        )
        .unwrap();
    assert_eq!(rev.name.as_str(), "hello-00001-xyz");
    assert_eq!(rev.state, RevisionState::Deploying);
    assert_eq!(service.latest_created, Some(rev.name.clone()));
    assert_eq!(service.latest_ready, None);
    let (_, rev2) = s
        .create_revision(
            &p(),
            &svc("hello"),
            &template("b"),
            &NewRevision::default(),
            "qqq",
        )
        .unwrap();
    assert_eq!(rev2.seq, 2);
    assert_eq!(rev2.name.as_str(), "hello-00002-qqq");
}

#[test]
fn ready_moves_latest_but_never_backwards() {
    let s = store();
    let wishes = NewRevision::default();
    let (_, r1) = s
        .create_revision(&p(), &svc("a"), &template("1"), &wishes, "aaa")
        .unwrap();
    let (_, r2) = s
        .create_revision(&p(), &svc("a"), &template("2"), &wishes, "bbb")
        .unwrap();
    let after2 = s.mark_ready(&p(), &r2.name).unwrap();
    assert_eq!(after2.latest_ready, Some(r2.name.clone()));
    // r1 finishing later must not take LATEST back.
    let after1 = s.mark_ready(&p(), &r1.name).unwrap();
    assert_eq!(after1.latest_ready, Some(r2.name));
}

#[test]
fn failed_revision_keeps_previous_serving() {
    let s = store();
    let w = NewRevision::default();
    let (_, r1) = s
        .create_revision(&p(), &svc("a"), &template("1"), &w, "aaa")
        .unwrap();
    s.mark_ready(&p(), &r1.name).unwrap();
    let (_, r2) = s
        .create_revision(&p(), &svc("a"), &template("2"), &w, "bbb")
        .unwrap();
    s.mark_failed(&p(), &r2.name, "exited with status 1", &["boom".into()])
        .unwrap();
    let service = s.service(&p(), &svc("a")).unwrap().unwrap();
    assert_eq!(service.latest_ready, Some(r1.name));
    let r2 = s.revision(&p(), &r2.name).unwrap().unwrap();
    assert_eq!(r2.state, RevisionState::Failed);
    assert_eq!(r2.log_tail, vec!["boom".to_owned()]);
}

#[test]
fn no_traffic_pins_latest_and_tag_lands_when_ready() {
    let s = store();
    let (_, r1) = s
        .create_revision(
            &p(),
            &svc("a"),
            &template("1"),
            &NewRevision::default(),
            "aaa",
        )
        .unwrap();
    s.mark_ready(&p(), &r1.name).unwrap();
    let wishes = NewRevision {
        no_traffic: true,
        tag: Some("green".parse().unwrap()),
        creator: Some("user:a@example.com".into()),
    };
    let (service, r2) = s
        .create_revision(&p(), &svc("a"), &template("2"), &wishes, "bbb")
        .unwrap();
    assert_eq!(
        service.traffic.percents(),
        vec![(TrafficKey::Revision(r1.name.clone()), 100)]
    );
    assert!(service.traffic.tags().is_empty(), "tag waits for readiness");
    let service = s.mark_ready(&p(), &r2.name).unwrap();
    assert_eq!(
        service.traffic.tags(),
        vec![("green".parse().unwrap(), TrafficKey::Revision(r2.name))]
    );
    assert_eq!(
        service.traffic.percents(),
        vec![(TrafficKey::Revision(r1.name), 100)]
    );
}

#[test]
fn interrupted_deploys_fail_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pier.db");
    let name = {
        let s = Store::open(&path).unwrap();
        s.ensure_project(&p(), || "abc123".into()).unwrap();
        let (_, r) = s
            .create_revision(
                &p(),
                &svc("a"),
                &template("1"),
                &NewRevision::default(),
                "aaa",
            )
            .unwrap();
        r.name
    };
    let s = Store::open(&path).unwrap();
    let failed = s.fail_interrupted_deploys("server restarted").unwrap();
    assert_eq!(failed, vec![name.clone()]);
    let r = s.revision(&p(), &name).unwrap().unwrap();
    assert_eq!(r.state, RevisionState::Failed);
    assert_eq!(r.message.as_deref(), Some("server restarted"));
}

#[test]
fn delete_revision_respects_check_and_resets_latest() {
    let s = store();
    let w = NewRevision::default();
    let (_, r1) = s
        .create_revision(&p(), &svc("a"), &template("1"), &w, "aaa")
        .unwrap();
    s.mark_ready(&p(), &r1.name).unwrap();
    let (_, r2) = s
        .create_revision(&p(), &svc("a"), &template("2"), &w, "bbb")
        .unwrap();
    s.mark_ready(&p(), &r2.name).unwrap();
    let refused = s.delete_revision(&p(), &r2.name, |_, _, _| {
        Err(StoreError::Conflict("serving".into()))
    });
    assert!(matches!(refused, Err(StoreError::Conflict(_))));
    assert!(
        s.revision(&p(), &r2.name).unwrap().is_some(),
        "refusal rolls back"
    );
    s.delete_revision(&p(), &r2.name, |_, _, _| Ok(())).unwrap();
    let service = s.service(&p(), &svc("a")).unwrap().unwrap();
    assert_eq!(service.latest_ready, Some(r1.name));
}

#[test]
fn delete_service_cascades() {
    let s = store();
    let (_, r) = s
        .create_revision(
            &p(),
            &svc("a"),
            &template("1"),
            &NewRevision::default(),
            "aaa",
        )
        .unwrap();
    let gone = s.delete_service(&p(), &svc("a")).unwrap();
    assert_eq!(gone, vec![r.name.clone()]);
    assert!(s.revision(&p(), &r.name).unwrap().is_none());
    assert!(matches!(
        s.delete_service(&p(), &svc("a")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn update_service_validates_inside_transaction() {
    let s = store();
    s.create_revision(
        &p(),
        &svc("a"),
        &template("1"),
        &NewRevision::default(),
        "aaa",
    )
    .unwrap();
    let bad = s.update_service(&p(), &svc("a"), |cur, _| {
        let mut new = cur.settings();
        new.traffic.0[0].percent = 10;
        new.ingress = pier_model::Ingress::Internal;
        Ok(new)
    });
    assert!(matches!(bad, Err(StoreError::Invalid(_))));
    let still = s.service(&p(), &svc("a")).unwrap().unwrap();
    assert_eq!(
        still.ingress,
        pier_model::Ingress::All,
        "a refused change leaves everything as it was"
    );
    let ok = s
        .update_service(&p(), &svc("a"), |cur, _| {
            let mut new = cur.settings();
            new.ingress = pier_model::Ingress::Internal;
            new.custom_audiences = vec!["aud".into()];
            new.invoker_iam_check = false;
            Ok(new)
        })
        .unwrap();
    assert_eq!(ok.ingress, pier_model::Ingress::Internal);
    assert_eq!(ok.custom_audiences, vec!["aud".to_owned()]);
    assert!(!ok.invoker_iam_check);
}

#[test]
fn reopening_keeps_data_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pier.db");
    {
        let s = Store::open(&path).unwrap();
        s.meta_or_insert("installation", || "one".into()).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.meta_or_insert("installation", || "two".into()).unwrap(),
        "one"
    );
}

#[test]
fn newer_schema_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pier.db");
    {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn version_1_public_services_become_invoker_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pier.db");
    {
        // A database as the first release left it.
        let mut c = Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute_batch(
            "INSERT INTO projects VALUES ('default', 'abc123', 'now'); \
             INSERT INTO services (project, name, public, traffic, created_at, updated_at) \
               VALUES ('default', 'pub', 1, '[{\"latestRevision\":true,\"percent\":100}]', 'now', 'now'); \
             INSERT INTO services (project, name, public, traffic, created_at, updated_at) \
               VALUES ('default', 'priv', 0, '[{\"latestRevision\":true,\"percent\":100}]', 'now', 'now');",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let p = s.policy("projects/default/services/pub").unwrap().unwrap();
    assert!(p.policy.contains("allUsers") && p.policy.contains("roles/run.invoker"));
    assert!(
        s.policy("projects/default/services/priv")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.service(&ProjectName::default(), &svc("pub"))
            .unwrap()
            .unwrap()
            .ingress,
        pier_model::Ingress::All
    );
}

#[test]
fn images_in_use_survive_pruning_and_credentials_round_trip() {
    let s = store();
    let d1 = format!("sha256:{}", "a".repeat(64));
    let d2 = format!("sha256:{}", "b".repeat(64));
    let (_, r1) = s
        .create_revision(
            &p(),
            &svc("web"),
            &template("a"),
            &NewRevision::default(),
            "aaa",
        )
        .unwrap();
    let (_, r2) = s
        .create_revision(
            &p(),
            &svc("web"),
            &template("b"),
            &NewRevision::default(),
            "bbb",
        )
        .unwrap();
    s.set_revision_image(
        &p(),
        &r1.name,
        &format!("localhost:5000/web@{d1}"),
        "localhost:5000/web:1",
        10,
    )
    .unwrap();
    s.set_revision_image(
        &p(),
        &r2.name,
        &format!("localhost:5000/web@{d2}"),
        "localhost:5000/web:2",
        20,
    )
    .unwrap();
    assert!(
        s.set_revision_image(&p(), &r2.name, "localhost:5000/web:2", "x", 1)
            .is_err()
    );
    assert_eq!(
        s.revision(&p(), &r1.name)
            .unwrap()
            .unwrap()
            .image_digest
            .as_deref(),
        Some(format!("localhost:5000/web@{d1}").as_str())
    );
    assert_eq!(s.images_in_use().unwrap(), vec![d1.clone(), d2.clone()]);
    assert!(s.delete_unused_images().unwrap().is_empty());

    s.delete_revision(&p(), &r1.name, |_, _, _| Ok(())).unwrap();
    let images = s.images().unwrap();
    let used: Vec<(String, u32)> = images
        .iter()
        .map(|i| (i.digest.clone(), i.used_by))
        .collect();
    assert!(used.contains(&(d1.clone(), 0)) && used.contains(&(d2.clone(), 1)));
    let gone = s.delete_unused_images().unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].digest, d1);
    assert_eq!(s.images().unwrap().len(), 1);

    s.set_registry_credential("localhost:5000", "alice", "s3cret")
        .unwrap();
    s.set_registry_credential("localhost:5000", "alice", "n3w")
        .unwrap();
    let c = s.registry_credential("localhost:5000").unwrap().unwrap();
    assert_eq!((c.username.as_str(), c.secret.as_str()), ("alice", "n3w"));
    assert!(
        !format!("{c:?}").contains("n3w"),
        "secrets stay out of debug output"
    );
    assert_eq!(s.registries().unwrap().len(), 1);
    s.delete_registry_credential("localhost:5000").unwrap();
    assert!(s.registry_credential("localhost:5000").unwrap().is_none());
    assert!(s.delete_registry_credential("localhost:5000").is_err());
}

#[test]
fn every_service_gets_its_own_id_block_and_freed_blocks_are_reused() {
    let s = store();
    let w = NewRevision::default();
    let blocks: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            s.create_revision(&p(), &svc(n), &template("x"), &w, "aaa")
                .unwrap()
                .0
                .id_block
        })
        .collect();
    assert_eq!(blocks, vec![0, 1, 2]);
    // A second revision keeps the service's block.
    let again = s
        .create_revision(&p(), &svc("b"), &template("y"), &w, "bbb")
        .unwrap()
        .0;
    assert_eq!(again.id_block, 1);
    s.delete_service(&p(), &svc("b")).unwrap();
    let d = s
        .create_revision(&p(), &svc("d"), &template("x"), &w, "ccc")
        .unwrap()
        .0;
    assert_eq!(d.id_block, 1, "the lowest free block");
    let e = s
        .create_revision(&p(), &svc("e"), &template("x"), &w, "ddd")
        .unwrap()
        .0;
    assert_eq!(e.id_block, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_face_answers_what_the_calls_answer() {
    let s = std::sync::Arc::new(store());
    let project = s
        .call(|s| s.ensure_project(&"other".parse().unwrap(), || "ffffff".into()))
        .await
        .unwrap();
    assert_eq!(project.hash, "ffffff");
    let err = s
        .call(|s| s.delete_service(&p(), &svc("nope")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    // A call that panics is an error of the store, not a crash of the caller.
    let err = s
        .call(|_| -> Result<()> { panic!("backend bug") })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[test]
fn a_domain_goes_to_the_project_that_proved_it_and_its_certificate_only_while_mapped() {
    let s = store();
    let other: ProjectName = "other".parse().unwrap();
    s.ensure_project(&other, || "def456".into()).unwrap();
    let mapping = |project: &ProjectName, target: &str| DomainMappingRecord {
        domain: "shop.example.com".into(),
        project: project.clone(),
        target_kind: "service".into(),
        target_name: target.into(),
        certificate_mode: "AUTOMATIC".into(),
        certificate_files: None,
        created_at: "now".into(),
    };
    let cert = CertificateRecord {
        domain: "shop.example.com".into(),
        chain_pem: "chain".into(),
        key_pem: "key".into(),
        not_before: 0,
        not_after: 1,
        issuer: "test".into(),
    };
    assert!(
        !s.put_certificate(&cert).unwrap(),
        "no mapping, no certificate"
    );
    // A project that never proved the domain maps it first...
    s.put_domain_mapping(&mapping(&other, "squat"), false)
        .unwrap();
    assert!(s.put_certificate(&cert).unwrap());
    // ...another that has not proved it either cannot take it...
    let e = s
        .put_domain_mapping(&mapping(&p(), "shop"), false)
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    // ...but one that proved a parent domain does, and the squatter's certificate goes with it.
    s.domain_verification(&p(), "example.com", || "t".into())
        .unwrap();
    s.mark_domain_verified(&p(), "example.com", "dns").unwrap();
    s.put_domain_mapping(&mapping(&p(), "shop"), false).unwrap();
    let now = s.domain_mappings(None).unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].project, p());
    assert!(s.certificates().unwrap().is_empty());
    // The owner keeps it against everyone, and within the project it moves only with force.
    s.domain_verification(&other, "shop.example.com", || "u".into())
        .unwrap();
    s.mark_domain_verified(&other, "shop.example.com", "dns")
        .unwrap();
    let e = s
        .put_domain_mapping(&mapping(&other, "squat"), true)
        .unwrap_err();
    assert!(e.to_string().contains("another project"), "{e}");
    let e = s
        .put_domain_mapping(&mapping(&p(), "web"), false)
        .unwrap_err();
    assert!(e.to_string().contains("--force-override"), "{e}");
    s.put_domain_mapping(&mapping(&p(), "web"), true).unwrap();
    assert_eq!(s.domain_mappings(Some(&p())).unwrap()[0].target_name, "web");
    assert!(s.delete_domain_mapping(&p(), "shop.example.com").unwrap());
    assert!(!s.delete_domain_mapping(&p(), "shop.example.com").unwrap());
}

#[test]
fn api_configs_are_immutable_and_gateways_pin_what_they_serve() {
    let s = store();
    let config = |name: &str| ApiConfigRecord {
        project: p(),
        api: "shop".into(),
        name: name.into(),
        spec: "swagger: '2.0'".into(),
        service_account: "compute@default.iam.pier.localhost".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    // A config needs its API; an API cannot be made twice; a config cannot be replaced.
    assert!(matches!(
        s.create_api_config(&config("v1")),
        Err(StoreError::NotFound(_))
    ));
    s.create_api(&p(), "shop").unwrap();
    assert!(matches!(
        s.create_api(&p(), "shop"),
        Err(StoreError::Conflict(_))
    ));
    s.create_api_config(&config("v1")).unwrap();
    let mut changed = config("v1");
    changed.spec = "openapi: 3.0.0".into();
    assert!(matches!(
        s.create_api_config(&changed),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.api_configs(Some(&p()), Some("shop")).unwrap()[0].spec,
        "swagger: '2.0'"
    );
    s.create_api_config(&config("v2")).unwrap();

    let mut gw = GatewayRecord {
        project: p(),
        name: "gw".into(),
        api: "shop".into(),
        config: "v1".into(),
        public: true,
        cors: None,
        created_at: String::new(),
        updated_at: String::new(),
    };
    s.create_gateway(&gw).unwrap();
    // What a gateway serves cannot be deleted, nor its API while configs exist.
    assert!(matches!(
        s.delete_api_config(&p(), "shop", "v1"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.delete_api(&p(), "shop"),
        Err(StoreError::Conflict(_))
    ));
    // A config that does not exist cannot be served.
    gw.config = "v9".into();
    assert!(s.update_gateway(&gw).is_err());
    gw.config = "v2".into();
    s.update_gateway(&gw).unwrap();
    assert_eq!(s.gateways(None).unwrap()[0].config, "v2");
    s.delete_api_config(&p(), "shop", "v1").unwrap();
    s.delete_gateway(&p(), "gw").unwrap();
    s.delete_api_config(&p(), "shop", "v2").unwrap();
    s.delete_api(&p(), "shop").unwrap();
}

#[test]
fn api_keys_keep_only_digests_and_change_in_place() {
    let s = store();
    let key = ApiKeyRecord {
        uid: "k-1".into(),
        project: p(),
        display_name: "mobile".into(),
        prefix: "AIzaABCDEFGH".into(),
        digest: "d1".into(),
        api_targets: vec!["shop".into()],
        created_at: "2026-01-01T00:00:00Z".into(),
        deleted_at: None,
    };
    s.create_api_key(&key).unwrap();
    // Two keys with one digest cannot exist.
    let mut twin = key.clone();
    twin.uid = "k-2".into();
    assert!(s.create_api_key(&twin).is_err());
    let revoked = s
        .update_api_key(&p(), "k-1", Some(true), None, None)
        .unwrap();
    assert!(revoked.deleted_at.is_some());
    let restored = s
        .update_api_key(
            &p(),
            "k-1",
            Some(false),
            Some(&["a".into(), "b".into()]),
            Some(("AIzaZZZZZZZZ", "d2")),
        )
        .unwrap();
    assert_eq!(restored.deleted_at, None);
    assert_eq!(restored.api_targets, vec!["a", "b"]);
    assert_eq!(
        (restored.prefix.as_str(), restored.digest.as_str()),
        ("AIzaZZZZZZZZ", "d2")
    );
    assert!(matches!(
        s.update_api_key(&p(), "k-9", Some(true), None, None),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn site_releases_need_every_file_and_roll_back_and_clone() {
    let s = store();
    let project = p();
    let acct = "compute@demo.iam.pier.localhost";
    let site = s.ensure_site(&p(), "shop", None, acct).unwrap();
    assert_eq!(site.service_account, acct);
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let files: std::collections::BTreeMap<String, String> = [
        ("/index.html".to_owned(), a.clone()),
        ("/app.js".to_owned(), b.clone()),
    ]
    .into();
    let v1 = s
        .create_site_version(&p(), "shop", "{}", &files, "user:a@x")
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(
        s.missing_site_files(&p(), &[&a, &b]).unwrap(),
        vec![a.clone(), b.clone()]
    );
    let release = |version, channel| crate::NewRelease {
        project: &project,
        site: "shop",
        channel,
        version,
        kind: "DEPLOY",
        message: "",
        by: "user:a@x",
        expires_at: None,
    };
    s.add_site_file(&p(), &a, 10).unwrap();
    let err = s
        .release_site_version(&release(v1, crate::LIVE))
        .unwrap_err();
    assert!(err.to_string().contains("1 file(s) not uploaded"), "{err}");
    s.add_site_file(&p(), &b, 20).unwrap();
    // Another project's uploads are not this project's.
    let other: ProjectName = "other".parse().unwrap();
    s.ensure_project(&other, || "ffffff".into()).unwrap();
    assert_eq!(
        s.missing_site_files(&other, &[&a]).unwrap(),
        vec![a.clone()]
    );
    s.release_site_version(&release(v1, crate::LIVE)).unwrap();
    let err = s.rollback_target(&p(), "shop").unwrap_err();
    assert!(err.to_string().contains("nothing to roll back"), "{err}");
    let v2 = s
        .create_site_version(&p(), "shop", "{\"cleanUrls\":true}", &files, "user:a@x")
        .unwrap();
    s.release_site_version(&release(v2, crate::LIVE)).unwrap();
    assert_eq!(s.rollback_target(&p(), "shop").unwrap(), 1);
    assert!(s.rollback_site(&p(), "shop", 2, "user:a@x").is_err());
    let back = s.rollback_site(&p(), "shop", 1, "user:a@x").unwrap();
    assert_eq!(
        (back.version, back.kind.as_str(), back.seq),
        (1, "ROLLBACK", 3)
    );
    // A preview channel, then cloned to live.
    let mut pr = release(v2, "pr-42");
    pr.expires_at = Some(4_000_000_000);
    s.release_site_version(&pr).unwrap();
    let channels = s.site_channels(Some(&p()), Some("shop")).unwrap();
    let by_name = |n: &str| channels.iter().find(|c| c.name == n).unwrap().clone();
    assert_eq!(by_name("live").version, Some(1));
    assert_eq!(by_name("pr-42").version, Some(2));
    assert_eq!(by_name("pr-42").expires_at, Some(4_000_000_000));
    let cloned = s
        .clone_site_release(&p(), ("shop", "pr-42"), ("shop", "live"), "user:a@x", None)
        .unwrap();
    assert_eq!((cloned.version, cloned.kind.as_str()), (2, "CLONE"));
    // To another site: a copy of the version.
    s.ensure_site(&p(), "blog", None, acct).unwrap();
    let copied = s
        .clone_site_release(&p(), ("shop", "live"), ("blog", "live"), "user:a@x", None)
        .unwrap();
    assert_eq!(copied.version, 1);
    assert_eq!(s.site_version(&p(), "blog", 1).unwrap().files, files);
    let pins: std::collections::BTreeMap<String, String> =
        [("api".to_owned(), "api-00001-abc".to_owned())].into();
    assert_eq!(s.pin_site_version(&p(), "shop", 1, &pins).unwrap(), pins);
    let other: std::collections::BTreeMap<String, String> =
        [("api".to_owned(), "api-00002-xyz".to_owned())].into();
    assert_eq!(
        s.pin_site_version(&p(), "shop", 1, &other).unwrap(),
        pins,
        "pins are fixed once"
    );
    assert_eq!(s.site_releases(&p(), "shop", "live").unwrap().len(), 4);
    assert!(s.delete_site_channel(&p(), "shop", "live").is_err());
    s.delete_site_channel(&p(), "shop", "pr-42").unwrap();
    s.delete_site(&p(), "shop").unwrap();
    assert!(s.site(&p(), "shop").is_err());
    assert_eq!(s.sites(Some(&p())).unwrap().len(), 1);
}
