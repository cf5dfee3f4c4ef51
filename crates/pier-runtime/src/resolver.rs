//! The name server inside every instance with egress: `169.254.169.254:53` (as on Google Cloud), where
//! Pier relays each query from the host's own network namespace to the host's name servers. The host's
//! servers are often on loopback (systemd-resolved's `127.0.0.53`) or a private address, which an
//! instance cannot reach itself: its filter refuses both.
//!
//! The relay does not parse DNS: it forwards each datagram as it came and sends back the first answer
//! (the query id matches it to the asker), trying the next server after a silence. Service hosts resolve
//! through the instance's `/etc/hosts` before any query is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long one upstream server gets before the next is tried.
const UPSTREAM_WAIT: Duration = Duration::from_secs(2);
/// Largest datagram relayed (EDNS answers go up to 4096 bytes; more falls back to TCP, which the relay
/// does not serve).
const MAX_DATAGRAM: usize = 4096;

/// The host's name servers, from `/etc/resolv.conf` (loopback ones included: the relay runs on the host),
/// or systemd-resolved's upstreams when that file has none.
pub fn upstreams() -> Vec<SocketAddr> {
    let parse = |text: &str| -> Vec<SocketAddr> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    };
    let found = parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    if found.is_empty() {
        return parse(
            &std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default(),
        );
    }
    found
}

/// The `resolv.conf` instances get.
pub fn instance_resolv_conf() -> String {
    format!(
        "nameserver {}\noptions ndots:0 timeout:2 attempts:2\n",
        pier_sandbox::net::METADATA_IP
    )
}

/// Serves queries arriving on `socket` (inside an instance's namespace) until the task is aborted.
pub async fn relay(socket: UdpSocket, upstreams: Arc<Vec<SocketAddr>>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let query = buf[..n].to_vec();
        let (socket, upstreams) = (socket.clone(), upstreams.clone());
        tokio::spawn(async move {
            if let Some(answer) = ask(&query, &upstreams).await {
                let _ = socket.send_to(&answer, from).await;
            }
        });
    }
}

/// Asks each upstream in turn; the first answer with the query's id wins.
async fn ask(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let deadline = tokio::time::Instant::now() + UPSTREAM_WAIT;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            if n >= 12 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_are_relayed_and_answered_to_the_asker() {
        // A stand-in upstream that answers every query with its id and a marker.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
                let mut answer = buf[..n].to_vec();
                answer.extend_from_slice(b"answer");
                let _ = upstream.send_to(&answer, from).await;
            }
        });
        // A dead upstream first: the relay moves on to the live one.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(relay(server, Arc::new(vec![dead_addr, up_addr])));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let query = [
            0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'f', b'o', b'o', 0,
        ];
        client.send_to(&query, server_addr).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..2], &[0xab, 0xcd]);
        assert!(buf[..n].ends_with(b"answer"));
        drop(dead);
    }
}
