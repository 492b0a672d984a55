-- A lease on one key (shared/leases.py): a string holding its holder's random token, with
-- a TTL, so that it ends by itself when its holder dies. Taken only when free; given back
-- only by its holder (the token), never from a holder that took it after ours ran out.
local function key_lease_take(key, token, ms)
  return redis.call('SET', key, token, 'NX', 'PX', ms) ~= false
end
local function key_lease_release(key, token)
  if token ~= '' and redis.call('GET', key) == token then return redis.call('DEL', key) end
  return 0
end
