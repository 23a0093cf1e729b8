-- wrk -s bench/cluster/bitraft_range.lua http://127.0.0.1:LEADERPORT
-- Linearizable ranges of 100 keys: GET /kv?start={random key}&limit=100.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
function init(args)
  math.randomseed(1 + (id or 0))
end
function request()
  return wrk.format("GET", "/kv?start=" .. key(math.random(0, NKEYS - 101)) .. "&limit=100")
end
