#!/usr/bin/env bash
# Benchmark of the token RPCs (release build, PostgreSQL, one run): EnrollToken, ListTokens,
# Validate with a wrong code, autoassignment attempts with a wrong code against pools of
# 1,000 and 100,000 tokens, each against its bound measured in the same run:
#   - EnrollToken against pgbench running its transaction shape on the same database
#     (scripts/pgbench/enroll-token.sql: lock the user row, count, insert the token and the
#     audit event, commit), at the same concurrency, just before and just after it;
#   - Validate against argon2id verifications/s on every core (examples/argon2_rate), just
#     before and just after it.
# Ratios are to the mean of the two bound measurements around each scenario. Peak RSS of
# both services is printed at the end.
#   CONCURRENCY (16)  DURATION seconds (10)  LARGE_POOL (100000)
#   CARGO_TARGET_DIR (target): build there, e.g. a separate directory so the release build
#   does not wait on (or invalidate) a shared debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

concurrency=${CONCURRENCY:-16}
duration=${DURATION:-10}
large_pool=${LARGE_POOL:-100000}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=enroll_bench_tokens_$$
bin=${CARGO_TARGET_DIR:-target}/release

cargo build --release --quiet -p enroll-policy -p enroll-device -p enroll-loadgen --bins --examples
psql "$admin_url" -qc "CREATE DATABASE $database"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)"
}
trap cleanup EXIT

hash() { "$bin"/enroll-policy hash-key "$1"; }
# PostgreSQL on loopback: no TLS, as a local or sidecar database is set up (sqlx would
# otherwise negotiate TLS with Debian's default snakeoil certificate and encrypt every query).
export ENROLL_DATABASE__URL="${admin_url%/*}/$database?sslmode=disable"
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_AUTH__API_KEYS="[{name=\"bench-admin\",role=\"admin\",sha256=\"$(hash bench-admin-key)\"},{name=\"bench-device\",role=\"service\",sha256=\"$(hash bench-service-key)\"}]"
ENROLL_SERVER__LISTEN=127.0.0.1:50081 "$bin"/enroll-policy serve &
pids+=($!)
sleep 1
ENROLL_SERVER__LISTEN=127.0.0.1:50082 \
ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:50081 ENROLL_POLICY_SERVICE__API_KEY=bench-service-key \
ENROLL_SECRETS__SEED_KEYS="{bench=\"$(printf 'ab%.0s' $(seq 1 32))\"}" ENROLL_SECRETS__ACTIVE_SEED_KEY=bench \
ENROLL_VALIDATION__AUTOASSIGN_ATTEMPTS_PER_USER=1000000 ENROLL_VALIDATION__AUTOASSIGN_ATTEMPTS_PER_CLIENT=1000000 \
ENROLL_VALIDATION__AUTOASSIGN_ATTEMPTS_PER_REALM=1000000000 ENROLL_VALIDATION__VALIDATE_ATTEMPTS_PER_CLIENT=1000000000 \
ENROLL_VALIDATION__BACKOFF_FREE_FAILURES=1000000000 \
  "$bin"/enroll-device serve &
pids+=($!)
for port in 50081 50082; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
sleep 2

# No policy is stored, so an autoassignment attempt is refused by the policy before the
# pool index is consulted (see docs/benchmarks.md: the figures predate that order); the budgets are
# lifted so the load is measured, and so are the free failures, so the Validate users'
# tokens never back off (a token backing off is refused after a dummy argon2 check,
# skipping the failure count's write).
"$bin"/enroll-loadgen seed-tokens --target http://127.0.0.1:50082 --api-key bench-admin-key --large-pool "$large_pool"
# Fresh planner statistics after the bulk import, as a long-running database has them.
psql "${admin_url%/*}/$database" -qc ANALYZE
echo "concurrency $concurrency, $duration s per scenario; policy service, device service, PostgreSQL and the load generator share $(nproc) cores"
results=$(mktemp)
trap 'rm -f "$results"; cleanup' EXIT
database_url="${admin_url%/*}/$database?sslmode=disable"
# Each step appends JSON lines {"scenario": ..., "rps": ...} to $results.
scenarios() {
  "$bin"/enroll-loadgen run --target http://127.0.0.1:50082 --api-key bench-admin-key \
    --rpc "$1" --concurrency "$concurrency" --duration "$duration" --warmup 2 --json | tee -a "$results"
}
pgbench_bound() {
  local tps
  tps=$(pgbench -n -M prepared -c "$concurrency" -j 2 -T "$duration" -f scripts/pgbench/enroll-token.sql \
    "$database_url" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  echo "{\"scenario\":\"pgbench-enroll-token-shape\",\"rps\":$tps}" | tee -a "$results"
}
argon2_bound() {
  local rate
  rate=$("$bin"/examples/argon2_rate | sed -n 's/^argon2id verifications: \([0-9.]*\).*/\1/p')
  echo "{\"scenario\":\"argon2-alone\",\"rps\":$rate}" | tee -a "$results"
}
pgbench_bound
scenarios enroll-token
pgbench_bound
scenarios list-tokens
argon2_bound
scenarios validate-wrong
argon2_bound
scenarios autoassign-wrong-1k,autoassign-wrong-100k
python3 scripts/bench_ratios.py "$results"
for pid in "${pids[@]}"; do
  echo "peak RSS of $(ps -o comm= -p "$pid") (pid $pid): $(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")"
done
