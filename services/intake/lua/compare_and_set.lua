--#include shared:outbox_add
-- Compare-and-set of a case's version: KEYS case, outbox, outbox times, open cases; ARGV
-- expected version, document, time, open (1/0), registered at, case id, then the events
-- (message id, JSON, ...) into the outbox. Returns the new version, -1 no case, -2 changed.
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return -1 end
if tonumber(v) ~= tonumber(ARGV[1]) then return -2 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', tonumber(ARGV[1]) + 1)
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
else
  redis.call('ZREM', KEYS[4], ARGV[6])
end
local events = {}
for i = 7, #ARGV do events[#events + 1] = ARGV[i] end
outbox_add(KEYS[2], KEYS[3], ARGV[3], events)
return tonumber(ARGV[1]) + 1
