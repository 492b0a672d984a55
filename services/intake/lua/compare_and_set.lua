--#include shared:outbox_add
-- Compare-and-set of a case's version: KEYS case, outbox, outbox times, open cases; ARGV
-- expected version, document, time, open (1/0), registered at, case id, the id of the
-- registration's record that this version replaces ('' none), the new record's id and its
-- JSON without `idempotency_key` and `case` (completed here from the case's key and the
-- document), then the other events (message id, JSON, ...). Everything goes into the outbox.
-- Returns {new version, the case's idempotency key or false}; -1 no case, -2 changed.
local found = redis.call('HMGET', KEYS[1], 'version', 'idempotency_key')
local v, key = found[1], found[2]
if not v then return -1 end
if tonumber(v) ~= tonumber(ARGV[1]) then return -2 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', tonumber(ARGV[1]) + 1)
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
else
  redis.call('ZREM', KEYS[4], ARGV[6])
end
-- the registration's record not yet published: this version's record says all it said
-- (the archive keeps a case's newest document, and the key rides along below)
if ARGV[7] ~= '' then
  redis.call('HDEL', KEYS[2], ARGV[7])
  redis.call('ZREM', KEYS[3], ARGV[7])
end
local key_json = key and cjson.encode(key) or 'null'
local record = string.sub(ARGV[9], 1, -2) .. ',"idempotency_key":' .. key_json .. ',"case":' .. ARGV[2] .. '}'
local events = {ARGV[8], record}
for i = 10, #ARGV do events[#events + 1] = ARGV[i] end
outbox_add(KEYS[2], KEYS[3], ARGV[3], events)
return {tonumber(ARGV[1]) + 1, key or false}
