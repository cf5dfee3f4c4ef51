"""Reliability figures for bench/reliability.sh: zero-drop under changes, kill -9 at random instants,
and memory and latency under hostile clients. Starts its own servers on fixed free ports in WORK."""
import argparse
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--pier", required=True)
ap.add_argument("--hello", required=True)
ap.add_argument("--work", required=True)
ap.add_argument("--duration", type=int, default=60)
ap.add_argument("--kills", type=int, default=20)
args = ap.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, name, extra=(), ports=None):
        self.dir = os.path.join(args.work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.ports = ports or (free_port(), free_port(), free_port())
        self.extra = list(extra)
        self.env = dict(os.environ, PIER_CONFIG=os.path.join(self.dir, "cli.toml"), PIER_DATA_DIR=self.dir)
        self.start()

    def start(self):
        https, http, api = self.ports
        try:
            os.remove(os.path.join(self.dir, "api-url"))
        except FileNotFoundError:
            pass
        log = open(os.path.join(self.dir, "server.log"), "a")
        self.proc = subprocess.Popen(
            [args.pier, "server", "--data-dir", self.dir, "--https-port", str(https), "--http-port", str(http),
             "--api-addr", f"127.0.0.1:{api}", "--egress", "none", *self.extra],
            env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        for _ in range(400):
            if os.path.exists(os.path.join(self.dir, "api-url")) and self.cli("services", "list").returncode == 0:
                return
            time.sleep(0.05)
        raise SystemExit("server did not start")

    def cli(self, *a):
        return subprocess.run([args.pier, *a], env=self.env, capture_output=True, text=True)

    def ok(self, *a):
        r = self.cli(*a)
        if r.returncode != 0:
            raise SystemExit(f"pier {a}: {r.stderr}")
        return r.stdout

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return 0.0


def url_of(out):
    return next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("Service URL: "))


def describe(srv, name):
    return json.loads(srv.ok("services", "describe", name, "--format", "json"))


# 1. No request dropped while the service changes.
print(f"== 1. load for {args.duration} s while the service changes ==")
srv = Server("zero-drop", ["--scale-to-zero-grace", "2s"])
url = url_of(srv.ok("deploy", "steady", "--command", args.hello, "--env", "GREETING=v1", "--allow-unauthenticated"))
first = describe(srv, "steady")["latestReadyRevision"]
host = url.split("//")[1].split(":")[0]
https_port = srv.ports[0]
wrk = subprocess.Popen(["wrk", "-t1", "-c32", f"-d{args.duration}s", f"{url}/plain"], stdout=subprocess.PIPE, text=True)
h2 = subprocess.Popen(["h2load", "-c8", "-m8", "-D", str(args.duration), f"{url}/plain"], stdout=subprocess.PIPE, text=True)
srv.ok("services", "update-traffic", "steady", "--update-tags", f"old={first}")
stream_result = {}


def stream():
    ctx = ssl.create_default_context(cafile=os.path.join(srv.dir, "ca.pem"))
    tag_host = "old---" + host
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port)), server_hostname=tag_host)
    s.sendall(f"GET /stream?chunks=40&ms=500 HTTP/1.1\r\nHost: {tag_host}:{https_port}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    stream_result["chunks"] = data.count(b"chunk ")


t = threading.Thread(target=stream)
t.start()
step = max(1, args.duration // 25)
changes = 0
for v in range(2, 12):
    srv.ok("deploy", "steady", "--env", f"GREETING=v{v}")
    changes += 1
    time.sleep(step * 0.5)
now = describe(srv, "steady")["latestReadyRevision"]
for a, b in [(50, 50), (10, 90), (90, 10), (30, 70), (0, 100)]:
    srv.ok("services", "update-traffic", "steady", "--to-revisions", f"{first}={a},{now}={b}")
    changes += 1
    time.sleep(step * 0.5)
srv.ok("services", "update-traffic", "steady", "--update-tags", f"green={now}")
srv.ok("services", "update-traffic", "steady", "--update-tags", f"green={first}")
srv.ok("services", "update-traffic", "steady", "--to-revisions", f"{first}=100")
srv.ok("services", "update-traffic", "steady", "--to-latest")
srv.ok("deploy", "steady", "--max-instances", "5")
changes += 5
t.join()
deadline = time.time() + 30
while describe(srv, "steady") and json.loads(srv.ok("revisions", "describe", first, "--format", "json"))["instances"]:
    if time.time() > deadline:
        break
    time.sleep(0.5)
srv.ok("services", "update-traffic", "steady", "--to-revisions", f"{first}=100")
srv.ok("services", "update-traffic", "steady", "--to-latest")
changes += 2
w = wrk.communicate()[0]
h = h2.communicate()[0]
reqs = re.search(r"(\d+) requests in", w)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
sockerr = re.search(r"Socket errors: (.*)", w)
print(f"changes made: {changes}; stream through the scale-down: {stream_result.get('chunks')} of 40 chunks")
print(f"wrk   (HTTP/1.1, 32 conns): {reqs.group(1) if reqs else '?'} requests, non-2xx {non2xx.group(1) if non2xx else 0}, socket errors: {sockerr.group(1) if sockerr else 'none'}")
line = next((l for l in h.splitlines() if l.startswith("requests:")), "requests: ?")
codes = next((l for l in h.splitlines() if l.startswith("status codes:")), "")
print(f"h2load (HTTP/2, 8x8 streams): {line.strip()} | {codes.strip()}")
srv.stop()

def instance_pids():
    """The echo server's instances, by process name (a command line naming the binary, such as this
    script's own or a CLI deploying it, is not an instance)."""
    name = os.path.basename(args.hello)[:15]
    return subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()


# 2. kill -9 at random instants.
print(f"\n== 2. kill -9 at random instants, {args.kills} times ==")
srv = Server("kill9")
committed = []
lost_total = deploying_total = orphans_total = 0
for i in range(args.kills):
    stop = threading.Event()
    done = []

    def mutate(i=i):
        n = 0
        while not stop.is_set():
            name = f"k{i}-s{n}"
            if srv.cli("deploy", name, "--command", args.hello).returncode != 0:
                return
            done.append(("svc", name))
            if srv.cli("iam", "service-accounts", "create", f"acct-k{i}-{n}").returncode != 0:
                return
            done.append(("sa", f"acct-k{i}-{n}@default.iam.pier.localhost"))
            n += 1

    m = threading.Thread(target=mutate)
    m.start()
    time.sleep(random.uniform(0.3, 3.0))
    before = instance_pids()
    srv.kill9()
    stop.set()
    m.join()
    committed += done
    srv.start()
    time.sleep(1)
    lost = 0
    for kind, name in committed:
        r = srv.cli("services", "describe", name) if kind == "svc" else srv.cli("iam", "service-accounts", "describe", name)
        lost += r.returncode != 0
    revs = json.loads(srv.ok("revisions", "list", "--format", "json"))
    deploying = sum(1 for r in revs if r["state"] == "DEPLOYING")
    after = instance_pids()
    orphans = len(set(before) & set(after))
    lost_total += lost
    deploying_total += deploying
    orphans_total += orphans
    print(f"kill {i + 1:2}: committed so far {len(committed):3}, lost {lost}, left deploying {deploying}, old instances alive {orphans}")
print(f"total: lost {lost_total}, left deploying {deploying_total}, old instances alive {orphans_total}")
srv.stop()

# 3. Hostile clients.
print("\n== 3. hostile clients ==")
srv = Server("hostile")
url = url_of(srv.ok("deploy", "victim", "--command", args.hello, "--min-instances", "1", "--allow-unauthenticated"))
host = url.split("//")[1].split(":")[0]
port = srv.ports[0]
ctx = ssl.create_default_context(cafile=os.path.join(srv.dir, "ca.pem"))


def normal_latency(n=50):
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=host)
        s.sendall(f"GET /plain HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass
        xs.append((time.perf_counter() - t0) * 1000)
        s.close()
    xs.sort()
    return xs[len(xs) // 2], xs[int(len(xs) * 0.99) - 1]


base_rss = srv.rss_mb()
p50, p99 = normal_latency()
print(f"quiet:            RSS {base_rss:7.1f} MB, normal client p50 {p50:6.1f} ms p99 {p99:6.1f} ms")
held = []


def attack(kind, count):
    for _ in range(count):
        try:
            raw = socket.create_connection(("127.0.0.1", port))
            if kind == "idle":
                pass
            elif kind == "slowloris":
                s = ctx.wrap_socket(raw, server_hostname=host)
                s.sendall(f"GET /plain HTTP/1.1\r\nHost: {host}\r\n".encode())
                raw = s
            elif kind == "headers":
                s = ctx.wrap_socket(raw, server_hostname=host)
                s.sendall((f"GET /plain HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(2000)) + "\r\n").encode())
                raw = s
            elif kind == "noread":
                s = ctx.wrap_socket(raw, server_hostname=host)
                s.sendall(f"GET /stream?chunks=1000&ms=1 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                raw = s
            held.append(raw)
        except OSError:
            pass


for kind, count in [("idle", 500), ("slowloris", 200), ("headers", 50), ("noread", 50)]:
    attack(kind, count)
    time.sleep(1)
    p50, p99 = normal_latency()
    print(f"+{count:4} {kind:10}  RSS {srv.rss_mb():7.1f} MB, normal client p50 {p50:6.1f} ms p99 {p99:6.1f} ms")
for s in held:
    try:
        s.close()
    except OSError:
        pass
time.sleep(2)
print(f"after release:    RSS {srv.rss_mb():7.1f} MB")
srv.stop()
