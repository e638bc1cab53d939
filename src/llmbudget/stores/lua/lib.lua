-- llmbudget: helpers prepended to every script (a Redis script cannot import another).
--
-- ARGV[1] of every script is the key prefix "{name}:". Its hash tag puts every key of a
-- store in one Redis Cluster slot, so a script may also reach keys it derives from a
-- hold record (settle, release, purge) without a cross-slot error.
--
-- Amounts travel as decimal strings of non-negative integers (nano-dollars, or counts of
-- requests, tokens or slots for budgets in those units). Lua numbers
-- are doubles, exact only below 2^53 (~$9M here): sums and comparisons of money go
-- through big_add/big_cmp, and Redis' own INCRBY/HINCRBY (64-bit) do the stored sums.

local P = ARGV[1]

local function k_hold(id) return P .. 'hold:' .. id end
local function k_spent(scope) return P .. 'spent:' .. scope end
local function k_wins(scope) return P .. 'wins:' .. scope end
local function k_model(scope, win) return P .. 'model:' .. win .. ':' .. scope end
local function k_held(scope, win) return P .. 'held:' .. win .. ':' .. scope end
local function k_heldsum(scope, win) return P .. 'heldsum:' .. win .. ':' .. scope end
local function k_charge(id) return P .. 'charge:' .. id end
local K_HOLDS = P .. 'holds'
local K_CHARGES = P .. 'charges'
local K_ACTIVE = P .. 'active'

local function big_add(a, b)
    if #a < 16 and #b < 16 then
        -- Both below 10^15: the double sum is exact.
        return string.format('%.0f', tonumber(a) + tonumber(b))
    end
    -- Seven digits at a time: chunk sums stay below 2 * 10^7, exact in a double.
    local chunks, carry, i, j = {}, 0, #a, #b
    while i > 0 or j > 0 or carry > 0 do
        local x, y = 0, 0
        if i > 0 then x = tonumber(string.sub(a, math.max(1, i - 6), i)) end
        if j > 0 then y = tonumber(string.sub(b, math.max(1, j - 6), j)) end
        local d = x + y + carry
        if d >= 10000000 then d, carry = d - 10000000, 1 else carry = 0 end
        chunks[#chunks + 1] = d
        i, j = i - 7, j - 7
    end
    local out = { string.format('%.0f', chunks[#chunks]) }
    for k = #chunks - 1, 1, -1 do out[#out + 1] = string.format('%07d', chunks[k]) end
    return table.concat(out)
end

-- Byte by byte rather than a < b: Lua compares strings with strcoll, and Redis sets
-- LC_COLLATE from the environment.
local function big_cmp(a, b)
    if #a ~= #b then return #a < #b and -1 or 1 end
    for k = 1, #a do
        local x, y = string.byte(a, k), string.byte(b, k)
        if x ~= y then return x < y and -1 or 1 end
    end
    return 0
end

-- The largest value INCRBY/HINCRBY keep: an operation that would pass it is refused
-- before its first write ({-2, line index}), since a script error would not undo them.
local INT64_MAX = '9223372036854775807'
local function fits(a, b) return big_cmp(big_add(a, b), INT64_MAX) <= 0 end

-- Amount still recorded in heldsum for holds of a window that have expired at `now`
-- but were not pruned yet (members are "amount:hold_id", scored by expires_at).
local function expired_sum(scope, win, now)
    local total = '0'
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', k_held(scope, win), '-inf', now)) do
        total = big_add(total, string.sub(member, 1, string.find(member, ':', 1, true) - 1))
    end
    return total
end

-- HMGET in slices: unpack() fails past a few thousand values (Lua's C stack).
local function hmget(key, fields)
    local out = {}
    for first = 1, #fields, 1000 do
        local last = math.min(first + 999, #fields)
        local values = redis.call('HMGET', key, unpack(fields, first, last))
        for k = 1, last - first + 1 do out[first + k - 1] = values[k] end
    end
    return out
end

-- A hold's lines: {scope, window, amount held}. Line i's amount is field a<i>, absent in
-- holds written before lines had amounts of their own: those hold the hold's amount.
local function read_lines(hold, n)
    local fields = { 'a' }
    for i = 1, n do
        fields[#fields + 1] = 'c' .. i
        fields[#fields + 1] = 'w' .. i
        fields[#fields + 1] = 'a' .. i
    end
    local values = hmget(hold, fields)
    local lines = {}
    for i = 1, n do
        lines[i] = { values[3 * i - 1], values[3 * i], values[3 * i + 1] or values[1] }
    end
    return lines
end

-- Stop a hold counting in its windows. Idempotent: purge may have pruned it already.
local function unhold(id, lines)
    for _, line in ipairs(lines) do
        local amount = line[3]
        if redis.call('ZREM', k_held(line[1], line[2]), amount .. ':' .. id) == 1 then
            if redis.call('DECRBY', k_heldsum(line[1], line[2]), amount) == 0 then
                redis.call('DEL', k_heldsum(line[1], line[2]))
            end
        end
    end
    redis.call('ZREM', K_ACTIVE, id)
end

local function add_spend(scope, win, amount, model)
    redis.call('HINCRBY', k_spent(scope), win, amount)
    redis.call('ZADD', k_wins(scope), win, win)
    if model then redis.call('HINCRBY', k_model(scope, win), model, amount) end
end
