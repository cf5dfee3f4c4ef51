#!/usr/bin/env bash
# The edge cache: hits from Pier's cache against hits from nginx's proxy_cache in front of the same app,
# in one run (wrk with one thread; Pier and nginx with one worker; plain HTTP), and a hit's latency
# against a warm miss (the same service without its cache: a request that reaches a ready instance).
#
#   bench/cache.sh       # DURATION=10s CONNS=32 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/install-test-deps" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx missing: run scripts/install-test-deps" >&2; exit 1; }

build
start_pier pier --workers 1 --https-port 19443 --http-port 19080 --http-serve --api-addr 127.0.0.1:19079
"$PIER" deploy cached --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated \
  --cache force --cache-default-ttl 600s >/dev/null 2>&1
"$PIER" deploy uncached --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
CACHED=$(service_host cached)
UNCACHED=$(service_host uncached)
PORT=19181
direct_app "$PORT"

mkdir -p "$WORK/nginx/cache"
chmod 711 "$WORK"
chmod -R a+rwX "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$PORT; keepalive 256; }
  proxy_cache_path $WORK/nginx/cache keys_zone=edge:10m max_size=256m;
  server {
    listen 127.0.0.1:19180;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      proxy_cache_valid 200 10m;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' &
PIDS+=($!)
sleep 0.5
# Fill both caches.
curl -s -o /dev/null "http://127.0.0.1:19180/plain"
curl -s -o /dev/null -H "Host: $CACHED" "http://127.0.0.1:19080/plain"
echo "nginx: $(curl -s -D - -o /dev/null http://127.0.0.1:19180/plain | grep -i x-cache | tr -d '\r')"
echo "pier:  $(curl -s -D - -o /dev/null -H "Host: $CACHED" http://127.0.0.1:19080/plain | grep -i x-cache | tr -d '\r')"

run() { # label url connections host
  local label=$1 url=$2 conns=$3 host=$4
  local out rps p50 p99 errs
  out=$(wrk -t1 -c"$conns" -d"$DURATION" --latency -H "Host: $host" "$url")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  printf '%-22s %12s %10s %10s  %s\n' "$label" "$rps" "$p50" "$p99" "$errs"
  echo "$label|$rps|$p50|$p99" >>"$WORK/results"
}

for conns in "$CONNS" 1; do
  echo "wrk: 1 thread, $conns connection(s), $DURATION each"
  printf '%-22s %12s %10s %10s\n' target "req/s" p50 p99
  run "direct $conns"         "http://127.0.0.1:$PORT/plain" "$conns" "$CACHED"
  run "nginx hit $conns"      "http://127.0.0.1:19180/plain" "$conns" "$CACHED"
  run "pier hit $conns"       "http://127.0.0.1:19080/plain" "$conns" "$CACHED"
  run "pier warm miss $conns" "http://127.0.0.1:19080/plain" "$conns" "$UNCACHED"
  echo
done

python3 - "$WORK/results" "$CONNS" <<'PY'
import sys
def us(v):
    for suf, mul in (("us", 1), ("ms", 1000), ("s", 1e6)):
        if v.endswith(suf):
            return float(v[: -len(suf)]) * mul
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    label, rps, p50, p99 = line.strip().split("|")
    rows[label] = (float(rps), us(p50), us(p99))
for n in (sys.argv[2], "1"):
    hit, ng, miss = rows[f"pier hit {n}"], rows[f"nginx hit {n}"], rows[f"pier warm miss {n}"]
    print(f"{n} connection(s): Pier hits {hit[0]/ng[0]:.2f}x nginx proxy_cache hits' req/s; "
          f"hit p50 {hit[1]:.0f} us vs warm miss {miss[1]:.0f} us ({hit[0]/miss[0]:.2f}x the req/s)")
PY
