#!/usr/bin/env bash
# Proxy overhead: requests/s and latency through Pier versus the same echo server reached directly, and
# versus nginx (one worker) and HAProxy (one thread) as reverse proxies to it, all in one run on this
# machine. Pier is measured twice: a public service, and a private one called with an ID token (the
# guard verifies it, from its cache, on every request). HTTP/2 with h2load (TLS, many streams per
# connection) closes the run. Pier's instance runs
# sandboxed in its own network namespace (which the host cannot reach), so "direct" and nginx use a second
# copy of the same binary on the host's loopback. Pier runs
# with one worker thread, like nginx. Load: wrk over keep-alive connections to the echo server's /plain.
#
#   bench/proxy.sh            # DURATION=10s CONNS=32 by default
#   BEFORE=REV bench/proxy.sh # also Pier as of git revision REV, in the same run (a before/after)
#   BEFORE_BIN=PATH bench/proxy.sh # the same with a pier binary already built (a release build of REV)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/install-test-deps" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx missing: run scripts/install-test-deps" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "haproxy missing: run scripts/install-test-deps" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load missing: run scripts/install-test-deps" >&2; exit 1; }

build
if [ -n "${BEFORE_BIN:-}" ]; then
  cp "$BEFORE_BIN" "$WORK/pier-before"
  BEFORE=binary
elif [ -n "${BEFORE:-}" ]; then
  build_before "$BEFORE"
fi
if [ -n "${BEFORE:-}" ]; then
  CURRENT=$PIER
  PIER="$WORK/pier-before"
  start_pier before --workers 1 --https-port 19743 --http-port 19780 --http-serve --api-addr 127.0.0.1:19779 \
    --metrics-addr 127.0.0.1:0
  "$PIER" deploy bench --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
  HOST_BEFORE=$(service_host bench)
  PIER=$CURRENT
fi
start_pier pier --workers 1 --https-port 19443 --http-port 19080 --http-serve --api-addr 127.0.0.1:19079 \
  --metrics-addr 127.0.0.1:0
"$PIER" deploy bench --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
HOST=$(service_host bench)
"$PIER" deploy private --command "$HELLO" --min-instances 1 --concurrency 1000 >/dev/null 2>&1
PRIVATE_HOST=$(service_host private)
PRIVATE_URL=$("$PIER" services describe private --format 'value(url)')
TOKEN=$("$PIER" auth print-identity-token --audiences "$PRIVATE_URL")
PORT=19181
direct_app "$PORT"
DATA="$WORK/pier"

