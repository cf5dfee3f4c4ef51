//! Startup and liveness probes, as Cloud Run and Knative have them: a TCP connect, an HTTP GET or a gRPC
//! health check (`grpc.health.v1.Health/Check`), with `initialDelaySeconds`, `timeoutSeconds`,
//! `periodSeconds` and `failureThreshold`. The JSON shape is Kubernetes' (`startupProbe`,
//! `livenessProbe` in a Knative container); [`Probe::from_flag`] reads gcloud's flag form
//! (`--startup-probe=httpGet.path=/ready,periodSeconds=2`).
//!
//! Limits and defaults are Cloud Run's: a startup probe may wait at most 240 s before its first check
//! and check at most every 240 s; a liveness probe uses HTTP or gRPC only (Cloud Run has no TCP liveness
//! probe); `timeoutSeconds` (default 1) may not exceed `periodSeconds` (default 10);
//! `failureThreshold` defaults to 3.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::SpecError;

/// A TCP connect to a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocket {
    /// The port (default: the container's `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One header an HTTP probe sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// An HTTP GET: healthy when it answers 200 to 399.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    /// The path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The port (default: the container's `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Headers to send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// A gRPC health check: healthy when `grpc.health.v1.Health/Check` answers `SERVING`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcCheck {
    /// The port (default: the container's `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The service name asked about (default: empty, the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// A probe: one check, and how often and how long to try it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// A TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    /// An HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    /// A gRPC health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcCheck>,
    /// Seconds before the first check (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// Seconds one check may take (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Seconds between checks (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    /// Consecutive failures that fail the probe (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// What a probe checks, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Connect to the port.
    Tcp {
        /// Port.
        port: u16,
    },
    /// GET the path.
    Http {
        /// Port.
        port: u16,
        /// Path with query.
        path: String,
        /// Headers.
        headers: Vec<(String, String)>,
    },
    /// Ask the gRPC health service.
    Grpc {
        /// Port.
        port: u16,
        /// Service name.
        service: String,
    },
}

/// Which probe a setting is for (their limits differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Decides when a new instance is ready.
    Startup,
    /// Restarts an instance that stops answering.
    Liveness,
}

impl ProbeKind {
    fn flag(self) -> &'static str {
        match self {
            ProbeKind::Startup => "--startup-probe",
            ProbeKind::Liveness => "--liveness-probe",
        }
    }

    /// The largest initial delay and period, in seconds (Cloud Run's limits).
    fn max_seconds(self) -> u32 {
        match self {
            ProbeKind::Startup => 240,
            ProbeKind::Liveness => 3600,
        }
    }
}

impl Probe {
    /// Seconds before the first check.
    pub fn initial_delay(&self) -> u32 {
        self.initial_delay_seconds.unwrap_or(0)
    }

    /// Seconds one check may take.
    pub fn timeout(&self) -> u32 {
        self.timeout_seconds.unwrap_or(1)
    }

    /// Seconds between checks.
    pub fn period(&self) -> u32 {
        self.period_seconds.unwrap_or(10)
    }

    /// Consecutive failures that fail it.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }

    /// The check, with the instance's `port` where the probe names none.
    pub fn check(&self, port: u16) -> Check {
        if let Some(h) = &self.http_get {
            Check::Http {
                port: h.port.unwrap_or(port),
                path: h.path.clone().unwrap_or_else(|| "/".into()),
                headers: h
                    .http_headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(g) = &self.grpc {
            Check::Grpc {
                port: g.port.unwrap_or(port),
                service: g.service.clone().unwrap_or_default(),
            }
        } else {
            Check::Tcp {
                port: self
                    .tcp_socket
                    .as_ref()
                    .and_then(|t| t.port)
                    .unwrap_or(port),
            }
        }
    }

    /// Checks the settings against Cloud Run's limits for `kind`.
    pub fn validate(&self, kind: ProbeKind) -> Result<(), SpecError> {
        let flag = kind.flag();
        let actions = [
            self.tcp_socket.is_some(),
            self.http_get.is_some(),
            self.grpc.is_some(),
        ]
        .iter()
        .filter(|a| **a)
        .count();
        if actions > 1 {
            return Err(SpecError::new(format!(
                "{flag}: give one of tcpSocket, httpGet or grpc, not several"
            )));
        }
        if kind == ProbeKind::Liveness && (actions == 0 || self.tcp_socket.is_some()) {
            return Err(SpecError::new(format!(
                "{flag}: a liveness probe is an httpGet or a grpc check (as on Cloud Run), such as {flag}=httpGet.path=/healthz"
            )));
        }
        let max = kind.max_seconds();
        if self.initial_delay() > max {
            return Err(SpecError::new(format!(
                "{flag}: initialDelaySeconds {} is over {max}",
                self.initial_delay()
            )));
        }
        if !(1..=max).contains(&self.period()) {
            return Err(SpecError::new(format!(
                "{flag}: periodSeconds {} must be 1 to {max}",
                self.period()
            )));
        }
        if self.timeout() < 1 || self.timeout() > self.period() {
            return Err(SpecError::new(format!(
                "{flag}: timeoutSeconds {} must be at least 1 and at most periodSeconds ({})",
                self.timeout(),
                self.period()
            )));
        }
        if self.failure_threshold() < 1 {
            return Err(SpecError::new(format!(
                "{flag}: failureThreshold must be at least 1"
            )));
        }
        if let Some(p) = self.http_get.as_ref().and_then(|h| h.path.as_deref())
            && !p.starts_with('/')
        {
            return Err(SpecError::new(format!(
                "{flag}: httpGet.path {p:?} must start with /"
            )));
        }
        for port in [
            self.tcp_socket.as_ref().and_then(|t| t.port),
            self.http_get.as_ref().and_then(|h| h.port),
            self.grpc.as_ref().and_then(|g| g.port),
        ]
        .into_iter()
        .flatten()
        {
            if port == 0 {
                return Err(SpecError::new(format!("{flag}: port 0 is not a port")));
            }
        }
        Ok(())
    }

    /// Reads gcloud's flag form: `KEY=VALUE` pairs separated by commas, keys such as `tcpSocket.port`,
    /// `httpGet.path`, `httpGet.port`, `grpc.port`, `grpc.service`, `initialDelaySeconds`,
    /// `timeoutSeconds`, `periodSeconds`, `failureThreshold`.
    pub fn from_flag(text: &str, kind: ProbeKind) -> Result<Probe, SpecError> {
        let flag = kind.flag();
        let mut p = Probe::default();
        let number = |k: &str, v: &str| -> Result<u32, SpecError> {
            v.parse()
                .map_err(|_| SpecError::new(format!("{flag}: {k}={v:?} is not a whole number")))
        };
        let port = |k: &str, v: &str| -> Result<u16, SpecError> {
            v.parse()
                .map_err(|_| SpecError::new(format!("{flag}: {k}={v:?} is not a port")))
        };
        for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| SpecError::new(format!("{flag}: {pair:?} is not KEY=VALUE")))?;
            match k {
                "tcpSocket.port" => {
                    p.tcp_socket.get_or_insert_with(Default::default).port = Some(port(k, v)?)
                }
                "tcpSocket" if v.is_empty() => {
                    p.tcp_socket.get_or_insert_with(Default::default);
                }
                "httpGet.path" => {
                    p.http_get.get_or_insert_with(Default::default).path = Some(v.to_owned())
                }
                "httpGet.port" => {
                    p.http_get.get_or_insert_with(Default::default).port = Some(port(k, v)?)
                }
                "grpc.port" => p.grpc.get_or_insert_with(Default::default).port = Some(port(k, v)?),
                "grpc.service" => {
                    p.grpc.get_or_insert_with(Default::default).service = Some(v.to_owned())
                }
                "initialDelaySeconds" => p.initial_delay_seconds = Some(number(k, v)?),
                "timeoutSeconds" => p.timeout_seconds = Some(number(k, v)?),
                "periodSeconds" => p.period_seconds = Some(number(k, v)?),
                "failureThreshold" => p.failure_threshold = Some(number(k, v)?),
                other => {
                    return Err(SpecError::new(format!(
                        "{flag}: unknown setting {other:?}: use tcpSocket.port, httpGet.path, httpGet.port, grpc.port, grpc.service, initialDelaySeconds, timeoutSeconds, periodSeconds or failureThreshold"
                    )));
                }
            }
        }
        if kind == ProbeKind::Startup
            && p.tcp_socket.is_none()
            && p.http_get.is_none()
            && p.grpc.is_none()
        {
            p.tcp_socket = Some(TcpSocket::default());
        }
        p.validate(kind)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gclouds_flag_form_and_holds_cloud_runs_limits() {
        let p = Probe::from_flag(
            "httpGet.path=/ready,httpGet.port=9000,periodSeconds=2,failureThreshold=5",
            ProbeKind::Startup,
        )
        .unwrap();
        assert_eq!(
            p.check(8080),
            Check::Http {
                port: 9000,
                path: "/ready".into(),
                headers: vec![]
            }
        );
        assert_eq!((p.period(), p.failure_threshold(), p.timeout()), (2, 5, 1));
        let g = Probe::from_flag("grpc.service=echo", ProbeKind::Liveness).unwrap();
        assert_eq!(
            g.check(8080),
            Check::Grpc {
                port: 8080,
                service: "echo".into()
            }
        );
        let t = Probe::from_flag("initialDelaySeconds=3", ProbeKind::Startup).unwrap();
        assert_eq!(t.check(8080), Check::Tcp { port: 8080 });

        for (bad, kind, says) in [
            (
                "tcpSocket.port=8080",
                ProbeKind::Liveness,
                "httpGet or a grpc",
            ),
            (
                "httpGet.path=/,grpc.port=1",
                ProbeKind::Startup,
                "not several",
            ),
            ("periodSeconds=300", ProbeKind::Startup, "1 to 240"),
            (
                "periodSeconds=2,timeoutSeconds=3",
                ProbeKind::Startup,
                "at most periodSeconds",
            ),
            ("initialDelaySeconds=241", ProbeKind::Startup, "over 240"),
            ("httpGet.path=ready", ProbeKind::Startup, "start with /"),
            ("failureThreshold=0", ProbeKind::Startup, "at least 1"),
            ("color=blue", ProbeKind::Startup, "unknown setting"),
            ("periodSeconds=ten", ProbeKind::Startup, "whole number"),
        ] {
            let err = Probe::from_flag(bad, kind).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        // The JSON is Kubernetes' shape.
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["httpGet"]["path"], "/ready");
        assert_eq!(json["periodSeconds"], 2);
    }
}
