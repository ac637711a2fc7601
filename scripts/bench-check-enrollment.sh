#!/usr/bin/env bash
# Benchmark of the identity proxy's request path (release build, PostgreSQL, one run):
# DeviceService/CheckEnrollment for REALMS x USERS_PER_REALM users (10,000 by default) that
# each have an approved device, against grpc.health.v1.Health/Check on the same device
# servers, interleaved twice, users drawn uniformly. REPLICAS device replicas share one
# PostgreSQL and one policy service; the load generator spreads its connections over them.
# With PRIME (the default) each replica's caches are primed first (every user once, its
# rate printed as the cold figure), so the interleaved rounds measure the steady state.
# Then, in the same run: users drawn Zipf-distributed (exponent ZIPF), the same with a
# policy created or changed every second (each change drops every cached decision), and
# pgbench running CheckEnrollment's own read (a user's devices, users joined to devices by
# realm and name, uniform) as the database's bound for a cache miss.
# A million users:  REALMS=100 USERS_PER_REALM=10000 PRIME=false ./scripts/bench-check-enrollment.sh
#   CONCURRENCY (64)  DURATION seconds (10)  REPLICAS (2)  CHECK_CACHE (true)
#   REALMS (100)  USERS_PER_REALM (100)  PRIME (true)  ZIPF (1.1)  MAX_ENTRIES (20000)
#   CARGO_TARGET_DIR (target)
# The devices are written straight into the database (CheckEnrollment reads the device rows,
# never the stored public key), so seeding 10,000 users takes a second instead of 10,000
# WebAuthn ceremonies.
set -euo pipefail
cd "$(dirname "$0")/.."

concurrency=${CONCURRENCY:-64}
duration=${DURATION:-10}
replicas=${REPLICAS:-2}
realms=${REALMS:-100}
users_per_realm=${USERS_PER_REALM:-100}
prime=${PRIME:-true}
zipf=${ZIPF:-1.1}
max_entries=${MAX_ENTRIES:-20000}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
target_dir=${CARGO_TARGET_DIR:-target}
database=enroll_bench_check_$$

cargo build --release --quiet -p enroll-policy -p enroll-device -p enroll-loadgen -p enrollctl --bins
psql "$admin_url" -qc "CREATE DATABASE $database"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)"
}
trap cleanup EXIT

bin=$target_dir/release
hash() { "$bin/enroll-policy" hash-key "$1"; }
# PostgreSQL on loopback: no TLS, as a local or sidecar database is set up (sqlx would
# otherwise negotiate TLS with Debian's default snakeoil certificate and encrypt every query).
export ENROLL_DATABASE__URL="${admin_url%/*}/$database?sslmode=disable"
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_AUTH__API_KEYS="[{name=\"bench-proxy\",role=\"proxy\",sha256=\"$(hash bench-proxy-key)\"},{name=\"bench-device\",role=\"service\",sha256=\"$(hash bench-service-key)\"},{name=\"bench-admin\",role=\"admin\",sha256=\"$(hash bench-admin-key)\"}]"
ENROLL_SERVER__LISTEN=127.0.0.1:50091 "$bin/enroll-policy" serve &
pids+=($!)
sleep 1
# The device service's settings only (the policy service refuses keys it does not know).
export ENROLL_CHECK_CACHE__ENABLED=${CHECK_CACHE:-true}
export ENROLL_CHECK_CACHE__MAX_ENTRIES=$max_entries
ports=()
targets=()
for replica in $(seq 1 "$replicas"); do
  port=$((50091 + replica))
  ENROLL_SERVER__LISTEN=127.0.0.1:$port ENROLL_WEB__LISTEN=127.0.0.1:0 ENROLL_METRICS__LISTEN_ADDR=127.0.0.1:0 \
  ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:50091 ENROLL_POLICY_SERVICE__API_KEY=bench-service-key \
    "$bin/enroll-device" serve &
  pids+=($!)
  ports+=("$port")
  targets+=("http://127.0.0.1:$port")
  # One replica migrates first; the others find the schema in place.
  [ "$replica" = 1 ] && sleep 1
