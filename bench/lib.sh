# Shared helpers for the bench scripts: build, start a Pier server in a temp dir, deploy the echo server.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIER="$ROOT/target/release/pier"
HELLO="$ROOT/target/release/pier-hello"
WORK=$(mktemp -d /tmp/pier-bench.XXXXXX)
PIDS=()
DIRS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Servers unmount their image roots when they stop; a crashed one may leave some.
  for d in "${DIRS[@]}"; do
    grep -o " $d/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The echo server is linked statically, so the same binary runs on the host and alone in an image.
build() {
  (cd "$ROOT" && cargo build --release --quiet -p pier \
    && cargo rustc --release --quiet -p pier-hello --bin pier-hello -- -C target-feature=+crt-static)
}

# build_before REV: Pier as of git revision REV, built in a worktree of its own into target/before (a
# target dir of its own: cargo names workspace crates by their path inside the workspace, so two trees
# sharing one would mix their artifacts), copied to $WORK/pier-before for a same-run comparison. The
# first run builds every dependency again; later ones reuse them.
build_before() {
  local src="$WORK/before-src"
  git -C "$ROOT" worktree add --quiet --detach "$src" "$1"
  (cd "$src" && CARGO_TARGET_DIR="$ROOT/target/before" cargo build --release --quiet -p pier)
  cp "$ROOT/target/before/release/pier" "$WORK/pier-before"
  git -C "$ROOT" worktree remove --force "$src"
}

# start_pier NAME ARGS... : a server with its own data dir; sets PIER_CONFIG for later CLI calls.
start_pier() {
  local dir="$WORK/$1"; shift
  mkdir -p "$dir"
  export PIER_CONFIG="$dir/cli.toml" PIER_DATA_DIR="$dir"
  "$PIER" server --data-dir "$dir" "$@" >"$dir/server.log" 2>&1 &
  PIDS+=($!)
  DIRS+=("$dir")
  for _ in $(seq 1 200); do
    if [ -f "$dir/api-url" ] && "$PIER" services list >/dev/null 2>&1; then
      # An access token of the owner for scripts that call the admin API directly.
      "$PIER" auth print-access-token >"$dir/admin-token"
      return 0
    fi
    sleep 0.05
  done
  echo "pier server did not start:" >&2; cat "$dir/server.log" >&2; exit 1
}

# service_host NAME: the host of a service's URL (no scheme, no port).
service_host() {
  "$PIER" services describe "$1" --format json | python3 -c 'import json,sys; u=json.load(sys.stdin)["url"]; print(u.split("//")[1].split(":")[0])'
}

# direct_app PORT: the echo server run directly on the host's loopback, outside Pier (an instance's own
# port is inside its network namespace, out of the host's reach): the baseline a proxy is compared with.
direct_app() {
  PORT="$1" "$HELLO" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/plain" && return 0
    sleep 0.05
  done
  echo "the echo server did not start on :$1" >&2; exit 1
}
