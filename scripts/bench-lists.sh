#!/usr/bin/env bash
# List pages at size (issue 23, item 3): ListAuditEvents, ListDevices and ListTokens with
# their filters, through the real device service on a database seeded by
# scripts/seed-scale.sh, one request at a time (`enroll-loadgen list-pages`): p50/p99 of the
# first page and of a deep page reached by following page tokens; then the SQL each case
# sent, captured from PostgreSQL's log (log_min_duration_statement = 0 on this database
# only, while the capture runs) and explained with EXPLAIN (ANALYZE, BUFFERS).
#   DATABASE (enroll_scale_seed)  PAGE_SIZE (100)  DEPTH (100 pages)  SAMPLES (50 per page)
#   MAX_SECONDS (15 per page, and for the walk)  CASES (all; a regex on the case names)
#   EXPLAIN (1; 0 skips the capture)  PG_LOG (/var/log/postgresql/postgresql-15-main.log;
#   readable by this user)  PORT_BASE (50190)  CARGO_TARGET_DIR (target)  SKIP_BUILD (0)
#   ENROLL_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."

database=${DATABASE:-enroll_scale_seed}
page_size=${PAGE_SIZE:-100}
depth=${DEPTH:-100}
samples=${SAMPLES:-50}
max_seconds=${MAX_SECONDS:-15}
cases_filter=${CASES:-.}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
bin=${CARGO_TARGET_DIR:-target}/release
port_base=${PORT_BASE:-50190}
pg_log=${PG_LOG:-/var/log/postgresql/postgresql-15-main.log}
db_url="${admin_url%/*}/$database"

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet -p enroll-policy -p enroll-device -p enroll-loadgen --bins
psql "$db_url" -Atqc "SELECT 1 FROM users LIMIT 1" >/dev/null ||
  { echo "seed $database first: scripts/seed-scale.sh" >&2; exit 2; }

pids=()
stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_services
  psql "$admin_url" -qc "ALTER DATABASE $database RESET log_min_duration_statement" 2>/dev/null || true
}
trap cleanup EXIT

hash() { "$bin/enroll-policy" hash-key "$1"; }
export ENROLL_DATABASE__URL="$db_url?sslmode=disable"
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_AUTH__API_KEYS="[{name=\"scale-admin\",role=\"admin\",sha256=\"$(hash scale-admin-key)\"},{name=\"scale-device\",role=\"service\",sha256=\"$(hash scale-service-key)\"}]"
export ENROLL_METRICS__LISTEN_ADDR=127.0.0.1:0
# The seed key scripts/seed-scale.sh sealed the seeds with.
# (the device service only: the policy service refuses keys it does not know)
seed_keys="{scale=\"$(printf 'ab%.0s' $(seq 1 32))\"}"
policy_port=$((port_base + 1)) device_port=$((port_base + 2))
start_services() {
  for port in $policy_port $device_port; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use (PORT_BASE)" >&2; exit 2; fi
  done
  ENROLL_SERVER__LISTEN=127.0.0.1:$policy_port "$bin/enroll-policy" serve &
  pids+=($!)
  ENROLL_SERVER__LISTEN=127.0.0.1:$device_port ENROLL_WEB__LISTEN=127.0.0.1:0 \
  ENROLL_SECRETS__SEED_KEYS="$seed_keys" ENROLL_SECRETS__ACTIVE_SEED_KEY=scale \
  ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:$policy_port ENROLL_POLICY_SERVICE__API_KEY=scale-service-key \
    "$bin/enroll-device" serve &
  pids+=($!)
  for port in $policy_port $device_port; do
    for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  done
  # Listening is not serving yet (the device service waits for the policy service).
  for _ in $(seq 1 200); do
    list_pages warm-up tokens "" --samples 1 --depth 0 >/dev/null 2>&1 && return
    sleep 0.3
  done
  echo "the device service did not start serving" >&2; exit 1
}

# Filter values that exist at any SCALE: realm-7 (or the last realm), a hot user (user-0:
# ~1 % of its realm's audit events), a median user, one of that user's token serials as the
# audit events name it, and a user who owns a token.
q() { psql "$db_url" -X -Atqc "$1"; }
realm=$(q "SELECT CASE WHEN EXISTS (SELECT 1 FROM realms WHERE name = 'realm-7') THEN 'realm-7' ELSE (SELECT max(name) FROM realms) END")
users_per_realm=$(q "SELECT count(*) FROM users WHERE realm = '$realm'")
median=user-$((users_per_realm * 43 / 100))
serial=$(q "SELECT 'TOTP' || upper(substr(md5('${realm#realm-}/${median#user-}/token'), 1, 12))")
owner=$(q "SELECT u.name FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.realm = '$realm' ORDER BY t.serial LIMIT 1")
counts=$(q "SELECT (SELECT count(*) FROM audit_events) || ' audit events, ' || (SELECT count(*) FROM devices) || ' devices, ' || (SELECT count(*) FROM tokens) || ' tokens, ' || (SELECT count(*) FROM users) || ' users'")

