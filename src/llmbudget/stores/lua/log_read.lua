-- log_read: KEYS = log zset; ARGV = prefix, max ('(' .. until), min (since), limit.
-- Returns {member, score, ...}, newest first.
return redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[3], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
