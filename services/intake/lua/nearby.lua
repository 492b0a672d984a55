--#include services.intake:geo_near
-- The open cases near a place: KEYS the geo sets; ARGV lon, lat, radius in metres.
return geo_near(KEYS, ARGV[1], ARGV[2], ARGV[3])
