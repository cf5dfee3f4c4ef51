#!/usr/bin/env bash
# Hosting: small static files served by a Pier site against nginx serving the same files from disk, in
# one run (wrk with one thread; Pier and nginx with one worker; plain HTTP), and the time `pier hosting
# deploy` takes for a 2,000-file site the first time and after ten files changed (only those upload).
#
#   bench/hosting.sh       # DURATION=10s CONNS=32 FILES=2000 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
FILES=${FILES:-2000}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/install-test-deps" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx missing: run scripts/install-test-deps" >&2; exit 1; }

build
start_pier pier --workers 1 --https-port 19443 --http-port 19080 --http-serve --api-addr 127.0.0.1:19079

# The site: a 1 KiB page, a 20 KiB script and a 4 KiB image, as a small app's shell.
SITE="$WORK/site"
mkdir -p "$SITE/dist/assets"
python3 - "$SITE/dist" <<'PY'
import os, sys
d = sys.argv[1]
open(f"{d}/index.html", "w").write("<!doctype html><title>bench</title>" + "<p>hello</p>" * 80)
open(f"{d}/assets/app.js", "w").write("console.log('bench');\n" * 900)
open(f"{d}/assets/logo.png", "wb").write(os.urandom(4096))
PY
cat >"$SITE/firebase.json" <<'JSON'
{"hosting": {"site": "bench", "public": "dist", "rewrites": [{"source": "**", "destination": "/index.html"}]}}
JSON
# nginx's workers run as an unprivileged user: they must be able to read the files.
chmod 711 "$WORK"
chmod -R a+rX "$SITE"
URL=$("$PIER" hosting deploy --config "$SITE/firebase.json" 2>/dev/null)
HOST=$(echo "$URL" | sed -E 's#https://([^:/]+).*#\1#')

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  include /etc/nginx/mime.types;
  sendfile on;
  etag on;
  server {
    listen 127.0.0.1:19180;
    root $SITE/dist;
    add_header Cache-Control "max-age=3600";
  }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' &
PIDS+=($!)
sleep 0.5

run() { # label url connections [extra wrk args...]
  local label=$1 url=$2 conns=$3; shift 3
  local out rps p50 p99 errs
  out=$(wrk -t1 -c"$conns" -d"$DURATION" --latency -H "Host: $HOST" "$@" "$url")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  printf '%-24s %12s %10s %10s  %s\n' "$label" "$rps" "$p50" "$p99" "$errs"
  echo "$label|$rps|$p50|$p99" >>"$WORK/results"
}

for conns in "$CONNS" 1; do
  echo "wrk: 1 thread, $conns connection(s), $DURATION each"
  printf '%-24s %12s %10s %10s\n' target "req/s" p50 p99
  for f in index.html assets/app.js assets/logo.png; do
    run "nginx $f $conns" "http://127.0.0.1:19180/$f" "$conns"
    run "pier $f $conns" "http://127.0.0.1:19080/$f" "$conns"
  done
  echo
done

python3 - "$WORK/results" "$CONNS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    label, rps, p50, p99 = line.strip().split("|")
    rows[label] = float(rps)
for n in (sys.argv[2], "1"):
    print(f"{n} connection(s): Pier's req/s over nginx's")
    for f in ("index.html", "assets/app.js", "assets/logo.png"):
        print(f"  {f:18s} {rows[f'pier {f} {n}'] / rows[f'nginx {f} {n}']:.2f}x")
PY

# Deploy time: FILES files of 1 KiB, then ten of them changed.
BIG="$WORK/big"
mkdir -p "$BIG/public"
python3 - "$BIG/public" "$FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = f"{d}/d{i % 40:02d}"
    os.makedirs(sub, exist_ok=True)
    open(f"{sub}/f{i:05d}.js", "w").write(f"// {i}\n" + os.urandom(500).hex())
PY
echo '{"hosting": {"site": "big", "public": "public"}}' >"$BIG/firebase.json"
t0=$(date +%s.%N)
"$PIER" hosting deploy --config "$BIG/firebase.json" 2>"$WORK/deploy1.log" >/dev/null
t1=$(date +%s.%N)
for i in 0 1 2 3 4 5 6 7 8 9; do echo "// changed" >>"$BIG/public/d0$i/f0000$i.js"; done
"$PIER" hosting deploy --config "$BIG/firebase.json" 2>"$WORK/deploy2.log" >/dev/null
t2=$(date +%s.%N)
echo "deploy of $FILES files: first $(python3 -c "print(f'{$t1-$t0:.2f}')") s ($(head -1 "$WORK/deploy1.log")), again with 10 changed $(python3 -c "print(f'{$t2-$t1:.2f}')") s ($(head -1 "$WORK/deploy2.log"))"
