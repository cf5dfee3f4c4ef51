//! gRPC end to end with `grpcio` from PyPI on both sides: a Python server deployed with `--use-http2`
//! (h2c to the instance) and a Python client over TLS through the gateway. Unary, server-, client- and
//! bidi-streaming calls, status codes with trailing metadata, deadlines (the client's, and the revision's
//! `--timeout`), a large message, a private service with the token in call metadata, and gRPC health
//! checking (also as the startup probe). The client dials 127.0.0.1 and names the service's host as authority and TLS name, as a
//! user does where `*.localhost` does not resolve (see the README).

mod common;
use common::*;

const SERVER: &str = r#"
import os, time, grpc
from concurrent import futures
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

def echo(req, ctx):
    if req == b"fail":
        ctx.set_trailing_metadata((("x-why", "asked-to-fail"),))
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "you asked for it")
    return req

def slow(req, ctx):
    time.sleep(int(req) / 1000)
    return b"done"

def count(req, ctx):
    for i in range(int(req)):
        yield str(i).encode()

def tick(req, ctx):
    while True:
        yield b"tick"
        time.sleep(0.5)

def total(it, ctx):
    return b"".join(it)

def chat(it, ctx):
    for m in it:
        yield b"re:" + m

handlers = {
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
    "Count": grpc.unary_stream_rpc_method_handler(count),
    "Tick": grpc.unary_stream_rpc_method_handler(tick),
    "Total": grpc.stream_unary_rpc_method_handler(total),
    "Chat": grpc.stream_stream_rpc_method_handler(chat),
}
opts = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=opts)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("pier.test.Echo", handlers),))
h = health.HealthServicer()
h.set("pier.test.Echo", health_pb2.HealthCheckResponse.SERVING)
health_pb2_grpc.add_HealthServicer_to_server(h, server)
server.add_insecure_port("0.0.0.0:" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"#;

const CLIENT: &str = r#"
import json, sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

url, ca, token, slow_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = url.split("//")[1].split(":")
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
opts = [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host),
        ("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
ch = grpc.secure_channel("127.0.0.1:" + port, creds, options=opts)
md = (("authorization", "Bearer " + token),) if token != "-" else ()
out = {}
def call(kind, name):
    return getattr(ch, kind)("/pier.test.Echo/" + name)

out["unary"] = call("unary_unary", "Echo")(b"hi", metadata=md).decode()
out["server_stream"] = [m.decode() for m in call("unary_stream", "Count")(b"5", metadata=md)]
out["client_stream"] = call("stream_unary", "Total")(iter([b"a", b"b", b"c"]), metadata=md).decode()
out["bidi"] = [m.decode() for m in call("stream_stream", "Chat")(iter([b"x", b"y"]), metadata=md)]
big = b"z" * (3 << 20)
out["large"] = len(call("unary_unary", "Echo")(big, metadata=md))
try:
    call("unary_unary", "Echo")(b"fail", metadata=md)
except grpc.RpcError as e:
    out["fail"] = [e.code().name, e.details(), dict(e.trailing_metadata()).get("x-why")]
try:
    call("unary_unary", "Slow")(b"2000", metadata=md, timeout=0.5)
except grpc.RpcError as e:
    out["client_deadline"] = e.code().name
t0 = time.time()
try:
    call("unary_unary", "Slow")(str(slow_ms).encode(), metadata=md)
    out["revision_timeout"] = "OK"
except grpc.RpcError as e:
    out["revision_timeout"] = e.code().name
out["revision_timeout_s"] = round(time.time() - t0, 1)
ticks = 0
try:
    for _ in call("unary_stream", "Tick")(b"", metadata=md):
        ticks += 1
    out["stream_timeout"] = "OK"
except grpc.RpcError as e:
    out["stream_timeout"] = e.code().name
out["ticks"] = ticks
stub = health_pb2_grpc.HealthStub(ch)
out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
    stub.Check(health_pb2.HealthCheckRequest(service="pier.test.Echo"), metadata=md).status)
print(json.dumps(out))
"#;

fn require_grpcio() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_health"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "grpcio is missing: run scripts/install-test-deps");
}

