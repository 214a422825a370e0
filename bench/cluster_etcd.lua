-- wrk script for bench/cluster_vs_etcd.py: etcd's v3 JSON gateway over KEYS keys.
--
--   wrk -t2 -c32 -d10s --latency -s bench/cluster_etcd.lua http://127.0.0.1:PORT \
--       -- MODE KEYS VALUE_BYTES
--
-- MODE is one of
--   put           POST /v3/kv/put   {"key": b64, "value": b64(<VALUE_BYTES bytes>)}
--   range         POST /v3/kv/range {"key": b64}                       (linearizable)
--   serializable  POST /v3/kv/range {"key": b64, "serializable": true} (local read)
-- Keys are "k" + 15 digits (16 bytes), drawn uniformly from KEYS keys; every
-- request is built once in init(), so request() costs wrk almost nothing.
-- The same key names and value as cluster_kvd.lua.

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for j = 1, 4 do
      local sextet = math.floor(n / 2 ^ (6 * (4 - j))) % 64
      chars[j] = alphabet:sub(sextet + 1, sextet + 1)
    end
    if not b then chars[3] = "=" end
    if not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

local requests, count

function init(args)
  local mode = args[1] or "put"
  local keys = tonumber(args[2]) or 1000
  local size = tonumber(args[3]) or 100
  local value = base64(string.rep("v", size))
  wrk.headers["Content-Type"] = "application/json"
  requests = {}
  for i = 0, keys - 1 do
    local key = base64(string.format("k%015d", i))
    local method, path, body
    if mode == "put" then
      path, body = "/v3/kv/put", '{"key":"' .. key .. '","value":"' .. value .. '"}'
    elseif mode == "range" then
      path, body = "/v3/kv/range", '{"key":"' .. key .. '"}'
    elseif mode == "serializable" then
      path, body = "/v3/kv/range", '{"key":"' .. key .. '","serializable":true}'
    else
      error("unknown mode " .. mode)
    end
    requests[i + 1] = wrk.format("POST", path, nil, body)
  end
  count = keys
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  return requests[math.random(1, count)]
end
