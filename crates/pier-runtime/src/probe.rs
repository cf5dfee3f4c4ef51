//! Probes: when a new instance is ready, and whether a running one still answers.
//!
//! The startup probe is a TCP connect on `PORT` unless the revision sets another
//! ([`pier_model::Probe`]: TCP, HTTP GET, or gRPC health check). Pier polls fast whatever the probe's
//! `periodSeconds` says (every 100 µs for the first 20 ms, every millisecond up to a second, then every
//! 25 ms): a cold start is on a request's path, so every poll interval is latency. The probe fails when
//! its whole window passes without a success (`initialDelaySeconds + failureThreshold ×
//! periodSeconds`, the longest Cloud Run would wait), or at once when the instance exits.
//!
//! A liveness probe ([`watch_liveness`]) checks every `periodSeconds` after `initialDelaySeconds`, each
//! check bounded by `timeoutSeconds`, and reports once `failureThreshold` checks in a row fail.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pier_model::probe::{Check, Probe};
use tokio::sync::watch;

use crate::{Endpoint, ExitReason};

/// Why an instance never became ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// It ended before listening.
    Exited(ExitReason),
    /// It did not listen in time (the default probe).
    Timeout(Duration),
    /// The revision's startup probe never passed in its window.
    Failed {
        /// What was checked, for messages.
        check: String,
        /// The window, in seconds.
        window: u64,
        /// The last check's failure.
        last: String,
    },
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Exited(r) => write!(f, "the instance {r} before listening on PORT"),
            ProbeFailure::Timeout(t) => write!(
                f,
                "the instance did not listen on PORT within {}s: make sure the app listens on 0.0.0.0:$PORT",
                t.as_secs()
            ),
            ProbeFailure::Failed {
                check,
                window,
                last,
            } => write!(
                f,
                "the startup probe ({check}) did not pass within {window}s (last: {last}): fix the app, or give it more time with --startup-probe's periodSeconds and failureThreshold"
            ),
        }
    }
}

/// Describes a check for messages: `tcp :8080`, `GET :8080/ready`, `grpc :8080 "svc"`.
pub fn describe(check: &Check) -> String {
    match check {
        Check::Tcp { port } => format!("tcp :{port}"),
        Check::Http { port, path, .. } => format!("GET :{port}{path}"),
        Check::Grpc { port, service } => format!("grpc health :{port} {service:?}"),
    }
}

