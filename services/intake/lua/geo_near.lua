-- The open cases near a place in each geo set (services/intake/duplicates.py): one list of
-- {case id, metres} per key, nearest first, at most 10 each. Shared by the registration's
-- script (reserve) and the search alone (nearby), so the search is written once.
local function geo_near(geo_keys, lon, lat, radius_m)
  local found = {}
  for i, key in ipairs(geo_keys) do
    found[i] = redis.call('GEOSEARCH', key, 'FROMLONLAT', lon, lat, 'BYRADIUS', radius_m, 'm',
      'ASC', 'COUNT', 10, 'WITHDIST')
  end
  return found
end
