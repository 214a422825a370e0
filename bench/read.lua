-- wrk script: GET /api/v1/keys/<key>?consistency=MODE of keys drawn at random
-- from KEYS keys that must already exist (a 404 shows up as a non-2xx answer).
--
--   wrk -t2 -c32 -d10s -s bench/read.lua http://127.0.0.1:PORT -- KEYS MODE

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local keys, suffix

function init(args)
  keys = tonumber(args[1]) or 10000
  suffix = "?consistency=" .. (args[2] or "linearizable")
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  local key = string.format("k%015d", math.random(0, keys - 1))
  return wrk.format("GET", "/api/v1/keys/" .. key .. suffix)
end
