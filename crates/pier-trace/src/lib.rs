//! Request traces with the official OpenTelemetry crates: a `SERVER` span per request, child spans for
//! the guard, the wait for an instance (with the cold start it waited for) and the upstream exchange
//! (`CLIENT`), exported in batches over OTLP/HTTP (protobuf) by the SDK's own thread.
//!
//! **Context.** A valid W3C `traceparent` the caller sends (W3C Trace Context §3.2) is the request
//! span's remote parent; the `traceparent` forwarded to the instance names the upstream span, so the
//! app's own spans join the same trace under Pier's. **Sampling** is parent-based: a caller's sampled
//! flag is honoured either way, and a trace Pier starts is sampled with probability
//! `--trace-sample-ratio`. The decision is taken before any span exists, so an unsampled request costs
//! no span, no attribute and no allocation: it is forwarded as without tracing (the caller's context
//! as it came, or a fresh unsampled one), and only sampled requests reach the SDK (whose sampler then
//! keeps them all).
//!
//! Attribute names follow OpenTelemetry's HTTP semantic conventions (`http.request.method`,
//! `url.path`, `url.scheme`, `server.address`, `http.response.status_code`, `network.protocol.version`,
//! `client.address`), plus Pier's own (`pier.project`, `pier.service`, `pier.revision`,
//! `pier.instance`, `pier.cold_start`).

use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use opentelemetry::Context;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanKind as Kind;

/// The tracer of one server: where spans go and how requests are sampled.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// The share of traces Pier starts that are sampled.
    ratio: f64,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

/// The OTLP/HTTP traces URL of a collector given as a base URL (`http://collector:4318`, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is) or as the full traces URL (ending in `/v1/traces`).
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim();
    let uri: http::Uri = e.parse().map_err(|err| {
        format!("--otlp-endpoint {e:?} is not a URL ({err}): use one such as http://127.0.0.1:4318")
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "--otlp-endpoint {e:?}: use an http:// or https:// URL of an OTLP/HTTP collector, such as http://127.0.0.1:4318"
        ));
    }
    Ok(if e.trim_end_matches('/').ends_with("/v1/traces") {
        e.to_owned()
    } else {
        format!("{}/v1/traces", e.trim_end_matches('/'))
    })
}

impl Tracing {
    /// Exports to the OTLP/HTTP collector at `endpoint` (see [`traces_url`]), sampling traces Pier
    /// starts with probability `ratio` (0.0 to 1.0). Spans are sent in batches from the SDK's own
    /// thread; a collector that is down loses spans, never requests.
    pub fn start(endpoint: &str, ratio: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "--trace-sample-ratio {ratio}: use a number from 0 (none) to 1 (every request)"
            ));
        }
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("--otlp-endpoint: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // Only sampled requests get spans (see the crate's docs).
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name("pier")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("pier");
        Ok(Self {
            provider,
            tracer,
            ratio,
        })
    }

    /// Starts a request's span, under the caller's `traceparent` when it sends a valid one, if the
    /// request is sampled (its caller's flag, else the ratio); `None` otherwise. `attrs` are made only
    /// for a sampled request.
    pub fn request(
        &self,
        traceparent: Option<&HeaderValue>,
        attrs: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<RequestTrace> {
        let remote = traceparent.and_then(|v| parse_traceparent(v.as_bytes()));
        let sampled = match &remote {
            Some(sc) => sc.is_sampled(),
            None => self.ratio > 0.0 && fastrand::f64() < self.ratio,
        };
        if !sampled {
            return None;
        }
        let parent = remote
            .map(|sc| Context::new().with_remote_span_context(sc))
            .unwrap_or_default();
        let span = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_attributes(attrs())
            .start_with_context(&self.tracer, &parent);
        Some(RequestTrace {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
        })
    }

    /// Sends what is buffered and stops the exporter (server shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("trace exporter shutdown: {e}");
        }
    }
}

/// One request's trace: its span, and the children it gets as the request goes.
pub struct RequestTrace {
    cx: Context,
    tracer: SdkTracer,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("span", self.cx.span().span_context())
            .finish()
    }
}

/// A child span, ended when [`Phase::end`] is called or it is dropped.
pub struct Phase {
    cx: Context,
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phase")
            .field("span", self.cx.span().span_context())
            .finish()
    }
}

