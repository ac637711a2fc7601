#!/usr/bin/env bash
# Benchmark: EvaluateEnrollment with 1,000 policies loaded vs grpc.health.v1.Health/Check on
# the same server, in one run (release build, PostgreSQL).
#   CONCURRENCY (64)  DURATION seconds (10)  POLICIES (1000)
#   ENROLL_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres): the server
#   a throw-away database `enroll_bench_<pid>` is created on.
set -euo pipefail
cd "$(dirname "$0")/.."

concurrency=${CONCURRENCY:-64}
duration=${DURATION:-10}
policies=${POLICIES:-1000}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=enroll_bench_$$
port=${PORT:-50071}

cargo build --release --quiet -p enroll-policy -p enroll-loadgen
psql "$admin_url" -qc "CREATE DATABASE $database"
policy_pid=
cleanup() {
  [ -n "$policy_pid" ] && kill -TERM "$policy_pid" 2>/dev/null && wait "$policy_pid" 2>/dev/null
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)"
}
trap cleanup EXIT

admin_key=bench-admin-key
service_key=bench-service-key
hash() { target/release/enroll-policy hash-key "$1"; }
export ENROLL_SERVER__LISTEN=127.0.0.1:$port
export ENROLL_DATABASE__URL=${admin_url%/*}/$database
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_SERVER__CONCURRENCY_LIMIT_PER_CONNECTION=1024
export ENROLL_AUTH__API_KEYS="[{name=\"bench-admin\",role=\"admin\",sha256=\"$(hash $admin_key)\"},{name=\"bench-device\",role=\"service\",sha256=\"$(hash $service_key)\"}]"
# Server and load generator each get their own core (one runtime worker each), so neither
# steals the other's CPU: the ratio between scenarios is then stable from run to run.
if [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
  export TOKIO_WORKER_THREADS=1
else
  server_cpu=() client_cpu=()
fi
"${server_cpu[@]}" target/release/enroll-policy serve &
policy_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
sleep 1

target/release/enroll-loadgen seed-policies --target "http://127.0.0.1:$port" --api-key $admin_key --count "$policies"
echo "policies: $policies, concurrency: $concurrency, $duration s per scenario, server and load generator pinned to one core each"
"${client_cpu[@]}" target/release/enroll-loadgen run --target "http://127.0.0.1:$port" --api-key $service_key \
  --rpc health,evaluate,health,evaluate --concurrency "$concurrency" --duration "$duration" --warmup 2 "$@"
echo "peak RSS of enroll-policy (pid $policy_pid): $(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$policy_pid/status")"
