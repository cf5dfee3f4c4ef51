//! Pier's endpoints inside every instance's network namespace, on [`pier_sandbox::net`]'s link-local
//! addresses and reserved ports (the namespace's own rules redirect the well-known addresses there):
//! the instance's metadata server, the gateway's HTTPS and HTTP entrances, and, where instances have
//! egress, the name server relay. Only the instance can connect to them, so what comes through the
//! gateway entrances counts as internal for ingress, and the metadata server answers only this instance.

use std::net::SocketAddr;
use std::sync::Arc;

use pier_control::IdentityService;
use pier_gateway::Gateway;
use pier_metadata::MetadataServer;
use pier_model::InstanceId;
use pier_runtime::InstanceSpec;
use pier_runtime::netns::NetNs;
use pier_runtime::network::NamespaceServices;
use pier_sandbox::net::{
    GATEWAY_HTTP_PORT, GATEWAY_HTTPS_PORT, GATEWAY_IP, METADATA_IP, METADATA_PORT,
};

/// Serves an instance's endpoints inside its namespace.
pub struct NsServices {
    pub metadata: Arc<MetadataServer>,
    pub gateway: Arc<Gateway>,
    pub identity: Arc<IdentityService>,
    pub tls: Arc<rustls::ServerConfig>,
    pub http_serve: bool,
    /// The host's name servers, for the relay.
    pub upstreams: Arc<Vec<SocketAddr>>,
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
    fn attach(
        &self,
        spec: &InstanceSpec,
        ns: &NetNs,
        resolver: bool,
    ) -> std::io::Result<Box<dyn Send + Sync>> {
        let sa = spec
            .template
            .service_account
            .clone()
            .unwrap_or_else(|| self.identity.default_service_account(&spec.project));
        let meta = ns.listen(SocketAddr::from((METADATA_IP, METADATA_PORT)))?;
        self.metadata
            .open_in_namespace(meta, &spec.id, &sa, spec.project.as_str())?;
        let mut attached = Attached {
            metadata: self.metadata.clone(),
            instance: spec.id.clone(),
            tasks: Vec::new(),
        };
        for (port, tls) in [
            (GATEWAY_HTTPS_PORT, Some(self.tls.clone())),
            (GATEWAY_HTTP_PORT, None),
        ] {
            let std = ns.listen(SocketAddr::from((GATEWAY_IP, port)))?;
            let listener = tokio::net::TcpListener::from_std(std)?;
            let task = tokio::spawn(self.gateway.clone().serve_internal(
                listener,
                tls,
                self.http_serve,
                spec.project.clone(),
            ));
            attached.tasks.push(task.abort_handle());
        }
        if resolver {
            let udp = ns.udp(SocketAddr::from((METADATA_IP, METADATA_PORT)))?;
            let udp = tokio::net::UdpSocket::from_std(udp)?;
            let task = tokio::spawn(pier_runtime::resolver::relay(udp, self.upstreams.clone()));
            attached.tasks.push(task.abort_handle());
        }
        Ok(Box::new(attached))
    }
}
