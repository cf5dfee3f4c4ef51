//! Egress from instances, for every runtime and both egress modes: the test runs the server inside a
//! network namespace it makes, linked to one namespace standing in for a private LAN (192.168.77.0/24)
//! and one for the internet (203.0.113.0/24, a documentation range). Nothing is added to the host's own
//! namespace, and packets go only to addresses these namespaces hold.
//!
//! From an instance: the internet server answers; the LAN server and the server's own addresses are
//! refused by default; the LAN answers once the operator lists its range (`--private-egress`) and the
//! service opts in (`--vpc-egress private-ranges-only`).

mod common;

use std::process::{Child, Command, Stdio};

use common::oci::{self, ImageSpec};
use common::*;

const LAN_SERVER: &str = "192.168.77.2:8000";
const INTERNET_SERVER: &str = "203.0.113.2:8000";
/// The server's own address on the internet side: an instance must not reach it either.
const OWN_ADDRESS: &str = "203.0.113.1:8000";
/// The server's own address on the LAN, inside the range the operator lists: refused all the same.
const OWN_LAN_ADDRESS: &str = "192.168.77.1:8000";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces (server, LAN, internet), with a small HTTP server in each of the last two and one
/// on the server namespace's own address; all removed on drop.
struct Net {
    srv: String,
    lan: String,
    inet: String,
    servers: Vec<Child>,
    _docroot: tempfile::TempDir,
}

impl Net {
    fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let srv = format!("pe-{tag}-srv-{id}");
        let lan = format!("pe-{tag}-lan-{id}");
        let inet = format!("pe-{tag}-net-{id}");
        let docroot = tempfile::tempdir().unwrap();
        let mut net = Net {
            srv,
            lan,
            inet,
            servers: Vec::new(),
            _docroot: docroot,
        };
        for ns in [&net.srv, &net.lan, &net.inet] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (vl, vi) = (format!("pl{id}"), format!("pi{id}"));
        for (veth, peer_ns, own, peer) in [
            (&vl, &net.lan, "192.168.77.1/24", "192.168.77.2/24"),
            (&vi, &net.inet, "203.0.113.1/24", "203.0.113.2/24"),
        ] {
            ip(&[
                "-n", &net.srv, "link", "add", veth, "type", "veth", "peer", "name", "peer0",
                "netns", peer_ns,
            ]);
            ip(&["-n", &net.srv, "addr", "add", own, "dev", veth]);
            ip(&["-n", &net.srv, "link", "set", veth, "up"]);
            ip(&["-n", peer_ns, "addr", "add", peer, "dev", "peer0"]);
            ip(&["-n", peer_ns, "link", "set", "peer0", "up"]);
        }
        ip(&[
            "-n",
            &net.srv,
            "route",
            "add",
            "default",
            "via",
            "203.0.113.2",
        ]);
        let root = net._docroot.path().to_owned();
        for (ns, addr) in [
            (net.lan.clone(), LAN_SERVER),
            (net.inet.clone(), INTERNET_SERVER),
            (net.srv.clone(), OWN_ADDRESS),
            (net.srv.clone(), OWN_LAN_ADDRESS),
        ] {
            let (host, port) = addr.split_once(':').unwrap();
            let child = in_netns(Some(&ns), "python3")
                .args(["-m", "http.server", port, "--bind", host, "--directory"])
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            net.servers.push(child);
            eventually(10, "a test HTTP server", || {
                in_netns(Some(&ns), "curl")
                    .args(["-sf", "-o", "/dev/null", &format!("http://{addr}/")])
                    .status()
                    .unwrap()
                    .success()
                    .then_some(())
            });
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.srv, &self.lan, &self.inet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// What `/fetch` answered from inside the service at `url`: the remote status line, or the error.
fn fetch(pier: &Pier, url: &str, addr: &str) -> String {
    let out = pier.curl(&[&format!("{url}/fetch?addr={addr}")]);
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deploy(pier: &Pier, name: &str, args: &[&str]) -> String {
    let mut all = vec!["deploy", name];
    all.extend_from_slice(args);
    all.push("--allow-unauthenticated");
    let out = pier.ok(&all);
    service_url(&out)
}

/// Checks every runtime on a server started with `egress_args`.
fn check_runtimes(tag: &str, egress_args: &[&str], runtimes: &[&str]) {
    let net = Net::new(tag);
    let mut args = egress_args.to_vec();
    args.extend(["--private-egress", "192.168.77.0/24"]);
    let pier = Pier::start_in(&net.srv, &args);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(&layout, "hello", &ImageSpec::hello());
    let image = format!("oci:{}:hello", layout.display());
    let hello = hello_bin();
    for runtime in runtimes {
        let how: Vec<&str> = match *runtime {
            "process" => vec!["--command", hello.to_str().unwrap()],
            "gen2" => vec!["--image", &image],
            "gen1" => vec!["--image", &image, "--execution-environment", "gen1"],
            other => panic!("unknown runtime {other}"),
        };
        let url = deploy(&pier, runtime, &how);
        let internet = fetch(&pier, &url, INTERNET_SERVER);
        assert!(
            internet.starts_with("HTTP/1.0 200"),
            "{runtime}: the internet: {internet}"
        );
        let lan = fetch(&pier, &url, LAN_SERVER);
        assert!(
            lan.starts_with("error:"),
            "{runtime}: the LAN answered without opting in: {lan}"
        );
        let own = fetch(&pier, &url, OWN_ADDRESS);
        assert!(
            own.starts_with("error:"),
            "{runtime}: the server's own address: {own}"
        );

        let mut opted = how.clone();
        opted.extend(["--vpc-egress", "private-ranges-only"]);
        let name = format!("{runtime}-vpc");
        let url = deploy(&pier, &name, &opted);
        let lan = fetch(&pier, &url, LAN_SERVER);
        assert!(
            lan.starts_with("HTTP/1.0 200"),
            "{runtime}: the listed LAN range: {lan}"
        );
        let own = fetch(&pier, &url, OWN_ADDRESS);
        assert!(
            own.starts_with("error:"),
            "{runtime}: the server's own address with VPC egress: {own}"
        );
    }
    drop(pier);
}

#[test]
fn user_mode_egress_reaches_the_internet_and_only_listed_private_ranges() {
    oci::need(&["runc", "runsc", "slirp4netns"]);
    check_runtimes("u", &["--egress", "user"], &["process", "gen2", "gen1"]);
}

#[test]
fn bridge_egress_holds_the_same_rules() {
    oci::need(&["runc"]);
    check_runtimes("b", &["--egress", "bridge"], &["process", "gen2"]);
}
