-- hash_create: KEYS = records hash, index zset; ARGV = prefix, name, record.
-- Inserts only if absent; returns 1 if this call inserted it.
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
