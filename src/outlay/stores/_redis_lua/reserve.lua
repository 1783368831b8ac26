-- reserve: hold amounts against every named limit, all or nothing.
-- ARGV (after the store's, store.lua): rid, lease_ms, n, then per limit:
--   name, kind ("i"|"d"), ival, dval, default kind ("" = no default), default cap, expire_at_ms.
local rid = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local places = PLACES
local n = tonumber(ARGV[3])
local rk = P .. 'r:' .. rid
local now = now_ms()

local r = reservation(rk)
if r then
  if type(r) == 'table' and r[1] > now then
    return {'ok'}  -- a retried call: admitted once
  end
  return {'ended'}
end

-- First pass: find every limit, check units (reading a limit migrates it and drops its
-- expired holds, which changes how it is written, not what it counts). Nothing is taken yet.
-- The record is built as it goes: exp and at, then name, amount, unit of limit i at 3i..3i+2.
local record = {false, now}
local found, ends = {}, {}  -- each limit's entry (false: to create from its default); expiry
-- Every check runs before the first write: Redis does not roll back a script that fails.
for i = 1, n do
  local b = 3 + (i - 1) * 7
  local name = ARGV[b + 1]
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
  record[3 * i], record[3 * i + 1], record[3 * i + 2] = name, a, u
  found[i] = e
  local period_end = ARGV[b + 7]
  if period_end ~= '' then
    local at = tonumber(period_end)
    if not at or at < 0 or at > 2 ^ 52 then
      return {'expire', name}
    end
    ends[i] = math.max(at, now + lease_ms) + GRACE
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
  local a = record[3 * i + 1]
  if cap - spent - held - tonumber(a) < 0 then
    return {'refused', record[3 * i], int_str(cap), int_str(spent), int_str(held), a,
            record[3 * i + 2]}
  end
end

-- Admitted: take the holds and remember the reservation.
local lease_end = now + lease_ms
local exp = ms_str(lease_end)
record[1] = lease_end
for i = 1, n do
  local name, a = record[3 * i], record[3 * i + 1]
  local e = found[i]
  if e then
    hold(e, exp, member(a, rid))
    e.held, e.t = e.held + tonumber(a), stamp()
    changed(e)
  else
    local zk = P .. 'z:' .. name
    redis.call('DEL', zk)  -- holds left by a limit that is gone count for nothing
    local u = record[3 * i + 2]
    e = create(P .. 'l:' .. name, zk, tonumber(ARGV[3 + (i - 1) * 7 + 6]), u,
               u == 'd' and places or '0', stamp())
    hold(e, exp, member(a, rid))
    e.held = tonumber(a)
  end
  -- A period limit is forgotten a little after its period and every hold on it are over; any
  -- limit that will expire must outlive the holds on it. Its expiry only ever moves later (a
  -- shorter hold never cuts a longer one short).
  local x = e.x
  local due = ends[i] or (x and lease_end + GRACE)
  if due and (not x or x < due) then
    e.x, e.wx = due, true
  elseif x then
    e.wz = true  -- the holds set may be new: it expires with its limit
  end
end
keep(rk, record, ms_str(lease_ms + RETAIN))
return {'ok'}
