#!/usr/bin/env bash
# Cold start: time to first byte for a request to a revision scaled to zero (p50/p99 over TRIES), for the
# same statically linked echo server run as a host process and as a container image (runc), against the
# app started directly and the image started by runc alone, all in one run. Also splits the container's
# preparation as Pier logs it (image root, bundle). The client keeps one TLS connection open so only the
# cold start is timed. Needs root and runc, umoci (scripts/install-test-deps).
#
#   bench/coldstart.sh          # TRIES=50 by default
#   EGRESS=1 bench/coldstart.sh # containers with outbound network (--container-egress): a veth per instance
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TRIES=${TRIES:-50}
build

# An image holding only the echo server, and an unpacked bundle of it for the runc baseline.
LAYOUT="$WORK/layout"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:bench"
umoci unpack --image "$LAYOUT:bench" "$WORK/unpacked" >/dev/null
cp "$HELLO" "$WORK/unpacked/rootfs/pier-hello"
umoci repack --image "$LAYOUT:bench" "$WORK/unpacked"
umoci config --image "$LAYOUT:bench" --config.entrypoint /pier-hello
umoci unpack --image "$LAYOUT:bench" "$WORK/bundle" >/dev/null

EXTRA=()
[[ -n "${EGRESS:-}" ]] && EXTRA=(--container-egress --container-subnet 10.89.250.0/24)
start_pier pier --https-port 19443 --http-port 19080 --api-addr 127.0.0.1:19079 --scale-to-zero-grace 100ms "${EXTRA[@]}"
# --args (empty) runs the binary directly, without a shell in between, as the direct measurement does.
"$PIER" deploy cold --command "$HELLO" --args "" --allow-unauthenticated >/dev/null 2>&1
"$PIER" deploy cold-ctr --image "oci:$LAYOUT:bench" --allow-unauthenticated >/dev/null 2>&1
rev() { "$PIER" services describe "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["latestReadyRevision"])'; }
python3 "$(dirname "$0")/coldstart.py" --api "$(cat "$WORK/pier/api-url")" --token "$(cat "$WORK/pier/admin-token")" \
  --https-port 19443 --ca "$WORK/pier/ca.pem" --tries "$TRIES" --hello "$HELLO" --runc-bundle "$WORK/bundle" \
  "process=$(service_host cold)@$(rev cold)" "container=$(service_host cold-ctr)@$(rev cold-ctr)"

echo
echo "container preparation per cold start as Pier logs it (p50 over the run, ms):"
"$PIER" logs cold-ctr --limit 100000 \
  | sed -n 's/.*root ready in \([0-9.]*\) ms, bundle in \([0-9.]*\) ms.*/\1 \2/p' \
  | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()][1:]  # the first start unpacks the image
print(f"  image root (cached): {statistics.median(r[0] for r in rows):.2f}   namespace + services + bundle: {statistics.median(r[1] for r in rows):.2f}")'
