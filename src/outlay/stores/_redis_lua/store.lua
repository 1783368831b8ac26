-- outlay: the store's settings, ARGV[1..4] of every script that runs reserve, commit, release
-- or extend (each alone, or several in batch): the key prefix ("{namespace}:"), how long ended
-- ids are remembered (ms), the decimal places of money and the grace after a period (ms). The
-- operation's own arguments follow: ARGV[5..] of a lone script, a JSON array in a batch's
-- ARGV[5]. An operation builds every key it touches from P and the names in its arguments (all
-- under the namespace's hash tag, so in the slot of the key the client declares).
local P, RETAIN_MS, PLACES, GRACE_MS = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local RETAIN, GRACE = tonumber(RETAIN_MS), tonumber(GRACE_MS)

-- A lone script's own arguments (ARGV[5..]).
local function own()
  local args = {}
  for i = 5, #ARGV do
    args[i - 4] = ARGV[i]
  end
  return args
end
