-- wrk -s bench/http/range.lua http://127.0.0.1:4000
-- Ranges of 100 keys as NDJSON, after loading keys with batch.lua.
local n = 0
request = function()
  n = n + 1
  local start = string.format("bench:%09d", (n * 997) % 900000)
  return wrk.format("GET", "/kv?start=" .. start .. "&limit=100")
end
