--#include shared:lease_claim
-- notifier's digest buckets (services/notifier/digest.py): KEYS release, release leased;
-- ARGV as lease_claim's, then the key prefixes of the held and the claimed hashes. A bucket
-- claimed moves its held hash to its claimed hash (unless a claim before it, whose lease ran
-- out, left one), and answers its items (JSON); a bucket with nothing held is not leased.
local function held_items(b)
  local held, claimed = ARGV[5] .. b, ARGV[6] .. b
  if redis.call('EXISTS', claimed) == 0 and redis.call('EXISTS', held) == 1 then
    redis.call('RENAME', held, claimed)
  end
  if redis.call('EXISTS', claimed) == 1 then return cjson.encode(redis.call('HVALS', claimed)) end
  return nil
end
return lease_claim(KEYS[1], KEYS[2], ARGV, held_items)
