-- hash_put: KEYS = records hash, index zset; ARGV = prefix, name, record.
-- Budgets and documents: records by name, with an index for listing by prefix.
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 0
