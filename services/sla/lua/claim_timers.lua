local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local now, lease_s = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids, leased = {}, {}
for i = 1, #due, 2 do
  ids[#ids + 1] = due[i]
  leased[#leased + 1] = math.max(now, tonumber(due[i + 1])) + lease_s
  leased[#leased + 1] = due[i]
end
for j = 1, #ids, 4000 do redis.call('ZREM', KEYS[1], unpack(ids, j, math.min(j + 3999, #ids))) end
for j = 1, #leased, 4000 do redis.call('ZADD', KEYS[2], unpack(leased, j, math.min(j + 3999, #leased))) end
return cmsgpack.pack(due)
