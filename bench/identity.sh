#!/usr/bin/env bash
# Identity costs, in one run on this machine:
#   1. RS256 token mint and verify (first sight and cached), in-process.
#   2. A private service versus the same app public: requests/s and p50 over HTTPS (wrk, keep-alive; the
#      private one with a valid identity token on every request).
#   3. Token minting rate at the token endpoint (JWT-bearer grant with a service-account key).
#   4. Token minting rate at the metadata server, measured from inside an instance.
#
#   bench/identity.sh          # DURATION=10s CONNS=32
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/install-test-deps" >&2; exit 1; }

echo "== 1. token costs"
(cd "$ROOT" && cargo run --release --quiet -p pier-identity --example token_bench)

build
start_pier pier --workers 1 --https-port 19443 --http-port 19080 --api-addr 127.0.0.1:19079
"$PIER" deploy public --command "$HELLO" --args "" --min-instances 1 --concurrency 1000 --allow-unauthenticated >/dev/null 2>&1
"$PIER" deploy private --command "$HELLO" --args "" --min-instances 1 --concurrency 1000 >/dev/null 2>&1
PUB=$(service_host public); PRIV=$(service_host private)
TOKEN=$("$PIER" auth print-identity-token --audiences "https://$PRIV:19443")

run() { # label host [extra wrk args]
  local label=$1 host=$2; shift 2
  local out
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Host: $host" "$@" "https://127.0.0.1:19443/plain")
  local rps p50 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  printf '%-10s %12s req/s   p50 %8s   non-2xx %s\n' "$label" "$rps" "$p50" "${non2xx:-0}"
  echo "$rps" >"$WORK/$label"
}
echo
echo "== 2. private versus public (HTTPS, 1 gateway thread, $CONNS connections, $DURATION)"
run public "$PUB"
run private "$PRIV" -H "Authorization: Bearer $TOKEN"
python3 -c "import sys; p=float(open(sys.argv[1]).read()); q=float(open(sys.argv[2]).read()); print(f'private/public: {q/p:.2f}x')" "$WORK/public" "$WORK/private"

echo
echo "== 3. token endpoint (JWT-bearer grant with a service-account key)"
"$PIER" iam service-accounts create benchsa >/dev/null 2>&1
"$PIER" iam service-accounts keys create "$WORK/key.json" --iam-account benchsa@default.iam.pier.localhost >/dev/null 2>&1
ASSERTION=$(python3 - "$WORK/key.json" <<'PY'
import json, sys, time, base64
from google.auth import crypt, jwt
info = json.load(open(sys.argv[1]))
signer = crypt.RSASigner.from_service_account_info(info)
now = int(time.time())
print(jwt.encode(signer, {"iss": info["client_email"], "aud": info["token_uri"], "iat": now, "exp": now + 3600,
                          "target_audience": "https://bench.example"}).decode())
PY
)
cat >"$WORK/grant.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=$ASSERTION"
LUA
wrk -t1 -c4 -d"$DURATION" -s "$WORK/grant.lua" http://127.0.0.1:19079/token | awk '/Requests\/sec|Non-2xx/ {print "  " $0}'

echo
echo "== 4. metadata server, from inside an instance"
cat >"$WORK/meta.sh" <<'SH'
wrk -t1 -c4 -d5s -H 'Metadata-Flavor: Google' \
  "http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://bench.example" \
  2>&1 | sed 's/^/wrk: /'
exec python3 -m http.server "$PORT"
SH
"$PIER" deploy meta --command "sh $WORK/meta.sh" --startup-timeout 60s >/dev/null 2>&1 || \
  "$PIER" deploy meta --command "sh $WORK/meta.sh" >/dev/null 2>&1
"$PIER" logs meta --limit 100 | grep -E "wrk: .*(Requests/sec|Non-2xx)" | sed 's/.*wrk: /  /'
