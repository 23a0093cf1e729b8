-- Shared by the cluster workloads (loaded with dofile from the script's own
-- directory). Keys are 16 bytes, "bench:" and 10 digits, over a keyspace of
-- NKEYS; values are 100 bytes. Each wrk thread gets an id (setup) so the
-- threads walk the keyspace from different places.
NKEYS = 10000
VALUE = string.rep("v", 100)

function key(i)
  return string.format("bench:%010d", i)
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function b64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=") .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- Responses other than 2xx, counted by every thread and printed at the end
-- as "non-2xx: N" (wrk itself counts only >= 400, so a 307 from a follower
-- would pass unseen).
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
bad, bad3, bad4, bad5 = 0, 0, 0, 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if status >= 500 then
      bad5 = bad5 + 1
    elseif status >= 400 then
      bad4 = bad4 + 1
    elseif status >= 300 then
      bad3 = bad3 + 1
    end
  end
end
function done(summary, latency, requests)
  local n, n3, n4, n5 = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    n = n + (t:get("bad") or 0)
    n3 = n3 + (t:get("bad3") or 0)
    n4 = n4 + (t:get("bad4") or 0)
    n5 = n5 + (t:get("bad5") or 0)
  end
  io.write(string.format("non-2xx: %d (3xx %d, 4xx %d, 5xx %d)\n", n, n3, n4, n5))
end
