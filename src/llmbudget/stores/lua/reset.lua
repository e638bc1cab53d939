-- reset: ARGV = prefix, scope, window. Zeroes spend (total and per model); holds stay.
local scope, win = ARGV[2], ARGV[3]
redis.call('HDEL', k_spent(scope), win)
redis.call('ZREM', k_wins(scope), win)
redis.call('DEL', k_model(scope, win))
return 0
