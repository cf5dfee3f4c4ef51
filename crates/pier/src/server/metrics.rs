//! `GET /metrics` on its own listener (`--metrics-addr`): Prometheus' text format, open on loopback,
//! behind a static bearer token (`--metrics-token-file`, compared in constant time) when an operator
//! exposes it. Anything else on that listener is a 404.

use super::*;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Refuses a non-loopback `--metrics-addr` without a token, before anything is made.
pub(super) fn check_flags(args: &ServerArgs) -> Result<()> {
    if let Some(addr) = args.metrics_addr.0
        && !addr.ip().is_loopback()
        && args.metrics_token_file.is_none()
    {
        bail!(
            "--metrics-addr {addr} is not a loopback address: pass --metrics-token-file FILE (a bearer token Prometheus sends with credentials_file), or keep it on loopback"
        );
    }
    if args.metrics_addr.0.is_none() && args.metrics_token_file.is_some() {
        bail!("--metrics-token-file needs --metrics-addr (metrics are off)");
    }
    if !(0.0..=1.0).contains(&args.trace_sample_ratio) {
        bail!(
            "--trace-sample-ratio {}: use a number from 0 (none) to 1 (every request)",
            args.trace_sample_ratio
        );
    }
    Ok(())
}

/// The bound listener and what it serves.
pub(super) struct Endpoint {
    listener: TcpListener,
    metrics: Arc<pier_metrics::Metrics>,
    token: Option<Arc<str>>,
}

impl Endpoint {
    /// Binds `--metrics-addr` and reads the token file (a busy port or an unreadable or empty token
    /// file stops the server from starting).
    pub(super) async fn bind(
        args: &ServerArgs,
        metrics: Arc<pier_metrics::Metrics>,
    ) -> Result<Self> {
        let addr = args
            .metrics_addr
            .0
            .ok_or_else(|| anyhow!("metrics are off"))?;
        let token = match &args.metrics_token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("--metrics-token-file {}: cannot read it", path.display())
                })?;
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        "--metrics-token-file {} can be read by other users: `chmod 600` it",
                        path.display()
                    );
                }
                let t = text.trim();
                if t.is_empty() {
                    bail!(
                        "--metrics-token-file {}: the file is empty; put a long random token in it (for example `openssl rand -hex 32`)",
                        path.display()
                    );
                }
                Some(Arc::from(t))
            }
        };
        let listener = bind(addr, "metrics", "--metrics-addr").await?;
        tracing::info!(
            "metrics at http://{}/metrics{}",
            listener.local_addr()?,
            if token.is_some() {
                " (bearer token required)"
            } else {
                ""
            }
        );
        Ok(Self {
            listener,
            metrics,
            token,
        })
    }

    /// The bound address.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Reports the edge cache's counters at each scrape.
    pub(super) fn add_edge_cache(&self, cache: Arc<pier_cache::EdgeCache>) {
        self.metrics.add_source(Arc::new(EdgeCacheCounters(cache)));
    }

    /// Serves until `stop` turns true.
    pub(super) async fn serve(self, mut stop: watch::Receiver<bool>) {
        let state = Arc::new((self.metrics, self.token));
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(scrape))
            .with_state(state);
        let _ = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    }
}

type Shared = Arc<(Arc<pier_metrics::Metrics>, Option<Arc<str>>)>;

/// Whether `Host` names this machine by address or as `localhost`: what a scraper on loopback sends.
/// Any other name reached a token-less endpoint through a name that resolved to loopback (DNS
/// rebinding: a web page's script in a local browser), and is refused.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without Host: no browser sends that.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn scrape(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let (metrics, token) = &*state;
    if token.is_none() && !loopback_host(&headers) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "without --metrics-token-file, /metrics answers only requests addressed to an IP address or localhost (Host), which keeps web pages from reading it through a name that resolves to this machine\n",
        )
            .into_response();
    }
    if let Some(want) = token {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .unwrap_or("");
        if !pier_metrics::token_matches(given, want) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "Unauthorized: send the token of --metrics-token-file as `Authorization: Bearer TOKEN`\n",
            )
                .into_response();
        }
    }
    let rendered = tokio::task::spawn_blocking({
        let metrics = metrics.clone();
        move || metrics.render()
    })
    .await;
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, pier_metrics::CONTENT_TYPE)], body).into_response(),
        // Never an empty 200, which a scraper would take for a target without series.
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be rendered: see the server's log\n",
        )
            .into_response(),
    }
}

/// The edge cache's hit and miss counters, read at scrape time.
struct EdgeCacheCounters(Arc<pier_cache::EdgeCache>);

impl pier_metrics::LiveSource for EdgeCacheCounters {
    fn counters(&self) -> Vec<pier_metrics::LiveCounters> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.0.stats();
        vec![
            pier_metrics::LiveCounters {
                name: "edge_cache_lookups",
                help: "Edge cache lookups by result: hit (answered from the cache), miss (fetched for it)",
                values: vec![
                    ("hit", s.hits.load(Relaxed)),
                    ("miss", s.misses.load(Relaxed)),
                ],
            },
            pier_metrics::LiveCounters {
                name: "edge_cache_hit_bytes",
                help: "Body bytes sent from the edge cache",
                values: vec![("hit", s.hit_bytes.load(Relaxed))],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_reach_a_tokenless_endpoint() {
        let with = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            loopback_host(&m)
        };
        for ok in [
            "127.0.0.1:9464",
            "localhost:9464",
            "[::1]:9464",
            "127.0.0.1",
            "LOCALHOST",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "evil.example:9464",
            "rebind.evil.example",
            "localhost.evil.example:9464",
        ] {
            assert!(!with(bad), "{bad}");
        }
    }
}
