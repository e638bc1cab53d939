-- hash_get: KEYS = records hash, index zset; ARGV = prefix, name, ...
-- Returns {position of a found name (1-based), record, ...}.
local names = {}
for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
local records = hmget(KEYS[1], names)
local out = {}
for i = 1, #names do
    if records[i] then
        out[#out + 1] = i
        out[#out + 1] = records[i]
    end
end
return out
