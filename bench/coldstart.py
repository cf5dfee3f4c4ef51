"""Cold start: time to first byte for a request to a revision scaled to zero, through Pier, for each service
given (the same echo server as a host process and as a container image), against baselines measured in the
same run: the app started directly, and (with --runc-bundle) the app started by runc alone.

Run by bench/coldstart.sh, which starts the server, builds the image and deploys the services.
"""
import argparse
import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--api", required=True)
ap.add_argument("--token", required=True)
ap.add_argument("--https-port", type=int, required=True)
ap.add_argument("--ca", required=True)
ap.add_argument("--tries", type=int, default=50)
ap.add_argument("--hello", required=True, help="the echo server binary, for the direct baseline")
ap.add_argument("--runc-bundle", help="an OCI bundle of the image, for the runc-alone baseline")
ap.add_argument("--runsc-bundle", help="a second OCI bundle of the image, for the runsc-alone baseline")
ap.add_argument("services", nargs="+", help="LABEL=HOST@REVISION")
args = ap.parse_args()


def api_get(path):
    req = urllib.request.Request(args.api + path, headers={"Authorization": "Bearer " + args.token})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_and_get(port, t0):
    """Polls PORT every 100 us until it accepts, then sends one request; returns (listening, first byte) in us."""
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.0001)
    t1 = time.perf_counter()
    c.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    c.recv(100)
    t2 = time.perf_counter()
    c.close()
    return (t1 - t0) * 1e6, (t2 - t0) * 1e6


def through_pier(host, revision):
    class Conn(http.client.HTTPSConnection):
        def connect(self):
            sock = socket.create_connection(("127.0.0.1", args.https_port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self._context.wrap_socket(sock, server_hostname=host)

    conn = Conn(host, args.https_port, context=ssl.create_default_context(cafile=args.ca))

    def timed_get():
        t0 = time.perf_counter()
        conn.request("GET", "/plain", headers={"Host": f"{host}:{args.https_port}"})
        r = conn.getresponse()
        t1 = time.perf_counter()
        r.read()
        assert r.status == 200, r.status
        return (t1 - t0) * 1e6

    def instances():
        return len(api_get(f"/v1/projects/default/revisions/{revision}")["instances"])

    timed_get()  # open the connection
    cold, warm = [], []
    for _ in range(args.tries):
        deadline = time.time() + 30
        while instances() > 0:
            if time.time() > deadline:
                sys.exit(f"{revision} never scaled to zero")
            time.sleep(0.05)
        cold.append(timed_get())
        warm.append(timed_get())
    return cold, warm


def app_alone():
    listening, first = [], []
    for _ in range(args.tries):
        port = free_port()
        env = {"PORT": str(port), "PATH": os.environ.get("PATH", "")}
        t0 = time.perf_counter()
        p = subprocess.Popen([args.hello], env=env, stderr=subprocess.DEVNULL)
        a, b = wait_and_get(port, t0)
        p.terminate()
        p.wait()
        listening.append(a)
        first.append(b)
    return listening, first


def engine_alone(engine, bundle):
    """`runc run` or `runsc run` of the image's bundle on the host network (so the port can be polled),
    read-only root, no user namespace: the engine's own cost, without anything Pier adds."""
    cfg_path = os.path.join(bundle, "config.json")
    cfg = json.load(open(cfg_path))
    port = free_port()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/pier-hello"]
    cfg["process"]["env"] = ["PATH=/bin", f"PORT={port}"]
    cfg["root"]["readonly"] = True
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] not in ("network", "user")]
    cfg["linux"].pop("uidMappings", None)
    cfg["linux"].pop("gidMappings", None)
    json.dump(cfg, open(cfg_path, "w"))
    root = os.path.join(os.path.dirname(bundle), f"{engine}-state")
    extra = ["--network=host"] if engine == "runsc" else []
    listening, first = [], []
    for i in range(args.tries):
        cid = f"bench-{os.getpid()}-{engine}-{i}"
        t0 = time.perf_counter()
        p = subprocess.Popen([engine, "--root", root, *extra, "run", "--bundle", bundle, cid],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        a, b = wait_and_get(port, t0)
        subprocess.run([engine, "--root", root, "kill", cid, "KILL"], stderr=subprocess.DEVNULL)
        p.wait()
        subprocess.run([engine, "--root", root, "delete", "--force", cid], stderr=subprocess.DEVNULL)
        listening.append(a)
        first.append(b)
    return listening, first


p50 = statistics.median
rows, cold_by = [], {}
for spec in args.services:
    label, rest = spec.split("=", 1)
    host, revision = rest.split("@", 1)
    cold, warm = through_pier(host, revision)
    cold_by[label] = cold
    rows.append((f"{label}: cold request through Pier", cold))
    rows.append((f"{label}: warm request through Pier", warm))
alone_listen, alone_first = app_alone()
rows.append(("app alone: spawn to listening", alone_listen))
rows.append(("app alone: spawn to first byte", alone_first))
alone = {}
for engine, bundle in (("runc", args.runc_bundle), ("runsc", args.runsc_bundle)):
    if bundle:
        listen, first = engine_alone(engine, bundle)
        rows.append((f"{engine} alone: run to listening", listen))
        rows.append((f"{engine} alone: run to first byte", first))
        alone[engine] = first

print(f"{args.tries} tries each, microseconds")
print(f"{'':42}{'p50':>9}{'p99':>9}")
for name, xs in rows:
    print(f"{name:42}{p50(xs):9.0f}{pct(xs, 99):9.0f}")
print()
# Each Pier runtime against the engine it runs on: gen2 on runc, gen1 on runsc.
engine_of = {"gen2": "runc", "gen1": "runsc"}
for label, cold in cold_by.items():
    print(f"{label}: cold TTFB / app alone first byte (p50): {p50(cold) / p50(alone_first):.2f}x, "
          f"Pier's share {p50(cold) - p50(alone_first):.0f} us")
    engine = engine_of.get(label)
    if engine in alone:
        base = alone[engine]
        print(f"{label}: cold TTFB / {engine} alone first byte (p50): {p50(cold) / p50(base):.2f}x, "
              f"Pier's share beyond {engine} {p50(cold) - p50(base):.0f} us")
