//! Container support for the server: the image store, the container runtime with Pier's services inside
//! each instance's network namespace (its metadata server and a gateway entrance), and the choice of
//! runtime per revision (an image runs in a container, a command on the host).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use pier_activator::RuntimeSelector;
use pier_container::bundle::SharedFiles;
use pier_container::{ContainerConfig, ContainerRuntime, NamespaceServices};
use pier_control::IdentityService;
use pier_gateway::Gateway;
use pier_image::{ImageOptions, ImageStore, RegistryCredential, RegistryOptions};
use pier_metadata::MetadataServer;
use pier_model::{InstanceId, RevisionTemplate};
use pier_runtime::netns::{GATEWAY_IP, METADATA_IP, NetNs};
use pier_runtime::process::ProcessRuntime;
use pier_runtime::{InstanceSpec, Runtime};
use pier_store::Store;

/// Serves an instance's metadata endpoint and gateway entrance inside its namespace.
pub struct NsServices {
    pub metadata: Arc<MetadataServer>,
    pub gateway: Arc<Gateway>,
    pub identity: Arc<IdentityService>,
    pub tls: Arc<rustls::ServerConfig>,
    pub https_port: u16,
    pub http_port: u16,
    pub http_serve: bool,
}

/// What [`NsServices::attach`] started; dropping it stops them.
struct Attached {
    metadata: Arc<MetadataServer>,
    instance: InstanceId,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.metadata.close(&self.instance);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl NamespaceServices for NsServices {
    fn attach(&self, spec: &InstanceSpec, ns: &NetNs) -> std::io::Result<Box<dyn Send + Sync>> {
        let sa = spec
            .template
            .service_account
            .clone()
            .unwrap_or_else(|| self.identity.default_service_account(&spec.project));
        let meta = ns.listen(SocketAddr::from((METADATA_IP, 80)))?;
        self.metadata
            .open_in_namespace(meta, &spec.id, &sa, spec.project.as_str())?;
        let mut attached = Attached {
            metadata: self.metadata.clone(),
            instance: spec.id.clone(),
            tasks: Vec::new(),
        };
        // Service hosts resolve to the gateway's address (the instance's /etc/hosts); clients that resolve
        // `*.localhost` to loopback by themselves (curl, browsers) find it on 127.0.0.1 too, unless the
        // app's own port is the same number.
        let app_port = spec
            .template
            .port
            .unwrap_or(pier_container::bundle::DEFAULT_PORT);
        for (port, tls) in [
            (self.https_port, Some(self.tls.clone())),
            (self.http_port, None),
        ] {
            let mut addrs = vec![SocketAddr::from((GATEWAY_IP, port))];
            if port != app_port {
                addrs.push(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
            }
            for addr in addrs {
                let std = ns.listen(addr)?;
                let listener = tokio::net::TcpListener::from_std(std)?;
                let task = tokio::spawn(self.gateway.clone().serve_internal(
                    listener,
                    tls.clone(),
                    self.http_serve,
                ));
                attached.tasks.push(task.abort_handle());
            }
        }
        Ok(Box::new(attached))
    }
}

/// Picks the runtime of a revision: its image in a container, else its command on the host.
pub struct Runtimes {
    pub process: Arc<ProcessRuntime>,
    pub container: Result<Arc<ContainerRuntime>, String>,
}

impl RuntimeSelector for Runtimes {
    fn runtime_for(&self, template: &RevisionTemplate) -> Result<Arc<dyn Runtime>, String> {
        if template.image.is_none() {
            return Ok(self.process.clone());
        }
        match &self.container {
            Ok(c) => Ok(c.clone()),
            Err(why) => Err(format!("this server cannot run container images: {why}")),
        }
    }

    fn peer_instance(&self, peer: SocketAddr) -> Option<InstanceId> {
        // Containers reach Pier only through listeners inside their own namespaces.
        self.process.peer_instance(peer)
    }
}

/// Opens the image store: registry credentials come from the store, read at each pull.
pub fn image_store(
    data_dir: &Path,
    store: Arc<Store>,
    insecure: Vec<String>,
    cas: &[std::path::PathBuf],
    rootfs: &str,
    max_unpacked_bytes: u64,
) -> anyhow::Result<Arc<ImageStore>> {
    use anyhow::Context;
    let mut extra_ca_pem = Vec::new();
    for ca in cas {
        extra_ca_pem
            .push(std::fs::read(ca).with_context(|| format!("--registry-ca {}", ca.display()))?);
    }
    let credentials = Arc::new(move |registry: &str| {
        store
            .registry_credential(registry)
            .ok()
            .flatten()
            .map(|c| RegistryCredential {
                username: c.username,
                secret: c.secret,
            })
    });
    let options = ImageOptions {
        registry: RegistryOptions {
            insecure,
            extra_ca_pem,
            credentials,
        },
        rootfs: rootfs.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        max_unpacked_bytes,
    };
    ImageStore::open(&data_dir.join("images"), options).context("opening the image store")
}

/// The configuration of the container runtime: its files under the data dir, its cgroups under the
/// installation's.
pub fn container_config(
    runtime: &Path,
    data_dir: &Path,
    installation: &str,
    files: SharedFiles,
    egress: Option<pier_container::egress::Subnet>,
) -> ContainerConfig {
    ContainerConfig {
        runtime: runtime.to_path_buf(),
        dir: data_dir.join("containers"),
        cgroup_parent: format!("/pier-containers/{installation}"),
        files,
        installation: installation.to_owned(),
        egress,
    }
}

/// The container runtime, or why there is none on this machine.
pub fn container_runtime(
    config: ContainerConfig,
    logs: Arc<pier_runtime::logs::LogStore>,
    images: Arc<ImageStore>,
    services: Arc<dyn NamespaceServices>,
) -> Result<Arc<ContainerRuntime>, String> {
    ContainerRuntime::new(config, logs, images).map(|r| Arc::new(r.with_services(services)))
}
