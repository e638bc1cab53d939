-- reserve: ARGV = prefix, hold_id, amount, expires_at, now, then per line: scope, window, limit ('' = none)
-- Returns {} when held (or already held under this id), else {index, spent, heldsum, expired}.
local id, amount, expires_at, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local hold = k_hold(id)
if redis.call('EXISTS', hold) == 1 then return {} end
local n = (#ARGV - 5) / 3
for i = 1, n do
    local scope, win, limit = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
    if limit ~= '' then
        local spent = redis.call('HGET', k_spent(scope), win) or '0'
        local heldsum = redis.call('GET', k_heldsum(scope, win)) or '0'
        local expired = expired_sum(scope, win, now)
        -- spent + (heldsum - expired) + amount > limit, without a subtraction
        if big_cmp(big_add(big_add(spent, heldsum), amount), big_add(limit, expired)) > 0 then
            return { i - 1, spent, heldsum, expired }
        end
    end
end
local member = amount .. ':' .. id
local record = { 's', 'h', 'a', amount, 'e', expires_at, 'n', n }
for i = 1, n do
    local scope, win = ARGV[3 + 3 * i], ARGV[4 + 3 * i]
    redis.call('ZADD', k_held(scope, win), expires_at, member)
    redis.call('INCRBY', k_heldsum(scope, win), amount)
    record[#record + 1] = 'c' .. i
    record[#record + 1] = scope
    record[#record + 1] = 'w' .. i
    record[#record + 1] = win
end
redis.call('HSET', hold, unpack(record))
redis.call('ZADD', K_HOLDS, expires_at, id)
redis.call('ZADD', K_ACTIVE, expires_at, id)
return {}
