-- wrk -s bench/cluster/etcd_put.lua http://127.0.0.1:CLIENTPORT
-- etcd's JSON gateway: POST /v3/kv/put, base64 16-byte key, 100-byte value;
-- each thread walks the keyspace in order from its own offset.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
local bodies, n
function init(args)
  bodies = {}
  local v = b64(VALUE)
  for i = 0, NKEYS - 1 do
    bodies[i] = '{"key":"' .. b64(key(i)) .. '","value":"' .. v .. '"}'
  end
  n = (id or 0) * 5003
end
function request()
  n = n + 1
  return wrk.format("POST", "/v3/kv/put", nil, bodies[n % NKEYS])
end
