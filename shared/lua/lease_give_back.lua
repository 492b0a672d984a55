-- Give leased members back (shared/leases.py): a claimer that stops before the work it
-- claimed ahead is due (sla's graceful stop). KEYS due, leased; ARGV due time, member, ...
-- Those still leased return to due at their due time (NX: unless due again already).
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[2], ARGV[i + 1]) == 1 then
    n = n + redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
  end
end
return n
