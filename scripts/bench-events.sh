#!/usr/bin/env bash
# Benchmark of the enrollment-event outbox and its delivery (release build, PostgreSQL, one
# run, all on this machine's cores): EnrollToken with no stream, with two streams (a Standard
# Webhooks one and a CAEP one) paused, and with both delivering to a local receiver (the
# Python reference receiver of the tests, verifying every webhook and every SET as a real
# receiver would); then how fast the backlog drains, per encoding, from the device's
# delivery counters. Every EnrollToken writes its event in all three runs (the outbox is
# always on); paused streams add nothing to a request, delivering ones add CPU on the same
# cores.
#   CONCURRENCY (16)  DURATION seconds (10)
set -euo pipefail
cd "$(dirname "$0")/.."

concurrency=${CONCURRENCY:-16}
duration=${DURATION:-10}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=enroll_bench_events_$$
bin=${CARGO_TARGET_DIR:-target}/release
python=$(./scripts/python-venv.sh)

cargo build --release --quiet -p enroll-policy -p enroll-device -p enroll-loadgen -p enrollctl --bins
psql "$admin_url" -qc "CREATE DATABASE $database"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)"
}
trap cleanup EXIT

hash() { "$bin"/enroll-policy hash-key "$1"; }
export ENROLL_DATABASE__URL="${admin_url%/*}/$database?sslmode=disable"
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_AUTH__API_KEYS="[{name=\"bench-admin\",role=\"admin\",sha256=\"$(hash bench-admin-key)\"},{name=\"bench-device\",role=\"service\",sha256=\"$(hash bench-service-key)\"}]"
ENROLL_SERVER__LISTEN=127.0.0.1:50091 "$bin"/enroll-policy serve &
pids+=($!)
sleep 1
ENROLL_SERVER__LISTEN=127.0.0.1:50092 ENROLL_WEB__LISTEN=127.0.0.1:50093 \
ENROLL_METRICS__LISTEN_ADDR=127.0.0.1:50094 \
ENROLL_WEBAUTHN__ENROLLMENT_BASE_URL=http://localhost:50093/enroll/ \
ENROLL_EVENTS__ALLOW_LOOPBACK_HTTP=true ENROLL_EVENTS__DELIVERY_POLL_MS=50 \
ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:50091 ENROLL_POLICY_SERVICE__API_KEY=bench-service-key \
ENROLL_SECRETS__SEED_KEYS="{bench=\"$(printf 'ab%.0s' $(seq 1 32))\"}" ENROLL_SECRETS__ACTIVE_SEED_KEY=bench \
  "$bin"/enroll-device serve &
pids+=($!)
for port in 50091 50092 50093; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
sleep 2

receiver_log=$(mktemp)
"$python" tests/receivers/receiver.py --port 50095 --jwks-url http://127.0.0.1:50093/.well-known/enroll-events/jwks.json \
  --issuer http://localhost:50093 --audience https://receiver.bench > "$receiver_log" &
pids+=($!)
sleep 1
ctl() { "$bin"/enrollctl --device-addr http://127.0.0.1:50092 --api-key bench-admin-key --actor bench "$@"; }

results=$(mktemp)
trap 'rm -f "$results" "$receiver_log"; cleanup' EXIT
enroll() {
  "$bin"/enroll-loadgen run --target http://127.0.0.1:50092 --api-key bench-admin-key \
    --rpc enroll-token --concurrency "$concurrency" --duration "$duration" --warmup 2 --json \
    | sed "s/\"scenario\":\"enroll-token\"/\"scenario\":\"enroll-token-$1\"/" | tee -a "$results"
}
delivered() {
  curl -s http://127.0.0.1:50094/metrics | awk -v enc="$1" \
    '/^enroll_device_events_deliveries_total/ && $0 ~ "encoding=\""enc"\"" && /outcome="delivered"/ {sum += $NF} END {print sum + 0}'
}
backlog() {
  curl -s http://127.0.0.1:50094/metrics | awk '/^enroll_device_events_backlog/ {sum += $NF} END {print sum + 0}'
}

echo "concurrency $concurrency, $duration s per scenario; policy and device services, PostgreSQL, the receiver and the load generator share $(nproc) cores"
enroll no-streams
secret=$(ctl -o json stream create --name bench-siem --encoding webhook --endpoint http://127.0.0.1:50095/webhook \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
curl -s -X POST -H 'Content-Type: application/json' -d "{\"webhook_secrets\":[\"$secret\"]}" http://127.0.0.1:50095/control >/dev/null
ctl stream create --name bench-idp --encoding caep --endpoint http://127.0.0.1:50095/caep --audience https://receiver.bench >/dev/null
ids=$(ctl -o json stream list | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["streams"]))')
for id in $ids; do ctl stream pause "$id" >/dev/null; done
enroll two-streams-paused
for id in $ids; do ctl stream resume "$id" >/dev/null; done
sleep 1
backlog_before=$(backlog)
enroll two-streams-delivering
backlog_after=$(backlog)
echo "backlog (both streams) before the delivering run: $backlog_before events; right after it: $backlog_after events"
start=$(date +%s.%N); webhooks0=$(delivered webhook); sets0=$(delivered caep_push)
for _ in $(seq 1 600); do [ "$(backlog)" = "0" ] && break; sleep 1; done
end=$(date +%s.%N); webhooks1=$(delivered webhook); sets1=$(delivered caep_push)
python3 - "$results" "$start" "$end" "$webhooks0" "$webhooks1" "$sets0" "$sets1" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        row = json.loads(line)
        rows[row["scenario"]] = row["rps"]
base = rows["enroll-token-no-streams"]
for name in ("enroll-token-two-streams-paused", "enroll-token-two-streams-delivering"):
    print(f"{name}: {rows[name]:.0f}/s, {rows[name] / base:.2f} of {base:.0f}/s with no stream")
start, end = float(sys.argv[2]), float(sys.argv[3])
webhooks, sets = float(sys.argv[5]) - float(sys.argv[4]), float(sys.argv[7]) - float(sys.argv[6])
seconds = max(end - start, 1e-9)
print(f"draining the rest of the backlog: {webhooks:.0f} webhooks and {sets:.0f} SETs in {seconds:.1f} s "
      f"({webhooks / seconds:.0f} webhooks/s, {sets / seconds:.0f} SETs/s, one stream each, users side by side)")
PY
