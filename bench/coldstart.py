"""Cold start: time to first byte for a request to a revision scaled to zero, through Pier, split into the
app's own startup (the same binary started directly, timed until it accepts a connection) and Pier's share.

Run by bench/coldstart.sh, which starts the server and deploys the service.
"""
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

api, token, https_port, host, ca, revision, hello, tries = sys.argv[1:9]
https_port, tries = int(https_port), int(tries)


def api_get(path):
    req = urllib.request.Request(api + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


class Conn(http.client.HTTPSConnection):
    """An HTTPS connection to loopback that sends the service's host name for SNI and Host."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", https_port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=host)


ctx = ssl.create_default_context(cafile=ca)
conn = Conn(host, https_port, context=ctx)


def timed_get(path="/plain"):
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Host": f"{host}:{https_port}"})
    r = conn.getresponse()
    t1 = time.perf_counter()
    r.read()
    assert r.status == 200, r.status
    return (t1 - t0) * 1e6


def instances():
    return len(api_get(f"/v1/projects/default/revisions/{revision}")["instances"])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


timed_get()  # open the connection
cold, warm = [], []
for i in range(tries):
    deadline = time.time() + 30
    while instances() > 0:
        if time.time() > deadline:
            sys.exit("the revision never scaled to zero")
        time.sleep(0.05)
    cold.append(timed_get())
    warm.append(timed_get())

# The app alone: spawn, poll its port every 100 us until it accepts, then one request.
startup, direct_first = [], []
for i in range(tries):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {"PORT": str(port), "PATH": os.environ.get("PATH", "")}
    t0 = time.perf_counter()
    p = subprocess.Popen([hello], env=env, stderr=subprocess.DEVNULL)
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
    p.terminate()
    p.wait()
    startup.append((t1 - t0) * 1e6)
    direct_first.append((t2 - t0) * 1e6)

p50 = statistics.median
print(f"{tries} tries each, microseconds")
print(f"{'':34}{'p50':>9}{'p99':>9}")
rows = [
    ("cold request through Pier (TTFB)", cold),
    ("warm request through Pier", warm),
    ("app alone: spawn to listening", startup),
    ("app alone: spawn to first byte", direct_first),
]
for name, xs in rows:
    print(f"{name:34}{p50(xs):9.0f}{pct(xs, 99):9.0f}")
share = p50(cold) - p50(warm) - p50(startup)
print()
print(f"Pier's share of a cold start (p50 cold - p50 warm - p50 app startup): {share:.0f} us")
print(f"cold start vs app alone (p50 cold TTFB / p50 app spawn-to-first-byte): {p50(cold) / p50(direct_first):.2f}x")
