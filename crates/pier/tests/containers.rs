//! Container images end to end with the real parts: images built with umoci from the static echo server
//! and busybox, pushed with skopeo to Debian's docker-registry on loopback, run by runc; requests through
//! the real gateway with curl.

mod common;

use std::path::Path;
use std::process::Command;

use common::oci::{self, ImageSpec, Registry};
use common::*;

fn deploy(p: &Pier, name: &str, args: &[&str]) -> String {
    let mut all = vec!["deploy", name];
    all.extend_from_slice(args);
    service_url(&p.ok(&all))
}

/// GET `url` with curl; the body.
fn get(p: &Pier, url: &str) -> String {
    let out = p.curl(&[url]);
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn revision(p: &Pier, name: &str) -> serde_json::Value {
    serde_json::from_str(&p.ok(&["revisions", "describe", name, "--format", "json"])).unwrap()
}

fn latest_revision(p: &Pier, service: &str) -> String {
    p.describe(service)["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn hello_with(env: &str) -> ImageSpec {
    ImageSpec {
        env: vec![env.to_owned()],
        ..ImageSpec::hello()
    }
}

#[test]
fn registry_images_run_the_digest_their_tag_had_at_deploy() {
    oci::need(&["runc"]);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let v1 = oci::build(&layout, "v1", &hello_with("GREETING=one"));
    let v2 = oci::build(&layout, "v2", &hello_with("GREETING=two"));
    let image = reg.push(&v1, "hello:1.0", &[]);
    let p = Pier::start(&["--scale-to-zero-grace", "500ms", "--stable-window", "2s"]);

    // The deploy's progress names its phases, the pull with its layers (plain lines: not a terminal).
    let out = p.cli(&[
        "deploy",
        "hello",
        "--image",
        &image,
        "--allow-unauthenticated",
    ]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(progress.contains(" layers, "), "{progress}");
    in_order(
        &progress,
        &[
            "Pulling image: done",
            "Starting the instance: done",
            "Probing: done",
            "Routing traffic: done",
        ],
    );
    let url = service_url(&String::from_utf8_lossy(&out.stdout));
    let body = json(&get(&p, &url));
    assert_eq!(body["greeting"], "one");
    assert_eq!(body["pid"], 1, "the app is the container's first process");
    assert_eq!(
        body["port"], "8080",
        "containers listen on Cloud Run's default port"
    );
    let rev = revision(&p, &latest_revision(&p, "hello"));
    let d1 = oci::layout_digest(&layout, "v1");
    assert_eq!(rev["template"]["image"], image.as_str());
    assert_eq!(
        rev["imageDigest"],
        format!("{}/hello@{d1}", reg.addr),
        "the revision records the digest its tag resolved to"
    );
    // describe says it as gcloud does: the image as given, at the digest it runs.
    let described = p.ok(&["services", "describe", "hello"]);
    assert!(
        described.contains(&format!("Image:      {image} at {d1} (serving)")),
        "{described}"
    );

    // The tag moves; the running revision does not, even through a cold start.
    reg.push(&v2, "hello:1.0", &[]);
    eventually(30, "scale to zero", || {
        let r = revision(&p, &latest_revision(&p, "hello"));
        r["instances"].as_array().unwrap().is_empty().then_some(())
    });
    assert_eq!(json(&get(&p, &url))["greeting"], "one");

    // A new deploy resolves the tag again; a pinned deploy runs exactly its digest.
    deploy(&p, "hello", &["--image", &image]);
    assert_eq!(json(&get(&p, &url))["greeting"], "two");
    let pinned = format!("{}/hello@{d1}", reg.addr);
    deploy(&p, "hello", &["--image", &pinned]);
    assert_eq!(json(&get(&p, &url))["greeting"], "one");

    let images: serde_json::Value =
        serde_json::from_str(&p.ok(&["images", "list", "--format", "json"])).unwrap();
    let digests: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 2, "{images}");
    assert!(digests.contains(&d1.as_str()));
    assert!(digests.contains(&oci::layout_digest(&layout, "v2").as_str()));
}

#[test]
fn local_archives_layouts_and_zstd_layers_deploy() {
    oci::need(&["runc"]);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let src = oci::build(&layout, "v1", &hello_with("GREETING=archive"));
    let p = Pier::start(&[]);

    // An OCI archive given by a path relative to where the CLI runs.
    oci::copy(
        &src,
        &format!("oci-archive:{}/hello.tar", work.path().display()),
        &[],
    );
    let out = Command::new(PIER)
        .args(["deploy", "from-oci", "--image", "oci-archive:./hello.tar"])
        .args(["--allow-unauthenticated"])
        .current_dir(work.path())
        .env("PIER_CONFIG", p.dir.join("cli.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = service_url(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&get(&p, &url))["greeting"], "archive");

    // A docker save archive, named either way.
    let docker = work.path().join("hello-docker.tar");
    oci::copy(
        &src,
        &format!("docker-archive:{}:hello:1.0", docker.display()),
        &[],
    );
    for (name, image) in [
        (
            "from-docker",
            format!("docker-archive:{}", docker.display()),
        ),
        (
            "from-docker-auto",
            format!("oci-archive:{}", docker.display()),
        ),
    ] {
        let url = deploy(&p, name, &["--image", &image, "--allow-unauthenticated"]);
        assert_eq!(json(&get(&p, &url))["greeting"], "archive", "{image}");
    }

    // An OCI layout directory, by tag.
    let url = deploy(
        &p,
        "from-layout",
        &[
            "--image",
            &format!("oci:{}:v1", layout.display()),
            "--allow-unauthenticated",
        ],
    );
    assert_eq!(json(&get(&p, &url))["greeting"], "archive");

    // zstd-compressed layers from a registry.
    let image = reg.push(
        &src,
        "hello-zstd:1",
        &["--dest-compress-format", "zstd", "--dest-compress"],
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    let manifest = json(&String::from_utf8_lossy(&raw.stdout));
    assert!(
        manifest["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("zstd"),
        "{manifest}"
    );
    let url = deploy(
        &p,
        "from-zstd",
        &["--image", &image, "--allow-unauthenticated"],
    );
    assert_eq!(json(&get(&p, &url))["greeting"], "archive");
}

/// CGI scripts for the busybox image.
const SCRIPTS: &[(&str, &str)] = &[
    (
        "email",
        "wget -q -O- --header 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/email",
    ),
    (
        "call",
        // curl (OpenSSL) checks the gateway's certificate against the CA bundle Pier mounts (SSL_CERT_FILE).
        "t=$(wget -q -O- --header 'Metadata-Flavor: Google' \"http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/identity?audience=$QUERY_STRING\")\ncurl -sS -f -H \"Authorization: Bearer $t\" \"$QUERY_STRING\" 2>&1 || echo call-failed",
    ),
    (
        "fs",
        "touch /written 2>/dev/null && echo root=writable || echo root=readonly\ntouch /tmp/x && echo tmp=writable\necho limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)\necho uid=$(id -u)",
    ),
    (
        "fetch",
        "timeout 3 wget -q -O- \"http://$QUERY_STRING\" 2>/dev/null || echo fetch-failed",
    ),
    (
        "addr",
        "ip -o -4 addr show dev eth0 2>&1\ncat /etc/resolv.conf",
    ),
    (
        "remember",
        "{ echo \"$QUERY_STRING\" >> /etc/remembered && cat /etc/remembered; } 2>/dev/null || echo write-failed",
    ),
];

#[test]
fn containers_are_isolated_and_reach_the_metadata_server_and_other_services_through_pier() {
    oci::need(&["runc"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(
        &layout,
        "bb",
        &ImageSpec {
            host_programs: vec!["/usr/bin/curl".into()],
            ..ImageSpec::busybox_httpd(SCRIPTS)
        },
    );
    oci::build(&layout, "hello", &ImageSpec::hello());
    let p = Pier::start(&[]);
    let caller = deploy(
        &p,
        "caller",
        &[
            "--image",
            &format!("oci:{}:bb", layout.display()),
            "--memory",
            "128Mi",
            "--allow-unauthenticated",
        ],
    );
    let private = deploy(
        &p,
        "private",
        &[
            "--image",
            &format!("oci:{}:hello", layout.display()),
            "--ingress",
            "internal",
        ],
    );

    // The metadata server answers inside the container, for the revision's service account.
    let email = get(&p, &format!("{caller}/cgi-bin/email"));
    assert!(
        email.trim().starts_with("compute@default.iam."),
        "metadata email: {email}"
    );

    // Read-only root, writable in-memory /tmp, the memory limit in force.
    let fs = get(&p, &format!("{caller}/cgi-bin/fs"));
    assert!(fs.contains("root=readonly"), "{fs}");
    assert!(fs.contains("tmp=writable"), "{fs}");
    assert!(fs.contains(&format!("limit={}", 128u64 << 20)), "{fs}");

    // The private, internal-only service refuses the outside...
    let token = p.token_for(&private);
    let out = p.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &private,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    // ...refuses the caller until it is an invoker, then answers it through the gateway in its namespace.
    let call = format!("{caller}/cgi-bin/call?{private}");
    let refused = get(&p, &call);
    assert!(
        refused.contains("call-failed") || refused.contains("403"),
        "{refused}"
    );
    p.ok(&[
        "services",
        "add-iam-policy-binding",
        "private",
        "--member",
        email
            .trim()
            .replace("compute@", "serviceAccount:compute@")
            .as_str(),
        "--role",
        "roles/run.invoker",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let answered = loop {
        let last = get(&p, &call);
        if last.contains("\"service\":\"private\"") {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the caller never got through: {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(answered.contains("\"pid\":1"), "{answered}");

    // No host process can reach an instance's port: it lives in its own network namespace.
    let ids = oci::running(&p.dir);
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in ids {
        let state = Command::new("runc")
            .arg("--root")
            .arg(p.dir.join("containers/state"))
            .args(["state", &id])
            .output()
            .unwrap();
        let pid = json(&String::from_utf8_lossy(&state.stdout))["pid"]
            .as_u64()
            .unwrap();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(theirs, ours, "container {id} shares the host's network");
    }
    assert!(
        std::net::TcpStream::connect("127.0.0.1:8080").is_err(),
        "something answers on the host's 8080"
    );
}

#[test]
fn an_instance_over_its_memory_limit_is_reported_out_of_memory() {
    oci::need(&["runc"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(&layout, "bb", &ImageSpec::busybox_httpd(&[]));
    let p = Pier::start(&[]);
    deploy(
        &p,
        "hog",
        &[
            "--image",
            &format!("oci:{}:bb", layout.display()),
            "--memory",
            "32Mi",
            "--min-instances",
            "1",
            "--command",
            "/bin/sh,-c",
            "--args",
            "httpd -p $PORT -h /www; sleep 1; exec tail /dev/zero",
            "--allow-unauthenticated",
        ],
    );
    let svc = eventually(30, "an out-of-memory exit in describe", || {
        let d = p.describe("hog");
        (d["lastInstanceExit"]["outOfMemory"] == true).then_some(d)
    });
    assert!(
        svc["lastInstanceExit"]["reason"]
            .as_str()
            .unwrap()
            .contains("out of memory"),
        "{svc}"
    );
    let text = p.ok(&["services", "describe", "hog"]);
    assert!(text.contains("out of memory"), "{text}");
    let logs = p.ok(&["logs", "hog"]);
    assert!(logs.contains("out of memory"), "{logs}");

    // A writable root lives in memory: writing twice the limit into it fails, one way or the other.
    deploy(
        &p,
        "filler",
        &[
            "--image",
            &format!("oci:{}:bb", layout.display()),
            "--memory",
            "32Mi",
            "--writable-root",
            "--min-instances",
            "1",
            "--command",
            "/bin/sh,-c",
            "--args",
            "httpd -p $PORT -h /www; sleep 1; dd if=/dev/zero of=/big bs=1M count=64; echo dd-finished; exec sleep 1000",
            "--allow-unauthenticated",
        ],
    );
    let how = eventually(30, "the write to stop", || {
        let logs = p.ok(&["logs", "filler"]);
        if logs.contains("No space left") {
            return Some(logs);
        }
        (p.describe("filler")["lastInstanceExit"]["outOfMemory"] == true).then_some(logs)
    });
    assert!(!how.contains("64+0 records out"), "64 MiB fit in 32: {how}");
}

/// A raw ustar header for a regular file `name` (any bytes, even ones the tar crate refuses) of `size`.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    header
}

/// An OCI layout whose one layer holds `name` (any bytes, written raw into the tar header).
fn hostile_layout(dir: &Path, name: &str) {
    let mut layer = tar_header(name, 4).to_vec();
    let mut data = b"pwn\n".to_vec();
    data.resize(512, 0);
    layer.extend(data);
    layer.extend([0u8; 1024]);
    one_layer_layout(dir, &layer, "tar");
}

/// An OCI layout whose one gzip layer unpacks to `size` bytes of zeros (a decompression bomb).
fn bomb_layout(dir: &Path, size: u64) {
    use std::io::Write;
    let mut gzip = Command::new("gzip")
        .args(["-1", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = gzip.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        stdin.write_all(&tar_header("zeros", size)).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut left = size.div_ceil(512) * 512 + 1024;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stdin.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
    });
    let out = gzip.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    one_layer_layout(dir, &out.stdout, "tar+gzip");
}

/// An OCI layout (tag `evil`) of one layer, `layer` in the given media type suffix.
fn one_layer_layout(dir: &Path, layer: &[u8], kind: &str) {
    use aws_lc_rs::digest::{SHA256, digest};
    let hex = |b: &[u8]| {
        digest(&SHA256, b)
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/x"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let (lh, ch) = (hex(layer), hex(config));
    std::fs::write(blobs.join(&lh), layer).unwrap();
    std::fs::write(blobs.join(&ch), config).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{ch}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.{kind}","digest":"sha256:{lh}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let mh = hex(manifest.as_bytes());
    std::fs::write(blobs.join(&mh), &manifest).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"evil"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
}

#[test]
fn bad_images_fail_the_deploy_with_the_reason_and_the_previous_revision_keeps_serving() {
    oci::need(&["runc"]);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let good = reg.push(
        &oci::build(&layout, "v1", &hello_with("GREETING=good")),
        "hello:1.0",
        &[],
    );
    let bare = oci::build(
        &layout,
        "bare",
        &ImageSpec {
            entrypoint: vec![],
            ..ImageSpec::hello()
        },
    );
    let bb = format!("oci:{}:bb", layout.display());
    oci::build(&layout, "bb", &ImageSpec::busybox_httpd(&[]));
    let corrupt = reg.push(
        &oci::build(&layout, "corrupt", &hello_with("GREETING=corrupt")),
        "corrupt:1",
        &[],
    );
    let arm = oci::build(&layout, "arm", &ImageSpec::hello());
    Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:arm", layout.display()))
        .arg("--architecture=arm64")
        .status()
        .unwrap();
    let evil_dir = work.path().join("evil");
    let sentinel = format!("pier-escape-{}", std::process::id());
    hostile_layout(
        &evil_dir,
        &format!("../../../../../../../../tmp/{sentinel}"),
    );
    let bomb_dir = work.path().join("bomb");
    bomb_layout(&bomb_dir, 256 << 20);

    let p = Pier::start(&["--startup-timeout", "3s", "--max-image-size", "64Mi"]);
    let url = deploy(&p, "svc", &["--image", &good, "--allow-unauthenticated"]);
    assert_eq!(json(&get(&p, &url))["greeting"], "good");
    let serving = latest_revision(&p, "svc");

    // Damage the registry's copy of the corrupt image's layer (same length, other bytes).
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{corrupt}"))
        .output()
        .unwrap();
    let layer = json(&String::from_utf8_lossy(&raw.stdout))["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let unreachable = format!("127.0.0.1:{}/hello:1.0", free_port());
    let missing = format!("{}/nothere:1.0", reg.addr);
    let no_tag = format!("{}/hello:nope", reg.addr);
    let (bare_ref, arm_ref) = (bare.clone(), arm.clone());
    let evil = format!("oci:{}:evil", evil_dir.display());
    let bomb = format!("oci:{}:evil", bomb_dir.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--image", &missing], "not found"),
        (vec!["--image", &no_tag], "not found"),
        (vec!["--image", &unreachable], "cannot reach registry"),
        (vec!["--image", &corrupt], "digest"),
        (vec!["--image", &bare_ref], "no entrypoint or command"),
        (vec!["--image", &arm_ref], "linux/arm64"),
        (vec!["--image", &evil], "leaves the layer root"),
        (
            vec!["--image", &bomb],
            "more than the server's limit of 64 MiB",
        ),
        (
            vec![
                "--image",
                &bb,
                "--command",
                "/bin/sh,-c",
                "--args",
                "echo bye-now; exit 3",
            ],
            "exited with status 3",
        ),
        (
            vec!["--image", &bb, "--command", "/bin/sleep", "--args", "1000"],
            "did not listen on PORT within 3s",
        ),
        (vec!["--image", "Bad:Name/x"], "invalid image"),
    ];
    for (args, want) in cases {
        let mut all = vec!["deploy", "svc"];
        all.extend_from_slice(&args);
        let err = p.fails(&all);
        assert!(
            err.to_lowercase().contains(&want.to_lowercase()),
            "deploy {args:?}: want {want:?} in:\n{err}"
        );
        if want == "exited with status 3" {
            assert!(err.contains("bye-now"), "the last log lines: {err}");
        }
        // The previous revision still serves, and nothing of the failure keeps running.
        assert_eq!(latest_revision(&p, "svc"), serving);
        assert_eq!(json(&get(&p, &url))["greeting"], "good", "after {args:?}");
        let left = oci::running(&p.dir);
        assert_eq!(left.len(), 1, "after {args:?}: {left:?}");
    }
    assert!(
        !Path::new("/tmp").join(&sentinel).exists(),
        "a hostile layer wrote outside the image"
    );
    let half_made: Vec<_> = std::fs::read_dir(p.dir.join("images/layers"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().contains(".tmp-") || e.path().join("zeros").exists()
        })
        .collect();
    assert!(half_made.is_empty(), "half-made layers: {half_made:?}");
    // The only bundles are those of containers runc holds: the serving instance's, and the one made
    // for its revision's next start.
    let known = oci::containers(&p.dir);
    let bundles: Vec<String> = std::fs::read_dir(p.run_dir().join("bundles"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        bundles.len() <= 2 && bundles.iter().all(|b| known.contains(b)),
        "bundles of failed instances are left behind: {bundles:?} (containers {known:?})"
    );
}

/// Deploys from `reg` (which wants `user`'s `password`) without, with wrong, then with right credentials;
/// returns the server for more checks.
fn deploy_with_credentials(reg: &Registry, user: &str, password: &str) -> Pier {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = reg.push(
        &oci::build(&layout, "v1", &hello_with("GREETING=private-registry")),
        "hello:1.0",
        &[],
    );
    let p = Pier::start(&[]);
    let err = p.fails(&["deploy", "hello", "--image", &image]);
    assert!(err.contains("configure-docker"), "{err}");

    let configure = |password: &str| {
        let mut child = Command::new(PIER)
            .args(["auth", "configure-docker", &reg.addr, "--username", user])
            .arg("--password-stdin")
            .env("PIER_CONFIG", p.dir.join("cli.toml"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    configure("wrong-pw");
    let err = p.fails(&["deploy", "hello", "--image", &image]);
    assert!(err.contains("refused"), "{err}");

    configure(password);
    let url = deploy(&p, "hello", &["--image", &image, "--allow-unauthenticated"]);
    assert_eq!(json(&get(&p, &url))["greeting"], "private-registry");
    let regs = p.ok(&["images", "registries", "--format", "json"]);
    assert!(regs.contains(user) && !regs.contains(password), "{regs}");
    assert!(
        !p.server_log().contains(password),
        "a secret reached the log"
    );
    p
}

#[test]
fn registry_credentials_are_used_and_never_shown() {
    oci::need(&["runc"]);
    let reg = Registry::with_auth("alice", "s3cret-pw");
    deploy_with_credentials(&reg, "alice", "s3cret-pw");
}

#[test]
fn bearer_token_registries_are_pulled_with_tokens_from_their_token_service() {
    oci::need(&["runc", "openssl"]);
    let tokens = oci::TokenServer::start("bob", "t0ken-pw");
    let reg = Registry::with_token_auth(&tokens, "bob", "t0ken-pw");
    deploy_with_credentials(&reg, "bob", "t0ken-pw");
    let seen: Vec<_> = tokens.requests.lock().unwrap().clone();
    // skopeo pushed with a token...
    assert!(
        seen.iter()
            .any(|r| r.scopes.iter().any(|s| s.contains("push")) && r.status == 200),
        "{seen:?}"
    );
    // ...and Pier went to the token service each time: anonymously first (a grant of nothing, so the
    // registry refused the pull), then refused for the wrong password, then granted the pull of hello.
    let pull = "repository:hello:pull".to_owned();
    assert!(
        seen.iter()
            .any(|r| r.user.is_none() && r.scopes.contains(&pull) && r.status == 200),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.user.as_deref() == Some("bob") && r.status == 401),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.user.as_deref() == Some("bob")
            && r.scopes.contains(&pull)
            && r.status == 200),
        "{seen:?}"
    );
}

#[test]
fn kill9_leaves_nothing_behind_after_restart_and_prune_frees_unused_images() {
    oci::need(&["runc"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(&layout, "v1", &hello_with("GREETING=one"));
    oci::build(&layout, "v2", &hello_with("GREETING=two"));
    let data = tempfile::tempdir().unwrap();
    let args = with_free_ports(&[]);
    let mut p = Pier::launch(data.path(), &args);
    let run = p.run_dir();
    let v1 = format!("oci:{}:v1", layout.display());
    let url = deploy(
        &p,
        "keep",
        &[
            "--image",
            &v1,
            "--min-instances",
            "1",
            "--allow-unauthenticated",
        ],
    );
    assert_eq!(json(&get(&p, &url))["greeting"], "one");
    let before = oci::running(data.path());
    assert_eq!(before.len(), 1);
    let all_before = oci::containers(data.path());

    p.kill9();
    assert_eq!(
        oci::running(data.path()),
        before,
        "a container outlives a killed server until the next start"
    );
    let p = Pier::launch(data.path(), &args);
    let after = eventually(30, "the min instance to come back", || {
        let c = oci::running(data.path());
        (c.len() == 1 && c != before).then_some(c)
    });
    assert_ne!(after, before, "the leftover container was deleted");
    // So was the one made ahead of demand before the kill.
    let now = oci::containers(data.path());
    assert!(
        all_before.iter().all(|c| !now.contains(c)),
        "{all_before:?} left in {now:?}"
    );
    let url = p.describe("keep")["url"].as_str().unwrap().to_owned();
    assert_eq!(json(&get(&p, &url))["greeting"], "one");
    assert_eq!(oci::mounts_under(&run).len(), 1, "one image root mounted");

    // An image only a deleted service used is pruned; the one in use stays.
    let v2 = format!("oci:{}:v2", layout.display());
    deploy(&p, "gone", &["--image", &v2, "--allow-unauthenticated"]);
    assert_eq!(oci::mounts_under(&run).len(), 2);
    p.ok(&["services", "delete", "gone"]);
    let pruned: serde_json::Value =
        serde_json::from_str(&p.ok(&["images", "prune", "--format", "json"])).unwrap();
    assert_eq!(pruned["images"].as_array().unwrap().len(), 1, "{pruned}");
    assert!(pruned["bytes"].as_u64().unwrap() > 0, "{pruned}");
    assert_eq!(oci::mounts_under(&run).len(), 1);
    let images = p.ok(&["images", "list", "--format", "json"]);
    assert_eq!(json(&images).as_array().unwrap().len(), 1, "{images}");
    assert_eq!(json(&get(&p, &url))["greeting"], "one");

    // A clean stop leaves no container, mount or cgroup.
    let mut p = p;
    assert!(p.terminate().success());
    assert!(oci::containers(data.path()).is_empty());
    assert!(oci::mounts_under(&run).is_empty());
    let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/memory/pier-containers")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|install| {
            std::fs::read_dir(install.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("keep-") || n.starts_with("gone-"))
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

#[test]
fn copy_mode_roots_and_image_users_work() {
    oci::need(&["runc"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(
        &layout,
        "bb",
        &ImageSpec {
            user: Some("app".into()),
            ..ImageSpec::busybox_httpd(SCRIPTS)
        },
    );
    let p = Pier::start(&["--rootfs", "copy"]);
    let url = deploy(
        &p,
        "copy",
        &[
            "--image",
            &format!("oci:{}:bb", layout.display()),
            "--allow-unauthenticated",
        ],
    );
    let fs = get(&p, &format!("{url}/cgi-bin/fs"));
    assert!(fs.contains("root=readonly"), "{fs}");
    assert!(fs.contains("uid=1000"), "the image's USER app: {fs}");
    // Copy mode mounts no overlay: the root is the copy itself, shown with the service's ids.
    let mounts = oci::mounts_with_types_under(&p.dir);
    assert!(
        mounts.iter().all(|(_, t)| t != "overlay"),
        "copy mode mounts no overlay: {mounts:?}"
    );
    // A writable root layers the instance's writes over the copy, which stays as it was.
    oci::build(&layout, "as-root", &ImageSpec::busybox_httpd(SCRIPTS));
    let url = deploy(
        &p,
        "copy-writable",
        &[
            "--image",
            &format!("oci:{}:as-root", layout.display()),
            "--writable-root",
            "--allow-unauthenticated",
        ],
    );
    assert!(get(&p, &format!("{url}/cgi-bin/fs")).contains("root=writable"));
    let copies: Vec<_> = std::fs::read_dir(p.dir.join("images/copies"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(
        copies.iter().all(|c| !c.join("written").exists()),
        "a copy was written"
    );
}

#[test]
fn writable_roots_are_in_memory_per_instance_and_left_clean_after_kill9() {
    oci::need(&["runc"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(&layout, "bb", &ImageSpec::busybox_httpd(SCRIPTS));
    let data = tempfile::tempdir().unwrap();
    let args = with_free_ports(&[]);
    let mut p = Pier::launch(data.path(), &args);
    let run = p.run_dir();
    let image = format!("oci:{}:bb", layout.display());
    let url = deploy(
        &p,
        "scratch",
        &[
            "--image",
            &image,
            "--writable-root",
            "--min-instances",
            "1",
            "--memory",
            "64Mi",
            "--allow-unauthenticated",
        ],
    );
    let yaml = p.ok(&["services", "describe", "scratch", "--format", "yaml"]);
    assert!(yaml.contains("readOnlyRootFilesystem: false"), "{yaml}");
    // The instance writes anywhere in its root and reads back what it wrote.
    assert!(get(&p, &format!("{url}/cgi-bin/fs")).contains("root=writable"));
    assert_eq!(get(&p, &format!("{url}/cgi-bin/remember?a")), "a\n");
    assert_eq!(get(&p, &format!("{url}/cgi-bin/remember?b")), "a\nb\n");
    // The image's shared root and layers are untouched.
    let images = data.path().join("images");
    let touched: Vec<_> = [run.join("rootfs"), images.join("layers")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.path().join("etc/remembered").exists() || e.path().join("written").exists())
        .map(|e| e.path())
        .collect();
    assert!(
        touched.is_empty(),
        "the image root was written: {touched:?}"
    );
    let bundles = run.join("bundles");
    // The instance's bundle (a warm sandbox made for the next start has mounts of its own).
    let instance = oci::running(data.path());
    assert_eq!(instance.len(), 1, "{instance:?}");
    let before = oci::mounts_under(&bundles.join(&instance[0]));
    assert_eq!(before.len(), 2, "an overlay and its tmpfs: {before:?}");

    // A killed server leaves the container and its mounts; the next start clears both, and the new
    // instance starts from the image again.
    p.kill9();
    let left = oci::mounts_under(&bundles);
    assert!(before.iter().all(|m| left.contains(m)), "{left:?}");
    let mut p = Pier::launch(data.path(), &args);
    eventually(30, "the min instance to come back", || {
        let c = oci::running(data.path());
        (c.len() == 1).then_some(c)
    });
    let after = oci::mounts_under(&bundles);
    assert!(
        after.iter().all(|m| !before.contains(m)),
        "the old instance's mounts are still there: {after:?}"
    );
    let url = p.describe("scratch")["url"].as_str().unwrap().to_owned();
    assert_eq!(get(&p, &format!("{url}/cgi-bin/remember?c")), "c\n");

    // Back to a read-only root with a new revision; a clean stop leaves no mount at all.
    deploy(&p, "scratch", &["--no-writable-root"]);
    assert!(get(&p, &format!("{url}/cgi-bin/remember?d")).contains("write-failed"));
    assert!(p.terminate().success());
    assert!(oci::containers(data.path()).is_empty());
    assert!(
        oci::mounts_under(&run).is_empty(),
        "{:?}",
        oci::mounts_under(&run)
    );
}

/// A stand-in for the world beyond the host: a network namespace reached from the host through a veth pair
/// on a documentation network (198.51.100.0/24), serving files over HTTP at 198.51.100.2:8000.
struct World {
    ns: String,
    host_if: String,
    server: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    const ADDR: &str = "198.51.100.2:8000";
    const HOST_SIDE: &str = "198.51.100.1";

    fn start(file: &str, content: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), content).unwrap();
        let ns = format!("pier-world-{}", std::process::id());
        let host_if = format!("pw{}", std::process::id() % 10_000_000);
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::HOST_SIDE),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let log = dir.path().join("http.log");
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-m", "http.server", "8000"])
            .args(["--bind", "198.51.100.2", "--directory"])
            .arg(dir.path())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let world = World {
            ns,
            host_if,
            server,
            log,
            _dir: dir,
        };
        eventually(20, "the world's HTTP server", || {
            std::net::TcpStream::connect(Self::ADDR).ok()
        });
        world
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// The instance's `eth0` address, from its `addr` CGI script.
fn eth0_addr(p: &Pier, url: &str) -> String {
    let out = get(p, &format!("{url}/cgi-bin/addr"));
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no eth0 address in {out}"))
        .to_owned()
}

#[test]
fn egress_reaches_beyond_the_host_but_never_the_host_or_other_instances() {
    oci::need(&["runc", "python3"]);
    let world = World::start("hello.txt", "hello from beyond\n");
    // A service on the host, on every address, that instances must not reach.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in host_service.incoming().flatten() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nhost-answered\n");
        }
    });
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(&layout, "bb", &ImageSpec::busybox_httpd(SCRIPTS));
    let image = format!("oci:{}:bb", layout.display());
    let data = tempfile::tempdir().unwrap();
    let args = with_free_ports(&["--egress", "bridge", "--instance-subnet", "10.213.7.0/24"]);
    let mut p = Pier::launch(data.path(), &args);
    let a = deploy(&p, "out-a", &["--image", &image, "--allow-unauthenticated"]);
    let b = deploy(&p, "out-b", &["--image", &image, "--allow-unauthenticated"]);
    let (addr_a, addr_b) = (eth0_addr(&p, &a), eth0_addr(&p, &b));
    assert!(
        addr_a.starts_with("10.213.7.") && addr_b.starts_with("10.213.7."),
        "{addr_a} {addr_b}"
    );
    assert_ne!(addr_a, addr_b);
    // Names resolve through Pier's relay at the metadata server's address (the host's own name servers
    // may be on loopback or a private address, which instances cannot reach).
    let theirs = get(&p, &format!("{a}/cgi-bin/addr"));
    assert!(theirs.contains("nameserver 169.254.169.254"), "{theirs}");

    // Out to the world, through NAT: the world sees the host's address.
    let fetched = get(&p, &format!("{a}/cgi-bin/fetch?{}/hello.txt", World::ADDR));
    assert_eq!(
        fetched,
        "hello from beyond\n",
        "{}\n{}",
        get(&p, &format!("{a}/cgi-bin/addr")),
        String::from_utf8_lossy(
            &Command::new("bridge")
                .args(["link"])
                .output()
                .unwrap()
                .stdout
        )
    );
    assert!(world.log().contains(World::HOST_SIDE), "{}", world.log());
    // Pier's services are where they were: the metadata server answers inside.
    assert!(get(&p, &format!("{a}/cgi-bin/email")).contains("compute@"));

    // An instance reaches its own address, but not another instance's...
    let own = format!("{b}/cgi-bin/fetch?{addr_b}:8080/cgi-bin/addr");
    assert!(
        get(&p, &own).contains(&addr_b),
        "an instance cannot reach itself on eth0"
    );
    let other = get(&p, &format!("{a}/cgi-bin/fetch?{addr_b}:8080/cgi-bin/addr"));
    assert!(
        other.contains("fetch-failed"),
        "instance to instance: {other}"
    );
    // ...nor the host, by any of its addresses, though the host's service answers the host.
    let local = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{host_port}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&local.stdout), "host-answered\n");
    for host in ["10.213.7.1", World::HOST_SIDE] {
        let out = get(&p, &format!("{a}/cgi-bin/fetch?{host}:{host_port}/"));
        assert!(
            out.contains("fetch-failed"),
            "instance to host {host}: {out}"
        );
    }
    // Nothing on the host reaches an instance's port around the gateway.
    let direct = Command::new("curl")
        .args(["-sS", "--max-time", "3"])
        .arg(format!("http://{addr_a}:8080/cgi-bin/addr"))
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "the host reached {addr_a}:8080 directly"
    );

    // A killed server leaves its network; the next start takes it over, removes the old veth ends and
    // connects new instances.
    let ip_out = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().unwrap().stdout)
            .into_owned()
    };
    let addrs = ip_out(&["-o", "-4", "addr", "show"]);
    let bridge = addrs
        .lines()
        .find(|l| l.contains(" 10.213.7.1/24"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no bridge with 10.213.7.1: {addrs}"))
        .to_owned();
    let on_bridge = || {
        ip_out(&["-o", "link", "show"])
            .matches(&format!("master {bridge}"))
            .count()
    };
    // Two instances and, for each revision, the sandbox made for its next start.
    eventually(
        20,
        "two instances and two warm sandboxes on the bridge",
        || (on_bridge() == 4).then_some(()),
    );
    p.kill9();
    let mut p = Pier::launch(data.path(), &args);
    let a = p.describe("out-a")["url"].as_str().unwrap().to_owned();
    let fetched = get(&p, &format!("{a}/cgi-bin/fetch?{}/hello.txt", World::ADDR));
    assert_eq!(fetched, "hello from beyond\n");
    // The old ends are gone: a's new instance and its next warm sandbox are all there is.
    eventually(20, "the old instances' veth ends to be gone", || {
        (on_bridge() == 2).then_some(())
    });

    // A clean stop leaves no bridge, veth end or firewall table behind.
    assert!(p.terminate().success());
    eventually(10, "the container network to go", || {
        let links = ip_out(&["-o", "link", "show"]);
        (!links.contains(&bridge)).then_some(())
    });
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains(&bridge.replace('-', "_")), "{tables}");
}

#[test]
fn https_registries_with_a_private_ca_are_trusted_only_when_configured() {
    oci::need(&["runc", "openssl"]);
    let (reg, cert) = Registry::with_tls();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = reg.push(
        &oci::build(&layout, "v1", &hello_with("GREETING=tls")),
        "hello:1.0",
        &[],
    );
    // Without the CA, the certificate is refused (no silent fallback to plain HTTP).
    let p = Pier::start(&[]);
    let err = p.fails(&["deploy", "hello", "--image", &image]);
    assert!(err.contains("--registry-ca"), "{err}");
    drop(p);
    let p = Pier::start(&["--registry-ca", cert.to_str().unwrap()]);
    let url = deploy(&p, "hello", &["--image", &image, "--allow-unauthenticated"]);
    assert_eq!(json(&get(&p, &url))["greeting"], "tls");
}

/// The default data dir sits in root's private home (`/root/.local/share/pier`, under a 0700 folder):
/// a gen2 container, whose root is an unprivileged host user, must still reach its root. Pier mounts
/// roots and bundles under `/run/pier/INSTALLATION` instead, and removes it at a clean stop.
#[test]
fn a_data_dir_under_a_private_folder_runs_gen2_containers() {
    oci::need(&["runc"]);
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let data = private.path().join("share/pier");
    std::fs::create_dir_all(&data).unwrap();
    let mut p = Pier::launch(&data, &with_free_ports(&[]));
    let layout = private.path().join("layout");
    let image = oci::build(&layout, "hello", &ImageSpec::hello());
    let url = deploy(
        &p,
        "private-home",
        &[
            "--image",
            &image,
            "--writable-root",
            "--allow-unauthenticated",
        ],
    );
    assert_eq!(json(&get(&p, &url))["service"], "private-home");
    let run = p.run_dir();
    assert!(run.starts_with("/run/pier/"), "{}", run.display());
    let installation_mounts = oci::mounts_under(&run);
    assert!(
        !installation_mounts.is_empty(),
        "roots are mounted under /run/pier"
    );
    assert!(p.terminate().success());
    let left = oci::mounts_under(&run);
    assert!(left.is_empty(), "mounts left after a clean stop: {left:?}");
    assert!(!run.exists(), "the run dir stays after a clean stop");
}
