-- Seed step: `:policies` policies in the policy service's tables, the set
-- `enroll-loadgen seed-policies --count :policies --realms :realms` creates through the RPC
-- (scripts/bench-policy.sh makes 1,000 of them; this is the same shape, any count), with
-- the history rows CreatePolicy writes and the policy-set version one change per policy.
-- Row for row what the RPC stores (JSON as serde_json writes it, keys sorted): checked by
-- scripts/seed-scale.sh --check-policies at a small size.
--   psql -v policies=10000 -v realms=100
INSERT INTO policies (name, scope, realms, users, clients, actions, priority, active,
                      description, etag, create_time, update_time)
SELECT 'bench-' || lpad(i::text, 5, '0'), 'enrollment',
       '["realm-' || (i % :realms) || '"]',
       CASE i % 3 WHEN 0 THEN '["*","!user-0"]' WHEN 1 THEN '["user-' || (i % 50) || '"]'
                  ELSE '[]' END,
       CASE i % 4 WHEN 0 THEN '["10.0.0.0/8","!10.66.0.0/16"]' WHEN 1 THEN '["2001:db8::/32"]'
                  ELSE '[]' END,
       CASE WHEN i % 2 = 0
            THEN '{"autoassignment":"true","max_token_per_user":"' || (i % 5 + 1)
                 || '","otp_pin_minlength":"4","tokenlabel":"<u>@<r>"}'
            ELSE '{"max_token_per_user":"' || (i % 5 + 1) || '","tokenlabel":"<u>@<r>"}' END,
       10 + i / :realms, true, 'load-generator seed', (i + 1)::text,
       now() - (:policies - i) * interval '1 second', now() - (:policies - i) * interval '1 second'
FROM generate_series(0, :policies - 1) AS i;
INSERT INTO policy_history (policy_name, change, actor, change_time, before_json, after_json)
SELECT name, 'create', 'loadgen', create_time, NULL,
       '{"name":"' || name || '","scope":"enrollment","realms":' || realms || ',"users":' || users
       || ',"clients":' || clients || ',"actions":' || actions || ',"priority":' || priority
       || ',"active":true,"description":"load-generator seed"}'
FROM policies ORDER BY etag::bigint;
UPDATE policy_set_state SET version = (SELECT count(*) FROM policies) WHERE id = 1;
