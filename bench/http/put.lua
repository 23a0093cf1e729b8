-- wrk -s bench/http/put.lua http://127.0.0.1:4000
-- PUT one key with a 100-byte value, over and over (each acknowledged after
-- its fdatasync under --sync always; concurrent connections share syncs).
wrk.method = "PUT"
wrk.path = "/kv/bench:1"
wrk.body = string.rep("v", 100)
