--#include shared:key_lease
-- KEYS[1] the lease, ARGV[1] the holder's token. Returns 1 if it was given back.
return key_lease_release(KEYS[1], ARGV[1])
