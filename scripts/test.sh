#!/usr/bin/env bash
# The whole test suite: unit tests and the end-to-end tests, each of which runs once on
# PostgreSQL (a fresh database per test, dropped afterwards) and once on SQLite.
# PostgreSQL: ENROLL_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace "$@"
