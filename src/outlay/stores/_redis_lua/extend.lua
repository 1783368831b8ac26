-- extend: set the lease of a live hold to lease_ms from now. Returns 1, or 0 if not held.
-- The script takes the limit names from the reservation.
-- ARGV (after the store's, store.lua): rid, lease_ms.
local rid = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local rk = P .. 'r:' .. rid
local now = now_ms()

local r = reservation(rk)
if not r or r.st ~= 'held' then
  return 0
end
if tonumber(r.exp) <= now then
  return 0  -- an expired hold is not revived: it may no longer fit
end
local exp = now + lease_ms
-- A limit that will expire must outlive the hold.
local floor = now + lease_ms + tonumber(GRACE_MS)
for i = 1, tonumber(r.n) do
  local k = r['k' .. i]
  local lk, zk = P .. 'l:' .. k, P .. 'z:' .. k
  local e = limit(lk, zk)
  if e then
    redis.call('ZADD', zk, 'XX', exp, member(r['a' .. i], rid))
    if e.x and tonumber(e.x) < floor then
      e.x, e.wx = int_str(floor), true
      changed(e)
    end
  end
end
redis.call('HSET', rk, 'exp', int_str(exp))
redis.call('PEXPIRE', rk, int_str(lease_ms + tonumber(RETAIN_MS)))
return 1
