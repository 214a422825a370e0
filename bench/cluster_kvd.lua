-- wrk script for bench/cluster_vs_etcd.py: kvd's HTTP API over KEYS keys.
--
--   wrk -t2 -c32 -d10s --latency -s bench/cluster_kvd.lua http://127.0.0.1:PORT \
--       -- MODE KEYS VALUE_BYTES
--
-- MODE is one of
--   put    PUT /api/v1/keys/<key> {"value": "<VALUE_BYTES bytes>"}
--   get    GET /api/v1/keys/<key>                    (linearizable, the default)
--   stale  GET /api/v1/keys/<key>?consistency=stale
-- Keys are "k" + 15 digits (16 bytes), drawn uniformly from KEYS keys; every
-- request is built once in init(), so request() costs wrk almost nothing.
-- The same key names and value as cluster_etcd.lua.

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local requests, count

function init(args)
  local mode = args[1] or "put"
  local keys = tonumber(args[2]) or 1000
  local size = tonumber(args[3]) or 100
  local body = '{"value":"' .. string.rep("v", size) .. '"}'
  wrk.headers["Content-Type"] = "application/json"
  requests = {}
  for i = 0, keys - 1 do
    local path = "/api/v1/keys/" .. string.format("k%015d", i)
    if mode == "put" then
      requests[i + 1] = wrk.format("PUT", path, nil, body)
    elseif mode == "get" then
      requests[i + 1] = wrk.format("GET", path)
    elseif mode == "stale" then
      requests[i + 1] = wrk.format("GET", path .. "?consistency=stale")
    else
      error("unknown mode " .. mode)
    end
  end
  count = keys
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  return requests[math.random(1, count)]
end
