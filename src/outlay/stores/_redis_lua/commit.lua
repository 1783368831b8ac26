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

-- The whole reservation in one read: state, then its limits, amounts and units.
local r = reservation(rk)
if not r then
  return {'unknown'}
elseif r.st ~= 'held' then
  return {'ended'}
end
local n = tonumber(r.n)
local names, held, units, spend = {}, {}, {}, {}
local index = {}
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
-- A limit that does not exist (a period limit already forgotten, or dropped) takes no spend.
local found = {}
for i = 1, n do
  local e = limit(prefix .. 'l:' .. names[i], prefix .. 'z:' .. names[i])
  if e and e.spent + tonumber(spend[i]) > 9007199254740991 then
    return {'overflow', names[i]}
  end
  found[i] = e
end
local stamp = int_str(now_ms())
for i = 1, n do
  local e = found[i]
  if e then
    local back = unhold(e.zk, rid, held[i])
    e.held, e.spent, e.t = e.held - back, e.spent + tonumber(spend[i]), stamp
    changed(e)
  else
    redis.call('ZREM', prefix .. 'z:' .. names[i], member(held[i], rid))
  end
end
redis.call('HSET', rk, 'st', 'committed')
redis.call('PEXPIRE', rk, retain_ms)
return {'ok'}
