-- extend: set the lease of a live hold to lease_ms from now. Returns 1, or 0 if not held.
-- KEYS[1] reservation hash, then (when the client knows them) the limit keys it holds, all
-- under one hash tag; the script takes the limit names from the reservation.
-- ARGV: prefix, rid, lease_ms, retain_ms, grace_ms.
local prefix = ARGV[1]
local rid = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local rk = KEYS[1]
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
local floor = now + lease_ms + tonumber(ARGV[5])
for i = 1, tonumber(r.n) do
  local k = r['k' .. i]
  local lk, zk = prefix .. 'l:' .. k, prefix .. 'z:' .. k
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
redis.call('PEXPIRE', rk, int_str(lease_ms + tonumber(ARGV[4])))
return 1
