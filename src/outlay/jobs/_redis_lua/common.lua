-- outlay jobs: helpers shared by every job script (prepended to each one when it is loaded,
-- after the store's clock.lua: now_ms, int_str).
--
-- Layout, under the budget store's own hash tag (<P> is "{namespace}:"), so a job and the
-- budget it holds against live in one Redis Cluster slot:
--   <P>j:<id>     hash of a job: lane, spec, max, created, seq, state, attempts, and while
--                 they apply claim, lease (ms, server clock), outcome, result, actual, error
--   <P>jq:<lane>  sorted set of the lane's queued jobs: member id, score seq (FIFO)
--   <P>jl         sorted set of leased and settling jobs: member id, score lease end (ms)
--   <P>jall       sorted set of every job: member id, score seq
--   <P>jseq       the last seq handed out
-- The moves mirror the Python ones in outlay/jobs/_store.py (claim_row, fail_row, ...).

-- The job as {id, field, value, field, value, ...}.
local function row(jk, id)
  local r = redis.call('HGETALL', jk)
  table.insert(r, 1, id)
  return r
end

local function requeue(prefix, jk, jl, id)
  redis.call('HSET', jk, 'state', 'queued')
  redis.call('HDEL', jk, 'claim', 'lease')
  redis.call('ZREM', jl, id)
  local lane, seq = unpack(redis.call('HMGET', jk, 'lane', 'seq'))
  redis.call('ZADD', prefix .. 'jq:' .. lane, seq, id)
end

local function settle_failed(jk, jl, id, until_ms)
  redis.call('HSET', jk, 'state', 'settling', 'outcome', 'failed', 'lease', int_str(until_ms))
  redis.call('ZADD', jl, until_ms, id)
end
