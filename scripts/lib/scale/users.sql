-- Seed step: realms (the lock rows) and users, `realm-<r>` x `user-<u>` (the names
-- enroll-loadgen's --realms/--users-per-realm draw from), ids realm-major.
--   psql -v realms=100 -v users_per_realm=10000
INSERT INTO realms (name, lock_version)
  SELECT 'realm-' || r, 0 FROM generate_series(0, :realms - 1) AS r
  ON CONFLICT DO NOTHING;
INSERT INTO users (realm, name, create_time, lock_version)
  SELECT 'realm-' || r, 'user-' || u,
         -- joined over the last two years, in id order
         now() - interval '730 days'
           + (r::bigint * :users_per_realm + u) * (interval '730 days' / (:realms::bigint * :users_per_realm)),
         0
  FROM generate_series(0, :realms - 1) AS r, generate_series(0, :users_per_realm - 1) AS u
  ORDER BY r, u;
