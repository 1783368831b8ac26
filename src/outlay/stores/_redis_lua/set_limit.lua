-- set_limit: create a limit or change its cap; spend and holds are kept.
-- KEYS[1] limit hash, KEYS[2] holds zset. ARGV: unit ("i"|"d"), cap, places. Returns {'ok'}
-- or an error code.
local lk = KEYS[1]
local u, p = unpack(redis.call('HMGET', lk, 'u', 'p'))
if not u then
  redis.call('DEL', KEYS[2])  -- holds left by a limit that is gone count for nothing
  redis.call('HSET', lk, 'cap', ARGV[2], 'spent', '0', 'held', '0', 'u', ARGV[1],
             'p', ARGV[1] == 'd' and ARGV[3] or '0', 't', stamp(), 'v', LAYOUT)
  return {'ok'}
end
if u ~= ARGV[1] then
  return {'unit', u}
end
if u == 'd' and p ~= ARGV[3] then
  return {'places', p}
end
redis.call('HSET', lk, 'cap', ARGV[2], 't', stamp())
return {'ok'}
