-- claim: lease the oldest queued job of the given lanes to a claim token.
-- KEYS: jl, then one queue per lane. ARGV: prefix, token, lease_ms.
local best, best_seq, best_queue
for i = 2, #KEYS do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[1] and (best_seq == nil or tonumber(first[2]) < best_seq) then
    best, best_seq, best_queue = first[1], tonumber(first[2]), KEYS[i]
  end
end
if not best then
  return false
end
redis.call('ZREM', best_queue, best)
local jk = ARGV[1] .. 'j:' .. best
local until_ms = now_ms() + tonumber(ARGV[3])
redis.call('HSET', jk, 'state', 'leased', 'claim', ARGV[2], 'lease', int_str(until_ms))
redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('ZADD', KEYS[1], until_ms, best)
return row(jk, best)
