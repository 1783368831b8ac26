-- fail: a job still leased to the token records an error; queued again if retry and attempts
-- are left, else settling(failed). KEYS: job hash, jl. ARGV: prefix, id, token, error,
-- retry ("1"|"0"), lease_ms. Returns the job, or false if stale.
local jk, jl, id = KEYS[1], KEYS[2], ARGV[2]
local st, claim, attempts, max = unpack(redis.call('HMGET', jk, 'state', 'claim', 'attempts',
                                                   'max'))
if st ~= 'leased' or claim ~= ARGV[3] then
  return false
end
redis.call('HSET', jk, 'error', ARGV[4])
if ARGV[5] == '1' and tonumber(attempts) < tonumber(max) then
  requeue(ARGV[1], jk, jl, id)
else
  settle_failed(jk, jl, id, now_ms() + tonumber(ARGV[6]))
end
return row(jk, id)
