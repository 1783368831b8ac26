-- recover: jobs whose lease ended are queued again while attempts are left, else they move to
-- settling(failed); a settling job whose settler vanished is re-leased for settling.
-- KEYS: jl. ARGV: prefix, lease_ms, limit. Returns the jobs it changed.
local prefix, jl = ARGV[1], KEYS[1]
local now = now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', jl, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local jk = prefix .. 'j:' .. id
  local st, attempts, max = unpack(redis.call('HMGET', jk, 'state', 'attempts', 'max'))
  if st == 'leased' then
    redis.call('HSET', jk, 'error', 'lease expired on attempt ' .. attempts .. ' of ' .. max)
    if tonumber(attempts) < tonumber(max) then
      requeue(prefix, jk, jl, id)
    else
      settle_failed(jk, jl, id, now + tonumber(ARGV[2]))
    end
    out[#out + 1] = row(jk, id)
  elseif st == 'settling' then
    local until_ms = now + tonumber(ARGV[2])
    redis.call('HSET', jk, 'lease', int_str(until_ms))
    redis.call('ZADD', jl, until_ms, id)
    out[#out + 1] = row(jk, id)
  else
    redis.call('ZREM', jl, id)
  end
end
return out
