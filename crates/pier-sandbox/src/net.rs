//! An instance's network, as policy: the addresses and reserved ports Pier's own endpoints use inside
//! every instance's network namespace, the redirects that make the well-known addresses reach them, and
//! the egress filter. [`nft_script`] renders it as one nftables table that the server loads inside the
//! namespace, where the app (no `CAP_NET_ADMIN`) cannot change it.
//!
//! Inside every instance:
//!
//! | what | the app uses | Pier listens on |
//! | --- | --- | --- |
//! | metadata server | `169.254.169.254:80` (`metadata.google.internal`) | `169.254.169.254:8022` |
//! | name server | `169.254.169.254:53` (udp) | `169.254.169.254:8022` (udp) |
//! | service URLs over HTTPS | `169.254.169.253:HTTPS_PORT` (and `:443`), `127.0.0.1:HTTPS_PORT` | `169.254.169.253:8013` |
//! | service URLs over HTTP | `169.254.169.253:HTTP_PORT` (and `:80`), `127.0.0.1:HTTP_PORT` | `169.254.169.253:8012` |
//!
//! Pier listens only on link-local addresses and on the ports `pier_model::RESERVED_PORTS` refuses as an
//! app's `PORT` (Knative's queue-proxy reserves the same, so apps built for Knative already avoid them), so the app may bind `0.0.0.0` on any other
//! port, the gateway's own port numbers included: a loopback redirect is left out when it is the app's
//! port.
//!
//! Egress, as on Cloud Run without a VPC connector: the internet yes; private ranges (RFC 1918, CGNAT),
//! link-local, loopback beyond `lo`, multicast, reserved ranges and the host's own addresses no, unless
//! the operator lists a range and the service opts in. IPv6 leaves nothing but `lo`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The metadata server's (and name server's) address inside every instance.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The gateway's address inside every instance.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);
/// Pier's gateway entrance for plain HTTP inside an instance.
pub const GATEWAY_HTTP_PORT: u16 = 8012;
/// Pier's gateway entrance for HTTPS inside an instance.
pub const GATEWAY_HTTPS_PORT: u16 = 8013;
/// Pier's metadata server (TCP) and name server (UDP) inside an instance.
pub const METADATA_PORT: u16 = 8022;

/// Ranges no instance reaches unless the operator allows them: "this" network, RFC 1918, CGNAT
/// (RFC 6598), loopback, link-local, IETF protocol assignments, benchmarking (RFC 2544), multicast and
/// reserved.
pub const PRIVATE_RANGES: [&str; 11] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// An IPv4 network, `ADDR/LEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Its first address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not an IPv4 network: write it as ADDRESS/LENGTH, like 10.20.0.0/16")
        };
        let (a, l) = s.trim().split_once('/').unwrap_or((s.trim(), "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        };
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

/// What one instance's namespace allows and redirects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetPolicy {
    /// The gateway's public HTTPS port (service URLs carry it).
    pub https_port: u16,
    /// The gateway's public HTTP port.
    pub http_port: u16,
    /// The app's `PORT` (never redirected on loopback).
    pub app_port: u16,
    /// Whether traffic may leave the namespace at all.
    pub egress: bool,
    /// The host's own addresses (refused).
    pub host_addrs: Vec<Ipv4Addr>,
    /// Private networks this instance may reach (the operator's list, when its service opted in).
    pub allowed: Vec<Cidr>,
}

/// The nftables table (`inet pier`) for one instance's namespace: redirects to Pier's endpoints, then
/// the egress filter.
pub fn nft_script(p: &NetPolicy) -> String {
    let mut s = String::from("table inet pier {\n");
    // Redirects: locally generated traffic only (everything in the namespace is).
    s.push_str("  chain dnat_out {\n    type nat hook output priority -100; policy accept;\n");
    let _ = writeln!(
        s,
        "    ip daddr {METADATA_IP} tcp dport 80 dnat ip to {METADATA_IP}:{METADATA_PORT}"
    );
    if p.egress {
        let _ = writeln!(
            s,
            "    ip daddr {METADATA_IP} udp dport 53 dnat ip to {METADATA_IP}:{METADATA_PORT}"
        );
    }
    for (ports, to) in [
        (set_of(&[p.https_port, 443]), GATEWAY_HTTPS_PORT),
        (set_of(&[p.http_port, 80]), GATEWAY_HTTP_PORT),
    ] {
        let _ = writeln!(
            s,
            "    ip daddr {GATEWAY_IP} tcp dport {ports} dnat ip to {GATEWAY_IP}:{to}"
        );
    }
    for (port, to) in [
        (p.https_port, GATEWAY_HTTPS_PORT),
        (p.http_port, GATEWAY_HTTP_PORT),
    ] {
        if port != p.app_port {
            let _ = writeln!(
                s,
                "    ip daddr 127.0.0.1 tcp dport {port} dnat ip to {GATEWAY_IP}:{to}"
            );
        }
    }
    s.push_str("  }\n");
    // Egress.
    s.push_str("  chain filter_out {\n    type filter hook output priority 0; policy accept;\n");
    s.push_str("    oifname \"lo\" accept\n");
    // The host's own addresses first: a listed private range may hold one of them.
    if !p.host_addrs.is_empty() {
        let list: Vec<String> = p.host_addrs.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            s,
            "    ip daddr {{ {} }} reject with icmp type admin-prohibited",
            list.join(", ")
        );
    }
    if !p.allowed.is_empty() {
        let _ = writeln!(s, "    ip daddr {} accept", cidr_set(&p.allowed));
    }
    let _ = writeln!(
        s,
        "    ip daddr {{ {} }} reject with icmp type admin-prohibited",
        PRIVATE_RANGES.join(", ")
    );
    s.push_str("    meta nfproto ipv6 reject\n");
    if !p.egress {
        s.push_str("    reject\n");
    }
    s.push_str("  }\n}\n");
    s
}

