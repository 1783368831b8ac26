-- finish: a job still leased to the token records its result: settling(completed).
-- KEYS: job hash, jl. ARGV: id, token, result, actual, lease_ms. Returns 1, or 0 if stale.
local st, claim = unpack(redis.call('HMGET', KEYS[1], 'state', 'claim'))
if st ~= 'leased' or claim ~= ARGV[2] then
  return 0
end
local until_ms = now_ms() + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'settling', 'outcome', 'completed', 'result', ARGV[3],
           'actual', ARGV[4], 'lease', int_str(until_ms))
redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
return 1
