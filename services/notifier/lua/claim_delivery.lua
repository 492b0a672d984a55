--#include shared:key_lease
-- The steps before a send, in one round trip: not finished, this attempt not already
-- handed on, the lease taken, the send counted (before sending: see "Crash between send
-- and record"). KEYS: done marker, attempt state, lease. ARGV: attempt number, lease
-- token, lease ms, state TTL s. Returns {what, sends}: what = sent | attempted | busy | go.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'sent', 0} end
if redis.call('HEXISTS', KEYS[2], 'a' .. ARGV[1] .. ':done') == 1 then return {'attempted', 0} end
if not key_lease_take(KEYS[3], ARGV[2], ARGV[3]) then return {'busy', 0} end
local sends = redis.call('HINCRBY', KEYS[2], 'a' .. ARGV[1] .. ':sends', 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'go', sends}
