-- hash_list: KEYS = records hash, index zset; ARGV = prefix, lex min, lex max (ZRANGEBYLEX
-- bounds: byte order, which for UTF-8 is code point order).
-- Returns {name, record, name, record, ...} sorted by name.
local names = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3])
local records = hmget(KEYS[1], names)
local out = {}
for i = 1, #names do
    if records[i] then
        out[#out + 1] = names[i]
        out[#out + 1] = records[i]
    end
end
return out
