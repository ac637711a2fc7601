#!/usr/bin/env bash
# Benchmark of the gate behind nginx (a benchmark, not a test; release build, PostgreSQL, one
# run): the shipped deploy/gate/nginx/enroll-gate.conf in front of a small static app, with
# auth_request to the gate and a valid device session on every request, against the same
# nginx serving the same app without auth_request; wrk with CONNECTIONS (64) connections,
# THREADS (2) threads, DURATION (15) seconds per run, interleaved twice after short
# warm-ups. Prints each run's rate and p99 latency, and the ratio of the mean rates.
#
# The identity and the session come from `cargo run -p enroll-e2e --example
# gate-credentials` (tests/examples/gate_credentials.rs): a JWT issuer of the benchmark's
# own (its JWKS file is the gate's key source) and a session cookie sealed with the gate's
# key for a device row written straight into the database (the check reads device rows,
# never the stored public key; sealing is what the gate does after a WebAuthn sign-in).
#   CONNECTIONS (64)  THREADS (2)  DURATION seconds (15)  NGINX_WORKERS (1)
#   CARGO_TARGET_DIR (target)  ENROLL_BENCH_POSTGRES_URL
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-64}
threads=${THREADS:-2}
duration=${DURATION:-15}
workers=${NGINX_WORKERS:-1}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
target_dir=${CARGO_TARGET_DIR:-target}
database=enroll_bench_gate_$$
policy_port=50191
device_port=50192
gate_port=50193
gated_port=50194
ungated_port=50195
app_port=50196

nginx_bin=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
for tool in "$nginx_bin" wrk psql; do
  if [ -z "$tool" ] || ! command -v "$tool" >/dev/null; then
    echo "FATAL: needs nginx, wrk and psql (apt-get install nginx-light wrk postgresql-client)" >&2
    exit 1
  fi
done

cargo build --release --quiet -p enroll-policy -p enroll-device --bins
cargo build --quiet -p enroll-e2e --example gate-credentials
work=$(mktemp -d)
psql "$admin_url" -qc "CREATE DATABASE $database"
pids=()
cleanup() {
  if [ -f "$work/nginx.pid" ]; then kill -TERM "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)"
  rm -rf "$work"
}
trap cleanup EXIT

# The credentials as shell variables (never printed): ISSUER, AUDIENCE, SESSION_KEY, JWT,
# COOKIE.
eval "$("$target_dir/debug/examples/gate-credentials" "$work" bench alice bench-gate-credential)"

bin=$target_dir/release
hash() { "$bin/enroll-policy" hash-key "$1"; }
export ENROLL_DATABASE__URL="${admin_url%/*}/$database?sslmode=disable"
export ENROLL_TELEMETRY__LOG_FILTER=warn
export ENROLL_AUTH__API_KEYS="[{name=\"bench-device\",role=\"service\",sha256=\"$(hash bench-service-key)\"}]"
ENROLL_SERVER__LISTEN=127.0.0.1:$policy_port "$bin/enroll-policy" serve &
pids+=($!)
sleep 1
ENROLL_SERVER__LISTEN=127.0.0.1:$device_port ENROLL_WEB__LISTEN=127.0.0.1:0 ENROLL_METRICS__LISTEN_ADDR=127.0.0.1:0 \
ENROLL_POLICY_SERVICE__URL=http://127.0.0.1:$policy_port ENROLL_POLICY_SERVICE__API_KEY=bench-service-key \
ENROLL_GATE__LISTEN=127.0.0.1:$gate_port \
ENROLL_GATE__HOSTS="[\"localhost:$gated_port\"]" \
ENROLL_GATE__TRUSTED_PROXIES='["127.0.0.1/32"]' \
ENROLL_GATE__IDENTITY__HEADER=X-Pomerium-Jwt-Assertion \
ENROLL_GATE__IDENTITY__JWKS_FILE="$work/jwks.json" \
ENROLL_GATE__IDENTITY__ISSUER="$ISSUER" \
ENROLL_GATE__IDENTITY__AUDIENCES="[\"$AUDIENCE\"]" \
ENROLL_GATE__IDENTITY__ALGORITHMS='["ES256"]' \
ENROLL_GATE__IDENTITY__USER_CLAIM=email \
ENROLL_GATE__IDENTITY__REALM_CLAIM=realm \
ENROLL_GATE__SESSION__KEYS="{s1=\"$SESSION_KEY\"}" \
ENROLL_GATE__SESSION__ACTIVE_KEY=s1 \
  "$bin/enroll-device" serve &
pids+=($!)
for port in $policy_port $device_port $gate_port; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
for _ in $(seq 1 100); do
  psql "${admin_url%/*}/$database" -qtAc "SELECT 1 FROM devices LIMIT 1" >/dev/null 2>&1 && break
  sleep 0.2
