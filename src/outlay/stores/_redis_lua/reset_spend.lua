-- reset_spend: set a limit's committed spend to zero; its cap and live holds are kept.
-- KEYS[1] limit hash, KEYS[2] holds zset. Returns {cap, spent, held, u, p} as they were before
-- (after dropping expired holds, as usage does), or {} if the limit does not exist.
local before = current(KEYS[1], KEYS[2])
if not before then
  return {}
end
-- The write keeps the key's expiry: a period limit is still forgotten when its period is over.
local e = limits[KEYS[1]]  -- current read it
e.spent, e.t = 0, stamp()
changed(e)
return before
