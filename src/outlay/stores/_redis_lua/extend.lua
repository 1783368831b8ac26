-- extend: set the lease of a live hold to lease_ms from now. Returns 1, or 0 if not held.
-- The script takes the limit names from the reservation.
-- ARGV (after the store's, store.lua): rid, lease_ms.
local rid = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local rk = P .. 'r:' .. rid
local now = now_ms()

local r = reservation(rk)
if type(r) ~= 'table' then
  return 0
end
if r[1] <= now then
  return 0  -- an expired hold is not revived: it may no longer fit
end
local exp = ms_str(now + lease_ms)
-- A limit that will expire must outlive the hold.
local floor = now + lease_ms + GRACE
for k = 3, #r - 2, 3 do
  local name = r[k]
  local zk = P .. 'z:' .. name
  local e = limit(P .. 'l:' .. name, zk)
  if e then
    redis.call('ZADD', zk, 'XX', exp, member(r[k + 1], rid))
    if e.x and e.x < floor then
      e.x, e.wx = floor, true
      changed(e)
    end
  end
end
r[1] = now + lease_ms
keep(rk, r, ms_str(lease_ms + RETAIN))
return 1
