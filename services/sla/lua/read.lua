-- ARGV[1]: msgpack [with history (1/0), then per case: bucket, case id, closed key, history key].
-- Returns msgpack: per case the document (live bucket, else the closed key) and the history (or false).
local a = cmsgpack.unpack(ARGV[1])
local hist = a[1] == '1'
local out = {}
for i = 2, #a, 4 do
  local doc = redis.call('HGET', a[i], a[i + 1])
  if not doc then doc = redis.call('GET', a[i + 2]) end
  out[#out + 1] = doc
  if hist then out[#out + 1] = redis.call('GET', a[i + 3]) else out[#out + 1] = false end
end
return cmsgpack.pack(out)
