//! Metadata server tests over real sockets. The caller check is a test double here (it trusts the test
//! process as the instance, or not); the real check, by socket owner, is tested in the process runtime and
//! end to end.

use super::*;

struct FakeTokens;

impl TokenSource for FakeTokens {
    fn id_token(&self, sa: &str, aud: &str) -> Result<String, String> {
        Ok(format!("id-token-for:{sa}:{aud}"))
    }
    fn access_token(&self, sa: &str) -> Result<(String, u64), String> {
        Ok((format!("access-token-for:{sa}"), 3599))
    }
}

fn server(trusted: bool) -> (Arc<MetadataServer>, InstanceId) {
    let id: InstanceId = "svc-00001-abc-xyz12".parse().unwrap();
    let me = id.clone();
    let peers: PeerCheck = Arc::new(move |_| trusted.then(|| me.clone()));
    (MetadataServer::new(Arc::new(FakeTokens), peers), id)
}

async fn get(
    addr: SocketAddr,
    path: &str,
    flavor: bool,
    extra: &[(&str, &str)],
) -> (u16, String, bool) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if flavor {
        req = req.header("Metadata-Flavor", "Google");
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let flavored = r
        .headers()
        .get("metadata-flavor")
        .is_some_and(|v| v == "Google");
    (r.status().as_u16(), r.text().await.unwrap(), flavored)
}

#[tokio::test]
async fn serves_what_google_auth_asks_for() {
    let (srv, id) = server(true);
    let addr = srv
        .open(&id, "api@default.iam.pier.localhost", "default")
        .unwrap();
    let (code, _, flavored) = get(addr, "/", true, &[]).await;
    assert_eq!(code, 200);
    assert!(flavored, "google-auth's ping wants Metadata-Flavor: Google");
    let (code, body, _) = get(
        addr,
        "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://b.example&format=full",
        true,
        &[],
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "id-token-for:api@default.iam.pier.localhost:https://b.example"
        )
    );
    let (_, body, _) = get(
        addr,
        "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
        true,
        &[],
    )
    .await;
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["email"], "api@default.iam.pier.localhost");
    let (_, body, _) = get(
        addr,
        "/computeMetadata/v1/instance/service-accounts/default/token",
        true,
        &[],
    )
    .await;
    let tok: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(
        get(addr, "/computeMetadata/v1/project/project-id", true, &[])
            .await
            .1,
        "default"
    );
    assert!(
        get(addr, "/computeMetadata/v1/instance/region", true, &[])
            .await
            .1
            .contains("/regions/")
    );
    assert_eq!(
        get(
            addr,
            "/computeMetadata/v1/instance/service-accounts/default/email",
            true,
            &[]
        )
        .await
        .1,
        "api@default.iam.pier.localhost"
    );
    assert_eq!(
        get(addr, "/computeMetadata/v1/nope", true, &[]).await.0,
        404
    );
    assert_eq!(
        get(
            addr,
            "/computeMetadata/v1/instance/service-accounts/other@x/email",
            true,
            &[]
        )
        .await
        .0,
        404,
        "another account's details are not served"
    );
    assert_eq!(
        get(
            addr,
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            true,
            &[]
        )
        .await
        .0,
        400
    );
    srv.close(&id);
    assert_eq!(srv.open_count(), 0);
}

#[tokio::test]
async fn ssrf_guards_and_strangers_are_refused() {
    let (srv, id) = server(true);
    let addr = srv.open(&id, "api@x", "default").unwrap();
    let path = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=a";
    let (code, body, _) = get(addr, path, false, &[]).await;
    assert_eq!(code, 403);
    assert!(body.contains("Metadata-Flavor"));
    let (code, body, _) = get(addr, path, true, &[("X-Forwarded-For", "1.2.3.4")]).await;
    assert_eq!(code, 403);
    assert!(body.contains("X-Forwarded-For"));

    let (srv2, id2) = server(false);
    let addr2 = srv2.open(&id2, "api@x", "default").unwrap();
    let (code, body, _) = get(addr2, path, true, &[]).await;
    assert_eq!(code, 403);
    assert!(body.contains("only the instance it belongs to"));
    assert_eq!(get(addr2, "/", true, &[]).await.0, 403);
}
