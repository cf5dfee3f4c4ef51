//! Metadata server tests over real sockets: an endpoint on a loopback listener stands in for one opened
//! inside an instance's namespace (that only the instance can connect there is tested end to end).

use super::*;

struct FakeTokens;

/// Tokens for any account; the audiences `https://refused.example` and `https://down.example` get the
/// two kinds of refusal.
impl TokenSource for FakeTokens {
    fn id_token(&self, sa: &str, aud: &str) -> Result<String, TokenRefusal> {
        match aud {
            "https://refused.example" => {
                Err(TokenRefusal::Refused("that audience is not yours".into()))
            }
            "https://down.example" => Err(TokenRefusal::Unavailable("keys unreadable".into())),
            _ => Ok(format!("id-token-for:{sa}:{aud}")),
        }
    }
    fn access_token(&self, sa: &str) -> Result<(String, u64), TokenRefusal> {
        Ok((format!("access-token-for:{sa}"), 3599))
    }
}

#[tokio::test]
async fn the_accounts_refusals_are_403_and_the_servers_faults_503() {
    let (srv, id) = server();
    let addr = open(&srv, &id, "api@default.iam.pier.localhost", "default");
    let path = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=";
    let (code, body, _) = get(addr, &format!("{path}https://refused.example"), true, &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("that audience is not yours"), "{body}");
    let (code, body, _) = get(addr, &format!("{path}https://down.example"), true, &[]).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("retry"), "{body}");
}

fn server() -> (Arc<MetadataServer>, InstanceId) {
    let id: InstanceId = "svc-00001-abc-xyz12".parse().unwrap();
    (MetadataServer::new(Arc::new(FakeTokens)), id)
}

/// Serves `id`'s endpoint on a fresh loopback listener; returns its address.
fn open(srv: &MetadataServer, id: &InstanceId, account: &str, project: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    srv.open_in_namespace(listener, id, account, project)
        .unwrap();
    addr
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
    let (srv, id) = server();
    let addr = open(&srv, &id, "api@default.iam.pier.localhost", "default");
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
async fn ssrf_guards_are_refused() {
    let (srv, id) = server();
    let addr = open(&srv, &id, "api@x", "default");
    let path = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=a";
    let (code, body, _) = get(addr, path, false, &[]).await;
    assert_eq!(code, 403);
    assert!(body.contains("Metadata-Flavor"));
    let (code, body, _) = get(addr, path, true, &[("X-Forwarded-For", "1.2.3.4")]).await;
    assert_eq!(code, 403);
    assert!(body.contains("X-Forwarded-For"));
    for h in ["Forwarded", "X-Real-IP"] {
        let (code, _, _) = get(addr, path, true, &[(h, "for=1.2.3.4")]).await;
        assert_eq!(code, 403, "{h}");
    }
}
