-- commit: turn the hold into spend; works after the lease expired (the spend still counts).
-- KEYS[1] reservation hash, then (when the client knows them) the limit keys it holds, all
-- under one hash tag; the script takes the limit names from the reservation.
-- ARGV: prefix, rid, retain_ms, places, m, then per actual amount: name, kind ("i"|"d"),
--   ival, dval; then f and per amount the reservation was admitted with while failing open
--   (never held here): name, kind, ival, dval.
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
  local fb = 5 + m * 4
  local f = tonumber(ARGV[fb + 1] or '0')
  if f == 0 then
    return {'unknown'}
  end
  -- Admitted while Redis failed (fail_open): record the spend on the limits that exist.
  for i = 1, f do
    local b = fb + 1 + (i - 1) * 4
    local k = ARGV[b + 1]
    local u = redis.call('HGET', prefix .. 'l:' .. k, 'u')
    if u then
      local a = pick(u, ARGV[b + 2], ARGV[b + 3], ARGV[b + 4])
      n = n + 1
      names[n], held[n], units[n], spend[n] = k, a or '0', u, a or '0'
      index[k] = n
    end
  end
elseif st ~= 'held' then
  return {'ended'}
else
  n = tonumber(redis.call('HGET', rk, 'n'))
  for i = 1, n do
    local k, a, u = unpack(redis.call('HMGET', rk, 'k' .. i, 'a' .. i, 'u' .. i))
    names[i], held[i], units[i], spend[i] = k, a, u, a
    index[k] = i
  end
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
  elseif st then
    return {'foreign', name}
  end
  -- (admitted while failing open, on a limit that does not exist: nothing to count)
end
local now = int_str(now_ms())
for i = 1, n do
  local lk, zk = prefix .. 'l:' .. names[i], prefix .. 'z:' .. names[i]
  unhold(lk, zk, rid)
  -- A period limit that has already been forgotten (or dropped) takes no spend.
  if redis.call('EXISTS', lk) == 1 then
    if spend[i] ~= '0' then
      redis.call('HINCRBY', lk, 'spent', spend[i])
    end
    redis.call('HSET', lk, 't', now)
  end
end
redis.call('HSET', rk, 'st', 'committed')
redis.call('PEXPIRE', rk, retain_ms)
return {'ok'}
