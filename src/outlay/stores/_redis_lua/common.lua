-- outlay: helpers shared by every script (prepended to each one when it is loaded).
--
-- Layout, every key under one hash tag per store namespace, so all of a namespace lives in one
-- Redis Cluster slot and a reservation over any set of limits is one atomic script:
--   <P>l:<key>   hash of a limit: cap, spent, held (integers, money scaled by 10^p),
--                u ("i" whole units, "d" money), p (decimal places), t (server ms of the last
--                reserve, commit, cap or reset), v (the layout, LAYOUT), x (UNIX ms at which the
--                key expires, if it does: the scripts set every expiry of a limit, and record it
--                here so a reserve need not ask)
--   <P>z:<key>   sorted set of the limit's live holds: member "<amount>:<rid>", score lease
--                expiry (ms); it expires with its limit
--   <P>e:log     list of spend events (JSON), the newest last, trimmed (Store.append_events)
--   <P>r:<rid>   hash of a reservation: st (held|committed|released), exp (ms), at (ms when
--                reserved), n, k<i>, a<i>, u<i>
-- where <P> is "{namespace}:". A limit without v was written by an earlier outlay: its holds
-- set has the bare rid as member and the amount in the limit's field h:<rid>, and no x. The
-- first script that touches such a limit migrates it (migrate), so every other line reads one
-- layout. Every count is an integer stored as a decimal string; Lua numbers (doubles) are
-- exact for them because the client refuses any amount or cap above 2^53 - 1, a limit's held
-- never exceeds a cap it was admitted under, and a commit refuses spend beyond 2^53 - 1.

local LAYOUT = '2'

-- The server's clock, read once per script: the operations of one batch happen at one instant.
local clock
local function now_ms()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end

local function int_str(x)
  return string.format('%.0f', x)
end

-- The holds-set member of rid's hold of amount a (a decimal string).
local function member(a, rid)
  return a .. ':' .. rid
end

-- Bring limit (hash lk, zset zk) written by an earlier outlay to LAYOUT: each hold's amount
-- moves from the field h:<rid> into its member, and the key's expiry is recorded in x. Holds,
-- leases, held and the expiry are unchanged. Returns x (or false: the limit does not expire).
local function migrate(lk, zk, now)
  local holds = redis.call('ZRANGE', zk, 0, -1, 'WITHSCORES')
  for i = 1, #holds, 2 do
    local rid = holds[i]
    local a = redis.call('HGET', lk, 'h:' .. rid)
    redis.call('ZREM', zk, rid)
    if a then
      redis.call('HDEL', lk, 'h:' .. rid)
      redis.call('ZADD', zk, holds[i + 1], member(a, rid))
    end
  end
  local x = false
  local ttl = redis.call('PTTL', lk)
  if ttl >= 0 then
    x = int_str(now + ttl)
    redis.call('HSET', lk, 'v', LAYOUT, 'x', x)
    redis.call('PEXPIREAT', zk, x)
  else
    redis.call('HSET', lk, 'v', LAYOUT)
  end
  return x
end

-- Drop holds of limit (hash lk, zset zk, in LAYOUT) whose lease ended at or before now. Each
-- expired hold is dropped once, so the work is amortised over the reservations that made the
-- holds. Returns the amount dropped from the limit's held (a number; 0 if none).
local function prune(lk, zk, now)
  local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
  if #gone == 0 then
    return 0
  end
  local total = 0
  for _, m in ipairs(gone) do
    local a = string.match(m, '^(%d+):')
    if not a then
      -- A bare rid: a hold an earlier outlay added after this limit was migrated (a fleet
      -- mixing versions); its amount is in h:<rid>.
      a = redis.call('HGET', lk, 'h:' .. m)
      if a then
        redis.call('HDEL', lk, 'h:' .. m)
      end
    end
    total = total + (tonumber(a) or 0)
  end
  redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
  if total > 0 then
    redis.call('HINCRBY', lk, 'held', int_str(-total))
  end
  return total
end

-- Take rid's hold of amount a (a string) out of the holds set zk of a limit in LAYOUT. Returns
-- the amount to take off the limit's held: a if the hold was still there, else 0 (it was
-- pruned, and pruning took it off).
local function unhold(zk, rid, a)
  if redis.call('ZREM', zk, member(a, rid)) == 1 then
    return tonumber(a)
  end
  return 0
end

-- A reservation hash as a table (nil if it does not exist).
local function reservation(rk)
  local fields = redis.call('HGETALL', rk)
  if #fields == 0 then
    return nil
  end
  local r = {}
  for i = 1, #fields, 2 do
    r[fields[i]] = fields[i + 1]
  end
  return r
end

-- The amount a client sent for a limit of unit u: whole units ("i") or scaled money ("d").
-- Returns the amount as a string, or nil and an error code.
local function pick(u, kind, ival, dval)
  if u == 'i' then
    if kind ~= 'i' then
      return nil, 'unit'
    end
    return ival
  end
  if dval == '' then
    return nil, 'range'
  end
  return dval
end

-- Make limit (lk, zk) expire at x (UNIX ms, a string), recorded in its field x.
local function expire_at(lk, zk, x)
  redis.call('PEXPIREAT', lk, x)
  redis.call('PEXPIREAT', zk, x)
  redis.call('HSET', lk, 'x', x)
end

-- Limit (lk, zk) after migrating it to LAYOUT and dropping its expired holds: {cap, spent,
-- held, u, p}, or nil if it does not exist.
local function current(lk, zk)
  local cap, spent, held, u, p, v = unpack(redis.call('HMGET', lk, 'cap', 'spent', 'held', 'u',
                                                      'p', 'v'))
  if not u then
    return nil
  end
  local now = now_ms()
  if v ~= LAYOUT then
    migrate(lk, zk, now)
  end
  return {cap, spent, int_str(tonumber(held) - prune(lk, zk, now)), u, p}
end
