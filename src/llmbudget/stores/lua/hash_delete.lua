-- hash_delete: KEYS = records hash, index zset; ARGV = prefix, name. Returns 1 if it existed.
redis.call('ZREM', KEYS[2], ARGV[2])
return redis.call('HDEL', KEYS[1], ARGV[2])
