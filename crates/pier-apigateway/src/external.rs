//! Backends outside Pier (`x-google-backend.address` naming any `http://` or `https://` URL): requests
//! streamed to them with an HTTP client that checks their certificates against the system's roots and
//! the CAs the operator adds (`pier server --oidc-ca`), answers streamed back.

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use pier_gateway::dispatch::Forwarded;
use pier_gateway::error::ProxyError;
use pier_gateway::upstream::RequestBody;
use pier_gateway::{ExternalForward, GatewayBody};

/// Forwards with a shared `reqwest` client (connection pools per host, HTTP/2 by ALPN).
#[derive(Clone, Debug)]
pub struct HttpForward {
    client: reqwest::Client,
}

impl HttpForward {
    /// A forwarder using `client` (built by the server: timeouts, roots, resolver).
    pub fn new(client: reqwest::Client) -> Arc<Self> {
        Arc::new(Self { client })
    }
}

impl ExternalForward for HttpForward {
    fn forward(&self, req: Request<RequestBody>) -> Forwarded {
        let client = self.client.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            parts.headers.remove(http::header::HOST);
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(reqwest::Body::wrap(body))
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(backend = %authority, "API gateway: backend failed: {e}");
                    ProxyError::Unavailable(format!("the backend at {authority} cannot be reached"))
                })?;
            let resp: Response<reqwest::Body> = resp.into();
            let (mut head, body) = resp.into_parts();
            pier_gateway::headers::strip_hop_by_hop(&mut head.headers, false);
            let body = body
                .map_err(|e| Box::new(e) as pier_gateway::upstream::BoxError)
                .boxed_unsync();
            Ok(Response::from_parts(head, GatewayBody::Boxed(body)))
        })
    }
}
