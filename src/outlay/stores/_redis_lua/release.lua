-- release: give the hold back. Returns 1 if a live hold was released, 0 otherwise.
-- KEYS[1] reservation hash, then (when the client knows them) the limit keys it holds, all
-- under one hash tag; the script takes the limit names from the reservation.
-- ARGV: prefix, rid, retain_ms.
local prefix = ARGV[1]
local rid = ARGV[2]
local rk = KEYS[1]

local r = reservation(rk)
if not r then
  -- Remember the id as released: a reserve that arrives after this release (a cancelled
  -- caller's request still in flight on a dropped connection) must not hold budget that
  -- nobody will end; it is answered "ended" instead.
  redis.call('HSET', rk, 'st', 'released')
  redis.call('PEXPIRE', rk, ARGV[3])
  return 0
end
if r.st ~= 'held' then
  return 0
end
local now = now_ms()
for i = 1, tonumber(r.n) do
  local k, a = r['k' .. i], r['a' .. i]
  local lk, zk = prefix .. 'l:' .. k, prefix .. 'z:' .. k
  local e = limit(lk, zk)
  local back = unhold(zk, rid, a)
  if e and back > 0 then
    e.held = e.held - back
    changed(e)
  end
end
-- An expired hold is ended too, so a late commit cannot count it any more.
redis.call('HSET', rk, 'st', 'released')
redis.call('PEXPIRE', rk, ARGV[3])
if tonumber(r.exp) > now then
  return 1
end
return 0