# label|rpc|filter|tables the SQL reads (the first: the page's own)
cases=(
  "audit-all|audit||audit_events"
  "audit-realm|audit|realm=$realm|audit_events"
  "audit-user-hot|audit|realm=$realm,user=user-0|audit_events"
  "audit-user|audit|realm=$realm,user=$median|audit_events"
  "audit-user-any-realm|audit|user=$median|audit_events"
  "audit-serial|audit|serial=$serial|audit_events"
  "audit-action|audit|action=approve_device|audit_events"
  "audit-action-rare|audit|action=flag_device|audit_events"
  "audit-denied|audit|result=denied|audit_events"
  "audit-realm-action-denied|audit|realm=$realm,action=validate,result=denied|audit_events"
  "devices-all|devices||devices,users"
  "devices-realm|devices|realm=$realm|devices,users"
  "devices-user|devices|realm=$realm,user=$median|devices,users"
  "devices-user-any-realm|devices|user=$median|devices,users"
  "devices-pending|devices|state=pending_approval|devices,users"
  "devices-realm-revoked|devices|realm=$realm,state=revoked|devices,users"
  "devices-enclave|devices|type=enclave_only|devices,users"
  "tokens-all|tokens||tokens,users"
  "tokens-pool|tokens|realm=pool-100k,assigned=false|tokens,users"
  "tokens-realm|tokens|realm=$realm|tokens,users"
  "tokens-user|tokens|realm=$realm,user=$owner|tokens,users"
  "tokens-user-any-realm|tokens|user=$owner|tokens,users"
  "tokens-lost|tokens|state=lost|tokens,users"
  "tokens-realm-hotp-disabled|tokens|realm=$realm,type=hotp,state=disabled|tokens,users"
  "tokens-assigned|tokens|assigned=true|tokens,users"
)

list_pages() { # LABEL RPC FILTER [more loadgen args]
  "$bin/enroll-loadgen" list-pages --target "http://127.0.0.1:$device_port" --api-key scale-admin-key \
    --label "$1" --rpc "$2" --filter "$3" --page-size "$page_size" "${@:4}"
}

echo "$database: $counts; page size $page_size, deep page after $depth page tokens," \
  "up to $samples requests per page (at most ${max_seconds} s), one at a time; $(nproc) cores"
start_services
# Warm the caches once (shared buffers, the owner-name cache), as a running service has them.
for case in "${cases[@]}"; do
  IFS='|' read -r label rpc filter tables <<<"$case"
  [[ $label =~ $cases_filter ]] || continue
  list_pages "$label" "$rpc" "$filter" --samples 1 --depth 0 >/dev/null
done
printf '%-22s %-16s %-40s %-10s %5s %7s %10s %10s %10s\n' case rpc filter page items samples "p50 ms" "p99 ms" "max ms"
for case in "${cases[@]}"; do
  IFS='|' read -r label rpc filter tables <<<"$case"
  [[ $label =~ $cases_filter ]] || continue
  list_pages "$label" "$rpc" "$filter" --depth "$depth" --samples "$samples" --max-seconds "$max_seconds" | tail -n +2
done
stop_services

[ "${EXPLAIN:-1}" = 1 ] || exit 0
if [ ! -r "$pg_log" ]; then echo "cannot read $pg_log (PG_LOG): no plans" >&2; exit 0; fi
echo
echo "== the statements each case sent (PostgreSQL log), explained"
psql "$admin_url" -qc "ALTER DATABASE $database SET log_min_duration_statement = 0"
start_services
for case in "${cases[@]}"; do
  IFS='|' read -r label rpc filter tables <<<"$case"
  [[ $label =~ $cases_filter ]] || continue
  offset=$(stat -c %s "$pg_log")
  list_pages "$label" "$rpc" "$filter" --depth "$depth" --samples 1 --max-seconds "$max_seconds" >/dev/null
  sleep 0.2
  echo "### $label: $rpc $filter"
  python3 scripts/lib/scale/explain-log.py "$pg_log" "$offset" "$database" "$db_url" "$tables"
done
