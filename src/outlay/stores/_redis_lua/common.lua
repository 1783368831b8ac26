-- outlay: helpers shared by every script (prepended to each one when it is loaded).
--
-- Layout, every key under one hash tag per store namespace, so all of a namespace lives in one
-- Redis Cluster slot and a reservation over any set of limits is one atomic script:
--   <P>l:<key>   hash of a limit: cap, spent, held (integers, money scaled by 10^p),
--                u ("i" whole units, "d" money), p (decimal places), h:<rid> (amount held),
--                t (server ms of the last reserve, commit, cap or reset)
--   <P>z:<key>   sorted set of the limit's live holds: member rid, score lease expiry (ms)
--   <P>e:log     list of spend events (JSON), the newest last, trimmed (Store.append_events)
--   <P>r:<rid>   hash of a reservation: st (held|committed|released), exp (ms), at (ms when
--                reserved), n, k<i>, a<i>, u<i>
-- where <P> is "{namespace}:". Every count is an integer stored as a decimal string and changed
-- with HINCRBY (exact 64-bit arithmetic in the server); Lua numbers (doubles) are used only for
-- comparisons, which are exact because the client refuses any amount or cap above 2^53 - 1.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int_str(x)
  return string.format('%.0f', x)
end

-- Drop holds of limit (hash lk, zset zk) whose lease ended at or before now. Each expired hold
-- is dropped once, so the work is amortised over the reservations that made the holds.
-- Returns whether it dropped any (and so changed the limit's held).
local function prune(lk, zk, now)
  local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
  if #gone == 0 then
    return false
  end
  for _, rid in ipairs(gone) do
    local a = redis.call('HGET', lk, 'h:' .. rid)
    if a then
      redis.call('HDEL', lk, 'h:' .. rid)
      if a ~= '0' then
        redis.call('HINCRBY', lk, 'held', '-' .. a)
      end
    end
  end
  redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
  return true
end

-- Take the hold of rid off limit (lk, zk) if it is still there (it may have been pruned). a is
-- the hold's amount (the field h:<rid>) if the caller has read it already, else nil.
local function unhold(lk, zk, rid, a)
  if a == nil then
    a = redis.call('HGET', lk, 'h:' .. rid)
  end
  if a then
    redis.call('HDEL', lk, 'h:' .. rid)
    if a ~= '0' then
      redis.call('HINCRBY', lk, 'held', '-' .. a)
    end
  end
  redis.call('ZREM', zk, rid)
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

-- Make key k expire at at_ms (UNIX ms) unless it already expires later; a key without an
-- expiry gets this one.
local function later(k, at_ms, now)
  local ttl = redis.call('PTTL', k)
  if ttl == -1 or (ttl >= 0 and now + ttl < at_ms) then
    redis.call('PEXPIREAT', k, int_str(at_ms))
  end
end
