//! Pier's own DNS look-ups for custom domains: the ownership TXT record and where a name points. They go
//! to the system's resolver (`/etc/resolv.conf`), or to the one `pier server --dns-server ADDR:PORT`
//! names, and are never cached, so a record the user just created is seen on the next look.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

/// A DNS resolver for Pier's own look-ups.
pub struct Dns {
    resolver: TokioResolver,
    server: String,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("server", &self.server).finish()
    }
}

impl Dns {
    /// Asks `server` (UDP, then TCP), or the system's resolvers when `None`.
    ///
    /// # Errors
    /// The system's resolver configuration cannot be read.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        let builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let mut builder = builder;
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.attempts = 2;
        opts.timeout = std::time::Duration::from_secs(3);
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot make a DNS resolver: {e}"))?;
        Ok(Self {
            resolver,
            server: server.map_or_else(|| "the system's resolvers".into(), |a| a.to_string()),
        })
    }

    /// The values of `name`'s TXT records (none when it has none).
    ///
    /// # Errors
    /// The server could not be asked (not "no such record", which is an empty list).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        match self.resolver.txt_lookup(fqdn(name)).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(format!("asking {} for TXT {name}: {e}", self.server)),
        }
    }

    /// The addresses `name` resolves to, following CNAMEs (none when it has none).
    ///
    /// # Errors
    /// As [`Dns::txt`].
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        match self.resolver.lookup_ip(fqdn(name)).await {
            Ok(ips) => {
                let mut v: Vec<IpAddr> = ips.iter().collect();
                v.sort();
                v.dedup();
                Ok(v)
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(format!("asking {} for {name}: {e}", self.server)),
        }
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}
