#!/usr/bin/env bash
# The Validate attacks of issue 18 against a real stack (PostgreSQL, the policy service, two
# device replicas) with short windows, so a run shows whole windows in minutes:
# `enroll-attacker lockout` gives victims HOTP tokens, lets each pass once from home, then
# 1. sends outsiders' wrong passes for one victim from rotating addresses while the
#    victim's right codes (from home, and with its device token from a fresh address) must
#    pass; 2. spends the realm's failure budget and checks that every victim still passes
#    from home; 3. guesses across victims and turns the checked guesses into takeovers a
#    year at the configured budget.
#   VICTIMS (20)  OUTSIDERS (200)  GUESSES (1000)  REALM_FAILURES (100)  WINDOW_SECS (60)
set -euo pipefail
cd "$(dirname "$0")/.."

victims=${VICTIMS:-20}
outsiders=${OUTSIDERS:-200}
guesses=${GUESSES:-1000}
realm_failures=${REALM_FAILURES:-100}
window=${WINDOW_SECS:-60}
device_env=(
  ENROLL_VALIDATION__REALM_FAILURES_PER_WINDOW="$realm_failures"
  ENROLL_VALIDATION__REALM_FAILURE_WINDOW_SECS="$window"
  ENROLL_VALIDATION__UNKNOWN_CLIENT_WINDOW_SECS="$window"
)
source scripts/lib/attack-stack.sh

"$bin"/enroll-attacker lockout --device http://127.0.0.1:50092 \
  --victims "$victims" --outsiders "$outsiders" --guesses "$guesses" \
  --realm-failures "$realm_failures" --realm-window-secs "$window"
