-- reserve: hold amounts against every named limit, all or nothing.
-- KEYS[1] reservation hash; KEYS[2i], KEYS[2i+1] limit hash and holds zset of limit i.
-- ARGV: prefix, rid, lease_ms, retain_ms, places, grace_ms, n, then per limit:
--   name, kind ("i"|"d"), ival, dval, default kind ("" = no default), default cap, expire_at_ms.
local rid = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local retain_ms = tonumber(ARGV[4])
local places = ARGV[5]
local grace_ms = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local rk = KEYS[1]
local now = now_ms()

local st = redis.call('HGET', rk, 'st')
if st then
  if st == 'held' and tonumber(redis.call('HGET', rk, 'exp')) > now then
    return {'ok'}  -- a retried call: admitted once
  end
  return {'ended'}
end

-- First pass: find every limit, check units, drop expired holds. Nothing is taken yet (a
-- migration or a prune changes how a limit is written, not what it counts).
local amounts, units, fresh, ends = {}, {}, {}, {}
local counts = {}  -- {cap, spent, held, x} of each limit that exists; held a number
-- Every check runs before the first write: Redis does not roll back a script that fails.
local max_ms = 2 ^ 52
for i = 1, n do
  local b = 7 + (i - 1) * 7
  local name = ARGV[b + 1]
  local lk, zk = KEYS[2 * i], KEYS[2 * i + 1]
  local u, p, cap, spent, held, v, x = unpack(redis.call('HMGET', lk, 'u', 'p', 'cap', 'spent',
                                                         'held', 'v', 'x'))
  if not u then
    u = ARGV[b + 5]
    if u == '' then
      return {'unknown', name}
    end
    p = places
    fresh[i] = true
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
  local period_end = ARGV[b + 7]
  if period_end ~= '' then
    local at = tonumber(period_end)
    if not at or at < 0 or at > max_ms then
      return {'expire', name}
    end
    ends[i] = math.max(at, now + lease_ms) + grace_ms
  end
  if not fresh[i] then
    if v ~= LAYOUT then
      x = migrate(lk, zk, now)
    end
    counts[i] = {cap, spent, tonumber(held) - prune(lk, zk, now), x}
  end
end

-- Second pass: every limit must have room for its amount.
for i = 1, n do
  local b = 7 + (i - 1) * 7
  local cap, spent, held
  if fresh[i] then
    cap, spent, held = ARGV[b + 6], '0', 0
  else
    cap, spent, held = unpack(counts[i])
  end
  if tonumber(cap) - tonumber(spent) - held - tonumber(amounts[i]) < 0 then
    return {'refused', ARGV[b + 1], cap, spent, int_str(held), amounts[i], units[i]}
  end
end

-- Admitted: take the holds and remember the reservation.
local exp = int_str(now + lease_ms)
local stamp = int_str(now)
local record = {'st', 'held', 'exp', exp, 'at', stamp, 'n', ARGV[7]}
for i = 1, n do
  local b = 7 + (i - 1) * 7
  local lk, zk = KEYS[2 * i], KEYS[2 * i + 1]
  local x
  if fresh[i] then
    redis.call('DEL', zk)  -- holds left by a limit that is gone count for nothing
    redis.call('HSET', lk, 'cap', ARGV[b + 6], 'spent', '0', 'held', amounts[i], 'u', units[i],
               'p', units[i] == 'd' and places or '0', 't', stamp, 'v', LAYOUT)
  else
    x = counts[i][4]
    redis.call('HSET', lk, 'held', int_str(counts[i][3] + tonumber(amounts[i])), 't', stamp)
  end
  redis.call('ZADD', zk, exp, member(amounts[i], rid))
  -- A period limit is forgotten a little after its period and every hold on it are over; any
  -- limit that will expire must outlive the holds on it. Its expiry only ever moves later (a
  -- shorter hold never cuts a longer one short).
  local due = ends[i] or (x and now + lease_ms + grace_ms)
  if due and (not x or tonumber(x) < due) then
    expire_at(lk, zk, int_str(due))
  elseif x then
    redis.call('PEXPIREAT', zk, x)  -- the holds set may be new: it expires with its limit
  end
  record[#record + 1] = 'k' .. i
  record[#record + 1] = ARGV[b + 1]
  record[#record + 1] = 'a' .. i
  record[#record + 1] = amounts[i]
  record[#record + 1] = 'u' .. i
  record[#record + 1] = units[i]
end
redis.call('HSET', rk, unpack(record))
redis.call('PEXPIRE', rk, int_str(lease_ms + retain_ms))
return {'ok'}
