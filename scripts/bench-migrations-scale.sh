#!/usr/bin/env bash
# Migrations at size (issue 23, item 4), with the release binaries' own `migrate`:
#   1. a full migration from empty: a fresh database, `enroll-policy migrate` then
#      `enroll-device migrate`, each timed;
#   2. the device service's migrations since FROM (default m0013: the migrations added since
#      the last release, m0013..m0018 today) on a copy of the seeded database
#      (scripts/seed-scale.sh): the copy is rolled back to before FROM with the migrations'
#      `down` written as SQL (below; timed too), then `enroll-device migrate` runs them again
#      with log_min_duration_statement = 0 on the copy, and every statement it sent is
#      listed with its time from PostgreSQL's log: what held which lock for how long.
# FROM=m0012 also replays m0012 (its UPDATE of the devices with a verified chain).
#   SEED_DATABASE (enroll_scale_seed)  FROM (m0013)  KEEP_COPY (0)
#   PG_LOG (/var/log/postgresql/postgresql-15-main.log)  CARGO_TARGET_DIR (target)  SKIP_BUILD (0)
#   ENROLL_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."

seed=${SEED_DATABASE:-enroll_scale_seed}
from=${FROM:-m0013}
admin_url=${ENROLL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
bin=${CARGO_TARGET_DIR:-target}/release
pg_log=${PG_LOG:-/var/log/postgresql/postgresql-15-main.log}
empty=enroll_scale_mig_empty_$$
copy=enroll_scale_mig_copy_$$

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet -p enroll-policy -p enroll-device --bins
cleanup() {
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $empty WITH (FORCE)"
  [ "${KEEP_COPY:-0}" = 1 ] || psql "$admin_url" -qc "DROP DATABASE IF EXISTS $copy WITH (FORCE)"
}
trap cleanup EXIT
export ENROLL_TELEMETRY__LOG_FILTER=warn
timed() { # NAME COMMAND...
  local name=$1; shift
  local t0=$EPOCHREALTIME
  "$@"
  awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="$name" 'BEGIN { printf "  %-52s %9.3f s\n", n, b - a }'
}

echo "== full migration from empty (fresh database)"
psql "$admin_url" -qc "CREATE DATABASE $empty"
ENROLL_DATABASE__URL="${admin_url%/*}/$empty?sslmode=disable" timed "enroll-policy migrate (1 migration)" "$bin/enroll-policy" migrate
ENROLL_DATABASE__URL="${admin_url%/*}/$empty?sslmode=disable" timed "enroll-device migrate (all)" "$bin/enroll-device" migrate
echo "  device migrations applied: $(psql "${admin_url%/*}/$empty" -Atqc "SELECT count(*) FROM enroll_device_migrations")"

echo "== the device migrations since $from on a copy of $seed"
timed "copy $seed (CREATE DATABASE ... TEMPLATE)" psql "$admin_url" -qc "CREATE DATABASE $copy TEMPLATE $seed"
copy_url="${admin_url%/*}/$copy"
# (reltuples: the copy has no statistics counters of its own yet)
psql "$copy_url" -X -P footer=off -c "SELECT relname AS table, reltuples::bigint AS rows, pg_size_pretty(pg_total_relation_size(oid)) AS size
  FROM pg_class WHERE relkind = 'r' AND relname IN ('devices', 'tokens', 'users', 'audit_events', 'enrollment_links')
  ORDER BY pg_total_relation_size(oid) DESC"
# The `down` of each migration as SQL, newest first (what the Rust `down` does on PostgreSQL).
downs=(
  "m0018_event_subject_format|ALTER TABLE event_streams DROP COLUMN subject_format"
  "m0017_policy_event_relay|DROP TABLE policy_event_relay"
  "m0016_event_poll_acks|DROP TABLE event_poll_acks"
  "m0015_enrollment_events|ALTER TABLE enrollment_links DROP COLUMN expiry_recorded; ALTER TABLE otp_enrollment_links DROP COLUMN expiry_recorded; ALTER TABLE devices DROP COLUMN attachment; ALTER TABLE devices DROP COLUMN transports; DROP TABLE event_signing_keys; DROP TABLE event_dead_letters; DROP TABLE event_streams; DROP TABLE enrollment_events"
  "m0014_otp_enrollment_links|DROP TABLE otp_enrollment_links"
  "m0013_token_verify|ALTER TABLE tokens DROP COLUMN verify_state; ALTER TABLE tokens DROP COLUMN verify_deadline; ALTER TABLE tokens DROP COLUMN verify_attempts_left"
  "m0012_aaguid_verified|ALTER TABLE devices DROP COLUMN aaguid_verified"
)
for down in "${downs[@]}"; do
  name=${down%%|*} statements=${down#*|}
  [[ "$name" < "$from" ]] && break
  timed "down $name" psql "$copy_url" -X -q -v ON_ERROR_STOP=1 -1 \
    -c "$statements" -c "DELETE FROM enroll_device_migrations WHERE version = '$name'"
done
echo "  pending now: $(psql "$copy_url" -Atqc "SELECT count(*) FROM enroll_device_migrations") of the device migrations applied"

psql "$admin_url" -qc "ALTER DATABASE $copy SET log_min_duration_statement = 0"
offset=$(stat -c %s "$pg_log" 2>/dev/null || echo 0)
ENROLL_DATABASE__URL="$copy_url?sslmode=disable" timed "enroll-device migrate (up from before $from)" "$bin/enroll-device" migrate
psql "$admin_url" -qc "ALTER DATABASE $copy RESET log_min_duration_statement"
if [ -r "$pg_log" ]; then
  echo "  statements it sent (PostgreSQL log), ms:"
  python3 - "$pg_log" "$offset" "$copy" <<'PY'
import re, sys
path, offset, database = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "rb") as log:
    log.seek(offset)
    text = log.read().decode("utf-8", "replace")
entry_start = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
entries, entry = [], []
for line in text.splitlines():
    if entry_start.match(line) and entry:
        entries.append(" ".join(entry)); entry = []
    entry.append(line.strip())
if entry:
    entries.append(" ".join(entry))
total = 0.0
for entry in entries:
    if f"@{database} " not in entry:
        continue
    match = re.search(r"duration: ([0-9.]+) ms\s+(?:statement|execute[^:]*|bind[^:]*|parse[^:]*): (.*)", entry)
    if not match or re.match(r"(parse|bind)", entry.split("ms", 1)[1].strip()):
        continue
    sql = match.group(2).split(" DETAIL: ")[0]
    if re.search(r"pg_(try_)?advisory|FROM \"?enroll_device_migrations|pg_catalog|information_schema|SELECT 1\b|^(SHOW|SET) ", sql):
        continue
    total += float(match.group(1))
    print(f"  {float(match.group(1)):10.3f}  {sql[:150]}")
print(f"  {total:10.3f}  (sum of the statements above)")
PY
fi

# The lock queue: an ALTER TABLE needs an ACCESS EXCLUSIVE lock, however short its work, and
# while it waits for a running transaction that read the table, every later reader of the
# table waits behind it. Replayed with m0013 (ALTER TABLE tokens) behind a 5-second
# transaction that read tokens; a one-row token read is timed while the migration waits.
if [ "${LOCK_DEMO:-1}" = 1 ]; then
  echo "== the lock queue: m0013 behind a 5 s transaction that read tokens"
  psql "$copy_url" -X -q -1 -c "ALTER TABLE tokens DROP COLUMN verify_state; ALTER TABLE tokens DROP COLUMN verify_deadline; ALTER TABLE tokens DROP COLUMN verify_attempts_left" \
    -c "DELETE FROM enroll_device_migrations WHERE version = 'm0013_token_verify'"
  one_serial=$(psql "$copy_url" -X -Atqc "SELECT serial FROM tokens LIMIT 1")
  psql "$copy_url" -X -q -c "BEGIN; SELECT count(*) FROM tokens WHERE serial = '$one_serial'; SELECT pg_sleep(5); COMMIT;" >/dev/null &
  holder=$!
  sleep 0.5
  ENROLL_DATABASE__URL="$copy_url?sslmode=disable" timed "enroll-device migrate (m0013.. behind the reader)" "$bin/enroll-device" migrate &
  migrator=$!
  sleep 0.5
  timed "a one-row token read, queued behind the ALTER" psql "$copy_url" -X -o /dev/null -Atqc "SELECT 1 FROM tokens WHERE serial = '$one_serial'"
  wait "$holder" "$migrator"
  timed "the same read, nothing in the queue" psql "$copy_url" -X -o /dev/null -Atqc "SELECT 1 FROM tokens WHERE serial = '$one_serial'"
fi