fn client(pier: &Pier, url: &str, token: &str, slow_ms: u32) -> serde_json::Value {
    let ca = pier.dir.join("ca.pem");
    let slow = slow_ms.to_string();
    let out = python(CLIENT, [url, ca.to_str().unwrap(), token, &slow]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{}", pier.server_log()))
}

#[test]
fn grpc_calls_of_every_kind_go_through() {
    require_grpcio();
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("server.py"), SERVER).unwrap();
    let workdir = app.path().to_str().unwrap();
    let deploy = |name: &str, extra: &[&str]| -> String {
        let mut args = vec![
            "deploy",
            name,
            "--command",
            "exec python3 server.py",
            "--workdir",
            workdir,
            "--use-http2",
            "--timeout",
            "3",
        ];
        args.extend_from_slice(extra);
        pier.deploy_url(&args)
    };
    // Ready when its gRPC health service says SERVING (the startup probe asks it).
    let public = deploy(
        "grpc",
        &[
            "--allow-unauthenticated",
            "--startup-probe",
            "grpc.service=pier.test.Echo,periodSeconds=1,failureThreshold=30",
        ],
    );
    assert_eq!(
        pier.describe("grpc")["template"]["startupProbe"]["grpc"]["service"],
        "pier.test.Echo"
    );
    let r = client(&pier, &public, "-", 5000);
    assert_eq!(r["unary"], "hi", "{r}");
    assert_eq!(
        r["server_stream"],
        serde_json::json!(["0", "1", "2", "3", "4"]),
        "{r}"
    );
    assert_eq!(r["client_stream"], "abc", "{r}");
    assert_eq!(r["bidi"], serde_json::json!(["re:x", "re:y"]), "{r}");
    assert_eq!(r["large"], 3 << 20, "{r}");
    assert_eq!(
        r["fail"],
        serde_json::json!(["INVALID_ARGUMENT", "you asked for it", "asked-to-fail"]),
        "status, message and trailing metadata: {r}"
    );
    assert_eq!(r["client_deadline"], "DEADLINE_EXCEEDED", "{r}");
    // The revision's --timeout (3 s) ends a call the app would hold for 5 s.
    assert_eq!(r["revision_timeout"], "DEADLINE_EXCEEDED", "{r}");
    assert!(r["revision_timeout_s"].as_f64().unwrap() < 4.5, "{r}");
    assert_eq!(r["health"], "SERVING", "{r}");
    // A stream still running at the timeout ends with DEADLINE_EXCEEDED after what it sent.
    assert_eq!(r["stream_timeout"], "DEADLINE_EXCEEDED", "{r}");
    assert!(r["ticks"].as_u64().unwrap() >= 3, "{r}");

    // A private service: the token travels in call metadata.
    let private = deploy("grpc-private", &[]);
    let token = pier.token();
    let r = client(&pier, &private, &token, 10);
    assert_eq!(r["unary"], "hi", "{r}");
    assert_eq!(r["health"], "SERVING", "{r}");
    assert_eq!(r["revision_timeout"], "OK", "{r}");

    // Refusals reach a gRPC client as gRPC statuses with Pier's reason, not as bare HTTP statuses the
    // client must guess from: no token is PERMISSION_DENIED (Cloud Run's 403), a bad one
    // UNAUTHENTICATED (401).
    for (token, want) in [
        ("-", "PERMISSION_DENIED"),
        ("not.a.token", "UNAUTHENTICATED"),
    ] {
        let (code, details) = refused(&pier, &private, token);
        assert_eq!(code, want, "{details}");
        assert!(details.contains("print-identity-token"), "{details}");
    }
}

const REFUSED: &str = r#"
import sys, grpc
url, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = url.split("//")[1].split(":")
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
opts = [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]
ch = grpc.secure_channel("127.0.0.1:" + port, creds, options=opts)
md = (("authorization", "Bearer " + token),) if token != "-" else ()
try:
    ch.unary_unary("/pier.test.Echo/Echo")(b"hi", metadata=md)
    print("OK|")
except grpc.RpcError as e:
    print(e.code().name + "|" + e.details())
"#;

/// The gRPC status code and details a call to `url` with `token` ends with.
fn refused(pier: &Pier, url: &str, token: &str) -> (String, String) {
    let ca = pier.dir.join("ca.pem");
    let out = python(REFUSED, [url, ca.to_str().unwrap(), token]);
    let text = out.trim();
    let (code, details) = text.split_once('|').unwrap_or((text, ""));
    (code.to_owned(), details.to_owned())
}
