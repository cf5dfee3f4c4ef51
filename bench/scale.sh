#!/usr/bin/env bash
# Pier with many services: SERVICES services (10000 by default) deployed through the admin API, PARALLEL at
# a time, each a process revision that scales to zero after its deploy. At each checkpoint: a deploy of
# one more revision (POST to READY), the server's own route publication time (pier_route_publish_seconds),
# the request p50 over one kept TLS connection to a routed host and to an unknown one (the routing lookup:
# compare the first checkpoint with the last), and the server's RSS. Then CONNECTIONS idle keep-alive TLS
# client connections and WEBSOCKETS open WebSockets, with the server's RSS per connection. At each
# checkpoint too: the server's CPU while idle (every instance gone), the cost of services at zero.
#
#   bench/scale.sh                                   # SERVICES=10000
#   SERVICES=1000 CHECKPOINTS=10,100,1000 bench/scale.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SERVICES=${SERVICES:-10000}
CHECKPOINTS=${CHECKPOINTS:-10,100,1000,3000,$SERVICES}
PARALLEL=${PARALLEL:-4}
CONNECTIONS=${CONNECTIONS:-10000}
WEBSOCKETS=${WEBSOCKETS:-1000}
python3 -c 'import websockets' 2>/dev/null || { echo "python3 package websockets is missing: run scripts/install-test-deps" >&2; exit 1; }
# Every connection is a descriptor, in the server and in the client: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$CONNECTIONS" -gt $(( $(ulimit -n) - 1000 )) ]; then
  echo "the descriptor limit ($(ulimit -n)) is too low for $CONNECTIONS connections: raise it (ulimit -Hn) or set CONNECTIONS" >&2
  exit 1
fi

build
PORT=19943
start_pier scale --https-port "$PORT" --http-port 19980 --api-addr 127.0.0.1:19979 \
  --metrics-addr 127.0.0.1:19964 --scale-to-zero-grace 1s
DIR="$WORK/scale"
SERVER_PID=${PIDS[-1]}
"$PIER" deploy svc-1 --command "$HELLO" --allow-unauthenticated --quiet >/dev/null
"$PIER" deploy probe --command "$HELLO" --allow-unauthenticated --quiet >/dev/null
cat >"$WORK/ws_echo.py" <<'PY'
import asyncio, os, websockets
async def echo(ws):
    async for msg in ws:
        await ws.send("echo: " + msg)
async def main():
    async with websockets.serve(echo, "0.0.0.0", int(os.environ["PORT"])):
        await asyncio.Future()
asyncio.run(main())
PY
"$PIER" deploy ws --command "exec python3 $WORK/ws_echo.py" --concurrency 1000 --allow-unauthenticated --quiet >/dev/null
echo "server pid $SERVER_PID; deploying up to $SERVICES services ($PARALLEL at a time), checkpoints $CHECKPOINTS"
python3 "$ROOT/bench/scale.py" --api "$(cat "$DIR/api-url")" --token "$(cat "$DIR/admin-token")" \
  --metrics http://127.0.0.1:19964/metrics --pid "$SERVER_PID" --port "$PORT" --ca "$DIR/ca.pem" \
  --host-of "{\"svc-1\": \"$(service_host svc-1)\"}" --ws-host "$(service_host ws)" \
  --checkpoints "$CHECKPOINTS" --parallel "$PARALLEL" --connections "$CONNECTIONS" --websockets "$WEBSOCKETS"
