-- charge: ARGV = prefix, amount, has_model ('1'/'0'), model, then per line: scope, window
-- Returns 0, or {-2, index} when line index's spend would pass int64 (nothing changed).
local amount = ARGV[2]
local model = nil
if ARGV[3] == '1' then model = ARGV[4] end
for i = 5, #ARGV, 2 do
    if not fits(redis.call('HGET', k_spent(ARGV[i]), ARGV[i + 1]) or '0', amount) then
        return { -2, (i - 5) / 2 }
    end
end
for i = 5, #ARGV, 2 do add_spend(ARGV[i], ARGV[i + 1], amount, model) end
return 0
