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
    allow_local: bool,
}

impl HttpForward {
    /// A forwarder using `client` (built by the server: timeouts, roots, and a resolver that applies
    /// [`is_local`] too); `allow_local` lets it reach loopback and link-local addresses.
    pub fn new(client: reqwest::Client, allow_local: bool) -> Arc<Self> {
        Arc::new(Self {
            client,
            allow_local,
        })
    }
}

/// Whether an address is this machine or its link (loopback, link-local such as a cloud's metadata
/// server at 169.254.169.254, unspecified): what an API config may not make the server call unless
/// the operator allows it. Private networks (10/8, 192.168/16, …) are allowed: on-premises backends
/// live there.
pub fn is_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some_and(|v4| is_local(v4.into()))
        }
    }
}

/// The refusal for a backend at a local address.
pub fn local_refused(host: &str) -> ProxyError {
    ProxyError::Unavailable(format!(
        "the backend {host} is a loopback or link-local address, which API configs may not reach (the server's operator can allow it with --api-gateway-local-backends)"
    ))
}

impl ExternalForward for HttpForward {
    fn forward(&self, req: Request<RequestBody>) -> Forwarded {
        let (client, allow_local) = (self.client.clone(), self.allow_local);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            parts.headers.remove(http::header::HOST);
            if !allow_local
                && let Some(ip) = parts
                    .uri
                    .host()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                && is_local(ip)
            {
                return Err(local_refused(&authority));
            }
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