/// Why one check failed: what the app answered, or that it did not. The text is what users read in a
/// failed deploy's reason, so it names the answer, not Pier's internals.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The port refused or the connection failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The app broke HTTP (or HTTP/2 for gRPC).
    #[error("{0}")]
    Protocol(#[source] hyper::Error),
    /// The request could not be built (a header value the probe names is invalid).
    #[error("{0}")]
    Request(#[source] hyper::http::Error),
    /// The app answered with a status outside 200..400.
    #[error("HTTP {0}")]
    Status(u16),
    /// The gRPC call failed with this `grpc-status`.
    #[error("grpc-status {0}")]
    GrpcStatus(u32),
    /// The health service answered another status than SERVING.
    #[error("health status {0} (SERVING is 1)")]
    NotServing(u64),
    /// The health service's answer had no status.
    #[error("no health status in the answer")]
    NoHealthStatus,
    /// Nothing came back within the attempt's time.
    #[error("no answer within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

/// Runs one check against the instance, within `timeout`.
pub async fn check(
    endpoint: &Endpoint,
    check: &Check,
    timeout: Duration,
) -> Result<(), CheckError> {
    match tokio::time::timeout(timeout, run_check(endpoint, check)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout(timeout)),
    }
}

async fn run_check(endpoint: &Endpoint, check: &Check) -> Result<(), CheckError> {
    match check {
        Check::Tcp { port } => endpoint
            .with_port(*port)
            .connect()
            .await
            .map(drop)
            .map_err(CheckError::Connect),
        Check::Http {
            port,
            path,
            headers,
        } => {
            let stream = endpoint
                .with_port(*port)
                .connect()
                .await
                .map_err(CheckError::Connect)?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(CheckError::Protocol)?;
            tokio::spawn(conn);
            let mut req = hyper::Request::get(path.as_str())
                .header(hyper::header::HOST, format!("localhost:{port}"))
                .header(hyper::header::USER_AGENT, "pier-probe");
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req
                .body(Full::new(Bytes::new()))
                .map_err(CheckError::Request)?;
            let resp = send.send_request(req).await.map_err(CheckError::Protocol)?;
            let status = resp.status().as_u16();
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(CheckError::Status(status))
            }
        }
        Check::Grpc { port, service } => {
            let stream = endpoint
                .with_port(*port)
                .connect()
                .await
                .map_err(CheckError::Connect)?;
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(CheckError::Protocol)?;
            tokio::spawn(conn);
            let req = hyper::Request::post(format!(
                "http://localhost:{port}/grpc.health.v1.Health/Check"
            ))
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header(hyper::header::TE, "trailers")
            .header(hyper::header::USER_AGENT, "pier-probe")
            .body(Full::new(Bytes::from(health_request(service))))
            .map_err(CheckError::Request)?;
            let resp = send.send_request(req).await.map_err(CheckError::Protocol)?;
            let head_status = grpc_status(resp.headers());
            let collected = resp
                .into_body()
                .collect()
                .await
                .map_err(CheckError::Protocol)?;
            let status = collected
                .trailers()
                .and_then(grpc_status)
                .or(head_status)
                .unwrap_or(2);
            if status != 0 {
                return Err(CheckError::GrpcStatus(status));
            }
            match health_status(collected.to_bytes()) {
                Some(1) => Ok(()),
                Some(s) => Err(CheckError::NotServing(s)),
                None => Err(CheckError::NoHealthStatus),
            }
        }
    }
}

fn grpc_status(h: &hyper::HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A `grpc.health.v1.HealthCheckRequest` (field 1: the service name), length-prefixed for gRPC.
fn health_request(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                msg.push(b);
                break;
            }
            msg.push(b | 0x80);
        }
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed
}

