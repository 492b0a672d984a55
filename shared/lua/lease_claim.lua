-- The lease claim (shared/leases.py), shared by every script that claims work that several
-- replicas see: sla's timers, notifier's digest buckets. A member waits in the sorted set
-- `due_key` (score: when it is due) until one caller claims it; it then sits in `leased_key`
-- (score: when the lease runs out) until that caller is done with it, or its lease runs out.
--
-- lease_claim(due_key, leased_key, argv, take), argv = the script's ARGV:
--   argv[1] now, argv[2] until (>= now: claim ahead), argv[3] lease seconds, argv[4] limit.
-- 1. Leases run out by `now` go back to due, at `now` (NX: unless it is due again already).
-- 2. Members due by `until`, earliest first, at most `limit`, that are not leased right now,
--    leave due; `take(member, due time)` answers what the caller gets for it, or nil when
--    there is nothing to do (it is then not leased).
-- 3. Those taken are leased until `lease seconds` after their due time (after `now` when
--    overdue). Returns the flat list member, take's answer, member, ...
local function lease_claim(due_key, leased_key, argv, take)
  local now, lease_s, limit = tonumber(argv[1]), tonumber(argv[3]), tonumber(argv[4])
  local expired = redis.call('ZRANGEBYSCORE', leased_key, '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(expired) do
    redis.call('ZREM', leased_key, m)
    redis.call('ZADD', due_key, 'NX', now, m)
  end
  local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', argv[2], 'WITHSCORES', 'LIMIT', 0, limit)
  local gone, leases, out = {}, {}, {}
  for i = 1, #due, 2 do
    local m = due[i]
    if not redis.call('ZSCORE', leased_key, m) then  -- leased right now: it waits for that lease
      gone[#gone + 1] = m
      local got = take(m, due[i + 1])
      if got ~= nil then
        leases[#leases + 1] = math.max(now, tonumber(due[i + 1])) + lease_s
        leases[#leases + 1] = m
        out[#out + 1] = m
        out[#out + 1] = got
      end
    end
  end
  for j = 1, #gone, 4000 do redis.call('ZREM', due_key, unpack(gone, j, math.min(j + 3999, #gone))) end
  for j = 1, #leases, 4000 do redis.call('ZADD', leased_key, unpack(leases, j, math.min(j + 3999, #leases))) end
  return out
end
