-- usage: ARGV = prefix, scope, window, now. Read only.
-- Returns {spent, heldsum, expired-but-unpruned, {model, spent, model, spent, ...}}.
local scope, win, now = ARGV[2], ARGV[3], ARGV[4]
return {
    redis.call('HGET', k_spent(scope), win) or '0',
    redis.call('GET', k_heldsum(scope, win)) or '0',
    expired_sum(scope, win, now),
    redis.call('HGETALL', k_model(scope, win)),
}
