#!/usr/bin/env bash
# Cold start: time to first byte for a request to a revision scaled to zero (p50/p99 over TRIES), for the
# same statically linked echo server run as a sandboxed host process, as a gen2 container (runc) and as a
# gen1 container (gVisor's runsc), against the app started directly and the image started by runc alone
# and by runsc alone, all in one run. Also splits the container's preparation as Pier logs it (image
# root, bundle), and reports what the warm sandboxes (--warm-sandboxes, 8 by default; WARM sets it) cost
# in memory while they wait. The client keeps one TLS connection open so only the cold start is timed.
# Needs root, runc, runsc, slirp4netns and umoci (scripts/install-test-deps).
#
#   bench/coldstart.sh                # TRIES=50, the default egress (user: slirp4netns per instance)
#   WARM=0 bench/coldstart.sh         # without warm sandboxes (--warm-sandboxes 0): every start from nothing
#   EGRESS=none bench/coldstart.sh    # no outbound network: the namespace alone
#   EGRESS=bridge bench/coldstart.sh  # a veth on the server's bridge per instance
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
umoci unpack --image "$LAYOUT:bench" "$WORK/bundle-runsc" >/dev/null

EXTRA=(--egress "${EGRESS:-user}" --warm-sandboxes "${WARM:-8}")
[[ "${EGRESS:-}" == bridge ]] && EXTRA+=(--instance-subnet 10.89.250.0/24)
start_pier pier --https-port 19443 --http-port 19080 --api-addr 127.0.0.1:19079 --scale-to-zero-grace 100ms "${EXTRA[@]}"
# --args (empty) runs the binary directly, without a shell in between, as the direct measurement does.
"$PIER" deploy cold --command "$HELLO" --args "" --allow-unauthenticated >/dev/null
"$PIER" deploy gen2 --image "oci:$LAYOUT:bench" --allow-unauthenticated >/dev/null
"$PIER" deploy gen1 --image "oci:$LAYOUT:bench" --execution-environment gen1 --allow-unauthenticated >/dev/null
rev() { "$PIER" services describe "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["latestReadyRevision"])'; }
python3 "$(dirname "$0")/coldstart.py" --api "$(cat "$WORK/pier/api-url")" --token "$(cat "$WORK/pier/admin-token")" \
  --https-port 19443 --ca "$WORK/pier/ca.pem" --tries "$TRIES" --hello "$HELLO" --runc-bundle "$WORK/bundle" --runsc-bundle "$WORK/bundle-runsc" \
  "process=$(service_host cold)@$(rev cold)" "gen2=$(service_host gen2)@$(rev gen2)" "gen1=$(service_host gen1)@$(rev gen1)"

echo
echo "container preparation per sandbox as Pier logs it (p50 over the run, ms; made ahead of the request when it was a warm sandbox):"
"$PIER" logs gen2 --limit 100000 \
  | sed -n 's/.*root ready in \([0-9.]*\) ms, bundle in \([0-9.]*\) ms.*/\1 \2/p' \
  | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()][1:]  # the first start unpacks the image
print(f"  image root (cached): {statistics.median(r[0] for r in rows):.2f}   namespace + services + bundle: {statistics.median(r[1] for r in rows):.2f}")'

# What the warm sandboxes cost while they wait: every instance is gone by now, so the processes the
# server still has (the gate of the process revision's sandbox, the shim and waiting `runc init` of the
# gen2 one, one slirp4netns each) are theirs. PSS, so shared pages count once. The network namespaces'
# own kernel memory is not included.
echo
echo "memory of the warm sandboxes waiting now (PSS of their processes, MB; --warm-sandboxes ${WARM:-8}):"
python3 - "${PIDS[0]}" <<'PY'
import os, sys
server = int(sys.argv[1])
parent, cmd = {}, {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        stat = open(f"/proc/{d}/stat").read()
        parent[int(d)] = int(stat[stat.rfind(")") + 2:].split()[1])
        cmd[int(d)] = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
def descends(pid):
    while pid in parent and pid > 1:
        pid = parent[pid]
        if pid == server:
            return True
    return False
def pss(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
kinds = {"gate (process sandbox)": "__gate", "container shim": "__container-shim", "runc init (waiting)": "runc init", "slirp4netns": "slirp4netns"}
for label, needle in kinds.items():
    pids = [p for p in parent if descends(p) and needle in cmd[p]]
    if pids:
        print(f"  {label}: {len(pids)} x {sum(map(pss, pids)) / len(pids):.1f}")
PY
