-- commit: turn the hold into spend; works after the lease expired (the spend still counts).
-- The script takes the limit names from the reservation.
-- ARGV (after the store's, store.lua): rid, m, then per actual amount: name, kind ("i"|"d"),
--   ival, dval.
local rid = ARGV[1]
local m = tonumber(ARGV[2])
local rk = P .. 'r:' .. rid

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
  local b = 2 + (j - 1) * 4
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
  local e = limit(P .. 'l:' .. names[i], P .. 'z:' .. names[i])
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
    redis.call('ZREM', P .. 'z:' .. names[i], member(held[i], rid))
  end
end
redis.call('HSET', rk, 'st', 'committed')
redis.call('PEXPIRE', rk, RETAIN_MS)
return {'ok'}
