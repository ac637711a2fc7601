-- The one statement inside BEGIN/COMMIT: what EnrollToken without limits sends.
\set n random(1, 1000000000)
\set s random(1, 1000000000000)
BEGIN;
WITH u AS (INSERT INTO users (realm, name, create_time, lock_version) VALUES ('pgbench', 'user-' || :n, now(), 0) ON CONFLICT (realm, name) DO UPDATE SET lock_version = users.lock_version + 1 RETURNING id), t AS (INSERT INTO tokens (serial, realm, user_id, token_type, state, seed_key_id, seed, digits, period, algorithm, counter, pin_hash, failure_count, label, description, create_time, expire_time, locked_until, replaced_by, hardware) SELECT 'PGB' || :s, 'pgbench', u.id, 'totp', 'enabled', 'bench', '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f', 6, 30, 'sha1', 0, NULL, 0, 'PGB', '', now(), NULL, NULL, NULL, false FROM u), a AS (INSERT INTO audit_events (time, actor, action, realm, user_name, subject, result, reason, trace_id) VALUES (now(), 'bench-admin', 'enroll_token', 'pgbench', 'user-' || :n, 'PGB' || :s, 'success', '', '')) SELECT id FROM u;
COMMIT;
