//! ACME Renewal Information against a fake directory (named as such: Debian's pebble 2.4 has no ARI,
//! so nothing real can answer it here). The fake is an in-process `HttpClient` that serves a directory,
//! with or without `renewalInfo`, and the renewal-info resource of RFC 9773 §4.2.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesBody, BytesResponse, HttpClient};

use super::*;

const DIRECTORY: &str = "https://acme.fake.test/dir";

/// The fake directory; it records the paths asked for.
struct FakeDirectory {
    ari: bool,
    asked: Arc<Mutex<Vec<String>>>,
}

struct Body(Option<Bytes>);

#[async_trait::async_trait]
impl BytesBody for Body {
    async fn into_bytes(
        &mut self,
    ) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.0.take().unwrap_or_default())
    }
}

impl HttpClient for FakeDirectory {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let path = req.uri().path().to_owned();
        self.asked.lock().unwrap().push(path.clone());
        let mut resp = http::Response::builder().header("content-type", "application/json");
        let body = if path == "/dir" {
            let mut dir = serde_json::json!({
                "newNonce": "https://acme.fake.test/nonce",
                "newAccount": "https://acme.fake.test/account",
                "newOrder": "https://acme.fake.test/order",
            });
            if self.ari {
                dir["renewalInfo"] = "https://acme.fake.test/renewal-info".into();
            }
            dir.to_string()
        } else if path.starts_with("/renewal-info/") {
            resp = resp.header("retry-after", "21600");
            r#"{"suggestedWindow":{"start":"2030-01-02T00:00:00Z","end":"2030-01-03T00:00:00Z"}}"#
                .to_owned()
        } else {
            resp = resp.status(404);
            r#"{"type":"urn:ietf:params:acme:error:malformed","detail":"no such resource"}"#
                .to_owned()
        };
        let (parts, ()) = resp.body(()).unwrap().into_parts();
        Box::pin(async move {
            Ok(BytesResponse {
                parts,
                body: Box::new(Body(Some(Bytes::from(body)))),
            })
        })
    }
}

/// An issuer whose account for the fake directory is already in the store.
fn issuer(ari: bool) -> (AcmeIssuer, Arc<Mutex<Vec<String>>>) {
    use base64::Engine;
    let store = Arc::new(Store::open_in_memory().unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let creds = serde_json::json!({
        "id": "https://acme.fake.test/account/1",
        "key_pkcs8": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der()),
        "directory": DIRECTORY,
    });
    store
        .set_meta(&format!("acme-account:{DIRECTORY}"), &creds.to_string())
        .unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let issuer = AcmeIssuer::with_http_client(
        AcmeConfig {
            directory: DIRECTORY.into(),
            email: None,
            ca_file: None,
            validation: Validation::Http01,
            timeout: Duration::from_secs(5),
        },
        store,
        Challenges::new(),
        Box::new(FakeDirectory {
            ari,
            asked: asked.clone(),
        }),
    );
    (issuer, asked)
}

fn certificate() -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = pier_tls::LocalCa::load_or_create(dir.path(), "fake CA").unwrap();
    ca.issue(
        &["shop.example.com".into()],
        Duration::from_secs(90 * 86_400),
    )
    .unwrap()
    .chain_pem
}

#[tokio::test]
async fn the_cas_renewal_window_is_read_from_its_renewal_information() {
    let (issuer, asked) = issuer(true);
    let w = issuer
        .renewal_window(&certificate())
        .await
        .expect("a window");
    let at = |s: &str| -> std::time::SystemTime {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .into()
    };
    assert_eq!(w.start, at("2030-01-02T00:00:00Z"));
    assert_eq!(w.end, at("2030-01-03T00:00:00Z"));
    let again = w.ask_again.as_secs();
    assert!(
        (21_590..=21_600).contains(&again),
        "the CA's Retry-After, 6 hours: {again}"
    );
    // The certificate is named by its issuer's key identifier and its serial (RFC 9773 §4.1).
    let asked = asked.lock().unwrap().clone();
    let ari = asked
        .iter()
        .find(|p| p.starts_with("/renewal-info/"))
        .unwrap();
    assert!(
        ari.trim_start_matches("/renewal-info/").contains('.'),
        "{ari}"
    );
}

#[tokio::test]
async fn a_ca_without_renewal_information_gives_no_window() {
    let (issuer, asked) = issuer(false);
    assert_eq!(issuer.renewal_window(&certificate()).await, None);
    assert!(
        !asked
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.starts_with("/renewal-info")),
        "nothing asked of a resource the CA does not offer"
    );
}
