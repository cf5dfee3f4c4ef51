#!/usr/bin/env bash
# Reliability, with figures: the long versions of tests/reliability.rs and tests/durability.rs, and the
# server's memory under hostile clients. Prints counts; asserts nothing (the tests do).
#
#   1. No request dropped while the service changes: wrk (HTTP/1.1) and h2load (HTTP/2) for DURATION
#      while the service gets 10 redeploys, 5 traffic splits, a tag move, a rollback, a max-instances
#      change, and a revision scaled to zero and back with a 20 s stream running through the scale-down.
#   2. kill -9 at random instants, KILLS times, during deploys and IAM changes: what the CLI reported
#      done after each restart, revisions left deploying, the dead server's instances left running.
#   3. Hostile clients: idle connections, slowloris, huge headers and a client that never reads, while a
#      normal client keeps calling; the server's RSS and the normal client's latency.
#
#   bench/reliability.sh              # DURATION=60 KILLS=20
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-60}
KILLS=${KILLS:-20}
build
command -v wrk >/dev/null && command -v h2load >/dev/null || { echo "wrk and h2load: run scripts/install-test-deps" >&2; exit 1; }

python3 "$(dirname "$0")/reliability.py" --pier "$PIER" --hello "$HELLO" --work "$WORK" \
  --duration "$DURATION" --kills "$KILLS"
