-- held: count the reservations among KEYS that hold budget now (st "held", lease not expired).
-- KEYS: reservation hashes, all under the namespace's hash tag. Read-only. Returns an integer.
local now = now_ms()
local live = 0
for _, rk in ipairs(KEYS) do
  local st, exp = unpack(redis.call('HMGET', rk, 'st', 'exp'))
  if st == 'held' and exp and tonumber(exp) > now then
    live = live + 1
  end
end
return live
