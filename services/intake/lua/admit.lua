-- An HTTP request's API key and rate limit in one round trip (services/intake/ratelimit.py
-- `RateLimiter.admit`). KEYS the key's hash, its token bucket; ARGV the SHA-256 of the
-- secret presented, the use's time (`last_used_at`), the roles the route allows
-- (space-separated), then role, rate (tokens/s, 0 = off), burst for every role.
-- Returns {'unauthorized'} (nothing written: a wrong secret neither takes a token nor
-- counts as a use), {'forbidden', role, dept, street} (the use recorded), or
-- {'ok', role, dept, street, seconds to wait: '0' when a token was taken}.
local h = redis.call('HMGET', KEYS[1], 'secret_sha256', 'revoked_at', 'role', 'dept', 'street')
local stored = h[1] or ''
-- compared through a hash of each side: how long it takes says nothing of how much matched
if stored == '' or redis.sha1hex(stored) ~= redis.sha1hex(ARGV[1]) or (h[2] and h[2] ~= '') then
  return {'unauthorized'}
end
local role, dept, street = h[3] or '', h[4] or '', h[5] or ''
redis.call('HSET', KEYS[1], 'last_used_at', ARGV[2])
if not string.find(' ' .. ARGV[3] .. ' ', ' ' .. role .. ' ', 1, true) then
  return {'forbidden', role, dept, street}
end
local rate, burst = 0, 1
for i = 4, #ARGV, 3 do
  if ARGV[i] == role then rate, burst = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]) end
end
if rate <= 0 then return {'ok', role, dept, street, '0'} end
-- the token bucket: refilled at `rate` since its last use, up to `burst`; Redis's clock
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate * 1000) + 1000)
return {'ok', role, dept, street, tostring(wait)}
