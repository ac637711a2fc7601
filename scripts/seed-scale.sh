#!/usr/bin/env bash
# Seeds a PostgreSQL database at the scale of issue 23 and keeps it for the scale
# benchmarks (scripts/bench-lists.sh, scripts/bench-migrations-scale.sh):
#   1,000,000 users over 100 realms          (realm-<r>/user-<u>, as enroll-loadgen draws them)
#   1,500,000 devices in every state and model (approved/pending/revoked, synced, bound, flagged)
#     200,000 tokens: a 100,000-token unassigned hardware pool (realm pool-100k) and
#             100,000 users' tokens in every state (enabled, disabled, locked, lost,
#             verify-pending, verify-failed), seeds sealed by the service (ImportTokens)
#      10,000 policies (the shape of scripts/bench-policy.sh's 1,000, ten times over)
#  10,000,000 audit events over 90 days
# Both services share the database (each has its own migration table), as the benchmarks
# run them. Every size scales with SCALE (default 1; SCALE=0.001 is a smoke run of a few
# seconds). Each step prints its time.
#
# How: the schema is the services' own (`enroll-policy migrate`, `enroll-device migrate`,
# timed: a full migration from empty); users, devices, policies and audit events are written
# by INSERT ... SELECT generate_series (scripts/lib/scale/*.sql), the audit events in the
# background while the rest goes on. Token seeds are sealed with AES-256-GCM bound to the
# serial, which SQL cannot do (pgcrypto has no GCM), so tokens go through the service:
# `enrollctl token import` (ImportTokens, 10,000 rows a request) with random seeds made by
# PostgreSQL, then one UPDATE hands 100,000 of them to users and spreads their states (a seed
# is bound to its serial, not to its realm or owner, so it stays valid). The device service
# runs with the seed key below (ENROLL_SECRETS__SEED_KEYS={scale="ab..ab"}, active `scale`):
# whatever runs on this database later must use the same key to read seeds.
#
#   SCALE (1)  DATABASE (enroll_scale_seed)  REALMS (100)  RESEED (0: refuse an existing
#   database; 1: drop it first)  ENROLL_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres)
#   CARGO_TARGET_DIR (target)  SKIP_BUILD (0)  PORT_BASE (50190: policy +1, device +2)
#   CHECK_POLICIES (0; 1: also create 30 policies through CreatePolicy and compare them with
#   the SQL-made ones, row for row: for a throw-away database)
set -euo pipefail
cd "$(dirname "$0")/.."

scale=${SCALE:-1}
database=${DATABASE:-enroll_scale_seed}
realms=${REALMS:-100}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
bin=${CARGO_TARGET_DIR:-target}/release
port_base=${PORT_BASE:-50190}
lib=scripts/lib/scale

case $database in enroll_scale_*) ;; *) echo "DATABASE must start with enroll_scale_" >&2; exit 2 ;; esac
# n BASE: BASE x SCALE, rounded, at least 1.
n() { awk -v s="$scale" -v n="$1" 'BEGIN { v = int(n * s + 0.5); if (v < 1) v = 1; print v }'; }
users_per_realm=$(( $(n 1000000) / realms )); [ "$users_per_realm" -ge 1 ] || users_per_realm=1
users=$((users_per_realm * realms))
pool=$(n 100000)
assigned=$(n 100000)
policies=$(n 10000)
audit=$(n 10000000)

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet -p enroll-policy -p enroll-device -p enrollctl -p enroll-loadgen --bins
db_url="${admin_url%/*}/$database"
if psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  if [ "${RESEED:-0}" = 1 ]; then
    psql "$admin_url" -qc "DROP DATABASE $database WITH (FORCE)"
  else
    echo "database $database exists (RESEED=1 drops it first)" >&2; exit 2
  fi
fi

pids=()
audit_pid=
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  # On a failure, the audit events' psql (the background job's child) too.
  if [ -n "$audit_pid" ] && kill -0 "$audit_pid" 2>/dev/null; then
    kill $(pgrep -P "$audit_pid") "$audit_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