impl Phase {
    /// Adds attributes.
    pub fn set(&self, attrs: Vec<KeyValue>) {
        self.cx.span().set_attributes(attrs);
    }

    /// Marks it failed with `why`.
    pub fn fail(&self, why: String) {
        self.cx.span().set_status(Status::error(why));
    }

    /// Ends it now.
    pub fn end(self) {
        self.cx.span().end();
    }

    /// The `traceparent` that makes this span the parent of what the receiver does (W3C Trace Context
    /// §3.2: version 00, trace id, this span's id, the sampled flag).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let sc = self.cx.span().span_context().clone();
        sc.is_valid().then(|| format_traceparent(&sc))?
    }
}

impl RequestTrace {
    /// Whether this request's spans are recorded (sampled).
    pub fn sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// A child span starting now.
    pub fn phase(&self, name: &'static str, kind: SpanKind) -> Phase {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, &self.cx);
        Phase {
            cx: self.cx.with_span(span),
        }
    }

    /// A child of `parent` that already happened, from `start` to `end` (a cold start the request
    /// waited for: it began before anyone knew this request would wait).
    pub fn past(
        &self,
        parent: &Phase,
        name: &'static str,
        start: Instant,
        end: Instant,
        attrs: Vec<KeyValue>,
    ) {
        if !self.sampled() {
            return;
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(system_time(start))
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent.cx);
        span.end_with_timestamp(system_time(end));
    }

    /// Ends the request's span with its answer's status (an error status for 5xx, as the HTTP
    /// conventions say for servers).
    pub fn end(self, status: u16, attrs: Vec<KeyValue>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attributes(attrs);
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end();
    }
}

/// An `Instant` as wall-clock time (now minus its age).
fn system_time(t: Instant) -> SystemTime {
    let now = Instant::now();
    let ago = now.saturating_duration_since(t);
    SystemTime::now() - ago
}

/// A `traceparent` value (W3C Trace Context §3.2.2): version 00 (or a later one read as 00),
/// lowercase hex trace id and parent id, neither all zeros, and flags.
pub fn parse_traceparent(v: &[u8]) -> Option<SpanContext> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2)
        || version == "ff"
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    // Version 00 has exactly four fields; a later version may add more (§3.2.4).
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

fn format_traceparent(sc: &SpanContext) -> Option<HeaderValue> {
    let flags = if sc.is_sampled() { "01" } else { "00" };
    HeaderValue::from_str(&format!("00-{}-{}-{flags}", sc.trace_id(), sc.span_id())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_the_w3c_grammar_says() {
        let sc =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        let unsampled =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
        // A later version with more fields is read; version 00 with more is not.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn endpoints_name_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/v1/traces").unwrap(),
            "https://otel.example/v1/traces"
        );
        assert!(
            traces_url("127.0.0.1:4318")
                .unwrap_err()
                .contains("http://")
        );
        assert!(traces_url("ftp://x").is_err());
    }

    #[test]
    fn children_are_parented_and_forwarded_contexts_name_the_child() {
        // No exporter needed: a provider without one still builds sampled spans. Ratio 0: only
        // callers' sampled flags start traces.
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .build();
        let t = Tracing {
            tracer: provider.tracer("test"),
            provider,
            ratio: 0.0,
        };
        let caller =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let req = t.request(Some(&caller), Vec::new).unwrap();
        assert!(
            req.sampled(),
            "the caller's sampled flag wins over the ratio"
        );
        let up = req.phase("upstream", SpanKind::Client);
        let tp = up.traceparent().unwrap();
        let tp = tp.to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(
            tp.ends_with("-01") && !tp.contains("00f067aa0ba902b7"),
            "{tp}"
        );
        // Without a caller's context the ratio decides: none here; a caller's unsampled flag is
        // honoured too. Neither makes a span, nor its attributes.
        assert!(
            t.request(None, || unreachable!("no attributes unsampled"))
                .is_none()
        );
        let unsampled =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(t.request(Some(&unsampled), Vec::new).is_none());
        let all = Tracing {
            tracer: t.tracer.clone(),
            provider: t.provider.clone(),
            ratio: 1.0,
        };
        assert!(all.request(None, Vec::new).unwrap().sampled());
    }
}
