-- log_append: KEYS = log zset, sequence counter; ARGV = prefix, at, JSON data.
-- Members are "<20-digit sequence>:<data>": unique even for equal entries, and entries with
-- the same time read back newest first (reverse lexical order among equal scores).
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[2], string.format('%020d', seq) .. ':' .. ARGV[3])
return 0
