-- extend: set the lease of a live hold to lease_ms from now. Returns 1, or 0 if not held.
-- KEYS[1] reservation hash, then (when the client knows them) the limit keys it holds, all
-- under one hash tag; the script takes the limit names from the reservation.
-- ARGV: prefix, rid, lease_ms, retain_ms, grace_ms.
local prefix = ARGV[1]
local rid = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local rk = KEYS[1]
local now = now_ms()

if redis.call('HGET', rk, 'st') ~= 'held' then
  return 0
end
if tonumber(redis.call('HGET', rk, 'exp')) <= now then
  return 0  -- an expired hold is not revived: it may no longer fit
end
local exp = now + lease_ms
local floor = lease_ms + tonumber(ARGV[5])
local n = tonumber(redis.call('HGET', rk, 'n'))
for i = 1, n do
  local k = redis.call('HGET', rk, 'k' .. i)
  local lk, zk = prefix .. 'l:' .. k, prefix .. 'z:' .. k
  redis.call('ZADD', zk, 'XX', exp, rid)
  local ttl = redis.call('PTTL', lk)
  if ttl > 0 and ttl < floor then
    redis.call('PEXPIRE', lk, int_str(floor))
    redis.call('PEXPIRE', zk, int_str(floor))
  end
end
redis.call('HSET', rk, 'exp', int_str(exp))
redis.call('PEXPIRE', rk, int_str(lease_ms + tonumber(ARGV[4])))
return 1
