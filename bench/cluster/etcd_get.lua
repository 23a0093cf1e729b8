-- wrk -s bench/cluster/etcd_get.lua http://127.0.0.1:CLIENTPORT
-- Linearizable gets (etcd's default, serializable=false): POST /v3/kv/range
-- for one random key of the loaded keyspace.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local bodies
function init(args)
  bodies = {}
  for i = 0, NKEYS - 1 do
    bodies[i] = '{"key":"' .. b64(key(i)) .. '"}'
  end
  math.randomseed(1 + (id or 0))
end
function request()
  return wrk.format("POST", "/v3/kv/range", nil, bodies[math.random(0, NKEYS - 1)])
end
