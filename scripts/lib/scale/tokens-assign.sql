-- Seed step: the tokens imported into realm `scale-staging` become users' tokens (sealed
-- seeds stay valid: a seed is sealed to its serial, not its realm or owner), spread evenly
-- over the users (every users/tokens-th user has one), in every state:
--   enabled 88 %, disabled 5 %, locked 2 % (failure count at the lock), lost 3 %,
--   verify-pending 1 % (enabled, waiting for a first code; half past their deadline),
--   verify-failed 1 % (seed erased, as VerifyToken leaves it);
-- a quarter of them hardware tokens handed out from a pool (`hardware`, description
-- `imported`), the rest enrolled (software, label `<user>@<realm>`).
--   psql -v users=1000000
WITH staged AS (
  SELECT serial, row_number() OVER (ORDER BY serial) - 1 AS n, random() AS x
  FROM tokens WHERE realm = 'scale-staging'
), owners AS (
  SELECT s.serial, s.n, s.x, u.id AS user_id, u.realm, u.name, u.create_time
  FROM staged s
  JOIN users u ON u.id = 1 + (s.n * :users / greatest((SELECT count(*) FROM staged), 1)) % :users
)
UPDATE tokens t
SET realm = o.realm,
    user_id = o.user_id,
    label = o.name || '@' || o.realm,
    hardware = o.n % 4 = 0,
    description = CASE WHEN o.n % 4 = 0 THEN 'imported' ELSE '' END,
    create_time = o.create_time + (now() - o.create_time) * o.x,
    state = CASE WHEN o.x < 0.88 OR o.x >= 0.98 THEN 'enabled' WHEN o.x < 0.93 THEN 'disabled'
                 WHEN o.x < 0.95 THEN 'locked' ELSE 'lost' END,
    failure_count = CASE WHEN o.x >= 0.93 AND o.x < 0.95 THEN 10 ELSE 0 END,
    verify_state = CASE WHEN o.x >= 0.98 AND o.x < 0.99 THEN 'pending'
                        WHEN o.x >= 0.99 THEN 'failed' END,
    verify_deadline = CASE WHEN o.x >= 0.98 AND o.x < 0.99
                           THEN now() + (o.x - 0.985) * interval '2 days' END,
    verify_attempts_left = CASE WHEN o.x >= 0.98 AND o.x < 0.99 THEN 3
                                WHEN o.x >= 0.99 THEN 0 END,
    seed = CASE WHEN o.x >= 0.99 THEN ''::bytea ELSE t.seed END,
    seed_key_id = CASE WHEN o.x >= 0.99 THEN '' ELSE t.seed_key_id END
FROM owners o
WHERE t.serial = o.serial;