/// The `status` (field 1, a varint) of a length-prefixed `HealthCheckResponse`; 0 when absent, as
/// protobuf leaves default values out.
fn health_status(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    let msg = body.get(..len)?;
    let mut i = 0;
    while i < msg.len() {
        let key = msg[i];
        i += 1;
        let (value, used) = varint(&msg[i..])?;
        match key {
            0x08 => return Some(value),
            k if k & 7 == 0 => i += used,
            k if k & 7 == 2 => i += used + value as usize,
            _ => return None,
        }
    }
    Some(0)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Sleeps `d`. tokio's timer counts whole milliseconds, so the sub-millisecond pauses of a cold start's
/// first polls sleep on a blocking thread instead (the kernel's timers are precise to tens of
/// microseconds); longer ones use the timer.
async fn precise_sleep(d: Duration) {
    if d < Duration::from_millis(1) {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    } else {
        tokio::time::sleep(d).await;
    }
}

/// Waits until the instance passes its startup probe (`probe`, or a TCP connect on `port` within
/// `default_timeout` when the revision sets none), the instance exits, or the probe's window passes.
/// Returns how long it took.
pub async fn wait_ready(
    endpoint: &Endpoint,
    mut exit: watch::Receiver<Option<ExitReason>>,
    probe: Option<&Probe>,
    port: u16,
    default_timeout: Duration,
) -> Result<Duration, ProbeFailure> {
    let start = Instant::now();
    let (the_check, window, attempt_timeout, delay) = match probe {
        Some(p) => (
            p.check(port),
            Duration::from_secs(
                u64::from(p.initial_delay())
                    + u64::from(p.failure_threshold()) * u64::from(p.period()),
            ),
            Duration::from_secs(u64::from(p.timeout())),
            Duration::from_secs(u64::from(p.initial_delay())),
        ),
        None => (
            Check::Tcp { port },
            default_timeout,
            default_timeout,
            Duration::ZERO,
        ),
    };
    if !delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = exit.wait_for(Option::is_some) => {}
        }
    }
    // The last answer the app gave, for the failure message. An attempt cut short by the end of the
    // window says nothing about the app, so it does not replace an earlier, whole answer.
    let mut last = String::new();
    loop {
        if let Some(reason) = exit.borrow().clone() {
            return Err(ProbeFailure::Exited(reason));
        }
        let elapsed = start.elapsed();
        let left = window.saturating_sub(elapsed);
        let this_timeout = attempt_timeout.min(left.max(Duration::from_millis(1)));
        match tokio::time::timeout(this_timeout, run_check(endpoint, &the_check)).await {
            Ok(Ok(())) => return Ok(start.elapsed()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) if this_timeout < attempt_timeout && !last.is_empty() => {}
            Err(_) => last = CheckError::Timeout(this_timeout).to_string(),
        }
        let elapsed = start.elapsed();
        if elapsed >= window {
            return Err(match probe {
                None => ProbeFailure::Timeout(window),
                Some(_) => ProbeFailure::Failed {
                    check: describe(&the_check),
                    window: window.as_secs(),
                    last: std::mem::take(&mut last),
                },
            });
        }
        let pause = if elapsed < Duration::from_millis(20) {
            Duration::from_micros(100)
        } else if elapsed < Duration::from_secs(1) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(25)
        };
        let pause = pause.min(window - elapsed);
        tokio::select! {
            _ = precise_sleep(pause) => {}
            changed = exit.changed() => {
                if changed.is_err() {
                    // The watcher is gone: treat as exited without a status.
                    return Err(ProbeFailure::Exited(exit.borrow().clone().unwrap_or(ExitReason::Stopped)));
                }
            }
        }
    }
}

/// Checks a running instance every `periodSeconds` (after `initialDelaySeconds`) until
/// `failureThreshold` checks in a row fail; returns why. Runs until then, or until the caller drops it.
pub async fn watch_liveness(endpoint: &Endpoint, probe: &Probe, port: u16) -> String {
    let the_check = probe.check(port);
    let period = Duration::from_secs(u64::from(probe.period()));
    let timeout = Duration::from_secs(u64::from(probe.timeout()));
    tokio::time::sleep(Duration::from_secs(u64::from(probe.initial_delay()))).await;
    let mut failures = 0;
    loop {
        match check(endpoint, &the_check, timeout).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= probe.failure_threshold() {
                    return format!(
                        "the liveness probe ({}) failed {failures} times in a row (last: {e})",
                        describe(&the_check)
                    );
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_encode_and_decode() {
        assert_eq!(health_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            health_request("ab"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(health_status(serving), Some(1));
        assert_eq!(health_status(Bytes::from_static(&[0, 0, 0, 0, 0])), Some(0));
        assert_eq!(health_status(Bytes::from_static(&[1, 0])), None);
    }

    /// An app that answers 503 after 400 ms: the attempt the window's end cuts short must not hide
    /// the app's real answer behind "no answer".
    #[tokio::test]
    async fn a_failed_probe_reports_the_apps_last_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        let probe = Probe::from_flag(
            "httpGet.path=/ready,periodSeconds=1,failureThreshold=1",
            pier_model::probe::ProbeKind::Startup,
        )
        .unwrap();
        let (_tx, exit) = watch::channel(None);
        let err = wait_ready(
            &Endpoint::Tcp(addr),
            exit,
            Some(&probe),
            addr.port(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        let ProbeFailure::Failed { last, window, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!((last.as_str(), window), ("HTTP 503", 1));
    }
}
