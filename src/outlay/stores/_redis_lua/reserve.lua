-- reserve: hold amounts against every named limit, all or nothing.
-- ARGV (after the store's, store.lua): rid, lease_ms, n, then per limit:
--   name, kind ("i"|"d"), ival, dval, default kind ("" = no default), default cap, expire_at_ms.
local rid = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local places = PLACES
local grace_ms = tonumber(GRACE_MS)
local n = tonumber(ARGV[3])
local rk = P .. 'r:' .. rid
local now = now_ms()

local st = redis.call('HGET', rk, 'st')
if st then
  if st == 'held' and tonumber(redis.call('HGET', rk, 'exp')) > now then
    return {'ok'}  -- a retried call: admitted once
  end
  return {'ended'}
end

-- First pass: find every limit, check units (reading a limit migrates it and drops its
-- expired holds, which changes how it is written, not what it counts). Nothing is taken yet.
local amounts, units, ends = {}, {}, {}
local found = {}  -- each limit's entry, or false for one to create from its default
local names = {}
-- Every check runs before the first write: Redis does not roll back a script that fails.
local max_ms = 2 ^ 52
for i = 1, n do
  local b = 3 + (i - 1) * 7
  local name = ARGV[b + 1]
  names[i] = name
  local e = limit(P .. 'l:' .. name, P .. 'z:' .. name, true)
  local u, p
  if e then
    u, p = e.u, e.p
  else
    u = ARGV[b + 5]
    if u == '' then
      return {'unknown', name}
    end
    p = places
  end
  if u == 'd' and p ~= places then
    return {'places', name, p}
  end
  local a, err = pick(u, ARGV[b + 2], ARGV[b + 3], ARGV[b + 4])
  if not a then
    return {err, name}
  end
  amounts[i] = a
  units[i] = u
  found[i] = e
  local period_end = ARGV[b + 7]
  if period_end ~= '' then
    local at = tonumber(period_end)
    if not at or at < 0 or at > max_ms then
      return {'expire', name}
    end
    ends[i] = math.max(at, now + lease_ms) + grace_ms
  end
end

-- Second pass: every limit must have room for its amount.
for i = 1, n do
  local e = found[i]
  local cap, spent, held
  if e then
    cap, spent, held = e.cap, e.spent, e.held
  else
    cap, spent, held = tonumber(ARGV[3 + (i - 1) * 7 + 6]), 0, 0
  end
  if cap - spent - held - tonumber(amounts[i]) < 0 then
    return {'refused', names[i], int_str(cap), int_str(spent), int_str(held),
            amounts[i], units[i]}
  end
end

-- Admitted: take the holds and remember the reservation.
local exp = int_str(now + lease_ms)
local stamp = int_str(now)
local record = {'st', 'held', 'exp', exp, 'at', stamp, 'n', ARGV[3]}
for i = 1, n do
  local b = 3 + (i - 1) * 7
  local lk, zk = P .. 'l:' .. names[i], P .. 'z:' .. names[i]
  local a = amounts[i]
  local e = found[i]
  if not e then
    redis.call('DEL', zk)  -- holds left by a limit that is gone count for nothing
  end
  redis.call('ZADD', zk, exp, member(a, rid))
  if e then
    e.held, e.t = e.held + tonumber(a), stamp
    changed(e)
  else
    e = create(lk, zk, tonumber(ARGV[b + 6]), tonumber(a), units[i],
               units[i] == 'd' and places or '0', stamp)
  end
  -- A period limit is forgotten a little after its period and every hold on it are over; any
  -- limit that will expire must outlive the holds on it. Its expiry only ever moves later (a
  -- shorter hold never cuts a longer one short).
  local x = e.x
  local due = ends[i] or (x and now + lease_ms + grace_ms)
  if due and (not x or tonumber(x) < due) then
    e.x, e.wx = int_str(due), true
  elseif x then
    e.wz = true  -- the holds set may be new: it expires with its limit
  end
  record[#record + 1] = 'k' .. i
  record[#record + 1] = names[i]
  record[#record + 1] = 'a' .. i
  record[#record + 1] = a
  record[#record + 1] = 'u' .. i
  record[#record + 1] = units[i]
end
redis.call('HSET', rk, unpack(record))
redis.call('PEXPIRE', rk, int_str(lease_ms + tonumber(RETAIN_MS)))
return {'ok'}
