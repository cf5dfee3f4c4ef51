#!/usr/bin/env bash
# Image pull and unpack throughput: a SIZE_MB image (four gzip layers, half random bytes, half text, plus
# the echo server) in Debian's docker-registry on loopback, deployed with Pier; compared in the same run
# with skopeo pulling the same image (the pull baseline) and GNU tar unpacking the same layers (the unpack
# baseline). Pier's figures come from its log (the pull and the first unpack of the image's root).
# Needs root, docker-registry, skopeo, umoci (scripts/install-test-deps).
#
#   bench/images.sh            # SIZE_MB=100 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SIZE_MB=${SIZE_MB:-100}
REG=127.0.0.1:15000
build

# The registry.
mkdir -p "$WORK/registry"
cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry/storage}}
http: {addr: $REG}
EOF
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/15000) 2>/dev/null && break; sleep 0.05; done

# The image: four layers.
LAYOUT="$WORK/layout"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:big"
umoci unpack --image "$LAYOUT:big" "$WORK/b" >/dev/null
cp "$HELLO" "$WORK/b/rootfs/pier-hello"
QUARTER=$((SIZE_MB / 4))
for i in 1 2 3 4; do
  mkdir -p "$WORK/b/rootfs/data$i"
  head -c $((QUARTER / 2))M /dev/urandom >"$WORK/b/rootfs/data$i/random.bin"
  python3 -c "
import sys, random
random.seed($i)
words = ['pier', 'serverless', 'revision', 'gateway', 'instance', 'token', 'layer', 'digest']
out = open('$WORK/b/rootfs/data$i/text.txt', 'w')
n = 0
while n < $((QUARTER / 2)) * 1024 * 1024:
    line = ' '.join(random.choice(words) for _ in range(12)) + '\n'
    out.write(line); n += len(line)"
  umoci repack --image "$LAYOUT:big" "$WORK/b"
done
umoci config --image "$LAYOUT:big" --config.entrypoint /pier-hello
skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:big" "docker://$REG/big:1"

# Baselines: skopeo pulls it; GNU tar unpacks its layers.
t0=$(date +%s.%N)
skopeo copy --quiet --src-tls-verify=false "docker://$REG/big:1" "oci:$WORK/pulled:big"
t1=$(date +%s.%N)
mkdir -p "$WORK/untar"
t2=$(date +%s.%N)
python3 - "$WORK/pulled" "$WORK/untar" <<'EOF'
import json, os, subprocess, sys
layout, dest = sys.argv[1], sys.argv[2]
index = json.load(open(os.path.join(layout, "index.json")))
m = index["manifests"][0]["digest"].split(":")[1]
manifest = json.load(open(os.path.join(layout, "blobs/sha256", m)))
for i, layer in enumerate(manifest["layers"]):
    blob = os.path.join(layout, "blobs/sha256", layer["digest"].split(":")[1])
    d = os.path.join(dest, str(i)); os.makedirs(d)
    subprocess.run(["tar", "-xzf", blob, "-C", d], check=True)
EOF
t3=$(date +%s.%N)
COMPRESSED=$(du -sb "$WORK/pulled/blobs" | cut -f1)
UNPACKED=$(du -sb "$WORK/untar" | cut -f1)

# Pier.
start_pier pier --https-port 19443 --http-port 19080 --api-addr 127.0.0.1:19079
"$PIER" deploy big --image "$REG/big:1" --allow-unauthenticated >/dev/null 2>&1
python3 - "$WORK/pier/server.log" "$t0" "$t1" "$t2" "$t3" "$COMPRESSED" "$UNPACKED" <<'EOF'
import re, sys
log, t0, t1, t2, t3, comp, unp = sys.argv[1], *map(float, sys.argv[2:6]), int(sys.argv[6]), int(sys.argv[7])
def secs(text):
    m = re.match(r"([0-9.]+)(s|ms|µs|us|ns)", text)
    v, u = float(m.group(1)), m.group(2)
    return v * {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[u]
lines = open(log).read().splitlines()
pull = next(secs(re.search(r"elapsed=(\S+)", l).group(1)) for l in lines if "image pulled" in l)
unpack = next(secs(re.search(r"elapsed=(\S+)", l).group(1)) for l in lines if "image root ready" in l)
mb = 1024 * 1024
print(f"image: {comp / mb:.0f} MiB compressed in 4 gzip layers, {unp / mb:.0f} MiB unpacked")
print(f"{'':28}{'seconds':>9}{'MiB/s':>9}")
rows = [("pull: skopeo (baseline)", t1 - t0, comp), ("pull: Pier", pull, comp),
        ("unpack: GNU tar (baseline)", t3 - t2, unp), ("unpack: Pier", unpack, unp)]
for name, s, size in rows:
    print(f"{name:28}{s:9.2f}{size / mb / s:9.0f}")
print(f"pull: Pier / skopeo time {pull / (t1 - t0):.2f}x; unpack: Pier / tar time {unpack / (t3 - t2):.2f}x")
EOF
