-- usage: snapshot one limit after dropping its expired holds.
-- KEYS[1] limit hash, KEYS[2] holds zset. Returns {cap, spent, held, u, p} or {}.
return current(KEYS[1], KEYS[2]) or {}