# nginx: one worker, keep-alive to the same instance, TLS with Pier's own certificate.
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream app { server 127.0.0.1:$PORT; keepalive 256; }
  server {
    listen 127.0.0.1:19180;
    listen 127.0.0.1:19543 ssl http2;
    ssl_certificate $DATA/tls/pier.localhost.crt.pem;
    ssl_certificate_key $DATA/tls/pier.localhost.key.pem;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' &
PIDS+=($!)

# HAProxy: one thread, keep-alive to the same instance (http-reuse always), TLS with the same certificate.
mkdir -p "$WORK/haproxy"
cat "$DATA/tls/pier.localhost.crt.pem" "$DATA/tls/pier.localhost.key.pem" >"$WORK/haproxy/cert.pem"
cat >"$WORK/haproxy/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
  option forwardfor
frontend web
  bind 127.0.0.1:19280
  bind 127.0.0.1:19643 ssl crt $WORK/haproxy/cert.pem alpn h2,http/1.1
  default_backend app
backend app
  server app 127.0.0.1:$PORT
HAPROXY
haproxy -f "$WORK/haproxy/haproxy.cfg" -db >"$WORK/haproxy/log" 2>&1 &
PIDS+=($!)
sleep 0.5

run() { # label url [connections] [host] [extra header]
  local out extra=()
  [ -n "${5:-}" ] && extra=(-H "$5")
  out=$(wrk -t1 -c"${3:-$CONNS}" -d"$DURATION" --latency -H "Host: ${4:-$HOST}" "${extra[@]}" "$2")
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local errs
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  printf '%-22s %12s %10s %10s  %s\n' "$1" "$rps" "$p50" "$p99" "$errs"
  echo "$1 $rps $p50 $p99" >>"$WORK/results"
}

echo "wrk: 1 thread, $CONNS connections, $DURATION each; instance: pier-hello /plain on :$PORT"
printf '%-22s %12s %10s %10s\n' target "req/s" p50 p99
run "direct (http)"      "http://127.0.0.1:$PORT/plain"
run "nginx (http)"       "http://127.0.0.1:19180/plain"
run "haproxy (http)"     "http://127.0.0.1:19280/plain"
run "pier (http)"        "http://127.0.0.1:19080/plain"
run "pier private (http)" "http://127.0.0.1:19080/plain" "$CONNS" "$PRIVATE_HOST" "Authorization: Bearer $TOKEN"
run "nginx (https)"      "https://127.0.0.1:19543/plain"
run "haproxy (https)"    "https://127.0.0.1:19643/plain"
run "pier (https)"       "https://127.0.0.1:19443/plain"
run "pier private (https)" "https://127.0.0.1:19443/plain" "$CONNS" "$PRIVATE_HOST" "Authorization: Bearer $TOKEN"
if [ -n "${BEFORE:-}" ]; then
  # Order matters on a small machine: each side runs twice, in the order before, now, now, before
  # (the second of each is labelled "again"); the comparison uses the mean of the two.
  run "before (http)"          "http://127.0.0.1:19780/plain" "$CONNS" "$HOST_BEFORE"
  run "pier (http) again"      "http://127.0.0.1:19080/plain"
  run "before (http) again"    "http://127.0.0.1:19780/plain" "$CONNS" "$HOST_BEFORE"
  run "before (https)"         "https://127.0.0.1:19743/plain" "$CONNS" "$HOST_BEFORE"
  run "pier (https) again"     "https://127.0.0.1:19443/plain"
  run "before (https) again"   "https://127.0.0.1:19743/plain" "$CONNS" "$HOST_BEFORE"
fi
echo
echo "latency at light load (1 connection):"
run "direct 1c (http)"   "http://127.0.0.1:$PORT/plain" 1
run "nginx 1c (http)"    "http://127.0.0.1:19180/plain" 1
run "haproxy 1c (http)"  "http://127.0.0.1:19280/plain" 1
run "pier 1c (http)"     "http://127.0.0.1:19080/plain" 1
run "pier private 1c (http)" "http://127.0.0.1:19080/plain" 1 "$PRIVATE_HOST" "Authorization: Bearer $TOKEN"
run "nginx 1c (https)"   "https://127.0.0.1:19543/plain" 1
run "haproxy 1c (https)" "https://127.0.0.1:19643/plain" 1
run "pier 1c (https)"    "https://127.0.0.1:19443/plain" 1
if [ -n "${BEFORE:-}" ]; then
  run "before 1c (http)"         "http://127.0.0.1:19780/plain" 1 "$HOST_BEFORE"
  run "pier 1c (http) again"     "http://127.0.0.1:19080/plain" 1
  run "before 1c (http) again"   "http://127.0.0.1:19780/plain" 1 "$HOST_BEFORE"
  run "before 1c (https)"        "https://127.0.0.1:19743/plain" 1 "$HOST_BEFORE"
  run "pier 1c (https) again"    "https://127.0.0.1:19443/plain" 1
  run "before 1c (https) again"  "https://127.0.0.1:19743/plain" 1 "$HOST_BEFORE"
fi

H2_REQUESTS=${H2_REQUESTS:-200000}
echo
echo "HTTP/2 over TLS (h2load: 4 connections, 32 streams each, $H2_REQUESTS requests):"
h2() { # label url [host]
  local out
  out=$(h2load -n "$H2_REQUESTS" -c 4 -m 32 -t 1 -H ":authority: ${3:-$HOST}" "$2" 2>&1)
  local rps
  rps=$(echo "$out" | awk '/^finished in/ {print $4}')
  printf '%-22s %12s  %s\n' "$1" "$rps" "$(echo "$out" | awk '/^requests:/' )"
  echo "$1 $rps 0us 0us" >>"$WORK/results"
}
h2 "nginx (h2)"   "https://127.0.0.1:19543/plain"
h2 "haproxy (h2)" "https://127.0.0.1:19643/plain"
h2 "pier (h2)"    "https://127.0.0.1:19443/plain"

python3 - "$WORK/results" <<'PY'
import sys
def us(v):
    v = v.strip()
    for suf, mul in (("us", 1), ("ms", 1000), ("s", 1e6)):
        if v.endswith(suf):
            return float(v[: -len(suf)]) * mul
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    label = " ".join(parts[:-3])
    rows[label] = (float(parts[-3]), us(parts[-2]), us(parts[-1]))
d, nh, ph, ns, ps = (rows[k] for k in ["direct (http)", "nginx (http)", "pier (http)", "nginx (https)", "pier (https)"])
print()
print(f"pier/nginx req/s:  http {ph[0]/nh[0]:.2f}x   https {ps[0]/ns[0]:.2f}x")
hh, hs = rows["haproxy (http)"], rows["haproxy (https)"]
print(f"pier/haproxy req/s:  http {ph[0]/hh[0]:.2f}x   https {ps[0]/hs[0]:.2f}x")
pph, pps = rows["pier private (http)"], rows["pier private (https)"]
print(f"pier private (token checked)/nginx req/s:  http {pph[0]/nh[0]:.2f}x   https {pps[0]/ns[0]:.2f}x")
print(f"p99 pier vs nginx under load:  http {ph[2]-nh[2]:+.0f} us   https {ps[2]-ns[2]:+.0f} us")
n2, h2_, p2 = rows["nginx (h2)"], rows["haproxy (h2)"], rows["pier (h2)"]
print(f"h2 req/s:  pier/nginx {p2[0]/n2[0]:.2f}x   pier/haproxy {p2[0]/h2_[0]:.2f}x")
print(f"p50 overhead over direct:  pier http {ph[1]-d[1]:.0f} us   nginx http {nh[1]-d[1]:.0f} us")
print(f"p50 pier vs nginx:  http {ph[1]-nh[1]:+.0f} us   https {ps[1]-ns[1]:+.0f} us")
d1, n1, p1, n1s, p1s = (rows[k] for k in ["direct 1c (http)", "nginx 1c (http)", "pier 1c (http)", "nginx 1c (https)", "pier 1c (https)"])
print(f"1 connection, p50 overhead over direct:  pier http {p1[1]-d1[1]:.0f} us   nginx http {n1[1]-d1[1]:.0f} us")
print(f"1 connection, p50 pier vs nginx:  http {p1[1]-n1[1]:+.0f} us   https {p1s[1]-n1s[1]:+.0f} us")
if "before (http)" in rows:
    def mean(label):
        a, b = rows[label], rows[label + " again"]
        return tuple((x + y) / 2 for x, y in zip(a, b))
    ph, ps, bh, bs = (mean(k) for k in ["pier (http)", "pier (https)", "before (http)", "before (https)"])
    p1, p1s, b1, b1s = (mean(k) for k in ["pier 1c (http)", "pier 1c (https)", "before 1c (http)", "before 1c (https)"])
    print("before/after, each the mean of two runs in the order before, now, now, before:")
    print(f"  now/nginx req/s:     http {ph[0]/nh[0]:.2f}x   https {ps[0]/ns[0]:.2f}x")
    print(f"  before/nginx req/s:  http {bh[0]/nh[0]:.2f}x   https {bs[0]/ns[0]:.2f}x")
    print(f"  now/before req/s:    http {ph[0]/bh[0]:.2f}x   https {ps[0]/bs[0]:.2f}x")
    print(f"  1 connection, p50 now vs before:  http {p1[1]-b1[1]:+.0f} us   https {p1s[1]-b1s[1]:+.0f} us")
PY
