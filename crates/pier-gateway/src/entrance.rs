//! What the plain-HTTP listener answers before routing, for mapped domains (RFC 8555 §8.3, and the
//! mistakes users report of Knative's auto-TLS):
//!
//! 1. `GET /.well-known/acme-challenge/{token}` is answered first, on every host being validated, before
//!    any redirect or route: a challenge redirected to HTTPS would never validate.
//! 2. A mapped domain whose certificate is not issued yet answers 503 with `Retry-After`: never a
//!    redirect to a name whose handshake would fail, never the app's traffic in clear.
//! 3. Once it has one, the redirect to HTTPS as for every other host.

/// The prefix of HTTP-01 challenge paths (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Seconds a client is told to wait while a certificate is issued.
pub const CERTIFICATE_RETRY_AFTER_SECS: u32 = 30;

/// Pending challenges and issued certificates of mapped domains, as the gateway asks about them.
pub trait DomainEntrance: Send + Sync + 'static {
    /// The key authorization that answers HTTP-01 `token` on `host` (lowercase, no port), while pending.
    fn http01(&self, host: &str, token: &str) -> Option<String>;

    /// Whether `host` (a mapped domain) has a certificate installed.
    fn certified(&self, host: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use super::*;
    use crate::publish::tests::Nothing;
    use crate::routes::{Access, Backend, Route, RouteTable};
    use crate::{Gateway, GatewayConfig};

    /// One pending challenge for `shop.example.com`; its certificate arrives when the test says.
    struct Stub(AtomicBool);

    impl DomainEntrance for Stub {
        fn http01(&self, host: &str, token: &str) -> Option<String> {
            (host == "shop.example.com" && token == "tok").then(|| "tok.thumbprint".into())
        }
        fn certified(&self, host: &str) -> bool {
            host == "shop.example.com" && self.0.load(Ordering::SeqCst)
        }
    }

    /// A plain-HTTP listener (`serve`: --http-serve) of a gateway with one mapped domain.
    async fn listener(serve: bool, stub: Arc<Stub>) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let (publisher, reader) = crate::publish::channel(Vec::new());
        let service: pier_model::ServiceName = "shop".parse().unwrap();
        let route = Route::new(
            pier_model::ProjectName::default(),
            service,
            None,
            Arc::new(Access::public()),
            Arc::new(crate::AllowAll),
            Backend::Unavailable("the app".into()),
        );
        let mut table = RouteTable::new();
        table.insert(
            "shop.example.com".into(),
            Arc::new(route.for_mapped_domain()),
        );
        publisher.publish(table, std::time::Instant::now());
        publisher.serve_local("pier.localhost".into(), Arc::new(Nothing));
        let gw = Gateway::with_domains(GatewayConfig::default(), reader, stub);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(gw.serve_http(l, serve, rx));
        (addr, tx)
    }

    async fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .resolve(host, addr)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("http://{host}:{}{path}", addr.port()))
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn challenges_first_then_no_clear_traffic_to_a_mapped_domain_with_or_without_http_serve()
    {
        for serve in [false, true] {
            let stub = Arc::new(Stub(AtomicBool::new(false)));
            let (addr, _stop) = listener(serve, stub.clone()).await;
            let r = get(addr, "shop.example.com", "/.well-known/acme-challenge/tok").await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "tok.thumbprint");
            // Another host's challenge, or an unknown token: not answered as one.
            let r = get(addr, "other.example.com", "/.well-known/acme-challenge/tok").await;
            assert_eq!(r.status(), 404, "serve={serve}");
            // No certificate yet: 503 with Retry-After, never the app in clear, never a redirect.
            let r = get(addr, "shop.example.com", "/x").await;
            assert_eq!(r.status(), 503, "serve={serve}");
            assert_eq!(r.headers()["retry-after"], "30");
            // With one: to HTTPS.
            stub.0.store(true, Ordering::SeqCst);
            let r = get(addr, "shop.example.com", "/x?y=1").await;
            assert_eq!(r.status(), 302, "serve={serve}");
            assert_eq!(
                r.headers()["location"],
                "https://shop.example.com:8443/x?y=1"
            );
        }
        // Names under the base domain still redirect; names outside it mapped nowhere get 404.
        let (addr, _stop) = listener(false, Arc::new(Stub(AtomicBool::new(false)))).await;
        assert_eq!(get(addr, "web-abc.pier.localhost", "/").await.status(), 302);
        assert_eq!(get(addr, "nowhere.example.net", "/").await.status(), 404);
    }
}
