-- release: give the hold back. Returns 1 if a live hold was released, 0 otherwise.
-- The script takes the limit names from the reservation.
-- ARGV (after the store's, store.lua): rid.
local rid = ARGV[1]
local rk = P .. 'r:' .. rid

local r = reservation(rk)
if not r then
  -- Remember the id as released: a reserve that arrives after this release (a cancelled
  -- caller's request still in flight on a dropped connection) must not hold budget that
  -- nobody will end; it is answered "ended" instead.
  redis.call('SET', rk, 'released', 'PX', RETAIN_MS)
  return 0
end
if type(r) ~= 'table' then
  return 0
end
for k = 3, #r - 2, 3 do
  local name = r[k]
  local zk = P .. 'z:' .. name
  local e = limit(P .. 'l:' .. name, zk)
  local back = unhold(zk, rid, r[k + 1])
  if e and back > 0 then
    e.held = e.held - back
    changed(e)
  end
end
-- An expired hold is ended too, so a late commit cannot count it any more.
redis.call('SET', rk, 'released', 'PX', RETAIN_MS)
if r[1] > now_ms() then
  return 1
end
return 0
