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
elseif type(r) ~= 'table' then
  return {'ended'}
end
local last = #r - 2  -- limit i's name, amount, unit are r[3i..3i+2], for 3i <= last
-- Check every actual amount before anything changes (spend[i]: limit i's, if not its hold).
local spend = {}
for j = 1, m do
  local b = 2 + (j - 1) * 4
  local name = ARGV[b + 1]
  local k = 3
  while k <= last and r[k] ~= name do
    k = k + 3
  end
  if k > last then
    return {'foreign', name}
  end
  local a, err = pick(r[k + 2], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4])
  if not a then
    return {err, name}
  end
  spend[k] = a
end
-- Every check runs before the first write: Redis does not roll back a script that fails.
-- A limit that does not exist (a period limit already forgotten, or dropped) takes no spend.
local found = {}
for k = 3, last, 3 do
  local name = r[k]
  local e = limit(P .. 'l:' .. name, P .. 'z:' .. name)
  if e and e.spent + tonumber(spend[k] or r[k + 1]) > 9007199254740991 then
    return {'overflow', name}
  end
  found[k] = e
end
for k = 3, last, 3 do
  local e, a = found[k], r[k + 1]
  if e then
    local back = unhold(e.zk, rid, a)
    e.held, e.spent, e.t = e.held - back, e.spent + tonumber(spend[k] or a), stamp()
    changed(e)
  else
    redis.call('ZREM', P .. 'z:' .. r[k], member(a, rid))
  end
end
redis.call('SET', rk, 'committed', 'PX', RETAIN_MS)
return {'ok'}
