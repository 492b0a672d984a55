local rank = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not rank then
  rank = redis.call('ZCARD', KEYS[1]) + 1
  redis.call('ZADD', KEYS[1], rank, ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return tonumber(rank)
