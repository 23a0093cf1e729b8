-- wrk -s bench/cluster/bitraft_put.lua http://127.0.0.1:LEADERPORT
-- PUT /kv/{16-byte key} with a 100-byte value; each thread walks the
-- keyspace in order from its own offset (the same keys as etcd_put.lua).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local n
function init(args)
  n = (id or 0) * 5003
end
function request()
  n = n + 1
  return wrk.format("PUT", "/kv/" .. key(n % NKEYS), nil, VALUE)
end
