//! The cache's rules, on real `http` values and bodies (no server).

use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use pier_gateway::GatewayBody;
use pier_gateway::cache::{Lookup, RouteCache};

use super::*;

fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn resp(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<GatewayBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.header("content-length", body.len())
        .body(GatewayBody::full(body))
        .unwrap()
}

async fn read(r: Response<GatewayBody>) -> (String, String) {
    let x = r
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (x, String::from_utf8(b.to_vec()).unwrap())
}

/// Fetches through the cache: a hit's body, or `origin`'s answer offered with the ticket.
async fn get(
    c: &ScopedCache,
    r: &http::request::Parts,
    origin: impl FnOnce() -> Response<GatewayBody>,
) -> (String, String) {
    match c.lookup(r) {
        Lookup::Hit(h) => read(*h).await,
        Lookup::Miss(t) => read(c.offer(t, origin())).await,
        Lookup::Bypass => {
            let mut o = origin();
            c.bypassed(&mut o);
            read(o).await
        }
        Lookup::Wait(_) => panic!("nothing else is fetching"),
    }
}

fn scope() -> Arc<ScopedCache> {
    ScopedCache::new(EdgeCache::new(1 << 20), "test/", Settings::default())
}

#[tokio::test]
async fn public_answers_are_kept_and_private_ones_never_shared() {
    let c = scope();
    let r = req(Method::GET, "/a?x=1", &[]);
    let public = || resp(200, &[("cache-control", "public, max-age=60")], "A");
    assert_eq!(get(&c, &r, public).await, ("miss".into(), "A".into()));
    assert_eq!(
        get(&c, &r, || panic!("a hit")).await,
        ("hit".into(), "A".into())
    );
    let head = req(Method::HEAD, "/a?x=1", &[]);
    assert!(matches!(c.lookup(&head), Lookup::Hit(_)));
    // Another query is another key.
    assert!(matches!(
        c.lookup(&req(Method::GET, "/a?x=2", &[])),
        Lookup::Miss(_)
    ));

    // A caller's token (a private service's) makes `max-age` alone not enough (RFC 9111 §3.5).
    let c = scope();
    let alice = req(
        Method::GET,
        "/me",
        &[("x-serverless-authorization", "Bearer alice")],
    );
    let mine = || resp(200, &[("cache-control", "max-age=60")], "alice's");
    assert_eq!(get(&c, &alice, mine).await.0, "miss");
    let bob = req(
        Method::GET,
        "/me",
        &[("x-serverless-authorization", "Bearer bob")],
    );
    assert_eq!(
        get(&c, &bob, || resp(
            200,
            &[("cache-control", "max-age=60")],
            "bob's"
        ))
        .await,
        ("bypass".into(), "bob's".into()),
        "passed through, never alice's"
    );
}

#[tokio::test]
async fn what_must_not_be_stored_is_not() {
    for headers in [
        vec![
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "a=1"),
        ],
        vec![
            ("cache-control", "public, max-age=60"),
            ("vary", "user-agent"),
        ],
        vec![("cache-control", "no-store")],
        vec![("cache-control", "private, max-age=60")],
    ] {
        let c = scope();
        let r = req(Method::GET, "/x", &[]);
        let h = headers.clone();
        get(&c, &r, move || resp(200, &h, "x")).await;
        assert!(
            !matches!(c.lookup(&r), Lookup::Hit(_)),
            "{headers:?} was stored"
        );
    }
    // A 404 without freshness lives briefly; with Accept-Encoding in Vary it is stored per encoding.
    let c = scope();
    let r = req(Method::GET, "/gone", &[]);
    get(&c, &r, || resp(404, &[], "no")).await;
    assert!(matches!(c.lookup(&r), Lookup::Hit(_)));
}

#[tokio::test]
async fn concurrent_misses_wait_for_one_fetch() {
    let c = scope();
    let r = req(Method::GET, "/slow", &[]);
    let Lookup::Miss(ticket) = c.lookup(&r) else {
        panic!("first is a miss")
    };
    let Lookup::Wait(wait) = c.lookup(&r) else {
        panic!("second waits")
    };
    let waiter = tokio::spawn(wait);
    let sent = c.offer(
        ticket,
        resp(200, &[("cache-control", "public, max-age=60")], "S"),
    );
    assert!(!waiter.is_finished());
    read(sent).await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(c.lookup(&r), Lookup::Hit(_)));
    // An answer that cannot be stored lets the next requests through at once.
    let r = req(Method::GET, "/nostore", &[]);
    let Lookup::Miss(t) = c.lookup(&r) else {
        panic!()
    };
    read(c.offer(t, resp(200, &[("cache-control", "no-store")], "n"))).await;
    assert!(matches!(c.lookup(&r), Lookup::Bypass));
}

#[tokio::test]
async fn invalidation_by_method_and_by_path_rules() {
    let cache = EdgeCache::new(1 << 20);
    let c = ScopedCache::new(cache.clone(), "site:p/s/live/v1", Settings::default());
    for p in ["/assets/a.js", "/assets/b.js", "/index"] {
        get(&c, &req(Method::GET, p, &[]), || {
            resp(200, &[("cache-control", "public, max-age=60")], "x")
        })
        .await;
    }
    let hit = |p: &str| matches!(c.lookup(&req(Method::GET, p, &[])), Lookup::Hit(_));
    assert!(hit("/assets/a.js") && hit("/index"));
    cache.invalidate("site:p/s/", "/assets/*");
    assert!(!hit("/assets/a.js") && !hit("/assets/b.js") && hit("/index"));
    // A POST invalidates its target once it succeeds (RFC 9111 §4.4).
    let post = req(Method::POST, "/index", &[]);
    let Lookup::Miss(t) = c.lookup(&post) else {
        panic!("a POST's answer comes back")
    };
    let (x, _) = read(c.offer(t, resp(500, &[], "failed"))).await;
    assert_eq!(x, "bypass");
    assert!(hit("/index"), "a failed POST changes nothing");
    let Lookup::Miss(t) = c.lookup(&post) else {
        panic!()
    };
    read(c.offer(t, resp(201, &[], "made"))).await;
    assert!(!hit("/index"), "a POST invalidates its target");
    assert!(path_matches("/x", "/x") && !path_matches("/x", "/x/y"));
}

