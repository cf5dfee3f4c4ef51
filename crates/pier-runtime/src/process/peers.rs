//! Which host process owns a TCP connection, from `/proc`: the socket's inode from `/proc/net/tcp{,6}`,
//! then the process (among an instance's process tree) holding a file descriptor on it. Used to tell the
//! metadata server and the gateway which instance, if any, is calling: the kernel's answer, not the
//! caller's.

use std::collections::HashSet;
use std::fs;
use std::net::{IpAddr, SocketAddr};

/// The inode of the socket whose local address is `addr`.
pub fn socket_inode(addr: SocketAddr) -> Option<u64> {
    let file = match addr.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = fs::read_to_string(file).ok()?;
    let want = encode(addr);
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 9 && fields[1].eq_ignore_ascii_case(&want) {
            let inode: u64 = fields[9].parse().ok()?;
            if inode != 0 {
                return Some(inode);
            }
        }
    }
    // An IPv4 peer may show up as a v4-mapped address on a dual-stack socket.
    if let IpAddr::V4(v4) = addr.ip() {
        return socket_inode(SocketAddr::new(
            IpAddr::V6(v4.to_ipv6_mapped()),
            addr.port(),
        ));
    }
    None
}

/// `/proc/net/tcp`'s `ADDR:PORT` form: the address as the kernel stores it (32-bit words in host order),
/// the port in hex.
fn encode(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.octets()),
            addr.port()
        ),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let words: String = o
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            format!("{words}:{:04X}", addr.port())
        }
    }
}

/// `pid` and all its descendants.
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    let mut seen = HashSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        out.push(p);
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = fs::read_to_string(t.path().join("children")) {
                    todo.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
        }
    }
    out
}

/// Whether `pid` holds a file descriptor on socket `inode`.
pub fn holds_socket(pid: i32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                fs::read_link(fd.path())
                    .map(|l| l.as_os_str() == want.as_str())
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let inode = socket_inode(peer).expect("the client's socket is listed");
        let me = std::process::id() as i32;
        assert!(
            holds_socket(me, inode),
            "this process owns the client socket"
        );
        assert!(process_tree(me).contains(&me));
        // A process that holds no such socket does not match.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!holds_socket(child.id() as i32, inode));
        let _ = child.kill();
        let _ = child.wait();
    }
}
