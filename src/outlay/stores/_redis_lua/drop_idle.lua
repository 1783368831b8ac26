-- drop_idle: delete a limit that has no live hold and has not changed for idle_ms.
-- KEYS[1] limit hash, KEYS[2] holds zset. ARGV: idle_ms. Returns 1 if deleted, else 0. A limit
-- without 't' (made before outlay recorded it) is kept.
local lk, zk = KEYS[1], KEYS[2]
local e = limit(lk, zk, true)
if not e or hold_count(zk) > 0 then
  return 0
end
local t = e.t
if not t or now_ms() - tonumber(t) < tonumber(ARGV[1]) then
  return 0
end
flush()  -- before the keys go: nothing written back may bring them back
redis.call('DEL', lk, zk)
limits[lk] = false
return 1
