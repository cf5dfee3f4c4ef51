#!/usr/bin/env bash
# API gateway middleware cost: the same echo server reached directly, through nginx (no checks: the
# floor), through Pier as a plain public service, and through a Pier API gateway with no checks, with an
# API key, with key + JWT + quota, and (POST of a 1 KiB JSON body) with request validation against the
# plain service's POST. One run on this machine, wrk with one thread; Pier and nginx with one worker.
#
#   bench/apigateway.sh       # DURATION=10s CONNS=32 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/install-test-deps" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx missing: run scripts/install-test-deps" >&2; exit 1; }

build
start_pier pier --workers 1 --https-port 19443 --http-port 19080 --http-serve --api-addr 127.0.0.1:19079
"$PIER" deploy bench --command "$HELLO" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
HOST=$(service_host bench)
PORT=19181
direct_app "$PORT"

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$PORT; keepalive 256; }
  server {
    listen 127.0.0.1:19180;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' &
PIDS+=($!)

# One API, four configs (one per level of checking), four gateways.
BACKEND="https://$HOST:19443"
ISSUER="https://pier.localhost:19443"
spec() { # name security quota validate
  cat >"$WORK/$1.yaml" <<YAML
swagger: "2.0"
info: {title: bench, version: "1"}
x-google-backend: {address: "$BACKEND"}
securityDefinitions:
  api_key: {type: apiKey, name: key, in: query}
  users: {type: oauth2, flow: implicit, authorizationUrl: "", x-google-issuer: "$ISSUER", x-google-audiences: bench-api}
x-google-management:
  metrics: [{name: calls, valueType: INT64, metricKind: DELTA}]
  quota: {limits: [{name: l, metric: calls, unit: "1/min/{project}", values: {STANDARD: 1000000000}}]}
security: $2
x-pier-validate: $4
paths:
  /plain:
    get:
      x-google-quota: $3
  /body:
    post:
      parameters: [{name: b, in: body, required: true, schema: {\$ref: "#/definitions/Doc"}}]
definitions:
  Doc:
    type: object
    required: [id, items]
    properties:
      id: {type: integer}
      items: {type: array, items: {type: object, required: [name, price], properties: {name: {type: string}, price: {type: number, minimum: 0}}}}
YAML
}
spec plain "[]" "{metricCosts: {}}" false
spec key "[{api_key: []}]" "{metricCosts: {}}" false
spec full "[{api_key: [], users: []}]" "{metricCosts: {calls: 1}}" false
spec valid "[]" "{metricCosts: {}}" true
"$PIER" api-gateway apis create bench >/dev/null
for c in plain key full valid; do
  "$PIER" api-gateway api-configs create "$c" --api bench --openapi-spec "$WORK/$c.yaml" >/dev/null
  "$PIER" api-gateway gateways create "gw-$c" --api bench --api-config "$c" >/dev/null
done
"$PIER" services add-iam-policy-binding bench --member serviceAccount:compute@default.iam.pier.localhost --role roles/run.invoker >/dev/null
KEY=$("$PIER" api-keys create --display-name bench)
JWT=$("$PIER" auth print-identity-token --audiences bench-api)
gw_host() { "$PIER" api-gateway gateways describe "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["defaultHostname"].split("//")[1].split(":")[0])'; }
GP=$(gw_host gw-plain); GK=$(gw_host gw-key); GF=$(gw_host gw-full); GV=$(gw_host gw-valid)

# A 1 KiB JSON document, POSTed by wrk.
python3 - "$WORK/post.lua" <<'PY'
import json, sys
doc = {"id": 7, "items": [{"name": f"item-{i:03d}", "price": i * 1.5} for i in range(24)]}
body = json.dumps(doc)
while len(body) < 1024:
    doc["items"].append({"name": "x", "price": 1}); body = json.dumps(doc)
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' % json.dumps(body))
PY
sleep 0.5

run() { # label url connections host [extra wrk args...]
  local label=$1 url=$2 conns=$3 host=$4; shift 4
  local out rps p50 p99 errs
  out=$(wrk -t1 -c"$conns" -d"$DURATION" --latency -H "Host: $host" "$@" "$url")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  printf '%-26s %12s %10s %10s  %s\n' "$label" "$rps" "$p50" "$p99" "$errs"
  echo "$label|$rps|$p50|$p99" >>"$WORK/results"
}

for conns in "$CONNS" 1; do
  echo "wrk: 1 thread, $conns connection(s), $DURATION each"
  printf '%-26s %12s %10s %10s\n' target "req/s" p50 p99
  run "direct $conns"              "http://127.0.0.1:$PORT/plain" "$conns" "$HOST"
  run "nginx $conns"               "http://127.0.0.1:19180/plain" "$conns" "$HOST"
  run "service $conns"             "http://127.0.0.1:19080/plain" "$conns" "$HOST"
  run "gateway $conns"             "http://127.0.0.1:19080/plain" "$conns" "$GP"
  run "gateway+key $conns"         "http://127.0.0.1:19080/plain?key=$KEY" "$conns" "$GK"
  run "gateway+key+jwt+quota $conns" "http://127.0.0.1:19080/plain?key=$KEY" "$conns" "$GF" -H "Authorization: Bearer $JWT"
  run "service POST 1KiB $conns"   "http://127.0.0.1:19080/body" "$conns" "$HOST" -s "$WORK/post.lua"
  run "gateway+validate $conns"    "http://127.0.0.1:19080/body" "$conns" "$GV" -s "$WORK/post.lua"
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
c = sys.argv[2]
for n in (c, "1"):
    s = rows[f"service {n}"]
    print(f"{n} connection(s): req/s and p50 added over the plain service:")
    for k in ["gateway", "gateway+key", "gateway+key+jwt+quota"]:
        r = rows[f"{k} {n}"]
        print(f"  {k:24s} {r[0]/s[0]:.2f}x   {r[1]-s[1]:+.0f} us")
    post, v = rows[f"service POST 1KiB {n}"], rows[f"gateway+validate {n}"]
    print(f"  {'gateway+validate (POST)':24s} {v[0]/post[0]:.2f}x   {v[1]-post[1]:+.0f} us")
    print(f"  service/nginx req/s {s[0]/rows[f'nginx {n}'][0]:.2f}x; gateway+key+jwt+quota/nginx {rows[f'gateway+key+jwt+quota {n}'][0]/rows[f'nginx {n}'][0]:.2f}x")
PY
