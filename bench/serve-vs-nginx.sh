#!/usr/bin/env bash
# Serving published files: `confidant serve` against nginx serving the same directory, with wrk,
# in one run on one machine. Needs nginx and wrk (apt-get install nginx-light wrk) and a
# release build (cargo build --release). Prints requests/s for 200 downloads and for 304s.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/confidant}
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; nginx -s stop -c "$WORK/nginx.conf" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A server with one published hour: one upload, padded to ~1,000 keys as in production.
"$BIN" serve --dev --data-dir "$WORK/data" --listen 127.0.0.1:18080 --log-format json 2>"$WORK/serve.log" &
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.2; done
ADMIN=$("$BIN" admin token create --scope admin --label bench --data-dir "$WORK/data" | awk '/^token:/ {print $2}')
TOKEN=$("$BIN" admin provider add --name Bench --region 302 --reason bench --url http://127.0.0.1:18080 --token "$ADMIN" | awk '/api token:/ {print $3}')
CODE=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -d '{"format":"long"}' http://127.0.0.1:18080/v1/codes | sed 's/.*"code":"\([^"]*\)".*/\1/')
UPLOAD=$(curl -sf -X POST -d "{\"code\":\"$CODE\"}" http://127.0.0.1:18080/v1/verify | sed 's/.*"token":"\([^"]*\)".*/\1/')
RSN=$(( $(date +%s) / 86400 * 144 - 144 ))
curl -sf -X POST -H "Authorization: Bearer $UPLOAD" http://127.0.0.1:18080/v1/submissions \
  -d "{\"keys\":[{\"key\":\"AAECAwQFBgcICQoLDA0ODw==\",\"rollingStartNumber\":$RSN,\"rollingPeriod\":144,\"transmissionRisk\":4}]}" >/dev/null
curl -sf -X POST -d '{"advanceSeconds":7200}' http://127.0.0.1:18080/dev/clock >/dev/null
FILE=$(curl -sf http://127.0.0.1:18080/exports/302/index.txt | tail -1)
SIZE=$(stat -c %s "$WORK/data/published/$FILE")
# nginx workers run unprivileged: let them read the published tree (and nothing else).
chmod 755 "$WORK" "$WORK/data"
chmod -R a+rX "$WORK/data/published"

cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=1000 inactive=60s;
  types { application/zip zip; }
  server {
    listen 127.0.0.1:18081;
    root $WORK/data/published;
    location / { add_header Cache-Control "public, max-age=1209600, immutable"; etag on; }
  }
}
CONF
nginx -c "$WORK/nginx.conf"
sleep 0.5

rate() { wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
etag() { curl -sfI "$1" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r'; }
C_URL=http://127.0.0.1:18080/$FILE
N_URL=http://127.0.0.1:18081/$FILE
C_ETAG=$(etag "$C_URL"); N_ETAG=$(etag "$N_URL")
test "$(curl -sf "$C_URL" | sha256sum)" = "$(curl -sf "$N_URL" | sha256sum)"

echo "file: $FILE ($SIZE bytes); wrk -t$THREADS -c$CONNECTIONS -d$DURATION; $(nproc) cores"
C200=$(rate "$C_URL"); N200=$(rate "$N_URL")
C304=$(rate -H "If-None-Match: $C_ETAG" "$C_URL"); N304=$(rate -H "If-None-Match: $N_ETAG" "$N_URL")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "200 download: confidant $C200 req/s, nginx $N200 req/s, ratio $(ratio "$C200" "$N200")"
echo "304 revalidation: confidant $C304 req/s, nginx $N304 req/s, ratio $(ratio "$C304" "$N304")"
