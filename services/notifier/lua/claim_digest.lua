local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, b in ipairs(expired) do
  redis.call('ZREM', KEYS[2], b)
  redis.call('ZADD', KEYS[1], 'NX', now, b)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, b in ipairs(due) do
  if not redis.call('ZSCORE', KEYS[2], b) then  -- a bucket being flushed waits for its done
  redis.call('ZREM', KEYS[1], b)
  local held, claimed = ARGV[4] .. b, ARGV[5] .. b
  if redis.call('EXISTS', claimed) == 0 and redis.call('EXISTS', held) == 1 then
    redis.call('RENAME', held, claimed)
  end
  if redis.call('EXISTS', claimed) == 1 then
    redis.call('ZADD', KEYS[2], now + lease, b)
    out[#out + 1] = b
    out[#out + 1] = cjson.encode(redis.call('HVALS', claimed))
  end
  end
end
return out
