-- commit: turn the hold into spend; works after the lease expired (the spend still counts).
-- KEYS[1] reservation hash, then (when the client knows them) the limit keys it holds, all
-- under one hash tag; the script takes the limit names from the reservation.
-- ARGV: prefix, rid, retain_ms, places, m, then per actual amount: name, kind ("i"|"d"),
--   ival, dval.
local prefix = ARGV[1]
local rid = ARGV[2]
local retain_ms = ARGV[3]
local m = tonumber(ARGV[5])
local rk = KEYS[1]

local names, held, units, spend = {}, {}, {}, {}
local index = {}
local n = 0
local st = redis.call('HGET', rk, 'st')
if not st then
  return {'unknown'}
elseif st ~= 'held' then
  return {'ended'}
end
n = tonumber(redis.call('HGET', rk, 'n'))
for i = 1, n do
  local k, a, u = unpack(redis.call('HMGET', rk, 'k' .. i, 'a' .. i, 'u' .. i))
  names[i], held[i], units[i], spend[i] = k, a, u, a
  index[k] = i
end
-- Check every actual amount before anything changes.
for j = 1, m do
  local b = 5 + (j - 1) * 4
  local name = ARGV[b + 1]
  local i = index[name]
  if i then
    local a, err = pick(units[i], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4])
    if not a then
      return {err, name}
    end
    spend[i] = a
  else
    return {'foreign', name}
  end
end
-- Every check runs before the first write: Redis does not roll back a script that fails.
for i = 1, n do
  if spend[i] ~= '0' then
    local spent = redis.call('HGET', prefix .. 'l:' .. names[i], 'spent')
    if spent and tonumber(spent) + tonumber(spend[i]) > 9007199254740991 then
      return {'overflow', names[i]}
    end
  end
end
for i = 1, n do
  local lk, zk = prefix .. 'l:' .. names[i], prefix .. 'z:' .. names[i]
  unhold(lk, zk, rid)
  -- A period limit that has already been forgotten takes no spend.
  if spend[i] ~= '0' and redis.call('EXISTS', lk) == 1 then
    redis.call('HINCRBY', lk, 'spent', spend[i])
  end
end
redis.call('HSET', rk, 'st', 'committed')
redis.call('PEXPIRE', rk, retain_ms)
return {'ok'}
