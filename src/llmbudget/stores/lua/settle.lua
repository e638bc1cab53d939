-- settle: ARGV = prefix, hold_id, actual, has_model ('1'/'0'), model, has_log ('1'/'0'),
-- log kind, log at, log JSON, then pairs of scope, actual: the lines of those scopes
-- record that actual instead. With a log, KEYS[3] and KEYS[4] are its zset and sequence
-- (as log_append's): the entry is appended only by the call that settles the hold.
-- Returns {} for an unknown hold, {-2, index} when line index's spend would pass int64
-- (nothing changed), else {actual recorded, 1 if it replayed an earlier settle}.
local id, actual = ARGV[2], ARGV[3]
local model = nil
if ARGV[4] == '1' then model = ARGV[5] end
local over = {}
for i = 10, #ARGV, 2 do over[ARGV[i]] = ARGV[i + 1] end
local hold = k_hold(id)
local h = redis.call('HMGET', hold, 's', 't', 'n')
if not h[1] then return {} end
if h[1] == 's' then return { h[2], 1 } end
local lines = read_lines(hold, tonumber(h[3]))
for i, line in ipairs(lines) do
    if not fits(redis.call('HGET', k_spent(line[1]), line[2]) or '0', over[line[1]] or actual) then
        return { -2, i - 1 }
    end
end
if h[1] == 'h' then unhold(id, lines) end
-- A released or expired hold still records: the money was spent.
for _, line in ipairs(lines) do add_spend(line[1], line[2], over[line[1]] or actual, model) end
redis.call('HSET', hold, 's', 's', 't', actual)
if ARGV[6] == '1' then
    local seq = redis.call('INCR', KEYS[4])
    redis.call('ZADD', KEYS[3], ARGV[8], string.format('%020d', seq) .. ':' .. ARGV[9])
end
return { actual, 0 }
