-- charge: ARGV = prefix, amount, has_model ('1'/'0'), model, then per line: scope, window
local amount = ARGV[2]
local model = nil
if ARGV[3] == '1' then model = ARGV[4] end
for i = 5, #ARGV, 2 do add_spend(ARGV[i], ARGV[i + 1], amount, model) end
return 0
