-- Events into an outbox (shared/outbox.py), from the script that stores their cause: every
-- writer's script includes this file instead of keeping its own HSET/ZADD.
-- flat = {message id, event JSON, message id, event JSON, ...}; `at` = the time stored.
local function outbox_add(entries_key, times_key, at, flat)
  if #flat == 0 then return end
  for j = 1, #flat, 4000 do redis.call('HSET', entries_key, unpack(flat, j, math.min(j + 3999, #flat))) end
  local times = {}
  for i = 1, #flat, 2 do times[#times + 1] = at; times[#times + 1] = flat[i] end
  for j = 1, #times, 4000 do redis.call('ZADD', times_key, unpack(times, j, math.min(j + 3999, #times))) end
end
