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

-- First pass: find every limit, check units, drop expired holds. Nothing is taken yet.
local amounts = {}
local units = {}
local fresh = {}
local ends = {}
local counts = {}  -- {cap, spent, held} of each limit that exists
-- Every check runs before the first write: Redis does not roll back a script that fails.
local max_ms = 2 ^ 52
for i = 1, n do
  local b = 7 + (i - 1) * 7
  local name = ARGV[b + 1]
  local lk, zk = KEYS[2 * i], KEYS[2 * i + 1]
  local u, p, cap, spent, held = unpack(redis.call('HMGET', lk, 'u', 'p', 'cap', 'spent',
                                                 'held'))
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
    if prune(lk, zk, now) then
      held = redis.call('HGET', lk, 'held')
    end
    counts[i] = {cap, spent, held}
  end
end

-- Second pass: every limit must have room for its amount.
for i = 1, n do
  local b = 7 + (i - 1) * 7
  local cap, spent, held
  if fresh[i] then
    cap, spent, held = ARGV[b + 6], '0', '0'
  else
    cap, spent, held = unpack(counts[i])
  end
  if tonumber(cap) - tonumber(spent) - tonumber(held) - tonumber(amounts[i]) < 0 then
    return {'refused', ARGV[b + 1], cap, spent, held, amounts[i], units[i]}
  end
end

-- Admitted: take the holds and remember the reservation.
local exp = now + lease_ms
local record = {'st', 'held', 'exp', int_str(exp), 'at', int_str(now), 'n', tostring(n)}
for i = 1, n do
  local b = 7 + (i - 1) * 7
  local lk, zk = KEYS[2 * i], KEYS[2 * i + 1]
  if fresh[i] then
    redis.call('HSET', lk, 'cap', ARGV[b + 6], 'spent', '0', 'held', '0', 'u', units[i],
               'p', units[i] == 'd' and places or '0')
  end
  redis.call('HINCRBY', lk, 'held', amounts[i])
  redis.call('HSET', lk, 'h:' .. rid, amounts[i], 't', int_str(now))
  redis.call('ZADD', zk, exp, rid)
  if ends[i] then
    -- A period limit is forgotten a little after its period and every hold on it are over:
    -- its expiry only ever moves later (a shorter hold never cuts a longer one short).
    later(lk, ends[i], now)
    later(zk, ends[i], now)
  else
    local ttl = redis.call('PTTL', lk)
    if ttl > 0 and ttl < lease_ms + grace_ms then
      -- A limit that will expire must outlive the holds on it.
      redis.call('PEXPIRE', lk, int_str(lease_ms + grace_ms))
      redis.call('PEXPIRE', zk, int_str(lease_ms + grace_ms))
    end
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
