-- wrk -s bench/http/batch.lua http://127.0.0.1:4000
-- POST a batch of 100 puts (16-byte keys, 100-byte values) in the original's
-- "K,V" line form; each request writes a different window of keys.
local n = 0
request = function()
  n = n + 1
  local lines = {}
  for i = 1, 100 do
    lines[i] = string.format("bench:%09d,%s", (n * 100 + i) % 1000000, string.rep("v", 100))
  end
  return wrk.format("POST", "/", nil, table.concat(lines, "\n"))
end
