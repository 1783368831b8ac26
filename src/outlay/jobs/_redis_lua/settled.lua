-- settled: a settling job whose hold has ended takes its final state. Returns 1, or 0.
-- KEYS: job hash, jl. ARGV: id.
local st, outcome = unpack(redis.call('HMGET', KEYS[1], 'state', 'outcome'))
if st ~= 'settling' or not outcome then
  return 0
end
redis.call('HSET', KEYS[1], 'state', outcome)
redis.call('HDEL', KEYS[1], 'claim', 'lease')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
