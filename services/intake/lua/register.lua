--#include shared:outbox_add
-- A new case, unless its report is known: KEYS report index, case, cases by time, outbox,
-- outbox times, the category's geo set of the registration day (ARGV[13]: its TTL), open
-- cases, the month's indicators. The event and the case's record go into the outbox
-- (ARGV[4..5], ARGV[11..12], stored at ARGV[6]). The case keeps its idempotency key
-- (ARGV[14]) for the records of its later versions (compare_and_set). ARGV[15], unless
-- empty, is the indicator counted once for the registration (its street's `registered`,
-- shared/indicators.py).
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'doc', ARGV[2], 'version', ARGV[7], 'idempotency_key', ARGV[14])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if ARGV[8] ~= '' then
  redis.call('GEOADD', KEYS[6], ARGV[8], ARGV[9], ARGV[1])
  redis.call('EXPIRE', KEYS[6], ARGV[13])
end
if ARGV[10] == '1' then
  redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
end
if ARGV[15] ~= '' then
  redis.call('HINCRBY', KEYS[8], ARGV[15], 1)
end
outbox_add(KEYS[4], KEYS[5], ARGV[6], {ARGV[4], ARGV[5], ARGV[11], ARGV[12]})
return {1, ARGV[1]}
