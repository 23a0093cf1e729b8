-- wrk -s bench/cluster/etcd_range.lua http://127.0.0.1:CLIENTPORT
-- Linearizable ranges of 100 keys: POST /v3/kv/range from a random key to
-- the end of the "bench:" prefix, limit 100.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local bodies
function init(args)
  bodies = {}
  local range_end = b64("bench;") -- the prefix with its last byte + 1
  for i = 0, NKEYS - 101 do
    bodies[i] = '{"key":"' .. b64(key(i)) .. '","range_end":"' .. range_end .. '","limit":100}'
  end
  math.randomseed(1 + (id or 0))
end
function request()
  return wrk.format("POST", "/v3/kv/range", nil, bodies[math.random(0, NKEYS - 101)])
end