done
target=$(IFS=,; echo "${targets[*]}")
for port in 50091 "${ports[@]}"; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
for _ in $(seq 1 100); do
  psql "${admin_url%/*}/$database" -qtAc "SELECT 1 FROM devices LIMIT 1" >/dev/null 2>&1 && break
  sleep 0.2
done

psql "${admin_url%/*}/$database" -q -v realms="$realms" -v users="$users_per_realm" <<'SQL'
INSERT INTO users (realm, name, create_time, lock_version)
  SELECT 'realm-' || r, 'user-' || u, now(), 0
  FROM generate_series(0, :realms - 1) AS r, generate_series(0, :users - 1) AS u;
INSERT INTO devices (id, realm, user_id, credential_id, device_type, state, aaguid,
                     backup_eligible, user_agent, enrollment_link_id, credential,
                     create_time, last_used_time, approved_by)
  SELECT gen_random_uuid()::text, realm, id, 'bench-credential-' || id, 'any', 'approved', '',
         false, 'bench', NULL, '{}', now(), NULL, 'bench'
  FROM users;
ANALYZE;
SQL
users=$((realms * users_per_realm))
echo "concurrency $concurrency, $duration s per scenario; $users users with a device;" \
  "$replicas device replica(s), check_cache.enabled=$ENROLL_CHECK_CACHE__ENABLED," \
  "max_entries=$ENROLL_CHECK_CACHE__MAX_ENTRIES, primed=$prime;" \
  "policy service, device service, PostgreSQL and the load generator share $(nproc) cores"
population=(--realms "$realms" --users-per-realm "$users_per_realm")
if [ "$prime" = true ]; then
  "$bin/enroll-loadgen" prime-check --target "$target" --api-key bench-proxy-key \
    "${population[@]}" --concurrency "$concurrency"
fi
run() {
  "$bin/enroll-loadgen" run --target "$target" --api-key bench-proxy-key "${population[@]}" \
    --concurrency "$concurrency" --duration "$duration" --warmup 2 "$@"
}
echo "== uniform over $users users"
run --rpc health,check-enrollment,health,check-enrollment
echo "== Zipf (s = $zipf) over $users users"
run --rpc health,check-enrollment --zipf "$zipf"
echo "== Zipf (s = $zipf), a policy created or changed every second (each drops every cached decision)"
policies=$(mktemp)
trap 'rm -f "$policies"; cleanup' EXIT
(
  for change in $(seq 1 $((duration + 4))); do
    cat > "$policies" <<YAML
- name: bench-change
  realms: ["realm-0"]
  actions: { max_token_per_user: "$((change % 5 + 3))" }
  priority: 50
  active: true
YAML
    "$bin/enrollctl" --policy-addr http://127.0.0.1:50091 --api-key bench-admin-key --actor bench \
      policy apply -f "$policies" >/dev/null 2>&1 || echo "policy change $change failed"
    sleep 1
  done
) &
changer=$!
run --rpc check-enrollment --zipf "$zipf"
wait "$changer" || true
for pid in "${pids[@]}"; do
  echo "peak RSS of $(ps -o comm= -p "$pid") (pid $pid): $(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")"
done
# The services go first: pgbench's clients need the database's connection slots.
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
pids=()
echo "== pgbench: CheckEnrollment's read (a user's devices by realm and name), uniform, c=$concurrency"
cat > "$policies" <<'SQL'
\set r random(0, :realms - 1)
\set u random(0, :users - 1)
SELECT d.* FROM devices d JOIN users u ON u.id = d.user_id WHERE u.realm = 'realm-' || :r AND u.name = 'user-' || :u ORDER BY d.create_time, d.id;
SQL
pgbench -n -M prepared -c "$concurrency" -j 2 -T "$duration" -D realms="$realms" -D users="$users_per_realm" \
  -f "$policies" "${admin_url%/*}/$database" 2>&1 | grep -E "^(tps|latency)|rror"
