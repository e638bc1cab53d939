-- history: ARGV = prefix, scope, limit (> 0). Returns {{window, ...}, {spent, ...}}, newest first.
local scope = ARGV[2]
local wins = redis.call('ZREVRANGEBYSCORE', k_wins(scope), '+inf', '-inf', 'LIMIT', 0, tonumber(ARGV[3]))
return { wins, hmget(k_spent(scope), wins) }
