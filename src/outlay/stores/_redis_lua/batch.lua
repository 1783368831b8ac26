-- batch: run several reserve, commit, release and extend operations of one namespace (one
-- hash tag, so one slot) in one script, in the order given, each exactly as its own script
-- would: every check of an operation runs before its first write, so one that is refused or
-- invalid writes nothing, and it does not stop the others. An operation that raises (a Redis
-- error, which Redis does not roll back) is answered {'error', message} and the rest still run.
-- Each limit is read once, by the first operation that names it, and written once, at the end
-- (common.lua: limit, flush), with every change of the operations that ran, failed ones
-- included (a change is made only after the writes it goes with succeeded).
-- KEYS: the keys the operations name (those the client knows: at least one, for the slot).
-- ARGV[1..4]: the store's (store.lua); ARGV[5]: a JSON array with one [name, [args]] per
--   operation (one argument, decoded in C, rather than hundreds the client would have to
--   frame one by one).
-- Returns one reply per operation, the reply its own script returns.
local ops = {reserve = op_reserve, commit = op_commit, release = op_release, extend = op_extend}
local replies = {}
for i, call in ipairs(cjson.decode(ARGV[5])) do
  local ok, reply = pcall(ops[call[1]], nil, call[2])
  if not ok then
    if type(reply) == 'table' then
      reply = reply.err
    end
    reply = {'error', tostring(reply)}
  end
  replies[i] = reply
end
flush()
return replies
