-- batch: run several reserve, commit, release and extend operations of one namespace (one
-- hash tag, so one slot) in one script, in the order given, each exactly as its own script
-- would: every check of an operation runs before its first write, so one that is refused or
-- invalid writes nothing, and it does not stop the others. An operation that raises (a Redis
-- error, which Redis does not roll back) is answered {'error', message} and the rest still run.
-- KEYS: the keys of every operation, one operation after another.
-- ARGV[1]: a JSON array with one [name, number of keys, [args]] per operation (one argument,
--   decoded in C, rather than hundreds the client would have to frame one by one).
-- Returns one reply per operation, the reply its own script returns.
local ops = {reserve = op_reserve, commit = op_commit, release = op_release, extend = op_extend}
local replies = {}
local k = 1
for i, call in ipairs(cjson.decode(ARGV[1])) do
  local nk = call[2]
  local ok, reply = pcall(ops[call[1]], {unpack(KEYS, k, k + nk - 1)}, call[3])
  k = k + nk
  if not ok then
    if type(reply) == 'table' then
      reply = reply.err
    end
    reply = {'error', tostring(reply)}
  end
  replies[i] = reply
end
return replies
