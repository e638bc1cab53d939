-- charge: ARGV = prefix, amount, has_model ('1'/'0'), model, charge_id ('' = none), now,
-- then per line: scope, window. KEYS[1], KEYS[2]: the charge record and the charges ZSET.
-- Returns 1 when recorded, 0 when charge_id was already charged with this amount on these
-- scopes (a retry: nothing recorded), {-1} when charge_id was used for another charge,
-- {-2, index} when line index's spend would pass int64 (nothing changed).
local amount, id, now = ARGV[2], ARGV[5], ARGV[6]
local model = nil
if ARGV[3] == '1' then model = ARGV[4] end
-- The charge's scopes, distinct and sorted byte-wise: its identity with the amount.
local seen, scopes = {}, {}
for i = 7, #ARGV, 2 do
    if not seen[ARGV[i]] then
        seen[ARGV[i]] = true
        scopes[#scopes + 1] = ARGV[i]
    end
end
-- big_cmp orders by length, then byte by byte: a total order, so one set, one order.
table.sort(scopes, function(a, b) return big_cmp(a, b) < 0 end)
-- Length-prefixed, so no scope text can make two different sets look alike.
local parts = { amount }
for _, scope in ipairs(scopes) do parts[#parts + 1] = #scope .. ':' .. scope end
local identity = table.concat(parts, '|')
if id ~= '' then
    local found = redis.call('GET', k_charge(id))
    if found then
        if found == identity then return 0 end
        return { -1 }
    end
end
for i = 7, #ARGV, 2 do
    if not fits(redis.call('HGET', k_spent(ARGV[i]), ARGV[i + 1]) or '0', amount) then
        return { -2, (i - 7) / 2 }
    end
end
for i = 7, #ARGV, 2 do add_spend(ARGV[i], ARGV[i + 1], amount, model) end
if id ~= '' then
    redis.call('SET', k_charge(id), identity)
    redis.call('ZADD', K_CHARGES, now, id)
end
return 1
