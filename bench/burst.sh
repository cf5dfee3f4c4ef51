#!/usr/bin/env bash
# Burst from zero: REQUESTS concurrent requests (one connection each, HTTP/1.1 over TLS) to a revision
# scaled to zero, with --concurrency 10 and --max-instances 20. Reports errors (there should be none) and
# the instance count over time, sampled every 100 ms from the admin API.
#
#   bench/burst.sh        # REQUESTS=1000, each request /sleep?ms=100
set -euo pipefail
source "$(dirname "$0")/lib.sh"
REQUESTS=${REQUESTS:-1000}
command -v h2load >/dev/null || { echo "h2load missing: run scripts/install-test-deps" >&2; exit 1; }
build
start_pier pier --https-port 19443 --http-port 19080 --api-addr 127.0.0.1:19079 --scale-to-zero-grace 1s
"$PIER" deploy burst --command "$HELLO" --args "" --concurrency 10 --max-instances 20 --allow-unauthenticated >/dev/null 2>&1
HOST=$(service_host burst)
REV=$("$PIER" services describe burst --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["latestReadyRevision"])')
API=$(cat "$WORK/pier/api-url"); TOKEN=$(cat "$WORK/pier/admin-token")
count() { curl -sf -H "Authorization: Bearer $TOKEN" "$API/v1/projects/default/revisions/$REV" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["instances"]))'; }
echo -n "waiting for scale to zero"; while [ "$(count)" != 0 ]; do sleep 0.2; echo -n .; done; echo

python3 - "$API" "$TOKEN" "$REV" >"$WORK/timeline" <<'PY' &
import json, sys, time, urllib.request
api, token, rev = sys.argv[1:4]
t0 = time.time()
last = None
while time.time() - t0 < 15:
    req = urllib.request.Request(f"{api}/v1/projects/default/revisions/{rev}", headers={"Authorization": "Bearer " + token})
    n = len(json.load(urllib.request.urlopen(req))["instances"])
    print(f"{time.time() - t0:5.1f}s {n}", flush=True)
    time.sleep(0.1)
PY
POLLER=$!
sleep 0.3
h2load --h1 -n "$REQUESTS" -c "$REQUESTS" -t 1 -H ":authority: $HOST" "https://127.0.0.1:19443/sleep?ms=100" >"$WORK/h2load" 2>&1 || true
wait $POLLER
grep -E "^finished in|^requests:|^status codes:" "$WORK/h2load"
echo "instances over time (seconds since the burst began, count):"
python3 - "$WORK/timeline" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
prev = None
for t, n in rows:
    if n != prev:
        print(f"  {t:>6} {n}")
        prev = n
print("  peak:", max(int(n) for _, n in rows))
PY
