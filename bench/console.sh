#!/usr/bin/env bash
# How long the console takes to make its pages: a server with N services (200 by default, each deployed
# once and scaled to zero), a user signed in through the console's own sign-in (/console/signin →
# /authorize → /console/callback, with curl's cookie jar), then each page fetched RUNS times. The server
# time of a page is curl's time to its first byte minus the time to send the request (connection and TLS
# made before); the admin API's own JSON for the same list, fetched the same way, is the baseline.
#
#   bench/console.sh          # SERVICES=200 RUNS=40 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SERVICES=${SERVICES:-200}
RUNS=${RUNS:-40}

build
PORT=19843
start_pier console --https-port "$PORT" --http-port 19880 --api-addr 127.0.0.1:19879 \
  --metrics-addr 127.0.0.1:19864 --scale-to-zero-grace 1s
DIR="$WORK/console"
echo "deploying $SERVICES services..."
for i in $(seq 1 "$SERVICES"); do
  "$PIER" deploy "svc-$i" --command "$HELLO" --quiet >/dev/null
done
"$PIER" deploy web --command "$HELLO" --allow-unauthenticated --quiet >/dev/null
printf '%s' 'correct horse battery staple' >"$WORK/pw"
"$PIER" users create bench@example.com --password-stdin <"$WORK/pw" >/dev/null
"$PIER" projects add-iam-policy-binding default --member=user:bench@example.com --role=roles/run.admin >/dev/null

BASE="https://pier.localhost:$PORT"
CURL=(curl -sS --cacert "$DIR/ca.pem" --resolve "pier.localhost:$PORT:127.0.0.1" -b "$WORK/jar" -c "$WORK/jar")
# Sign in as a browser would: the console's redirect, the sign-in form, the callback.
AUTHORIZE=$("${CURL[@]}" -o /dev/null -w '%{redirect_url}' "$BASE/console/signin")
QUERY=${AUTHORIZE#*\?}
CALLBACK=$("${CURL[@]}" -o /dev/null -w '%{redirect_url}' -X POST --data "$QUERY" \
  --data-urlencode email=bench@example.com --data-urlencode "password@$WORK/pw" "$BASE/authorize")
case "$CALLBACK" in *"/console/callback?code="*) ;; *) echo "sign-in failed: $CALLBACK" >&2; exit 1 ;; esac
"${CURL[@]}" -o /dev/null "$CALLBACK"
STATUS=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$BASE/console/projects/default/services")
[ "$STATUS" = 200 ] || { echo "the services page answered $STATUS" >&2; exit 1; }
# Some traffic, so the service page's history has points.
for _ in $(seq 1 50); do curl -s -o /dev/null --cacert "$DIR/ca.pem" --resolve "$(service_host web):$PORT:127.0.0.1" "https://$(service_host web):$PORT/plain"; done

TOKEN=$(cat "$DIR/admin-token")
measure() { # label url [curl args...]
  local label=$1 url=$2; shift 2
  for _ in $(seq 1 "$RUNS"); do
    "${CURL[@]}" "$@" -o /dev/null -w '%{time_pretransfer} %{time_starttransfer} %{http_code} %{size_download}\n' "$url"
  done | python3 -c '
import sys
label = sys.argv[1]
rows = [l.split() for l in sys.stdin if l.strip()]
bad = [r for r in rows if r[2] != "200"]
ms = sorted((float(b) - float(a)) * 1000 for a, b, _, _ in rows)
print(f"{label:<34} p50 {ms[len(ms)//2]:7.2f} ms   p95 {ms[int(len(ms)*0.95)-1]:7.2f} ms   {int(rows[-1][3]):>8} bytes" + (f"   {len(bad)} not 200" if bad else ""))
print(label, ms[len(ms)//2], file=open(sys.argv[2], "a"))
' "$label" "$WORK/results"
}
echo
echo "$SERVICES services; $RUNS fetches each; server time = first byte - request sent"
measure "API: services list (JSON)" "$BASE/v1/projects/default/services" -H "Authorization: Bearer $TOKEN"
measure "console: services page" "$BASE/console/projects/default/services"
measure "API: one service (JSON)" "$BASE/v1/projects/default/services/web" -H "Authorization: Bearer $TOKEN"
measure "console: service page" "$BASE/console/projects/default/services/web"
measure "console: chart data" "$BASE/console/projects/default/services/web/history"
python3 - "$WORK/results" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    label, v = line.rsplit(" ", 1)
    r[label] = float(v)
print()
print(f"services page / API list:  {r['console: services page'] / r['API: services list (JSON)']:.2f}x")
print(f"service page / API get:    {r['console: service page'] / r['API: one service (JSON)']:.2f}x")
PY
