-- A claimer that stops before its claimed timers are due (a graceful stop with timers
-- claimed ahead) gives them back: those still leased return to `due` at their due time.
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[2], ARGV[i + 1]) == 1 then
    n = n + redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
  end
end
return n