fn set_of(ports: &[u16]) -> String {
    let mut v: Vec<u16> = ports.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.len() == 1 {
        v[0].to_string()
    } else {
        format!(
            "{{ {} }}",
            v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        )
    }
}

fn cidr_set(c: &[Cidr]) -> String {
    format!(
        "{{ {} }}",
        c.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// Whether `ip` is one an instance may not reach without an allowance (the filter's own rule, for
/// tests and `pier doctor`).
pub fn refused(p: &NetPolicy, ip: Ipv4Addr) -> bool {
    if p.host_addrs.contains(&ip) {
        return true;
    }
    if p.allowed.iter().any(|c| c.contains(ip)) {
        return false;
    }
    !p.egress
        || PRIVATE_RANGES
            .iter()
            .filter_map(|r| r.parse::<Cidr>().ok())
            .any(|c| c.contains(ip))
}

/// The host's IPv4 addresses (every interface but loopback), from `/proc/net/fib_trie`'s local routes.
pub fn host_addresses() -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim().trim_start_matches(['|', '+', '-', ' ']);
        if let Ok(ip) = t
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse::<Ipv4Addr>()
        {
            last = Some(ip);
        } else if t.contains("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NetPolicy {
        NetPolicy {
            https_port: 8443,
            http_port: 8080,
            app_port: 8080,
            egress: true,
            host_addrs: vec![Ipv4Addr::new(203, 0, 113, 9)],
            allowed: Vec::new(),
        }
    }

    #[test]
    fn the_apps_port_is_never_redirected() {
        let s = nft_script(&policy());
        assert!(s.contains("ip daddr 127.0.0.1 tcp dport 8443 dnat ip to 169.254.169.253:8013"));
        assert!(
            !s.contains("127.0.0.1 tcp dport 8080"),
            "the app listens on 8080 itself:\n{s}"
        );
        assert!(
            s.contains("tcp dport { 443, 8443 } dnat ip to 169.254.169.253:8013"),
            "{s}"
        );
        assert!(s.contains("169.254.169.254 tcp dport 80 dnat ip to 169.254.169.254:8022"));
        let mut p = policy();
        p.app_port = 3000;
        assert!(
            nft_script(&p).contains("127.0.0.1 tcp dport 8080 dnat ip to 169.254.169.253:8012")
        );
    }

    #[test]
    fn private_ranges_and_the_host_are_refused_unless_allowed() {
        let mut p = policy();
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "172.20.0.1",
            "169.254.1.1",
            "203.0.113.9",
        ] {
            assert!(refused(&p, ip.parse().unwrap()), "{ip}");
        }
        assert!(!refused(&p, "203.0.113.10".parse().unwrap()));
        p.allowed = vec!["10.20.0.0/16".parse().unwrap()];
        assert!(!refused(&p, "10.20.3.4".parse().unwrap()));
        assert!(refused(&p, "10.21.0.1".parse().unwrap()));
        let s = nft_script(&p);
        assert!(s.contains("ip daddr { 10.20.0.0/16 } accept"), "{s}");
        let accept = s.find("10.20.0.0/16").unwrap();
        let reject = s.find("10.0.0.0/8").unwrap();
        assert!(accept < reject, "the allowance comes before the refusal");
        // The host's own address inside a listed range stays refused.
        p.host_addrs.push("10.20.0.1".parse().unwrap());
        assert!(refused(&p, "10.20.0.1".parse().unwrap()));
        let s = nft_script(&p);
        assert!(
            s.find("10.20.0.1").unwrap() < s.find("10.20.0.0/16").unwrap(),
            "{s}"
        );
        p.egress = false;
        assert!(refused(&p, "203.0.113.10".parse().unwrap()));
        assert!(nft_script(&p).contains("    reject\n"));
    }

    #[test]
    fn networks_parse() {
        let c: Cidr = "10.20.30.40/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.20.0.0/16");
        assert!(c.contains("10.20.255.1".parse().unwrap()));
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().len, 32);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!(
            "ten/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("ADDRESS/LENGTH")
        );
    }
}
