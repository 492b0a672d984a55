--#include services.intake:geo_near
-- A registration's first round trip: the report's case if the report is known; else the
-- next serial of the day's case sequence and the open cases near the report.
-- KEYS report index, the day's sequence, then the geo sets to search (none: no search);
-- ARGV the sequence's TTL, lon, lat, radius in metres.
-- Returns {1, case id} or {0, serial, {rows of the first set}, {rows of the second}, ...}.
-- A known report takes no serial (a repeat leaves no gap in the day's numbers).
local existing = redis.call('GET', KEYS[1])
if existing then return {1, existing} end
local serial = redis.call('INCR', KEYS[2])
if serial == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
local geo_keys = {}
for i = 3, #KEYS do geo_keys[#geo_keys + 1] = KEYS[i] end
local out = {0, serial}
for _, rows in ipairs(geo_near(geo_keys, ARGV[2], ARGV[3], ARGV[4])) do out[#out + 1] = rows end
return out
