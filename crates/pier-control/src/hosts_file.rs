//! The `/etc/hosts` every instance sees, kept in step with the routes: a subscriber of published routes
//! ([`pier_gateway::RouteSubscriber`]). Inside each instance's network namespace, every routed host maps
//! to the gateway's address there and `metadata.google.internal` to the metadata server's.

use std::path::PathBuf;

use pier_gateway::{RouteSubscriber, RouteTable};

/// Rewrites one file, in place, on every published table.
#[derive(Debug)]
pub struct InstanceHostsFile {
    path: PathBuf,
}

impl InstanceHostsFile {
    /// Keeps `path` the hosts file of every instance. Instances bind-mount this very inode, so it is
    /// rewritten in place, never replaced.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

/// The file's text for `hosts` (sorted).
fn render(mut hosts: Vec<&str>) -> String {
    hosts.sort_unstable();
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
    text.push_str(&format!(
        "{} metadata.google.internal metadata\n# Pier services\n",
        pier_runtime::netns::METADATA_IP
    ));
    for h in &hosts {
        text.push_str(&format!("{} {h}\n", pier_runtime::netns::GATEWAY_IP));
    }
    text
}

impl RouteSubscriber for InstanceHostsFile {
    fn published(&self, table: &RouteTable) {
        let text = render(table.hosts().collect());
        if let Err(e) = std::fs::write(&self.path, text) {
            tracing::warn!(path = %self.path.display(), "cannot write the instances' hosts file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_host_maps_to_the_gateway_and_the_metadata_name_to_its_server() {
        let text = super::render(vec!["b.pier.localhost", "a.pier.localhost"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1 localhost");
        assert!(lines[2].ends_with(" metadata.google.internal metadata"));
        let gw = pier_runtime::netns::GATEWAY_IP;
        assert_eq!(
            &lines[4..],
            &[
                format!("{gw} a.pier.localhost"),
                format!("{gw} b.pier.localhost")
            ]
        );
    }
}
