//! Knative `serving.knative.dev/v1` Service manifests, the YAML `pier up` and `pier services replace` read
//! and `pier services describe --format yaml` writes, translated to and from Pier's template.
//!
//! Supported: `metadata.name/namespace/annotations`, `spec.template.metadata.annotations`
//! (`autoscaling.knative.dev/minScale|maxScale`, and Cloud Run's `run.googleapis.com/execution-environment`
//! and `run.googleapis.com/vpc-access-egress`), `spec.template.spec` (`containerConcurrency`,
//! `timeoutSeconds`, `serviceAccountName`, one container's `image`, `command`, `args`, `env`, `workingDir`,
//! `ports`, `resources.limits`), and `spec.traffic`. Pier's own annotations live under `pier.dev/`; an
//! unknown one is an error so a typo cannot pass silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;
use crate::names::{ProjectName, ServiceName};
use crate::spec::{EnvVar, RevisionTemplate};
use crate::traffic::{Traffic, TrafficTarget};

/// Annotation holding a shell command `pier up` runs (in the manifest's folder) before deploying.
pub const BUILD_ANNOTATION: &str = "pier.dev/build";
/// Annotation that makes the service public on deploy (`"true"`), as `--allow-unauthenticated` does.
pub const PUBLIC_ANNOTATION: &str = "pier.dev/allow-unauthenticated";
const KNOWN_PIER_ANNOTATIONS: [&str; 2] = [BUILD_ANNOTATION, PUBLIC_ANNOTATION];
const MIN_SCALE: &str = "autoscaling.knative.dev/minScale";
const MAX_SCALE: &str = "autoscaling.knative.dev/maxScale";
const API_VERSION: &str = "serving.knative.dev/v1";
/// Cloud Run's revision annotation for `gen1`/`gen2`.
const EXECUTION_ENVIRONMENT: &str = "run.googleapis.com/execution-environment";
/// Cloud Run's revision annotation for VPC egress (`private-ranges-only`).
const VPC_EGRESS: &str = "run.googleapis.com/vpc-access-egress";
/// Pier's revision annotation naming a seccomp exception (`--seccomp-exception`).
const SECCOMP_EXCEPTION: &str = "pier.dev/seccomp-exception";

/// A service described by a manifest, ready to deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceManifest {
    /// Project (from `metadata.namespace`), if named.
    pub project: Option<ProjectName>,
    /// Service name.
    pub name: ServiceName,
    /// The revision template.
    pub template: RevisionTemplate,
    /// Traffic, if the manifest sets it.
    pub traffic: Option<Traffic>,
    /// Public or private, if the manifest says.
    pub allow_unauthenticated: Option<bool>,
    /// Build command for `pier up`.
    pub build: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KService {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: ServiceSpec,
    /// Ignored on read (a manifest exported from a running service carries it), never written.
    #[serde(default, skip_serializing, rename = "status")]
    _status: Option<serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(flatten, skip_serializing)]
    _rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpec {
    template: Template,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traffic: Option<Vec<TrafficTarget>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Template {
    #[serde(default)]
    metadata: Metadata,
    spec: PodSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_account_name: Option<String>,
    containers: Vec<Container>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    startup_probe: Option<crate::probe::Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    liveness_probe: Option<crate::probe::Probe>,
}

/// The one setting of Kubernetes's container security context Pier honours.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecurityContext {
    /// Pier's roots are read-only unless this is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_only_root_filesystem: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_port: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[serde(default)]
    limits: BTreeMap<String, String>,
}

