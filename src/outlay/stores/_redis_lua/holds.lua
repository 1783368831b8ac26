-- holds: the live reservations among KEYS (held, lease not expired). Read-only.
-- KEYS: reservation keys, all under the namespace's hash tag. Returns {now_ms, then per live
-- reservation: its key, exp, at ('' if not recorded), n, then n triples k, a, u}.
local now = now_ms()
local out = {int_str(now)}
for _, rk in ipairs(KEYS) do
  local r = reservation(rk)
  if type(r) == 'table' and r[1] > now then
    out[#out + 1] = rk
    out[#out + 1] = int_str(r[1])
    out[#out + 1] = r[2] and int_str(r[2]) or ''
    out[#out + 1] = int_str((#r - 2) / 3)
    for k = 3, #r do
      out[#out + 1] = r[k]
    end
  end
end
return out
