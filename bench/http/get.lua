-- wrk -s bench/http/get.lua http://127.0.0.1:4000
-- GET one key (put it first: curl -X PUT --data-binary v localhost:4000/kv/bench:1).
wrk.method = "GET"
wrk.path = "/kv/bench:1"
