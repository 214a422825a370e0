-- wrk script: PUT /api/v1/keys/<key> with a fixed-size value, keys drawn at
-- random from a key space of KEYS keys (16 bytes each: "k" + 15 digits).
--
--   wrk -t2 -c32 -d10s -s bench/write.lua http://127.0.0.1:PORT -- KEYS VALUE_BYTES

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local keys, body

function init(args)
  keys = tonumber(args[1]) or 10000
  local size = tonumber(args[2]) or 100
  body = '{"value":"' .. string.rep("v", size) .. '"}'
  math.randomseed(os.time() * 1000 + (tid or 0))
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local key = string.format("k%015d", math.random(0, keys - 1))
  return wrk.format("PUT", "/api/v1/keys/" .. key, nil, body)
end
