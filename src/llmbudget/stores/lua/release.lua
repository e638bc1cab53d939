-- release: ARGV = prefix, hold_id. Returns -1 unknown, 0 already ended, 1 released.
local id = ARGV[2]
local hold = k_hold(id)
local h = redis.call('HMGET', hold, 's', 'n')
if not h[1] then return -1 end
if h[1] ~= 'h' then return 0 end
unhold(id, read_lines(hold, tonumber(h[2])))
redis.call('HSET', hold, 's', 'r')
return 1