#[tokio::test]
async fn a_stale_answer_stands_in_for_a_failed_fetch() {
    let c = scope();
    let r = req(Method::GET, "/s", &[]);
    get(&c, &r, || {
        resp(
            200,
            &[("cache-control", "public, max-age=0, stale-if-error=60")],
            "old",
        )
    })
    .await;
    let Lookup::Miss(t) = c.lookup(&r) else {
        panic!("stale: fetched again")
    };
    let (x, body) = read(c.on_error(t).expect("served stale")).await;
    assert_eq!((x.as_str(), body.as_str()), ("stale", "old"));
}

#[tokio::test]
async fn while_one_request_refreshes_the_others_get_the_stale_copy() {
    let c = scope();
    let r = req(Method::GET, "/swr", &[]);
    get(&c, &r, || {
        resp(
            200,
            &[(
                "cache-control",
                "public, max-age=0, stale-while-revalidate=60",
            )],
            "old",
        )
    })
    .await;
    let Lookup::Miss(t) = c.lookup(&r) else {
        panic!("the first request after expiry refreshes")
    };
    let Lookup::Hit(stale) = c.lookup(&r) else {
        panic!("the next gets the stale copy at once")
    };
    assert_eq!(read(*stale).await, ("stale".into(), "old".into()));
    read(c.offer(
        t,
        resp(200, &[("cache-control", "public, max-age=60")], "new"),
    ))
    .await;
    assert!(matches!(c.lookup(&r), Lookup::Hit(_)));
}

#[tokio::test]
async fn a_site_keeps_only_what_is_public() {
    let c = ScopedCache::new(
        EdgeCache::new(1 << 20),
        "site:p/s/",
        Settings {
            require_public: true,
            session_key: true,
            ..Settings::default()
        },
    );
    let r = req(Method::GET, "/api/x", &[("cookie", "__session=a")]);
    get(&c, &r, || {
        resp(200, &[("cache-control", "max-age=60")], "x")
    })
    .await;
    assert!(
        !matches!(c.lookup(&r), Lookup::Hit(_)),
        "max-age alone is not public"
    );
    get(&c, &r, || {
        resp(200, &[("cache-control", "public, max-age=60")], "x")
    })
    .await;
    // (passed through for a few seconds after the first; a new key shows the rule)
    let r2 = req(Method::GET, "/api/y", &[("cookie", "__session=a")]);
    get(&c, &r2, || {
        resp(200, &[("cache-control", "public, max-age=60")], "y")
    })
    .await;
    assert!(matches!(c.lookup(&r2), Lookup::Hit(_)));
    let other = req(Method::GET, "/api/y", &[("cookie", "__session=b")]);
    assert!(
        !matches!(c.lookup(&other), Lookup::Hit(_)),
        "another session, another key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_memory_evicts_comes_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = EdgeCache::with_disk(16 << 10, dir.path().join("cache"), 1 << 20).unwrap();
    let c = ScopedCache::new(cache.clone(), "test/", Settings::default());
    let body = "x".repeat(3000);
    let paths: Vec<String> = (0..20).map(|i| format!("/p{i}")).collect();
    for p in &paths {
        let b = body.clone();
        let r = req(Method::GET, p, &[]);
        let Lookup::Miss(t) = c.lookup(&r) else {
            panic!("{p}: a miss")
        };
        let resp = Response::builder()
            .header("cache-control", "public, max-age=60")
            .header("content-length", b.len())
            .body(GatewayBody::full(b))
            .unwrap();
        read(c.offer(t, resp)).await;
        cache.entries.run_pending_tasks();
    }
    assert!(cache.bytes() <= 16 << 10, "memory stays within its bound");
    // The writer thread works in the background.
    let mut on_disk = 0;
    for _ in 0..100 {
        on_disk = paths
            .iter()
            .filter(|p| cache.on_disk(&c.key(&req(Method::GET, p, &[]))))
            .count();
        if on_disk > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(on_disk > 0, "evicted answers went to disk");
    let p = paths
        .iter()
        .find(|p| {
            cache.on_disk(&c.key(&req(Method::GET, p, &[])))
                && cache.get(&c.key(&req(Method::GET, p, &[]))).is_none()
        })
        .expect("one answer only on disk");
    let r = req(Method::GET, p, &[]);
    let Lookup::Wait(load) = c.lookup(&r) else {
        panic!("read back first")
    };
    load.await;
    let Lookup::Hit(h) = c.lookup(&r) else {
        panic!("then a hit")
    };
    assert_eq!(read(*h).await, ("hit".into(), body.clone()));
    // Invalidation reaches the disk too.
    cache.invalidate("test/", "/*");
    assert!(
        paths
            .iter()
            .all(|p| !cache.on_disk(&c.key(&req(Method::GET, p, &[]))))
    );
}
