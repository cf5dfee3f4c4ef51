//! Network namespaces for instances. Each instance (a host process or a container) gets a namespace of
//! its own, so nothing on the host can reach its port: the gateway reaches it with sockets it opens
//! *inside* the namespace ([`NetNs::connect`]), and Pier serves the instance's metadata server, name
//! server and gateway entrances on listeners it also opens inside ([`NetNs::listen`]).
//!
//! A namespace is made with `lo` up, the link-local addresses of [`pier_sandbox::net`] on it, and that
//! module's nftables table loaded (redirects to Pier's reserved ports, the egress filter); then, for
//! egress, either `eth0` (one end of a veth pair the bridge takes, [`VethLink`]) or `tap0` from
//! slirp4netns, user-mode networking that changes nothing on the host ([`UserNet`]).
//!
//! A namespace is created by a short-lived thread that `unshare`s, so the server's own threads never change
//! namespace for long: a socket belongs to the namespace its creating thread was in, so [`NetNs::socket`]
//! switches the calling thread in, creates the socket, and switches straight back. The namespace lives as
//! long as its file descriptor or any process or socket in it; runtimes join it through
//! `/proc/<server pid>/fd/<fd>`, so no bind mount is left behind if the server dies.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::sched::{CloneFlags, setns, unshare};

pub use pier_sandbox::net::{GATEWAY_IP, METADATA_IP};
use pier_sandbox::net::{NetPolicy, nft_script};

/// A network namespace Pier made for one instance.
pub struct NetNs {
    file: File,
    /// What must live exactly as long as the namespace (an address lease, the egress helper).
    held: Vec<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for NetNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetNs")
            .field("file", &self.file)
            .field("holds", &self.held.len())
            .finish()
    }
}

/// `eth0` of an instance with egress: a veth pair whose host end is `host_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethLink {
    /// The host end's name (at most 15 bytes), left in the server's namespace for the caller to bridge.
    pub host_name: String,
    /// The instance's address on `eth0`.
    pub addr: Ipv4Addr,
    /// Its network's prefix length.
    pub prefix_len: u8,
    /// The default route's next hop (the bridge's address).
    pub gateway: Ipv4Addr,
}

/// The server's own namespace, to return to after creating a socket elsewhere.
fn host_ns() -> io::Result<&'static File> {
    static HOST: OnceLock<File> = OnceLock::new();
    if let Some(f) = HOST.get() {
        return Ok(f);
    }
    // The main thread never changes namespace, so the process's namespace is the host's.
    let f = File::open("/proc/self/ns/net")?;
    Ok(HOST.get_or_init(|| f))
}

impl NetNs {
    /// Creates a namespace with `lo` up, the link-local addresses on it and no policy (tests). Blocking:
    /// call it from `spawn_blocking`.
    pub fn create() -> io::Result<NetNs> {
        Self::create_linked(None, None)
    }

    /// A namespace with `policy`'s table loaded, plus `eth0` as `link` says when there is one. Blocking
    /// (a thread, an `ip` and an `nft` command): call it from `spawn_blocking`.
    pub fn create_linked(link: Option<VethLink>, policy: Option<&NetPolicy>) -> io::Result<NetNs> {
        Self::create_in(None, link, policy)
    }

