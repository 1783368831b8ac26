-- outlay: helpers shared by every script (prepended to each one when it is loaded, after
-- clock.lua: now_ms, int_str).
--
-- Layout, every key under one hash tag per store namespace, so all of a namespace lives in one
-- Redis Cluster slot and a reservation over any set of limits is one atomic script:
--   <P>l:<key>   hash of a limit: cap, spent, held (integers, money scaled by 10^p),
--                u ("i" whole units, "d" money), p (decimal places), t (server ms of the last
--                reserve, commit, cap or reset), v (the layout, LAYOUT), x (UNIX ms at which the
--                key expires, if it does: the scripts set every expiry of a limit, and record it
--                here so a reserve need not ask)
--   <P>z:<key>   sorted set of the limit's live holds: member "<amount>:<rid>", score lease
--                expiry (ms); it expires with its limit. It also keeps one member that is no
--                hold, SKIPLIST, scored +inf (so no range of lease expiries reaches it), longer
--                than Redis keeps in a listpack: in a listpack every ZADD and ZREM scans the
--                whole set (at 50 live holds 2.7 times the server's work of the skiplist
--                encoding that member keeps it in). A set left without holds is deleted by
--                the script that sees it so (flush): SKIPLIST alone costs about 1 kB
--   <P>e:log     list of spend events (JSON), the newest last, trimmed (Store.append_events)
--   <P>r:<rid>   a reservation, one string written whole by one SET ... PX and read by one GET
--                (reservation, keep): while held, cmsgpack.pack of exp (ms) and at (ms when
--                reserved), msgpack integers, then per limit its name, amount (a decimal
--                string, as in the holds set's member) and unit, expiring lease + retain after
--                its reserve or last extend; once ended, "committed" or "released", expiring
--                retain after its end. The outlay before this one wrote a hash (st
--                held|committed|released, exp, at, n, k<i>, a<i>, u<i>), with the limits'
--                layout unchanged (so LAYOUT stays): read as well, and replaced by the string
--                when next written
-- where <P> is "{namespace}:". A limit without v was written by an earlier outlay: its holds
-- set has the bare rid as member and the amount in the limit's field h:<rid>, and no x. The
-- first script that touches such a limit migrates it (migrate), so every other line reads one
-- layout. Every count is an integer stored as a decimal string; Lua numbers (doubles) are
-- exact for them because the client refuses any amount or cap above 2^53 - 1, a limit's held
-- never exceeds a cap it was admitted under, and a commit refuses spend beyond 2^53 - 1.

local LAYOUT = '2'

-- int_str of a time or duration (ms), each formatted once per script: a batch's operations
-- share its instant and mostly their leases.
local ms_strs = {}
local function ms_str(x)
  local s = ms_strs[x]
  if not s then
    s = int_str(x)
    ms_strs[x] = s
  end
  return s
end

-- now_ms as a decimal string.
local function stamp()
  return ms_str(now_ms())
end

-- The holds-set member of rid's hold of amount a (a decimal string).
local function member(a, rid)
  return a .. ':' .. rid
end

-- The holds sets' member that is no hold (see the layout above): never a hold's member, which
-- starts with its amount's digits (or, written by layout 1, is a bare rid, which no outlay
-- makes this long and this shape). Longer than zset-max-listpack-value (64 by default).
local SKIPLIST = '~outlay: not a hold; keeps this holds set in the skiplist encoding~' ..
                 string.rep('~', 60)

-- How many holds the holds set zk carries (SKIPLIST, scored +inf, is none of them).
local function hold_count(zk)
  return redis.call('ZCOUNT', zk, '-inf', '(+inf')
end

-- Add the hold m (a member) expiring at exp (ms, a string) to the holds set of limit entry e;
-- the first hold a script adds to a set also adds SKIPLIST (again, if it is there).
local function hold(e, exp, m)
  if e.s then
    redis.call('ZADD', e.zk, exp, m)
  else
    redis.call('ZADD', e.zk, exp, m, '+inf', SKIPLIST)
    e.s = true
  end
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
-- holds. Returns the amount dropped, which the caller takes off the limit's held (a number; 0
-- if none).
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
  return total
end

-- The limits this script has touched, each read once and written once: a script reads and
-- changes a limit's hash only through its entry (limit, create; changed marks it; migrate and
-- prune, which run before an entry is made or touch only fields it does not hold, excepted)
-- and writes every changed entry back at its end (flush), so a batch of operations on one
-- limit reads and writes its hash once. An entry is {lk, zk, cap, spent, held, x (numbers; x
-- false if the key does not expire), u, p, t (strings), and flags: wx (x moved), wz (the holds
-- set may be new: it must expire with the limit), s (this script added SKIPLIST to the holds
-- set)}, or false for a limit that does not exist. An operation changes an entry right after
-- the Redis writes it goes with (the holds set, the reservation) succeed: the entries always
-- say what the hash would say had every change been written at once, including after an
-- operation that raised (its checks all run before its first write, so one that raises there
-- changed nothing). Every function here is built again by each run of each script, at a cost
-- the server's CPU time shows: keep them few.
local limits = {}
local dirty = {}  -- changed entries, not yet written

