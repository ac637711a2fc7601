-- ImportTokens CSV (serial,seed hex,type,digits,period_or_counter) for `:count` tokens with
-- random 20-byte seeds; serials `:prefix<n>` (pool tokens) or, with -v enrolled=1, like
-- enrolled ones (TOTP/HOTP + 12 hex digits). Printed on stdout for `enrollctl token import -`.
\if :{?enrolled}
\else
  \set enrolled 0
\endif
\if :{?prefix}
\else
  \set prefix ''
\endif
COPY (
  SELECT CASE WHEN :enrolled = 1
              THEN (CASE WHEN g % 2 = 0 THEN 'TOTP' ELSE 'HOTP' END)
                   || upper(lpad(to_hex(g), 4, '0') || substr(md5(random()::text), 1, 8))
              ELSE :'prefix' || lpad(g::text, 7, '0') END,
         md5(random()::text) || substr(md5(random()::text), 1, 8),
         CASE WHEN g % 2 = 0 THEN 'totp' ELSE 'hotp' END,
         6,
         CASE WHEN g % 2 = 0 THEN 30 ELSE 0 END
  FROM generate_series(0, :count - 1) AS g
) TO STDOUT WITH (FORMAT csv);
