-- release: give the hold back. Returns 1 if a live hold was released, 0 otherwise.
-- KEYS[1] reservation hash, then (when the client knows them) the limit keys it holds, all
-- under one hash tag; the script takes the limit names from the reservation.
-- ARGV: prefix, rid, retain_ms.
local prefix = ARGV[1]
local rid = ARGV[2]
local rk = KEYS[1]

local st = redis.call('HGET', rk, 'st')
if not st then
  -- Remember the id as released: a reserve that arrives after this release (a cancelled
  -- caller's request still in flight on a dropped connection) must not hold budget that
  -- nobody will end; it is answered "ended" instead.
  redis.call('HSET', rk, 'st', 'released')
  redis.call('PEXPIRE', rk, ARGV[3])
  return 0
end
if st ~= 'held' then
  return 0
end
local live = tonumber(redis.call('HGET', rk, 'exp')) > now_ms()
local n = tonumber(redis.call('HGET', rk, 'n'))
for i = 1, n do
  local k = redis.call('HGET', rk, 'k' .. i)
  unhold(prefix .. 'l:' .. k, prefix .. 'z:' .. k, rid)
end
-- An expired hold is ended too, so a late commit cannot count it any more.
redis.call('HSET', rk, 'st', 'released')
redis.call('PEXPIRE', rk, ARGV[3])
if live then
  return 1
end
return 0
