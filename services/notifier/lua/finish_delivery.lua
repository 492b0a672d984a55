--#include shared:key_lease
-- Finishing, in one round trip: the done marker, the case's log entry, and the lease
-- released when it is still ours. KEYS: done marker, case log, lease. ARGV: marker, TTL s,
-- delivery id, log entry ('' none), lease token ('' none).
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
key_lease_release(KEYS[3], ARGV[5])
return 1
