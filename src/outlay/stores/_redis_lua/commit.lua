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
-- The whole reservation in one read: state, then its limits, amounts and units.
local fields = redis.call('HGETALL', rk)
local r = {}
for i = 1, #fields, 2 do
  r[fields[i]] = fields[i + 1]
end
if not r.st then
  return {'unknown'}
elseif r.st ~= 'held' then
  return {'ended'}
end
local n = tonumber(r.n)
for i = 1, n do
  local k, a, u = r['k' .. i], r['a' .. i], r['u' .. i]
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
-- One read per limit: its spend (every limit has the field; none means the limit is gone) and
-- the hold, if it was not pruned.
local spents, holds = {}, {}
for i = 1, n do
  spents[i], holds[i] = unpack(redis.call('HMGET', prefix .. 'l:' .. names[i], 'spent',
                                          'h:' .. rid))
  if spend[i] ~= '0' and spents[i]
      and tonumber(spents[i]) + tonumber(spend[i]) > 9007199254740991 then
    return {'overflow', names[i]}
  end
end
local now = int_str(now_ms())
for i = 1, n do
  local lk, zk = prefix .. 'l:' .. names[i], prefix .. 'z:' .. names[i]
  unhold(lk, zk, rid, holds[i])
  -- A period limit that has already been forgotten (or dropped) takes no spend.
  if spents[i] then
    if spend[i] ~= '0' then
      redis.call('HINCRBY', lk, 'spent', spend[i])
    end
    redis.call('HSET', lk, 't', now)
  end
end
redis.call('HSET', rk, 'st', 'committed')
redis.call('PEXPIRE', rk, retain_ms)
return {'ok'}