impl ServiceManifest {
    /// Parses one manifest from YAML (or JSON, which is YAML).
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let k: KService = yaml_serde::from_str(text)
            .map_err(|e| SpecError::new(format!("manifest is not a valid Knative Service: {e}")))?;
        if k.api_version != API_VERSION || k.kind != "Service" {
            return Err(SpecError::new(format!(
                "manifest is {}/{}: Pier reads {API_VERSION} Service manifests",
                k.api_version, k.kind
            )));
        }
        let name: ServiceName = k
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| SpecError::new("manifest has no metadata.name: name the service"))?
            .parse()?;
        let project = k
            .metadata
            .namespace
            .as_deref()
            .map(str::parse::<ProjectName>)
            .transpose()?;
        for key in k.metadata.annotations.keys() {
            if key.starts_with("pier.dev/") && !KNOWN_PIER_ANNOTATIONS.contains(&key.as_str()) {
                return Err(SpecError::new(format!(
                    "unknown annotation {key}: Pier knows {}",
                    KNOWN_PIER_ANNOTATIONS.join(", ")
                )));
            }
        }
        let allow_unauthenticated = match k.metadata.annotations.get(PUBLIC_ANNOTATION) {
            None => None,
            Some(v) if v == "true" => Some(true),
            Some(v) if v == "false" => Some(false),
            Some(v) => {
                return Err(SpecError::new(format!(
                    "annotation {PUBLIC_ANNOTATION} is {v:?}: use \"true\" or \"false\""
                )));
            }
        };
        let build = k.metadata.annotations.get(BUILD_ANNOTATION).cloned();

        let spec = k.spec.template.spec;
        let [container] = <[Container; 1]>::try_from(spec.containers).map_err(|c| {
            SpecError::new(format!(
                "manifest has {} containers: Pier runs exactly one per revision",
                c.len()
            ))
        })?;
        let mut template = RevisionTemplate {
            image: container.image,
            command: container.command,
            args: container.args,
            env: container.env,
            working_dir: container.working_dir,
            service_account: spec.service_account_name,
            startup_probe: container.startup_probe,
            liveness_probe: container.liveness_probe,
            ..RevisionTemplate::default()
        };
        if let Some(c) = spec.container_concurrency {
            // Knative's 0 means "no limit"; Cloud Run caps at 1000.
            template.container_concurrency = if c == 0 { 1000 } else { c };
        }
        if let Some(t) = spec.timeout_seconds {
            template.timeout_seconds = t;
        }
        let ann = &k.spec.template.metadata.annotations;
        let scale = |key: &str| -> Result<Option<u32>, SpecError> {
            ann.get(key)
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        SpecError::new(format!("annotation {key} is {v:?}: use a whole number"))
                    })
                })
                .transpose()
        };
        if let Some(min) = scale(MIN_SCALE)? {
            template.min_instances = min;
        }
        if let Some(max) = scale(MAX_SCALE)? {
            template.max_instances = max;
        }
        if let Some(v) = ann.get(EXECUTION_ENVIRONMENT) {
            template.execution_environment = Some(v.parse().map_err(|_| {
                SpecError::new(format!(
                    "annotation {EXECUTION_ENVIRONMENT} is {v:?}: use gen1 (gVisor) or gen2"
                ))
            })?);
        }
        if let Some(v) = ann.get(VPC_EGRESS) {
            template.vpc_egress = Some(v.parse()?);
        }
        if let Some(v) = ann.get(SECCOMP_EXCEPTION) {
            template.seccomp_exception = Some(v.clone());
        }
        if let Some(port) = container.ports.first() {
            template.http2 = port.name.as_deref() == Some("h2c");
            template.port = port.container_port;
        }
        if let Some(res) = container.resources {
            for (k, v) in res.limits {
                match k.as_str() {
                    "cpu" => template.cpu = Some(v),
                    "memory" => template.memory = Some(v),
                    other => {
                        return Err(SpecError::new(format!(
                            "resource limit {other:?} is not supported: use cpu or memory"
                        )));
                    }
                }
            }
        }
        if let Some(sc) = container.security_context {
            template.writable_root = sc.read_only_root_filesystem == Some(false);
        }
        template.validate()?;
        let traffic = k.spec.traffic.map(Traffic);
        if let Some(t) = &traffic {
            t.validate()?;
        }
        Ok(Self {
            project,
            name,
            template,
            traffic,
            allow_unauthenticated,
            build,
        })
    }

    /// Writes the manifest as Knative YAML.
    pub fn to_yaml(&self) -> String {
        let t = &self.template;
        let mut tmeta = Metadata::default();
        if t.min_instances > 0 {
            tmeta
                .annotations
                .insert(MIN_SCALE.to_owned(), t.min_instances.to_string());
        }
        tmeta
            .annotations
            .insert(MAX_SCALE.to_owned(), t.max_instances.to_string());
        if let Some(env) = t.execution_environment {
            tmeta
                .annotations
                .insert(EXECUTION_ENVIRONMENT.to_owned(), env.as_str().to_owned());
        }
        if let Some(e) = &t.seccomp_exception {
            tmeta
                .annotations
                .insert(SECCOMP_EXCEPTION.to_owned(), e.clone());
        }
        if let Some(egress) = t.vpc_egress {
            tmeta
                .annotations
                .insert(VPC_EGRESS.to_owned(), egress.as_str().to_owned());
        }
        let mut limits = BTreeMap::new();
        if let Some(c) = &t.cpu {
            limits.insert("cpu".to_owned(), c.clone());
        }
        if let Some(m) = &t.memory {
            limits.insert("memory".to_owned(), m.clone());
        }
        let ports = if t.http2 || t.port.is_some() {
            vec![Port {
                name: Some(if t.http2 { "h2c" } else { "http1" }.to_owned()),
                container_port: t.port,
            }]
        } else {
            Vec::new()
        };
        let mut meta = Metadata {
            name: Some(self.name.to_string()),
            namespace: self.project.as_ref().map(|p| p.to_string()),
            ..Metadata::default()
        };
        if let Some(public) = self.allow_unauthenticated {
            meta.annotations
                .insert(PUBLIC_ANNOTATION.to_owned(), public.to_string());
        }
        let k = KService {
            api_version: API_VERSION.to_owned(),
            kind: "Service".to_owned(),
            metadata: meta,
            spec: ServiceSpec {
                template: Template {
                    metadata: tmeta,
                    spec: PodSpec {
                        container_concurrency: Some(t.container_concurrency),
                        timeout_seconds: Some(t.timeout_seconds),
                        service_account_name: t.service_account.clone(),
                        containers: vec![Container {
                            name: None,
                            image: t.image.clone(),
                            command: t.command.clone(),
                            args: t.args.clone(),
                            env: t.env.clone(),
                            working_dir: t.working_dir.clone(),
                            ports,
                            resources: (!limits.is_empty()).then_some(Resources { limits }),
                            security_context: t.writable_root.then_some(SecurityContext {
                                read_only_root_filesystem: Some(false),
                            }),
                            startup_probe: t.startup_probe.clone(),
                            liveness_probe: t.liveness_probe.clone(),
                        }],
                    },
                },
                traffic: self.traffic.as_ref().map(|t| t.0.clone()),
            },
            _status: None,
        };
        yaml_serde::to_string(&k).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ExecutionEnvironment, VpcEgress};

    const HELLO: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  annotations:
    pier.dev/build: cargo build --release
    pier.dev/allow-unauthenticated: "true"
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/maxScale: "5"
    spec:
      containerConcurrency: 10
      containers:
        - command: ["./hello"]
          env:
            - name: GREETING
              value: hi
          resources:
            limits:
              memory: 256Mi
  traffic:
    - latestRevision: true
      percent: 100
