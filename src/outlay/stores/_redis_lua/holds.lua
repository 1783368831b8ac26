-- holds: the live reservations among KEYS (st "held", lease not expired). Read-only.
-- KEYS: reservation hashes, all under the namespace's hash tag. Returns {now_ms, then per live
-- reservation: its key, exp, at ('' if not recorded), n, then n triples k, a, u}.
local now = now_ms()
local out = {int_str(now)}
for _, rk in ipairs(KEYS) do
  local st, exp, at, n = unpack(redis.call('HMGET', rk, 'st', 'exp', 'at', 'n'))
  if st == 'held' and exp and tonumber(exp) > now then
    out[#out + 1] = rk
    out[#out + 1] = exp
    out[#out + 1] = at or ''
    out[#out + 1] = n
    for i = 1, tonumber(n) do
      local k, a, u = unpack(redis.call('HMGET', rk, 'k' .. i, 'a' .. i, 'u' .. i))
      out[#out + 1] = k
      out[#out + 1] = a
      out[#out + 1] = u
    end
  end
end
return out
