-- reserve: ARGV = prefix, hold_id, amount, expires_at, now, then per line: scope, window,
-- limit ('' = none), the line's amount ('' = the reserve's amount).
-- Returns {} when held (or already held identically under this id), {-1} when the id is
-- taken by a hold that has ended or has another amount or other lines, {-2, index} when
-- line index's counters would pass int64, else {index, spent, heldsum, expired}.
local id, amount, expires_at, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local hold = k_hold(id)
local n = (#ARGV - 5) / 4
local function arg(i, k) return ARGV[1 + 4 * i + k] end
local function need(i)
    local own = arg(i, 4)
    if own == '' then return amount end
    return own
end
local h = redis.call('HMGET', hold, 's', 'a', 'n')
if h[1] then
    -- A retry of this very reserve: the hold must still be live and identical.
    if h[1] ~= 'h' or h[2] ~= amount or tonumber(h[3]) ~= n then return { -1 } end
    local wanted = {}
    for i = 1, n do
        local scope, win = arg(i, 1), arg(i, 2)
        wanted[scope] = wanted[scope] or {}
        wanted[scope][win] = need(i)
    end
    -- Lines within one call are distinct (validated), so equal counts and inclusion
    -- mean equal sets.
    for _, line in ipairs(read_lines(hold, n)) do
        if not (wanted[line[1]] and wanted[line[1]][line[2]] == line[3]) then return { -1 } end
    end
    return {}
end
for i = 1, n do
    local scope, win, limit, take = arg(i, 1), arg(i, 2), arg(i, 3), need(i)
    local spent = redis.call('HGET', k_spent(scope), win) or '0'
    local heldsum = redis.call('GET', k_heldsum(scope, win)) or '0'
    -- Every line, limited or not: heldsum (expired holds not yet pruned included) and
    -- spend must stay within int64.
    if not fits(big_add(spent, heldsum), take) then return { -2, i - 1 } end
    if limit ~= '' then
        local expired = expired_sum(scope, win, now)
        -- spent + (heldsum - expired) + take > limit, without a subtraction
        if big_cmp(big_add(big_add(spent, heldsum), take), big_add(limit, expired)) > 0 then
            return { i - 1, spent, heldsum, expired }
        end
    end
end
local record = { 's', 'h', 'a', amount, 'e', expires_at, 'n', n }
for i = 1, n do
    local scope, win, take = arg(i, 1), arg(i, 2), need(i)
    redis.call('ZADD', k_held(scope, win), expires_at, take .. ':' .. id)
    redis.call('INCRBY', k_heldsum(scope, win), take)
    record[#record + 1] = 'c' .. i
    record[#record + 1] = scope
    record[#record + 1] = 'w' .. i
    record[#record + 1] = win
    if take ~= amount then
        record[#record + 1] = 'a' .. i
        record[#record + 1] = take
    end
end
redis.call('HSET', hold, unpack(record))
redis.call('ZADD', K_HOLDS, expires_at, id)
redis.call('ZADD', K_ACTIVE, expires_at, id)
return {}
