--#include shared:outbox_add
-- KEYS: due, leased, outbox, outbox times, ledger, ledger by time, ledger ended.
-- ARGV[1]: msgpack [now, keep-closed seconds, cases, arm, cancel, done, outbox, ledger, ledger ended,
-- counters], every section a flat list of strings:
--   cases: per case 9 values: bucket, case id, closed key, history key, mode, expected doc,
--     expected history, doc, history; mode: four letters (services/sla/commit.py builds them):
--     [1] DocCheck 'y' (= expected) / 'n' (absent); [2] HistoryCheck '-' / 'y' / 'n';
--     [3] DocWrite 'L' (live) / 'C' (closed) / '-'; [4] HistoryWrite '-' / 'S' set / 'A' append
--   arm (due, name), cancel (name), done (name), outbox (id, body), ledger (id, body, breached at),
--   ledger ended (id, at), counters (key, field, n).
-- Returns the 1-based numbers of the cases that changed since they were read (nothing
-- written then), or an empty list (all written).
local a = cmsgpack.unpack(ARGV[1])
local cs = a[3]
local bad = {}
local closed = {}
local n = 0
for i = 1, #cs, 9 do
  n = n + 1
  local mode = cs[i + 4]
  local cur = redis.call('HGET', cs[i], cs[i + 1])
  if not cur then
    cur = redis.call('GET', cs[i + 2])
    closed[n] = cur
  end
  local dc = string.sub(mode, 1, 1)
  if (dc == 'n' and cur) or (dc == 'y' and cur ~= cs[i + 5]) then
    bad[#bad + 1] = n
  else
    local hc = string.sub(mode, 2, 2)
    if hc ~= '-' then
      local h = redis.call('GET', cs[i + 3])
      if (hc == 'n' and h) or (hc == 'y' and h ~= cs[i + 6]) then bad[#bad + 1] = n end
    end
  end
end
if #bad > 0 then return bad end
n = 0
for i = 1, #cs, 9 do
  n = n + 1
  local mode = cs[i + 4]
  local live, hop = string.sub(mode, 3, 3), string.sub(mode, 4, 4)
  if hop == 'S' then redis.call('SET', cs[i + 3], cs[i + 8])
  elseif hop == 'A' then redis.call('APPEND', cs[i + 3], cs[i + 8]) end
  if live == 'L' then
    redis.call('HSET', cs[i], cs[i + 1], cs[i + 7])
    if closed[n] then
      redis.call('DEL', cs[i + 2])
      redis.call('PERSIST', cs[i + 3])
    end
  elseif live == 'C' then
    redis.call('HDEL', cs[i], cs[i + 1])
    redis.call('SET', cs[i + 2], cs[i + 7], 'EX', a[2])
    redis.call('EXPIRE', cs[i + 3], a[2])
  end
end
local function bulk(cmd, key, t)
  for j = 1, #t, 4000 do redis.call(cmd, key, unpack(t, j, math.min(j + 3999, #t))) end
end
bulk('ZADD', KEYS[1], a[4])
bulk('ZREM', KEYS[1], a[5])
bulk('ZREM', KEYS[2], a[5])
bulk('ZREM', KEYS[2], a[6])
outbox_add(KEYS[3], KEYS[4], a[1], a[7])
local s = a[8]
for i = 1, #s, 3 do redis.call('HSET', KEYS[5], s[i], s[i + 1]); redis.call('ZADD', KEYS[6], s[i + 2], s[i]) end
s = a[9]
for i = 1, #s, 2 do redis.call('HSETNX', KEYS[7], s[i], s[i + 1]) end
s = a[10]
for i = 1, #s, 3 do redis.call('HINCRBY', s[i], s[i + 1], s[i + 2]) end
return {}
