#!/usr/bin/env bash
# What watching costs: the same Pier binary twice in one run, once with every instrument off (--metrics-addr
# off --request-log off, no traces) and once with all of them on at their defaults (metrics, the request
# log, and traces to an OTLP/HTTP sink at --trace-sample-ratio 0.01). wrk over keep-alive connections to
# the echo server's /plain, one worker thread each; each side runs twice in the order off, on, on, off and
# the ratio uses the means.
#
#   bench/telemetry.sh        # DURATION=10s CONNS=32 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/install-test-deps" >&2; exit 1; }

build
# A sink that takes OTLP exports and answers 200 (what a collector does, without keeping them).
SINK=19318
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$SINK" &
PIDS+=($!)

start_pier off --workers 1 --https-port 19743 --http-port 19780 --http-serve --api-addr 127.0.0.1:19779 \
  --metrics-addr off --request-log off
"$PIER" deploy bench --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
HOST_OFF=$(service_host bench)
start_pier on --workers 1 --https-port 19443 --http-port 19080 --http-serve --api-addr 127.0.0.1:19079 \
  --metrics-addr 127.0.0.1:19464 --otlp-endpoint "http://127.0.0.1:$SINK" --trace-sample-ratio 0.01
"$PIER" deploy bench --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
HOST_ON=$(service_host bench)

run() { # label url connections host
  local out rps p50 p99
  out=$(wrk -t1 -c"$3" -d"$DURATION" --latency -H "Host: $4" "$2")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  printf '%-22s %12s %10s %10s  %s\n' "$1" "$rps" "$p50" "$p99" "$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')"
  echo "$1 $rps $p50 $p99" >>"$WORK/results"
}

echo "wrk: 1 thread, $DURATION each; instance: pier-hello /plain"
printf '%-22s %12s %10s %10s\n' target "req/s" p50 p99
for scheme in http https; do
  for c in "$CONNS" 1; do
    off="$scheme://127.0.0.1:$([ $scheme = http ] && echo 19780 || echo 19743)/plain"
    on="$scheme://127.0.0.1:$([ $scheme = http ] && echo 19080 || echo 19443)/plain"
    run "off $scheme ${c}c"       "$off" "$c" "$HOST_OFF"
    run "on $scheme ${c}c"        "$on" "$c" "$HOST_ON"
    run "on $scheme ${c}c again"  "$on" "$c" "$HOST_ON"
    run "off $scheme ${c}c again" "$off" "$c" "$HOST_OFF"
  done
done
LINES=$(curl -s http://127.0.0.1:19464/metrics | awk '/^pier_request_count_total/ {s+=$2} END {print s}')
echo
echo "requests the 'on' server counted in its metrics: $LINES"
echo "request log lines it wrote: $(cat "$WORK/on/request-logs/default/bench.log"* 2>/dev/null | wc -l)"

python3 - "$WORK/results" "$CONNS" <<'PY'
import sys
def us(v):
    for suf, mul in (("us", 1), ("ms", 1000), ("s", 1e6)):
        if v.endswith(suf):
            return float(v[: -len(suf)]) * mul
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    rows[" ".join(p[:-3])] = (float(p[-3]), us(p[-2]), us(p[-1]))
def mean(label):
    a, b = rows[label], rows[label + " again"]
    return tuple((x + y) / 2 for x, y in zip(a, b))
print()
for scheme in ("http", "https"):
    for c in (sys.argv[2], "1"):
        on, off = mean(f"on {scheme} {c}c"), mean(f"off {scheme} {c}c")
        print(f"{scheme} {c} conn: on/off req/s {on[0]/off[0]:.3f}x   p50 {on[1]-off[1]:+.0f} us   p99 {on[2]-off[2]:+.0f} us")
PY
