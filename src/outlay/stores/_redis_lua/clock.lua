-- outlay: the server's clock and integer formatting, first in every script of the budget store
-- and of jobs (outlay/stores/_redis.py reads it once, as _CLOCK_LUA).

-- The server's clock (UNIX ms), read once per script: everything one script does (the
-- operations of one batch, say) happens at one instant.
local clock
local function now_ms()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end

-- An integer-valued Lua number as a decimal string (no exponent, no ".0").
local function int_str(x)
  return string.format('%.0f', x)
end
