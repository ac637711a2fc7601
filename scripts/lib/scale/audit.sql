-- Seed step: `:audit` audit events over the last 90 days, in id order = time order (ids are
-- assigned at insert time in the service too). Spread:
--   users: realm uniform, user skewed toward low numbers (user-0 of a realm has ~1 % of its
--   realm's events, a median user a few), so some users have thousands and most a handful;
--   actions weighted as a deployment writes them (validate and authenticate_device most,
--   admin changes rare, flag_device and import_tokens rarest);
--   results: `denied` for 9 % of validate, 3 % of autoassign attempts, 2 % of the rest.
--   psql -v audit=10000000 -v realms=100 -v users_per_realm=10000
-- Run with -v first=0 (and a count) to seed a slice: rows g in [first, first + audit).
\if :{?first}
\else
  \set first 0
\endif
\if :{?total}
\else
  \set total :audit
\endif
WITH weights (action, weight) AS (VALUES
  ('validate', 520), ('authenticate_device', 300), ('autoassign', 20), ('enroll_token', 30),
  ('register_device', 30), ('set_pin', 15), ('approve_device', 15), ('revoke_device', 8),
  ('create_link', 25), ('revoke_link', 3), ('assign_token', 8), ('unassign_token', 4),
  ('enable_token', 5), ('disable_token', 5), ('delete_token', 4), ('report_lost_token', 3),
  ('import_tokens', 1), ('flag_device', 1), ('verify_token', 3)
), bag AS (
  SELECT array_agg(action) AS actions FROM weights, generate_series(1, weight)
)
INSERT INTO audit_events (time, actor, action, realm, user_name, subject, result, reason, trace_id)
SELECT now() - interval '90 days' + e.g * (interval '90 days' / :total),
       CASE WHEN e.action IN ('validate', 'autoassign', 'authenticate_device') THEN 'proxy'
            WHEN e.action = 'register_device' THEN 'enrollment-page'
            WHEN e.action = 'flag_device' THEN 'fido-metadata'
            WHEN e.action = 'import_tokens' THEN 'provisioning'
            ELSE 'admin-console' END,
       e.action,
       'realm-' || e.r,
       CASE WHEN e.action = 'import_tokens' THEN '' ELSE 'user-' || e.u END,
       CASE WHEN e.action IN ('authenticate_device', 'register_device', 'approve_device',
                              'revoke_device', 'flag_device')
              THEN md5(e.r || '/' || e.u || '/device')::uuid::text
            WHEN e.action IN ('create_link', 'revoke_link')
              THEN 'link-' || substr(md5(e.g::text), 1, 16)
            WHEN e.action = 'import_tokens' THEN ''
            ELSE 'TOTP' || upper(substr(md5(e.r || '/' || e.u || '/token'), 1, 12)) END,
       CASE WHEN e.denied THEN 'denied' ELSE 'ok' END,
       CASE WHEN NOT e.denied THEN ''
            WHEN e.action IN ('validate', 'autoassign') THEN 'wrong pass'
            ELSE 'policy: the action is not allowed for this user' END,
       md5(e.g::text)
FROM (
  SELECT a.*,
         random() < CASE a.action WHEN 'validate' THEN 0.09 WHEN 'autoassign' THEN 0.03
                                  ELSE 0.02 END AS denied
  FROM (
    SELECT g, floor(random() * :realms)::int AS r,
           floor(:users_per_realm * power(random(), 2))::int AS u,
           bag.actions[1 + floor(random() * array_length(bag.actions, 1))::int] AS action
    FROM generate_series(:first::bigint, :first::bigint + :audit - 1) AS g, bag
    OFFSET 0
  ) AS a
  OFFSET 0
) AS e;