done
psql "${admin_url%/*}/$database" -q <<'SQL'
INSERT INTO users (realm, name, create_time, lock_version) VALUES ('bench', 'alice', now(), 0);
INSERT INTO devices (id, realm, user_id, credential_id, device_type, state, aaguid,
                     backup_eligible, user_agent, enrollment_link_id, credential,
                     create_time, last_used_time, approved_by)
  SELECT gen_random_uuid()::text, realm, id, 'bench-gate-credential', 'any', 'approved', '',
         false, 'bench', NULL, '{}', now(), NULL, 'bench'
  FROM users;
SQL

# nginx: the static app, the shipped server block in front of it (gated), and the same
# proxying without auth_request (ungated).
mkdir -p "$work/www"
head -c 512 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
sed -e "s/__LISTEN__/127.0.0.1:$gated_port/" -e 's/__SERVER_NAME__/localhost/' \
  -e "s/__GATE__/127.0.0.1:$gate_port/" -e "s/__APP__/127.0.0.1:$app_port/" \
  deploy/gate/nginx/enroll-gate.conf >"$work/enroll-gate.conf"
# As root, workers as root too (the default user, nobody, cannot read the temp dir).
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$work/nginx.conf" <<EOF
$user_line
worker_processes $workers;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$app_port;
        root $work/www;
    }
    include $work/enroll-gate.conf;
    server {
        listen 127.0.0.1:$ungated_port;
        server_name localhost;
        location / {
            proxy_pass http://enroll_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"$nginx_bin" -e stderr -p "$work" -c "$work/nginx.conf" -g "pid $work/nginx.pid; error_log stderr warn;"
for port in $gated_port $ungated_port; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

gated=http://localhost:$gated_port/
ungated=http://localhost:$ungated_port/
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(status -H "X-Pomerium-Jwt-Assertion: $JWT" -H "Cookie: $COOKIE" "$gated")" = 200 ] \
  || { echo "FATAL: the gated app does not answer 200 with the session" >&2; exit 1; }
[ "$(status -H "X-Pomerium-Jwt-Assertion: $JWT" "$gated")" = 401 ] \
  || { echo "FATAL: the gated app answers without a session" >&2; exit 1; }
[ "$(status "$ungated")" = 200 ] || { echo "FATAL: the ungated app does not answer" >&2; exit 1; }

# One wrk run: prints "<requests/s> <p99>" (p99 as wrk prints it, e.g. 4.10ms).
measure() {
  local seconds=$1 url=$2 output
  shift 2
  output=$(wrk --latency -c "$connections" -t "$threads" -d "${seconds}s" "$@" "$url")
  if grep -q 'Non-2xx' <<<"$output"; then
    printf '%s\n' "$output" >&2
    echo "FATAL: non-2xx answers during the run" >&2
    exit 1
  fi
  printf '%s %s\n' "$(awk '/^Requests\/sec:/ {print $2}' <<<"$output")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$output")"
}
session=(-H "X-Pomerium-Jwt-Assertion: $JWT" -H "Cookie: $COOKIE")
echo "wrk -c$connections -t$threads, ${duration} s per run after 3 s warm-ups, interleaved twice;" \
  "nginx $workers worker(s); nginx, the device service, PostgreSQL and wrk share $(nproc) cores"
measure 3 "$ungated" >/dev/null
measure 3 "$gated" "${session[@]}" >/dev/null
ungated_rates=()
gated_rates=()
for round in 1 2; do
  result=$(measure "$duration" "$ungated")
  read -r rate p99 <<<"$result"
  ungated_rates+=("$rate")
  printf 'round %s  without auth_request: %8.0f requests/s, p99 %s\n' "$round" "$rate" "$p99"
  result=$(measure "$duration" "$gated" "${session[@]}")
  read -r rate p99 <<<"$result"
  gated_rates+=("$rate")
  printf 'round %s  with the gate:        %8.0f requests/s, p99 %s\n' "$round" "$rate" "$p99"
done
awk -v g="${gated_rates[*]}" -v u="${ungated_rates[*]}" 'BEGIN {
  split(g, gs, " "); split(u, us, " ");
  gated = (gs[1] + gs[2]) / 2; ungated = (us[1] + us[2]) / 2;
  printf "mean: without %.0f/s, with the gate %.0f/s; ratio gated/ungated %.2f (target >= 0.5)\n", ungated, gated, gated / ungated
}'
for pid in "${pids[@]}"; do
  echo "peak RSS of $(ps -o comm= -p "$pid") (pid $pid): $(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")"
done
