-- add: store a new queued job, last in its lane.
-- KEYS: job hash, jall, lane queue, jseq. ARGV: id, lane, spec, max, created.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'taken'
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'lane', ARGV[2], 'spec', ARGV[3], 'max', ARGV[4],
           'created', ARGV[5], 'seq', seq, 'state', 'queued', 'attempts', 0)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
return 'ok'
