# Shared helpers for the bench scripts: build, start a Pier server in a temp dir, deploy the echo server.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIER="$ROOT/target/release/pier"
HELLO="$ROOT/target/release/pier-hello"
WORK=$(mktemp -d /tmp/pier-bench.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

build() {
  (cd "$ROOT" && cargo build --release --quiet -p pier -p pier-hello)
}

# start_pier NAME ARGS... : a server with its own data dir; sets PIER_CONFIG for later CLI calls.
start_pier() {
  local dir="$WORK/$1"; shift
  mkdir -p "$dir"
  export PIER_CONFIG="$dir/cli.toml" PIER_DATA_DIR="$dir"
  "$PIER" server --data-dir "$dir" "$@" >"$dir/server.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    [ -f "$dir/api-url" ] && "$PIER" services list >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "pier server did not start:" >&2; cat "$dir/server.log" >&2; exit 1
}

# service_host NAME: the host of a service's URL (no scheme, no port).
service_host() {
  "$PIER" services describe "$1" --format json | python3 -c 'import json,sys; u=json.load(sys.stdin)["url"]; print(u.split("//")[1].split(":")[0])'
}

# instance_port NAME: the PORT of the service's first instance, from its log.
instance_port() {
  "$PIER" logs "$1" --limit 1000 | sed -n 's/.*PORT=\([0-9]*\).*/\1/p' | tail -1
}
