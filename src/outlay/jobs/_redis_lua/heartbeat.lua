-- heartbeat: renew the lease of a job still leased to the token. Returns 1, or 0.
-- KEYS: job hash, jl. ARGV: id, token, lease_ms.
local st, claim = unpack(redis.call('HMGET', KEYS[1], 'state', 'claim'))
if st ~= 'leased' or claim ~= ARGV[2] then
  return 0
end
local until_ms = now_ms() + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease', int_str(until_ms))
redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
return 1