started=$EPOCHREALTIME
# step NAME COMMAND...: runs it and prints its time.
step() {
  local name=$1; shift
  local t0=$EPOCHREALTIME
  "$@"
  awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="$name" 'BEGIN { printf "  %-44s %8.1f s\n", n, b - a }'
}
sql() { psql "$db_url" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "seeding $database at SCALE=$scale: $users users ($realms realms x $users_per_realm)," \
  "$((users * 3 / 2)) devices, $((pool + assigned)) tokens ($pool in the pool), $policies policies," \
  "$audit audit events; $(nproc) cores"
step "create database" psql "$admin_url" -qc "CREATE DATABASE $database"

hash() { "$bin/enroll-policy" hash-key "$1"; }
export ENROLL_DATABASE__URL="$db_url?sslmode=disable"
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_AUTH__API_KEYS="[{name=\"scale-admin\",role=\"admin\",sha256=\"$(hash scale-admin-key)\"},{name=\"scale-device\",role=\"service\",sha256=\"$(hash scale-service-key)\"}]"
export ENROLL_METRICS__LISTEN_ADDR=127.0.0.1:0
# (the device service only: the policy service refuses keys it does not know)
seed_keys="{scale=\"$(printf 'ab%.0s' $(seq 1 32))\"}"

step "migrate from empty: enroll-policy" "$bin/enroll-policy" migrate
step "migrate from empty: enroll-device" \
  env ENROLL_SECRETS__SEED_KEYS="$seed_keys" ENROLL_SECRETS__ACTIVE_SEED_KEY=scale "$bin/enroll-device" migrate

# The audit events take the longest and touch no other table: in the background.
audit_log=$(mktemp)
(
  t0=$EPOCHREALTIME
  sql -v audit="$audit" -v realms="$realms" -v users_per_realm="$users_per_realm" -f "$lib/audit.sql"
  awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="audit events ($audit, in the background)" \
    'BEGIN { printf "  %-44s %8.1f s\n", n, b - a }' >"$audit_log"
) &
audit_pid=$!

step "users ($users)" sql -v realms="$realms" -v users_per_realm="$users_per_realm" -f "$lib/users.sql"
step "devices ($((users * 3 / 2)))" sql -f "$lib/devices.sql"
step "policies ($policies)" sql -v policies="$policies" -v realms="$realms" -f "$lib/policies.sql"

# The services, for ImportTokens (its policy decision needs the policy service).
policy_port=$((port_base + 1)) device_port=$((port_base + 2))
for port in $policy_port $device_port; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use (PORT_BASE)" >&2; exit 2; fi
done
start_services() {
  ENROLL_SERVER__LISTEN=127.0.0.1:$policy_port "$bin/enroll-policy" serve &
  pids+=($!)
  # A request of 10,000 imported rows on a busy 2-core machine can take longer than the
  # default 10 s request timeout.
  ENROLL_SERVER__LISTEN=127.0.0.1:$device_port ENROLL_WEB__LISTEN=127.0.0.1:0 ENROLL_SERVER__REQUEST_TIMEOUT_MS=300000 \
  ENROLL_SECRETS__SEED_KEYS="$seed_keys" ENROLL_SECRETS__ACTIVE_SEED_KEY=scale \
  ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:$policy_port ENROLL_POLICY_SERVICE__API_KEY=scale-service-key \
    "$bin/enroll-device" serve &
  pids+=($!)
  for port in $policy_port $device_port; do
    for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  done
}
stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  pids=()
}
step "start both services" start_services

export ENROLLCTL_DEVICE_ADDR=http://127.0.0.1:$device_port ENROLLCTL_POLICY_ADDR=http://127.0.0.1:$policy_port
export ENROLLCTL_API_KEY=scale-admin-key ENROLLCTL_ACTOR=seed-scale ENROLLCTL_TIMEOUT=600
import() { # REALM COUNT [psql -v ...]: COUNT fresh tokens through ImportTokens
  local realm=$1 count=$2; shift 2
  sql -v count="$count" "$@" -f "$lib/tokens-csv.sql" |
    "$bin/enrollctl" -o json token import - --realm "$realm" --batch-size 10000 >/dev/null
}
step "import the pool ($pool, realm pool-100k)" import pool-100k "$pool" -v prefix=pool-100k-
step "import users' tokens ($assigned)" import scale-staging "$assigned" -v enrolled=1
step "assign users' tokens, spread states" sql -v users="$users" -f "$lib/tokens-assign.sql"

if [ "${CHECK_POLICIES:-0}" = 1 ]; then
  "$bin/enroll-loadgen" seed-policies --target "http://127.0.0.1:$policy_port" --api-key scale-admin-key \
    --count 30 --realms "$realms" --prefix rpccheck >/dev/null
  differences=$(sql -At <<'SQL'
SELECT count(*) FROM policies s JOIN policies r ON r.name = replace(s.name, 'bench-', 'rpccheck-')
WHERE s.name LIKE 'bench-%' AND (s.scope, s.realms, s.users, s.clients, s.actions, s.priority, s.active, s.description)
   IS DISTINCT FROM (r.scope, r.realms, r.users, r.clients, r.actions, r.priority, r.active, r.description);
SELECT count(*) FROM policy_history s JOIN policy_history r ON r.policy_name = replace(s.policy_name, 'bench-', 'rpccheck-')
WHERE s.policy_name LIKE 'bench-%' AND s.after_json IS DISTINCT FROM replace(r.after_json, 'rpccheck-', 'bench-');
SELECT count(*) FROM policies WHERE name LIKE 'rpccheck-%';
SQL
)
  echo "CHECK_POLICIES: policy rows differing, history rows differing, RPC-made policies: $(echo $differences)"
  [ "$(echo $differences)" = "0 0 30" ] || { echo "the SQL-made policies differ from CreatePolicy's" >&2; exit 1; }
fi

step "stop services" stop_services
t0=$EPOCHREALTIME
wait "$audit_pid"
awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "  %-44s %8.1f s\n", "(waited for the audit events)", b - a }'
cat "$audit_log"; rm -f "$audit_log"
# A database that has been running has its tables vacuumed and analyzed (autovacuum): the
# visibility map (index-only scans) and planner statistics the benchmarks should see.
step "VACUUM (ANALYZE)" sql -c "VACUUM (ANALYZE)"
awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "  %-44s %8.1f s\n", "total", b - a }'
sql -P footer=off <<'SQL'
SELECT relname AS "table", n_live_tup AS "rows",
       pg_size_pretty(pg_total_relation_size(relid)) AS "size with indexes"
FROM pg_stat_user_tables
WHERE relname IN ('users', 'devices', 'tokens', 'audit_events', 'policies', 'policy_history')
ORDER BY pg_total_relation_size(relid) DESC;
SQL
echo "database $database: $(psql "$admin_url" -Atqc "SELECT pg_size_pretty(pg_database_size('$database'))")" \
  "(drop it with: psql $admin_url -c 'DROP DATABASE $database')"
