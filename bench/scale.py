"""The scale bench's driver (run by bench/scale.sh, which starts the server and passes its addresses).

Deploys services through the admin API up to each checkpoint, then measures there: a deploy of one more
revision (POST to READY), the server's own route publication time (pier_route_publish_seconds), the
gateway's routing lookup (p50 of requests over one kept TLS connection, to a routed host and to an
unknown one), and the server's RSS. At the end: RSS per idle keep-alive client connection and per open
WebSocket.
"""
import argparse
import asyncio
import concurrent.futures
import http.client
import json
import os
import resource
import socket
import ssl
import statistics
import time
import urllib.request


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--host-of", required=True, help="JSON map service -> host of the first services")
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--websockets", type=int, default=1000)
    p.add_argument("--ws-host", default="")
    return p.parse_args()


A = args()


def api(method, path, body=None):
    req = urllib.request.Request(A.api + path, method=method,
                                 headers={"Authorization": f"Bearer {A.token}",
                                          "Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read() or b"null")


def template():
    revs = api("GET", "/v1/projects/default/revisions?service=svc-1")
    return revs[0]["template"]


TEMPLATE = template()


def deploy(name, env=None):
    """Deploys a revision of `name` and waits for it: seconds from POST to READY."""
    t = dict(TEMPLATE)
    if env is not None:
        t["env"] = [{"name": "GEN", "value": str(env)}]
    start = time.perf_counter()
    rev = api("POST", f"/v1/projects/default/services/{name}/revisions",
              {"template": t, "allowUnauthenticated": True})
    while rev["state"] == "DEPLOYING":
        rev = api("GET", f"/v1/projects/default/revisions/{rev['name']}?wait=60")
    if rev["state"] != "READY":
        raise SystemExit(f"deploy of {name} ended {rev['state']}: {rev.get('message')}")
    return time.perf_counter() - start


def rss_mb():
    for line in open(f"/proc/{A.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds():
    """The server's user + system CPU time so far, in seconds."""
    fields = open(f"/proc/{A.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(seconds=5.0):
    """The server's CPU use (percent of one core) while nothing is asked of it, after instances left."""
    time.sleep(3)
    c0 = cpu_seconds()
    time.sleep(seconds)
    return (cpu_seconds() - c0) / seconds * 100


def publish_stats():
    """(count, sum seconds) of the server's route publications so far."""
    text = urllib.request.urlopen(A.metrics, timeout=10).read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("pier_route_publish_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("pier_route_publish_seconds_sum"):
            total = float(line.split()[-1])
    return count, total


def ctx():
    c = ssl.create_default_context(cafile=A.ca)
    return c


class Conn(http.client.HTTPSConnection):
    """A kept TLS connection to the gateway on loopback, named `sni` (glibc does not resolve *.localhost)."""

    def __init__(self, sni):
        super().__init__("127.0.0.1", A.port, context=ctx(), timeout=30)
        self.sni = sni

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", A.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.sni)


def lookup_p50(host, path, n=600):
    """p50 in µs of `n` GETs over one kept TLS connection (SNI and Host: `host`); the first tenth warms."""
    conn = Conn(host)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        r.read()
        times.append(time.perf_counter() - t)
    conn.close()
    return statistics.median(times[n // 10:]) * 1e6, r.status


HOSTS = json.loads(A.host_of)
ROUTED = HOSTS["svc-1"]
UNKNOWN = "nosuchservice-" + ROUTED.split("-", 1)[1]


def checkpoint(n, rows):
    deploys = []
    c0, s0 = publish_stats()
    for i in range(5):
        deploys.append(deploy("probe", env=f"{n}-{i}"))
    c1, s1 = publish_stats()
    routed, st1 = lookup_p50(ROUTED, "/plain")
    unknown, st2 = lookup_p50(UNKNOWN, "/")
    assert st1 == 200 and st2 == 404, (st1, st2)
    row = {
        "services": n,
        "deploy_ms": statistics.median(deploys) * 1000,
        "publish_ms": (s1 - s0) / max(c1 - c0, 1) * 1000,
        "routed_us": routed,
        "unknown_us": unknown,
        "rss_mb": rss_mb(),
        "idle_cpu": idle_cpu(),
    }
    rows.append(row)
    print(f"{n:>6} services: deploy p50 {row['deploy_ms']:7.1f} ms   publish {row['publish_ms']:7.2f} ms"
          f"   request p50 {routed:6.0f} µs (unknown host {unknown:6.0f} µs)   RSS {row['rss_mb']:6.1f} MB"
          f"   idle CPU {row['idle_cpu']:5.1f}%",
          flush=True)


async def idle_connections(count):
    """Opens `count` TLS connections, one request each, kept open: RSS per connection."""
    c = ctx()
    before = rss_mb()
    conns = []
    sem = asyncio.Semaphore(64)

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", A.port, ssl=c, server_hostname=ROUTED)
            w.write(f"GET /plain HTTP/1.1\r\nHost: {ROUTED}\r\n\r\n".encode())
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:40]
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            await r.readexactly(length)
            conns.append(w)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    took = time.perf_counter() - start
    await asyncio.sleep(2)
    after = rss_mb()
    print(f"{count} idle keep-alive TLS connections (opened in {took:.1f} s): RSS {before:.1f} -> {after:.1f} MB,"
          f" {(after - before) * 1024 / count:.1f} KB per connection", flush=True)
    for w in conns:
        w.close()
    return (after - before) * 1024 / count


async def websockets_open(count):
    import websockets
    c = ctx()
    before = rss_mb()
    socks = []
    sem = asyncio.Semaphore(64)

    async def one(i):
        async with sem:
            ws = await websockets.connect(f"wss://{A.ws_host}:{A.port}/", ssl=c,
                                          host="127.0.0.1", port=A.port, server_hostname=A.ws_host,
                                          open_timeout=60)
            await ws.send(f"m{i}")
            got = await ws.recv()
            assert got == f"echo: m{i}", got
            socks.append(ws)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    took = time.perf_counter() - start
    await asyncio.sleep(2)
    after = rss_mb()
    print(f"{count} open WebSockets (opened in {took:.1f} s): RSS {before:.1f} -> {after:.1f} MB,"
          f" {(after - before) * 1024 / count:.1f} KB per WebSocket", flush=True)
    for ws in socks:
        await ws.close()
    return (after - before) * 1024 / count


def main():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    have = 1  # svc-1 was deployed by the CLI
    pool = concurrent.futures.ThreadPoolExecutor(A.parallel)
    for target in [int(x) for x in A.checkpoints.split(",")]:
        start = time.perf_counter()
        list(pool.map(lambda i: deploy(f"svc-{i}"), range(have + 1, target + 1)))
        if target > have:
            print(f"  (deployed {target - have} more in {time.perf_counter() - start:.0f} s)", flush=True)
        have = max(have, target)
        checkpoint(target, rows)
    first, last = rows[0], rows[-1]
    print()
    print(f"request p50 at {last['services']} / at {first['services']} services: "
          f"{last['routed_us'] / first['routed_us']:.2f}x (unknown host {last['unknown_us'] / first['unknown_us']:.2f}x)")
    print(f"route publication at {last['services']} services: {last['publish_ms']:.1f} ms (target < 50)")
    print(f"RSS at {last['services']} services: {last['rss_mb']:.0f} MB (target <= 200);"
          f" {(last['rss_mb'] - first['rss_mb']) * 1024 / (last['services'] - first['services']):.1f} KB per service")
    print(f"idle CPU at {last['services']} services: {last['idle_cpu']:.1f}% of a core"
          f" (at {first['services']}: {first['idle_cpu']:.1f}%)")
    if A.connections:
        asyncio.run(idle_connections(A.connections))
    if A.websockets and A.ws_host:
        asyncio.run(websockets_open(A.websockets))


main()
