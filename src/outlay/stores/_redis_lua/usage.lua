-- usage: snapshot one limit after dropping its expired holds.
-- KEYS[1] limit hash, KEYS[2] holds zset. Returns {cap, spent, held, u, p} or {}.
local lk, zk = KEYS[1], KEYS[2]
if redis.call('EXISTS', lk) == 0 then
  return {}
end
prune(lk, zk, now_ms())
return redis.call('HMGET', lk, 'cap', 'spent', 'held', 'u', 'p')
