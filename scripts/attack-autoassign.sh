#!/usr/bin/env bash
# The autoassignment guessing attack against a real stack: PostgreSQL, the policy service
# and two device replicas with the default budgets, a pool of TOTP hardware tokens in realm
# `attack`; `enroll-attacker run` plays two new hires and the attacker, then reports.
#   POOL (100000; CI: 2000)  GUESSES per attack phase (10000)  CONCURRENCY (8)
#   PROFILE (debug; release builds optimised services and takes longer to build)
set -euo pipefail
cd "$(dirname "$0")/.."

pool=${POOL:-100000}
guesses=${GUESSES:-10000}
concurrency=${CONCURRENCY:-8}
source scripts/lib/attack-stack.sh

"$bin"/enroll-attacker setup --policy http://127.0.0.1:50091 --device http://127.0.0.1:50092 --pool "$pool"
"$bin"/enroll-attacker run --devices http://127.0.0.1:50092,http://127.0.0.1:50093 \
  --pool "$pool" --guesses "$guesses" --concurrency "$concurrency"