"#;

    #[test]
    fn reads_a_knative_service() {
        let m = ServiceManifest::from_yaml(HELLO).unwrap();
        assert_eq!(m.name.as_str(), "hello");
        assert_eq!(m.template.container_concurrency, 10);
        assert_eq!(m.template.max_instances, 5);
        assert_eq!(m.template.memory.as_deref(), Some("256Mi"));
        assert_eq!(m.template.env_value("GREETING"), Some("hi"));
        assert_eq!(m.allow_unauthenticated, Some(true));
        assert_eq!(m.build.as_deref(), Some("cargo build --release"));
        assert_eq!(m.traffic, Some(Traffic::default()));
    }

    #[test]
    fn round_trips_through_yaml() {
        let m = ServiceManifest::from_yaml(HELLO).unwrap();
        let again = ServiceManifest::from_yaml(&m.to_yaml()).unwrap();
        assert_eq!(again.template, m.template);
        assert_eq!(again.traffic, m.traffic);
    }

    #[test]
    fn cloud_run_annotations_pick_the_environment_and_egress() {
        // gen1 runs images: an image manifest.
        let yaml = HELLO
            .replace(
                "autoscaling.knative.dev/maxScale: \"5\"",
                "autoscaling.knative.dev/maxScale: \"5\"\n        run.googleapis.com/execution-environment: gen1\n        run.googleapis.com/vpc-access-egress: private-ranges-only",
            )
            .replace("- command: [\"./hello\"]", "- image: localhost:5000/hello:1");
        let m = ServiceManifest::from_yaml(&yaml).unwrap();
        assert_eq!(
            m.template.execution_environment,
            Some(ExecutionEnvironment::Gen1)
        );
        assert_eq!(m.template.vpc_egress, Some(VpcEgress::PrivateRangesOnly));
        let again = ServiceManifest::from_yaml(&m.to_yaml()).unwrap();
        assert_eq!(again.template, m.template);

        let wrong = ServiceManifest::from_yaml(&yaml.replace("gen1", "gen3")).unwrap_err();
        assert!(
            wrong
                .to_string()
                .contains("run.googleapis.com/execution-environment"),
            "{wrong}"
        );
        let all = ServiceManifest::from_yaml(&yaml.replace("private-ranges-only", "all-traffic"))
            .unwrap_err();
        assert!(all.to_string().contains("no VPC"), "{all}");
    }

    #[test]
    fn probes_round_trip_in_kubernetes_form() {
        let yaml = HELLO.replace(
            "- command: [\"./hello\"]",
            "- command: [\"./hello\"]\n          startupProbe:\n            httpGet:\n              path: /ready\n            periodSeconds: 2\n          livenessProbe:\n            grpc:\n              service: echo\n            failureThreshold: 5",
        );
        let m = ServiceManifest::from_yaml(&yaml).unwrap();
        let s = m.template.startup_probe.as_ref().unwrap();
        assert_eq!(s.http_get.as_ref().unwrap().path.as_deref(), Some("/ready"));
        assert_eq!(s.period(), 2);
        let l = m.template.liveness_probe.as_ref().unwrap();
        assert_eq!(l.failure_threshold(), 5);
        let again = ServiceManifest::from_yaml(&m.to_yaml()).unwrap();
        assert_eq!(again.template, m.template);
        // Cloud Run's rules hold in YAML too.
        let tcp_liveness = yaml.replace(
            "grpc:\n              service: echo",
            "tcpSocket:\n              port: 8080",
        );
        let err = ServiceManifest::from_yaml(&tcp_liveness).unwrap_err();
        assert!(err.to_string().contains("liveness"), "{err}");
    }

    #[test]
    fn a_writable_root_is_read_only_root_filesystem_false() {
        let image = HELLO.replace(
            "- command: [\"./hello\"]",
            "- image: localhost:5000/hello:1\n          securityContext:\n            readOnlyRootFilesystem: false",
        );
        let m = ServiceManifest::from_yaml(&image).unwrap();
        assert!(m.template.writable_root);
        assert!(m.to_yaml().contains("readOnlyRootFilesystem: false"));
        assert!(
            ServiceManifest::from_yaml(&m.to_yaml())
                .unwrap()
                .template
                .writable_root
        );
        // Read-only is Pier's default, stated or not.
        let stated = image.replace("Filesystem: false", "Filesystem: true");
        assert!(
            !ServiceManifest::from_yaml(&stated)
                .unwrap()
                .template
                .writable_root
        );
        assert!(
            !ServiceManifest::from_yaml(HELLO)
                .unwrap()
                .template
                .writable_root
        );
        assert!(
            !ServiceManifest::from_yaml(HELLO)
                .unwrap()
                .to_yaml()
                .contains("securityContext")
        );
        // A host command has no image root to make writable.
        let host = HELLO.replace(
            "- command: [\"./hello\"]",
            "- command: [\"./hello\"]\n          securityContext:\n            readOnlyRootFilesystem: false",
        );
        let err = ServiceManifest::from_yaml(&host).unwrap_err().to_string();
        assert!(err.contains("needs a container image"), "{err}");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let cases = [
            (
                HELLO.replace("kind: Service", "kind: Deployment"),
                "Pier reads",
            ),
            (
                HELLO.replace("pier.dev/build", "pier.dev/biuld"),
                "unknown annotation",
            ),
            (
                HELLO.replace(
                    "containerConcurrency: 10",
                    "containerConcurrency: 10\n      bogus: 1",
                ),
                "unknown field",
            ),
            (
                HELLO.replace("name: hello", "name: Hello"),
                "invalid service name",
            ),
            (
                HELLO.replace("memory: 256Mi", "gpu: \"1\""),
                "not supported",
            ),
            (HELLO.replace("percent: 100", "percent: 50"), "add up to 50"),
            (HELLO.replace("\"5\"", "\"five\""), "whole number"),
            (
                HELLO.replace(
                    "- command: [\"./hello\"]",
                    "- command: [\"./hello\"]\n          securityContext:\n            privileged: true",
                ),
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = ServiceManifest::from_yaml(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
