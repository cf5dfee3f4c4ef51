//! The `/etc/hosts` every instance sees, kept in step with the routes: a subscriber of published routes
//! ([`pier_gateway::RouteSubscriber`]). Inside each instance's network namespace, every routed host maps
//! to the gateway's address there and `metadata.google.internal` to the metadata server's.

use std::path::PathBuf;

use pier_gateway::{RouteSubscriber, RouteTable};

/// Rewrites one file, in place, whenever a published table's hosts differ from the last ones written
/// (most publications, a new revision of an existing service say, change no host).
#[derive(Debug)]
pub struct InstanceHostsFile {
    path: PathBuf,
    /// The text last written, if the write succeeded.
    written: std::sync::Mutex<Option<String>>,
}

impl InstanceHostsFile {
    /// Keeps `path` the hosts file of every instance. Instances bind-mount this very inode, so it is
    /// rewritten in place, never replaced.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            written: std::sync::Mutex::new(None),
        }
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
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.as_deref() == Some(text.as_str()) {
            return;
        }
        match std::fs::write(&self.path, &text) {
            Ok(()) => *written = Some(text),
            Err(e) => {
                // Tried again with the next table.
                *written = None;
                tracing::warn!(path = %self.path.display(), "cannot write the instances' hosts file: {e}");
            }
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

    use pier_gateway::RouteSubscriber;

    /// The file is written when the hosts change and left alone when not.
    #[test]
    fn written_only_when_the_hosts_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let file = super::InstanceHostsFile::new(path.clone());
        let mut table = pier_gateway::RouteTable::new();
        file.published(&table);
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("metadata.google.internal"));
        // Same hosts: not rewritten (a marker written by hand stays).
        std::fs::write(&path, "marker").unwrap();
        file.published(&table);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "marker");
        // A new host: rewritten.
        let route = pier_gateway::Route::new(
            "default".parse().unwrap(),
            "web".parse().unwrap(),
            None,
            std::sync::Arc::new(pier_gateway::Access::public()),
            std::sync::Arc::new(pier_gateway::AllowAll),
            pier_gateway::Backend::Unavailable("test".into()),
        );
        table.insert("web-abc.pier.localhost".into(), std::sync::Arc::new(route));
        file.published(&table);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(" web-abc.pier.localhost\n"), "{text}");
    }
}