-- Entry e has changed: flush writes it.
local function changed(e)
  if not e.dirty then
    e.dirty = true
    dirty[#dirty + 1] = e
  end
end

-- Limit (hash lk, zset zk) migrated to LAYOUT, from this script's entries (read on first
-- touch): its entry, or false if it does not exist. With live, without its expired holds
-- (dropped once per script: its operations all run at one instant).
local function limit(lk, zk, live)
  local e = limits[lk]
  if e == nil then
    local cap, spent, held, u, p, t, v, x = unpack(redis.call('HMGET', lk, 'cap', 'spent',
                                                              'held', 'u', 'p', 't', 'v', 'x'))
    if not u then
      limits[lk] = false
      return false
    end
    if v ~= LAYOUT then
      x = migrate(lk, zk, now_ms())
    end
    -- Every field named, so the table is built at its full size once.
    e = {lk = lk, zk = zk, cap = tonumber(cap), spent = tonumber(spent), held = tonumber(held),
         u = u, p = p, t = t, x = tonumber(x) or false, pruned = false, dirty = false, new = false,
         wx = false, wz = false, s = false}
    limits[lk] = e
  end
  if live and e and not e.pruned then
    e.pruned = true
    local gone = prune(lk, zk, now_ms())
    if gone > 0 then
      e.held = e.held - gone
      changed(e)
    end
  end
  return e
end

-- A new limit (hash lk, zset zk) with the given cap, unit, places and t (spent and held 0): its
-- entry, to be written whole.
local function create(lk, zk, cap, u, p, t)
  local e = {lk = lk, zk = zk, cap = cap, spent = 0, held = 0, u = u, p = p, t = t, x = false,
             pruned = true, dirty = false, new = true, wx = false, wz = false, s = false}
  limits[lk] = e
  changed(e)
  return e
end

-- Write every changed entry back: one HSET per limit (its counts and t; every field if it is
-- new), then its expiry on both keys if it moved, or on the holds set if that may be new; a
-- holds set left with no hold is deleted.
local function flush()
  for i = 1, #dirty do
    local e = dirty[i]
    local lk = e.lk
    local args = {'spent', int_str(e.spent), 'held', int_str(e.held)}
    if e.t then
      args[5], args[6] = 't', e.t
    end
    if e.new then
      args[#args + 1], args[#args + 2] = 'cap', int_str(e.cap)
      args[#args + 1], args[#args + 2] = 'u', e.u
      args[#args + 1], args[#args + 2] = 'p', e.p
      args[#args + 1], args[#args + 2] = 'v', LAYOUT
    end
    local x = (e.wx or e.wz) and e.x and int_str(e.x)
    if e.wx then
      args[#args + 1], args[#args + 2] = 'x', x
    end
    redis.call('HSET', lk, unpack(args))
    if e.wx then
      redis.call('PEXPIREAT', lk, x)
      redis.call('PEXPIREAT', e.zk, x)
    elseif e.wz and x then
      redis.call('PEXPIREAT', e.zk, x)
    end
    if e.held == 0 and hold_count(e.zk) == 0 then
      redis.call('DEL', e.zk)  -- no hold left: SKIPLIST goes too
      e.s = false
    end
    e.dirty, e.new, e.wx, e.wz = false, false, false, false
  end
  dirty = {}
end

-- Run op (an operation's function) on keys and args as the whole script and write its limits
-- back, even if it raised (Redis keeps what a script wrote before it failed: the entries must
-- reach the hash with it), then return its reply or raise its error.
local function alone(op, keys, args)
  local ok, reply = pcall(op, keys, args)
  flush()
  if not ok then
    error(reply, 0)
  end
  return reply
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

-- The reservation at rk: nil if there is none; "committed" or "released" once it ended; else
-- (held, its lease perhaps over) the list {exp (ms, a number), at (ms when reserved, a number;
-- false if not recorded), then per limit its name, amount and unit (strings)}. LAYOUT's record
-- is one string (one GET): the ended marker, or that list packed by cmsgpack (exact for any
-- bytes; it begins with exp's msgpack integer header, never a letter). A hash (GET answers
-- WRONGTYPE) is a record an earlier outlay wrote: fields st, exp, at, n, k<i>, a<i>, u<i>;
-- only those pay for the second read.
local function reservation(rk)
  local s = redis.pcall('GET', rk)
  if type(s) == 'string' then
    if s == 'committed' or s == 'released' then
      return s
    end
    return {cmsgpack.unpack(s)}
  elseif not s then
    return nil
  end
  local fields = redis.call('HGETALL', rk)  -- any other type raises WRONGTYPE, as before
  local h = {}
  for i = 1, #fields, 2 do
    h[fields[i]] = fields[i + 1]
  end
  if h.st ~= 'held' then
    return h.st or 'released'
  end
  local r = {tonumber(h.exp) or 0, tonumber(h.at) or false}
  for i = 1, tonumber(h.n) do
    r[3 * i], r[3 * i + 1], r[3 * i + 2] = h['k' .. i], h['a' .. i], h['u' .. i]
  end
  return r
end

-- Write rid's held reservation r (the list reservation returns) at rk, to expire px ms from now
-- (a decimal string): one SET of one string, whatever form it had.
local function keep(rk, r, px)
  redis.call('SET', rk, cmsgpack.pack(unpack(r)), 'PX', px)
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

-- Limit (lk, zk) as usage reads it (migrated, without its expired holds): {cap, spent, held, u,
-- p}, or nil if it does not exist.
local function current(lk, zk)
  local e = limit(lk, zk, true)
  if not e then
    return nil
  end
  return {int_str(e.cap), int_str(e.spent), int_str(e.held), e.u, e.p}
end
