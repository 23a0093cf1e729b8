-- wrk -s bench/cluster/bitraft_get.lua http://127.0.0.1:LEADERPORT
-- Linearizable gets (the default consistency): GET /kv/{random key}.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
function init(args)
  math.randomseed(1 + (id or 0))
end
function request()
  return wrk.format("GET", "/kv/" .. key(math.random(0, NKEYS - 1)))
end
