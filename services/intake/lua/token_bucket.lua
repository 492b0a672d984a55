-- KEYS[1] the bucket, KEYS[2] the API key's hash; ARGV rate (tokens/s), burst, and the
-- key's last use to record ('' none: the caller records it). Returns {allowed, seconds to wait}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if ARGV[3] and ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'last_used_at', ARGV[3])
end
return {allowed, tostring(wait)}
