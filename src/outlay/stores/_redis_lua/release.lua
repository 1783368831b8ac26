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
  redis.call('HSET', rk, 'st', 'released')
  redis.call('PEXPIRE', rk, RETAIN_MS)
  return 0
end
if r.st ~= 'held' then
  return 0
end
local now = now_ms()
for i = 1, tonumber(r.n) do
  local k, a = r['k' .. i], r['a' .. i]
  local lk, zk = P .. 'l:' .. k, P .. 'z:' .. k
  local e = limit(lk, zk)
  local back = unhold(zk, rid, a)
  if e and back > 0 then
    e.held = e.held - back
    changed(e)
  end
end
-- An expired hold is ended too, so a late commit cannot count it any more.
redis.call('HSET', rk, 'st', 'released')
redis.call('PEXPIRE', rk, RETAIN_MS)
if tonumber(r.exp) > now then
  return 1
end
return 0
