--#include shared:lease_claim
-- sla's timers (services/sla/timers.py): KEYS due, leased; ARGV as lease_claim's. Returns
-- the claimed timers with their due times as one msgpack value [name, due, name, due, ...].
local function due_time(_, at) return at end
return cmsgpack.pack(lease_claim(KEYS[1], KEYS[2], ARGV, due_time))
