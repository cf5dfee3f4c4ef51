//! Bridged egress (`pier server --egress bridge`): each instance's `eth0` is one end of a veth pair whose
//! host end sits, isolated, on a bridge of this server's own; the host masquerades what leaves the subnet.
//! The instance's own filter ([`pier_sandbox::net`]) still refuses private ranges and the host from
//! inside its namespace; this table adds the host's side.
//!
//! What the firewall (an nftables table of this server's own) allows, and nothing else:
//!
//! - an instance opens connections to the world beyond the host (the internet, the LAN);
//! - replies come back.
//!
//! What it refuses: the host (or anything beyond it) opening a connection to an instance, which would
//! bypass the gateway's authentication; an instance reaching another instance (bridge ports are isolated,
//! and forwarding between them is dropped); an instance reaching the host itself (its loopback-bound or
//! wildcard-bound services, such as the admin API) or link-local addresses beyond its own. Pier's own
//! services stay where they were: the metadata server and the gateway inside the instance's namespace.
//!
//! Turning egress on sets `net.ipv4.ip_forward`, as every container engine that routes does. Host veth ends
//! go away with their namespaces; ones a killed server left are deleted at the next start.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::netns::{VethLink, run_script};

/// An IPv4 network, `ADDR/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 16 to 29.
    pub prefix_len: u8,
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("instance subnet {s:?} {why}: use a private network such as 10.89.0.0/16")
        };
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| bad("has no prefix length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("is not an IPv4 network"))?;
        let prefix_len: u8 = len.parse().map_err(|_| bad("has a bad prefix length"))?;
        if !(16..=29).contains(&prefix_len) {
            return Err(bad("must have a prefix length from 16 to 29"));
        }
        let mask = u32::MAX << (32 - prefix_len);
        if u32::from(addr) & !mask != 0 {
            return Err(bad("has host bits set"));
        }
        if !addr.is_private() {
            return Err(bad("is not a private (RFC 1918) network"));
        }
        Ok(Subnet {
            network: addr,
            prefix_len,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl Subnet {
    fn size(&self) -> u32 {
        1 << (32 - self.prefix_len)
    }

    fn host(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// The bridge's address: the first host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(a) & mask == u32::from(self.network)
    }
}

/// This server's bridge, firewall and address pool.
#[derive(Debug)]
pub struct Bridge {
    subnet: Subnet,
    bridge: String,
    table: String,
    /// Host veth ends are named this plus a counter.
    veth_prefix: String,
    next_veth: std::sync::atomic::AtomicU32,
    leased: Arc<Mutex<BTreeSet<u32>>>,
}

/// An instance's address, free again when dropped (with its namespace).
#[derive(Debug)]
struct Lease {
    offset: u32,
    leased: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leased
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.offset);
    }
}

/// Runs an `ip -batch` script.
fn ip(script: &str) -> Result<(), String> {
    run_script("ip", &["-batch", "-"], script, "iproute2", "ip").map_err(|e| e.to_string())
}

/// Loads an nftables script.
fn nft(script: &str) -> Result<(), String> {
    run_script("nft", &["-f", "-"], script, "nftables", "nft").map_err(|e| e.to_string())
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Bridge {
    /// Sets up egress for the installation `tag` (a short hex id) on `subnet`: bridge, firewall,
    /// forwarding. Safe to run again (a restart); refuses a subnet another interface already uses.
    pub fn setup(tag: &str, subnet: Subnet) -> Result<Self, String> {
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect();
        let bridge = format!("pier-{tag}");
        let veth_prefix = format!("pv{tag}");
        // Another interface with an address in the subnet would make routes ambiguous.
        for line in output("ip", &["-o", "-4", "addr", "show"]).lines() {
            let mut words = line.split_whitespace();
            let (Some(dev), Some(addr)) = (words.nth(1), words.nth(1)) else {
                continue;
            };
            let ip = addr
                .split('/')
                .next()
                .and_then(|a| a.parse::<Ipv4Addr>().ok());
            if dev != bridge && ip.is_some_and(|ip| subnet.contains(ip)) {
                return Err(format!(
                    "instance subnet {subnet} overlaps {dev}'s address {addr}: choose another with --instance-subnet"
                ));
            }
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| format!("turning on IPv4 forwarding: {e}"))?;
        let gateway = subnet.gateway();
        if !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists()
        {
            ip(&format!("link add {bridge} type bridge\n"))?;
        }
        ip(&format!(
            "addr replace {gateway}/{} dev {bridge}\nlink set {bridge} up\n",
            subnet.prefix_len
        ))?;
        // Host ends a killed server left (their namespaces should be gone with their containers).
        for line in output("ip", &["-o", "link", "show"]).lines() {
            if let Some(name) = line.split(':').nth(1).map(str::trim) {
                let name = name.split('@').next().unwrap_or(name);
                if name.starts_with(&veth_prefix) {
                    let _ = ip(&format!("link del {name}\n"));
                }
            }
        }
        let egress = Self::pool(subnet, bridge, veth_prefix);
        let (bridge, table) = (&egress.bridge, &egress.table);
        let rules = format!(
            r#"add table ip {table}
flush table ip {table}
table ip {table} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" oifname "{bridge}" drop
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
    iifname "{bridge}" ip daddr 169.254.0.0/16 drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{bridge}" ct state established,related accept
    iifname "{bridge}" drop
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
  }}
}}
"#
        );
        nft(&rules)?;
        tracing::info!(%subnet, %bridge, "bridged egress on: instances reach beyond the host through NAT");
        Ok(egress)
    }

    fn pool(subnet: Subnet, bridge: String, veth_prefix: String) -> Self {
        Self {
            subnet,
            table: bridge.replace('-', "_"),
            bridge,
            veth_prefix,
            next_veth: std::sync::atomic::AtomicU32::new(0),
            leased: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// An address and host veth name for a new instance; the lease goes back when what it returns is
    /// dropped (hand it to the namespace with [`crate::netns::NetNs::hold`]).
    pub fn lease(&self) -> Result<(VethLink, Box<dyn Send + Sync>), String> {
        let mut leased = self.leased.lock().unwrap_or_else(|p| p.into_inner());
        // .0 is the network, .1 the bridge, the last the broadcast address.
        let offset = (2..self.subnet.size() - 1)
            .find(|o| !leased.contains(o))
            .ok_or_else(|| {
                format!(
                    "instance subnet {} is full: choose a larger --instance-subnet",
                    self.subnet
                )
            })?;
        leased.insert(offset);
        let n = self
            .next_veth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let link = VethLink {
            host_name: format!("{}{:06x}", self.veth_prefix, n & 0xff_ffff),
            addr: self.subnet.host(offset),
            prefix_len: self.subnet.prefix_len,
            gateway: self.subnet.gateway(),
        };
        let lease = Lease {
            offset,
            leased: self.leased.clone(),
        };
        Ok((link, Box::new(lease)))
    }

    /// Removes the bridge and the firewall table (a clean stop leaves nothing; forwarding stays on).
    pub fn teardown(&self) {
        let steps = [
            ip(&format!("link del {}\n", self.bridge)),
            nft(&format!("delete table ip {}\n", self.table)),
        ];
        for e in steps.into_iter().filter_map(Result::err) {
            tracing::warn!("removing the instance bridge: {e}");
        }
    }

    /// Puts an instance's host veth end on the bridge, isolated from the other instances, and up.
    pub fn attach(&self, link: &VethLink) -> Result<(), String> {
        let (name, bridge) = (&link.host_name, &self.bridge);
        ip(&format!(
            "link set {name} master {bridge}\nlink set dev {name} type bridge_slave isolated on\nlink set {name} up\n"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked() {
        let s: Subnet = "10.89.0.0/16".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert!(s.contains(Ipv4Addr::new(10, 89, 255, 254)));
        assert!(!s.contains(Ipv4Addr::new(10, 90, 0, 1)));
        assert_eq!(s.to_string(), "10.89.0.0/16");
        for (bad, why) in [
            ("10.89.0.0", "no prefix"),
            ("10.89.0.1/16", "host bits"),
            ("10.0.0.0/8", "16 to 29"),
            ("8.8.0.0/16", "private"),
            ("banana/16", "IPv4"),
        ] {
            let err = bad.parse::<Subnet>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn leases_are_unique_and_come_back_when_dropped() {
        let pool = Bridge::pool(
            "10.89.7.0/29".parse().unwrap(),
            "pier-x".into(),
            "pvx".into(),
        );
        let mut held = Vec::new();
        for want in 2..=6u8 {
            let (link, lease) = pool.lease().unwrap();
            assert_eq!(link.addr, Ipv4Addr::new(10, 89, 7, want));
            assert_eq!(
                (link.prefix_len, link.gateway),
                (29, Ipv4Addr::new(10, 89, 7, 1))
            );
            assert!(link.host_name.len() <= 15, "{}", link.host_name);
            held.push((link, lease));
        }
        assert!(pool.lease().err().is_some_and(|e| e.contains("is full")));
        let names: BTreeSet<_> = held.iter().map(|(l, _)| l.host_name.clone()).collect();
        assert_eq!(names.len(), 5);
        // .4 is free again once its holder goes; a new veth name all the same.
        let (gone, _) = held.remove(2);
        let (again, _lease) = pool.lease().unwrap();
        assert_eq!(again.addr, gone.addr);
        assert!(!names.contains(&again.host_name));
    }
}
