-- purge: ARGV = prefix, now, cutoff (now - retention), batch.
-- Prunes holds expired at `now` from their windows, forgets hold records that expired at or
-- before `cutoff`, at most `batch` of each per call (a script blocks the server while it runs).
-- Also forgets charge ids recorded at or before `cutoff`. Returns {pruned, removed, charges}.
local now, cutoff, batch = ARGV[2], ARGV[3], tonumber(ARGV[4])
local pruned = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(pruned) do
    local hold = k_hold(id)
    local h = redis.call('HMGET', hold, 'a', 'n')
    if h[1] then
        unhold(id, h[1], read_lines(hold, tonumber(h[2])))
    else
        redis.call('ZREM', K_ACTIVE, id)
    end
end
local removed = redis.call('ZRANGEBYSCORE', K_HOLDS, '-inf', cutoff, 'LIMIT', 0, batch)
for _, id in ipairs(removed) do
    local hold = k_hold(id)
    if redis.call('ZSCORE', K_ACTIVE, id) then
        local h = redis.call('HMGET', hold, 'a', 'n')
        unhold(id, h[1], read_lines(hold, tonumber(h[2])))
    end
    redis.call('DEL', hold)
    redis.call('ZREM', K_HOLDS, id)
end
local charges = redis.call('ZRANGEBYSCORE', K_CHARGES, '-inf', cutoff, 'LIMIT', 0, batch)
for _, id in ipairs(charges) do
    redis.call('DEL', k_charge(id))
    redis.call('ZREM', K_CHARGES, id)
end
return { #pruned, #removed, #charges }
