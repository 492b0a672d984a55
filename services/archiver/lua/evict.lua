local v = redis.call('HGET', KEYS[1], 'version')
if not v then return 0 end
if tonumber(v) ~= tonumber(ARGV[1]) then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
