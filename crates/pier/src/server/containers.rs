//! Container support for the server: the image store, the container runtime, and the choice of runtime
//! per revision (an image runs in a container, a command on the host).

use std::path::Path;
use std::sync::Arc;

use pier_activator::{CannotRun, RuntimeSelector};
use pier_container::bundle::SharedFiles;
use pier_container::{ContainerConfig, ContainerRuntime};
use pier_image::{ImageOptions, ImageStore, RegistryCredential, RegistryOptions};
use pier_model::RevisionTemplate;
use pier_runtime::Runtime;
use pier_runtime::network::Network;
use pier_runtime::process::ProcessRuntime;
use pier_store::Store;

/// Picks the runtime of a revision: its image in a container, else its command on the host.
pub struct Runtimes {
    pub process: Arc<ProcessRuntime>,
    pub container: Result<Arc<ContainerRuntime>, String>,
}

impl RuntimeSelector for Runtimes {
    fn runtime_for(&self, template: &RevisionTemplate) -> Result<Arc<dyn Runtime>, CannotRun> {
        if template.image.is_none() {
            return Ok(self.process.clone());
        }
        match &self.container {
            Ok(c) => Ok(c.clone()),
            Err(why) => Err(CannotRun::NoRuntime(format!(
                "this server cannot run container images: {why}"
            ))),
        }
    }
}

/// Opens the image store: registry credentials come from the store, read at each pull.
pub fn image_store(
    data_dir: &Path,
    run_dir: &Path,
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
        mounts: Some(run_dir.join("rootfs")),
    };
    ImageStore::open(&data_dir.join("images"), options).context("opening the image store")
}

/// The configuration of the container runtime: its files under the data dir, its cgroups under the
/// installation's.
pub fn container_config(
    runtime: &Path,
    gvisor: &Path,
    data_dir: &Path,
    run_dir: &Path,
    installation: &str,
    files: SharedFiles,
    seccomp: Arc<pier_sandbox::seccomp::Policies>,
) -> ContainerConfig {
    ContainerConfig {
        runtime: runtime.to_path_buf(),
        gvisor: gvisor.to_path_buf(),
        dir: data_dir.join("containers"),
        bundles: run_dir.join("bundles"),
        cgroup_parent: format!("/pier-containers/{installation}"),
        files,
        installation: installation.to_owned(),
        seccomp,
        // The shim is this binary (what runs, even if the file was replaced since), run with its hidden
        // first argument.
        shim: "/proc/self/exe".into(),
    }
}

/// The container runtime, or why there is none on this machine.
pub fn container_runtime(
    config: ContainerConfig,
    logs: Arc<pier_runtime::logs::LogStore>,
    images: Arc<ImageStore>,
    network: Arc<Network>,
) -> Result<Arc<ContainerRuntime>, String> {
    ContainerRuntime::new(config, logs, images, network).map(Arc::new)
}
