-- purge: ARGV = prefix, now, cutoff (now - retention), batch.
-- Prunes holds expired at `now` from their windows, forgets hold records that expired at or
-- before `cutoff`, at most `batch` of each per call (a script blocks the server while it runs).
-- Also forgets charge ids recorded at or before `cutoff`. Returns {pruned, removed, charges}.
local now, cutoff, batch = ARGV[2], ARGV[3], tonumber(ARGV[4])
local pruned = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(pruned) do
    local hold = k_hold(id)
    local n = redis.call('HGET', hold, 'n')
    if n then
        unhold(id, read_lines(hold, tonumber(n)))
    else
        redis.call('ZREM', K_ACTIVE, id)
    end
end
local removed = redis.call('ZRANGEBYSCORE', K_HOLDS, '-inf', cutoff, 'LIMIT', 0, batch)
for _, id in ipairs(removed) do
    local hold = k_hold(id)
    if redis.call('ZSCORE', K_ACTIVE, id) then
        unhold(id, read_lines(hold, tonumber(redis.call('HGET', hold, 'n'))))
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
