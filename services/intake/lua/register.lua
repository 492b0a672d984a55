local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'doc', ARGV[2], 'version', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[4])
if ARGV[8] ~= '' then
  redis.call('GEOADD', KEYS[6], ARGV[8], ARGV[9], ARGV[1])
  redis.call('EXPIRE', KEYS[6], ARGV[13])
end
if ARGV[10] == '1' then
  redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[4], ARGV[11], ARGV[12])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[11])
return {1, ARGV[1]}
