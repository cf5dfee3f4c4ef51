//! Every instance's network, made the same way whatever runs it (a host process, runc, runsc): a
//! namespace of its own with [`pier_sandbox::net`]'s policy loaded, egress as the operator chose, and
//! Pier's endpoints served inside it by the server ([`NamespaceServices`]).
//!
//! Egress modes (`pier server --egress`):
//!
//! - `user` (the default): slirp4netns per instance ([`crate::usernet`]); nothing on the host changes;
//! - `bridge`: a veth on a bridge of the server's own with NAT ([`crate::bridge`]); sets
//!   `net.ipv4.ip_forward` and adds an nftables table on the host;
//! - `none`: nothing leaves the namespace but what goes to Pier's own endpoints.
//!
//! In every mode the namespace's own filter refuses private ranges and the host's addresses unless the
//! operator lists a range (`--private-egress`) and the service opts in.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use pier_sandbox::net::{Cidr, NetPolicy};

use crate::bridge::{Bridge, Subnet};
use crate::netns::NetNs;
use crate::usernet::UserNet;
use crate::{InstanceSpec, RuntimeError};

/// Pier's endpoints for one instance, served inside its namespace by the server.
pub trait NamespaceServices: Send + Sync + 'static {
    /// Starts serving `spec`'s instance inside `ns`: its metadata server, the gateway's entrances, and
    /// with `resolver` the name server. Dropping what it returns stops them.
    fn attach(
        &self,
        spec: &InstanceSpec,
        ns: &NetNs,
        resolver: bool,
    ) -> io::Result<Box<dyn Send + Sync>>;
}

/// How instances reach beyond the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressMode {
    /// slirp4netns.
    User,
    /// A bridge with NAT.
    Bridge,
    /// None.
    None,
}

impl FromStr for EgressMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(EgressMode::User),
            "bridge" => Ok(EgressMode::Bridge),
            "none" => Ok(EgressMode::None),
            other => Err(format!(
                "--egress {other:?}: use user (the default), bridge or none"
            )),
        }
    }
}

/// The server's network settings for instances.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The gateway's public HTTPS port.
    pub https_port: u16,
    /// The gateway's public HTTP port.
    pub http_port: u16,
    /// Egress.
    pub egress: EgressMode,
    /// The bridge's subnet (`bridge` mode).
    pub subnet: Subnet,
    /// Names the bridge and its table.
    pub installation: String,
    /// Private networks services may opt in to reach.
    pub private_ranges: Vec<Cidr>,
    /// The user-mode helper.
    pub helper: PathBuf,
}

/// Makes instance networks.
pub struct Network {
    config: NetworkConfig,
    bridge: Option<Bridge>,
    host_addrs: Vec<Ipv4Addr>,
    services: Arc<dyn NamespaceServices>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One instance's network: its namespace and Pier's endpoints in it, which stop first when dropped.
pub struct InstanceNet {
    attached: Option<Box<dyn Send + Sync>>,
    /// The namespace.
    pub ns: Arc<NetNs>,
}

impl std::fmt::Debug for InstanceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceNet").field("ns", &self.ns).finish()
    }
}

impl Drop for InstanceNet {
    fn drop(&mut self) {
        self.attached.take();
    }
}

impl Network {
    /// Sets up egress as configured (the bridge and its table, or a check that the helper runs).
    pub fn new(
        config: NetworkConfig,
        services: Arc<dyn NamespaceServices>,
    ) -> Result<Arc<Network>, String> {
        let bridge = match config.egress {
            EgressMode::Bridge => Some(Bridge::setup(&config.installation, config.subnet)?),
            EgressMode::User => {
                let runs = std::process::Command::new(&config.helper)
                    .arg("--version")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !runs {
                    return Err(format!(
                        "--egress user needs {} to give instances outbound network: install it (apt install slirp4netns), or choose --egress bridge or --egress none",
                        config.helper.display()
                    ));
                }
                None
            }
            EgressMode::None => None,
        };
        Ok(Arc::new(Network {
            host_addrs: pier_sandbox::net::host_addresses(),
            config,
            bridge,
            services,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The policy an instance of `spec` listening on `app_port` gets.
    pub fn policy(&self, spec: &InstanceSpec, app_port: u16) -> NetPolicy {
        NetPolicy {
            https_port: self.config.https_port,
            http_port: self.config.http_port,
            app_port,
            egress: self.config.egress != EgressMode::None,
            host_addrs: self.host_addrs.clone(),
            allowed: if spec.isolation.private_egress {
                self.config.private_ranges.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Makes the network of a new instance of `spec` whose app listens on `app_port`; the namespace is
    /// owned by the user namespace `owner` when given.
    pub async fn make(
        self: &Arc<Self>,
        spec: &InstanceSpec,
        app_port: u16,
        owner: Option<Arc<std::os::fd::OwnedFd>>,
    ) -> Result<InstanceNet, RuntimeError> {
        let policy = self.policy(spec, app_port);
        let this = self.clone();
        let ns = tokio::task::spawn_blocking(move || -> Result<NetNs, RuntimeError> {
            let io = RuntimeError::io("creating the instance's network namespace");
            let ns = match (&this.bridge, this.config.egress) {
                (Some(bridge), _) => {
                    let (link, lease) = bridge.lease().map_err(RuntimeError::Unsupported)?;
                    let mut ns =
                        NetNs::create_in(owner.as_deref(), Some(link.clone()), Some(&policy))
                            .map_err(io)?;
                    ns.hold(lease);
                    bridge.attach(&link).map_err(|e| {
                        RuntimeError::Unsupported(format!(
                            "connecting the instance to the bridge: {e}"
                        ))
                    })?;
                    ns
                }
                (None, EgressMode::User) => {
                    let mut ns =
                        NetNs::create_in(owner.as_deref(), None, Some(&policy)).map_err(io)?;
                    let user = UserNet::attach(&ns, &this.config.helper)
                        .map_err(RuntimeError::io("giving the instance outbound network"))?;
                    ns.hold(Box::new(user));
                    ns
                }
                _ => NetNs::create_in(owner.as_deref(), None, Some(&policy)).map_err(io)?,
            };
            Ok(ns)
        })
        .await
        .map_err(|e| RuntimeError::Unsupported(e.to_string()))??;
        let ns = Arc::new(ns);
        let attached = self
            .services
            .attach(spec, &ns, self.config.egress != EgressMode::None)
            .map_err(RuntimeError::io(
                "serving Pier's endpoints inside the instance's namespace",
            ))?;
        Ok(InstanceNet {
            attached: Some(attached),
            ns,
        })
    }

    /// Removes the bridge and its table (at shutdown, after every instance stopped).
    pub fn teardown(&self) {
        if let Some(b) = &self.bridge {
            b.teardown();
        }
    }
}
