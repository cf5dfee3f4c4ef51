#!/usr/bin/env bash
# Cold start: time to first byte for a request to a revision scaled to zero (p50/p99 over TRIES), split into
# the app's own startup and Pier's share. The instance is the echo server; the client keeps one TLS
# connection open so only the cold start is timed.
#
#   bench/coldstart.sh          # TRIES=50 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TRIES=${TRIES:-50}
build
start_pier pier --https-port 19443 --http-port 19080 --api-addr 127.0.0.1:19079 --scale-to-zero-grace 100ms
# --args (empty) runs the binary directly, without a shell in between, as the direct measurement does.
"$PIER" deploy cold --command "$HELLO" --args "" --allow-unauthenticated >/dev/null 2>&1
HOST=$(service_host cold)
REV=$("$PIER" services describe cold --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["latestReadyRevision"])')
python3 "$(dirname "$0")/coldstart.py" "$(cat "$WORK/pier/api-url")" "$(cat "$WORK/pier/admin-token")" \
  19443 "$HOST" "$WORK/pier/ca.pem" "$REV" "$HELLO" "$TRIES"
