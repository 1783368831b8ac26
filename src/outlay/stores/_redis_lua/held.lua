-- held: count the reservations among KEYS that hold budget now (held, lease not expired).
-- KEYS: reservation keys, all under the namespace's hash tag. Read-only. Returns an integer.
local now = now_ms()
local live = 0
for _, rk in ipairs(KEYS) do
  local r = reservation(rk)
  if type(r) == 'table' and r[1] > now then
    live = live + 1
  end
end
return live
