# Sourced by scripts/attack-*.sh: builds the services and the attacker, creates a
# PostgreSQL database and starts the policy service (127.0.0.1:50091) and two device
# replicas (50092, 50093) on it; everything is stopped and dropped on exit. Extra settings
# of the device replicas only: the caller's `device_env` array (NAME=value entries).
#   PROFILE (debug; release builds optimised services and takes longer to build)
profile=${PROFILE:-debug}
[[ -v device_env ]] || device_env=()
admin_url=${ENROLL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=enroll_attack_$$
bin=${CARGO_TARGET_DIR:-target}/$profile

flags=(--quiet -p enroll-policy -p enroll-device -p enroll-attacker --bins)
[[ $profile == release ]] && flags+=(--release)
cargo build "${flags[@]}"
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
# No Prometheus listeners: the replicas would share the default port (and so would other
# stacks on this host).
export ENROLL_METRICS__LISTEN_ADDR=
export ENROLL_AUTH__API_KEYS="[{name=\"attack-admin\",role=\"admin\",sha256=\"$(hash attack-admin-key)\"},{name=\"attack-proxy\",role=\"proxy\",sha256=\"$(hash attack-proxy-key)\"},{name=\"attack-device\",role=\"service\",sha256=\"$(hash attack-service-key)\"}]"
ENROLL_SERVER__LISTEN=127.0.0.1:50091 "$bin"/enroll-policy serve &
pids+=($!)
sleep 1
for port in 50092 50093; do
  ENROLL_SERVER__LISTEN=127.0.0.1:$port ENROLL_WEB__LISTEN=off \
  ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:50091 ENROLL_POLICY_SERVICE__API_KEY=attack-service-key \
  ENROLL_SECRETS__SEED_KEYS="{attack=\"$(printf 'cd%.0s' $(seq 1 32))\"}" ENROLL_SECRETS__ACTIVE_SEED_KEY=attack \
    env "${device_env[@]}" "$bin"/enroll-device serve &
  pids+=($!)
  # The first replica migrates the schema before the second starts.
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  sleep 2
done

export ATTACKER_ADMIN_KEY=attack-admin-key ATTACKER_PROXY_KEY=attack-proxy-key