    /// [`NetNs::create_linked`], the namespace owned by the user namespace `owner` when given (a gen2
    /// container joins both, and may then mount its own sysfs).
    pub fn create_in(
        owner: Option<&std::os::fd::OwnedFd>,
        link: Option<VethLink>,
        policy: Option<&NetPolicy>,
    ) -> io::Result<NetNs> {
        host_ns()?;
        let made = owner.map(pier_sandbox::userns::netns_in).transpose()?;
        let rules = policy.map(nft_script);
        std::thread::Builder::new()
            .name("pier-netns".into())
            .spawn(move || -> io::Result<NetNs> {
                let file = match made {
                    Some(fd) => {
                        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                        File::from(fd)
                    }
                    None => {
                        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!("cannot create a network namespace ({e}): run the server as root"),
                            )
                        })?;
                        File::open("/proc/thread-self/ns/net")?
                    }
                };
                // A child forked from this thread starts in this thread's namespace.
                configure(link.as_ref())?;
                if let Some(rules) = &rules {
                    run_script("nft", &["-f", "-"], rules, "nftables", "loading the instance's firewall")?;
                }
                Ok(NetNs {
                    file,
                    held: Vec::new(),
                })
            })?
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Keeps `thing` until this namespace is dropped.
    pub fn hold(&mut self, thing: Box<dyn Send + Sync>) {
        self.held.push(thing);
    }

    /// The namespace's descriptor (for `setns`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The path another program (the OCI runtime) opens to join this namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// Runs `f` with the calling thread inside this namespace, then returns to the host's. Only for
    /// creating sockets: `f` must not block or yield.
    fn inside<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let home = host_ns()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let out = f();
        if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A worker thread stuck in an instance's namespace would send other traffic there.
            tracing::error!("cannot return to the host network namespace: {e}");
            std::process::abort();
        }
        out
    }

    /// A TCP socket (not yet connected) that lives in this namespace.
    pub fn socket(&self) -> io::Result<tokio::net::TcpSocket> {
        self.inside(tokio::net::TcpSocket::new_v4)
    }

    /// Connects to `addr` inside this namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let stream = self.socket()?.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A UDP socket bound to `addr` inside this namespace (non-blocking, ready for tokio).
    pub fn udp(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let socket = self.inside(|| std::net::UdpSocket::bind(addr))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// A listener on `addr` inside this namespace (non-blocking, ready for tokio).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        let listener = self.inside(|| {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        })?;
        listener.into_std()
    }
}

/// Brings `lo` up and puts the link-local addresses on it, in the calling thread's namespace; with a
/// link, makes `eth0` and sends the host end to the server's namespace (the main thread's, by pid).
fn configure(link: Option<&VethLink>) -> io::Result<()> {
    let mut script = format!(
        "link set lo up\naddr add {METADATA_IP}/32 dev lo\naddr add {GATEWAY_IP}/32 dev lo\n"
    );
    if let Some(l) = link {
        script.push_str(&format!(
            "link add eth0 type veth peer name {} netns {}\naddr add {}/{} dev eth0\nlink set eth0 up\nroute add default via {}\n",
            l.host_name,
            std::process::id(),
            l.addr,
            l.prefix_len,
            l.gateway
        ));
    }
    run_script(
        "ip",
        &["-batch", "-"],
        &script,
        "iproute2",
        "configuring the instance network",
    )
}

/// Runs `program` with `args` and `script` on its standard input (`ip -batch -`, `nft -f -`). A program
/// that cannot be started names the Debian `package` to install; one that fails gives `what` and its
/// error output.
pub fn run_script(
    program: &str,
    args: &[&str],
    script: &str,
    package: &str,
    what: &str,
) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run `{program}` ({e}): install {package} (apt install {package})"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[tokio::test]
    async fn sockets_inside_are_unreachable_from_outside() {
        assert!(
            root(),
            "network namespaces need root: run the tests as root, as CI does"
        );
        let ns = tokio::task::spawn_blocking(NetNs::create)
            .await
            .unwrap()
            .unwrap();
        let app = ns.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = app.local_addr().unwrap();
        let app = tokio::net::TcpListener::from_std(app).unwrap();
        // Inside: reachable.
        let accept = tokio::spawn(async move { app.accept().await.map(|_| ()) });
        ns.connect(addr).await.unwrap();
        accept.await.unwrap().unwrap();
        // Outside (the host's loopback, same port): nothing there, or not this listener.
        let outside = tokio::net::TcpStream::connect(addr).await;
        assert!(
            outside.is_err(),
            "the instance's port is reachable from the host"
        );
        // The link-local addresses exist inside.
        let meta = ns.listen(SocketAddr::from((METADATA_IP, 0))).unwrap();
        let meta_addr = meta.local_addr().unwrap();
        let meta = tokio::net::TcpListener::from_std(meta).unwrap();
        let accept = tokio::spawn(async move { meta.accept().await.map(|_| ()) });
        ns.connect(meta_addr).await.unwrap();
        accept.await.unwrap().unwrap();
        // The calling thread is back home: a host socket still reaches host listeners.
        let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::net::TcpStream::connect(host.local_addr().unwrap())
            .await
            .unwrap();
        assert!(ns.path().exists());
    }
}
