#!/usr/bin/env bash
# Custom domains, in one run on this machine:
#   1. Seconds from `pier domain-mappings create` to the first 200 over HTTPS, with certificates from a
#      real ACME CA (Let's Encrypt's pebble, validating over HTTP-01 against Pier's listener, no random
#      validation sleep). Cloud Run's documented figure for the same step is 15 minutes to 24 hours.
#   2. TLS handshakes per second with 1, 100 and 1,000 mapped domains (certificates from the local CA),
#      each handshake for a random one of them, as a ratio to 1 domain: the SNI look-up must not grow
#      with the number of domains.
#
#   bench/domains.sh           # DOMAINS=5 (orders timed), SECONDS_PER_RUN=5
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DOMAINS=${DOMAINS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
command -v pebble >/dev/null || { echo "pebble missing: run scripts/install-test-deps" >&2; exit 1; }

HTTPS=19443 HTTP=19080 API=127.0.0.1:19079 ACME=19400 ACME_MGMT=19401 DNS=19453 DNS_MGMT=19454

# Pebble's own HTTPS certificate: a CA and a localhost leaf.
(cd "$WORK" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.pem -days 2 -subj /CN=bench-pebble-ca 2>/dev/null \
  && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr \
    -subj /CN=localhost 2>/dev/null \
  && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf \
  && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 \
    -extfile ext.cnf 2>/dev/null)
cat >"$WORK/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$ACME", "managementListenAddress": "127.0.0.1:$ACME_MGMT",
  "certificate": "$WORK/cert.pem", "privateKey": "$WORK/key.pem", "httpPort": $HTTP, "tlsPort": $HTTPS,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
pebble-challtestsrv -dns01 127.0.0.1:$DNS -management 127.0.0.1:$DNS_MGMT -http01 "" -https01 "" \
  -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$WORK/challtestsrv.log" 2>&1 &
PIDS+=($!)
PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble.json" -dnsserver 127.0.0.1:$DNS >"$WORK/pebble.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf --cacert "$WORK/ca.pem" -o /dev/null "https://127.0.0.1:$ACME/dir" && break; sleep 0.1; done
curl -sf --cacert "$WORK/ca.pem" "https://127.0.0.1:$ACME_MGMT/roots/0" >"$WORK/root.pem"

build
start_pier pier --workers 1 --https-port $HTTPS --http-port $HTTP --api-addr $API \
  --acme-directory "https://127.0.0.1:$ACME/dir" --acme-ca "$WORK/ca.pem" --dns-server 127.0.0.1:$DNS
"$PIER" deploy shop --command "$HELLO" --min-instances 1 --allow-unauthenticated >/dev/null 2>&1
"$PIER" domains verify example.com --without-dns >/dev/null

echo "== 1. domain-mappings create to the first 200 over HTTPS (pebble, HTTP-01), $DOMAINS domains"
for i in $(seq 1 "$DOMAINS"); do
  d="shop$i.example.com"
  start=$(date +%s.%N)
  "$PIER" domain-mappings create --service shop --domain "$d" --async >/dev/null 2>&1
  until curl -sf -o /dev/null --cacert "$WORK/root.pem" --resolve "$d:$HTTPS:127.0.0.1" "https://$d:$HTTPS/plain"; do
    sleep 0.02
  done
  end=$(date +%s.%N)
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$end"
done | sort -n | awk '{a[NR]=$1} END {printf "  median %.2f s (min %.2f, max %.2f)\n", a[int((NR+1)/2)], a[1], a[NR]}'

echo
echo "== 2. TLS handshakes/s by the number of mapped domains (local CA certificates, ${SECONDS_PER_RUN}s each)"
TOKEN=$(cat "$PIER_DATA_DIR/admin-token")
map_up_to() { # N: mappings d1..dN.bench.example.com exist
  local have=$1 want=$2
  for i in $(seq $((have + 1)) "$want"); do
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      -d "{\"domain\":\"d$i.bench.example.com\",\"target\":{\"kind\":\"service\",\"name\":\"shop\"},\"certificateMode\":\"LOCAL_CA\"}" \
      "http://$API/v1/projects/default/domainmappings"
  done
  # Every certificate installed: the last one answers.
  until curl -sf -o /dev/null --cacert "$PIER_DATA_DIR/ca.pem" --resolve "d$want.bench.example.com:$HTTPS:127.0.0.1" \
    "https://d$want.bench.example.com:$HTTPS/plain"; do sleep 0.1; done
}
handshakes() { # N: handshakes/s, each to a random one of N domains
  python3 - "$1" "$SECONDS_PER_RUN" "$PIER_DATA_DIR/ca.pem" "$HTTPS" <<'PY'
import random, socket, ssl, sys, time
n, secs, ca, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
count, end = 0, time.monotonic() + secs
while time.monotonic() < end:
    name = f"d{random.randint(1, n)}.bench.example.com"
    with socket.create_connection(("127.0.0.1", port)) as s:
        with ctx.wrap_socket(s, server_hostname=name):
            count += 1
print(f"{count / secs:.0f}")
PY
}
have=0
for n in 1 100 1000; do
  map_up_to $have $n; have=$n
  rate=$(handshakes $n)
  [ $n = 1 ] && base=$rate
  printf '  %5d domains: %6s handshakes/s  (%.2fx of 1 domain)\n' $n "$rate" "$(python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]))" "$rate" "$base")"
done
