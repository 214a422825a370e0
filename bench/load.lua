-- wrk script: write each key k000000000000000 .. k<KEYS-1> exactly once, then
-- idle on GET /healthz until the driver stops wrk.
--
-- Thread t of T writes keys t, t+T, t+2T, ... Its value is the key repeated
-- and cut to VALUE_BYTES, so a reader can check it. Once every write of a
-- thread has been answered, the thread creates the file DONE_PREFIX<t>; the
-- driver waits for all of them and interrupts wrk (SIGINT), because wrk
-- itself always runs for its whole -d duration.
--
--   wrk -t2 -c32 -d300s -s bench/load.lua http://127.0.0.1:PORT \
--       -- KEYS VALUE_BYTES THREADS DONE_PREFIX

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local keys, size, threads, done_path
local next_index, answered, quota, finished
-- wrk calls request() once on thread 0 to validate the script and never sends
-- that request: thread 0 must not advance past its first key on that call.
local probe_pending

function init(args)
  keys = tonumber(args[1])
  size = tonumber(args[2]) or 100
  threads = tonumber(args[3]) or 1
  done_path = args[4] .. tid
  next_index = tid
  answered = 0
  finished = false
  quota = 0
  if tid < keys then
    quota = math.floor((keys - 1 - tid) / threads) + 1
  end
  probe_pending = (tid == 0)
  wrk.headers["Content-Type"] = "application/json"
  if quota == 0 then
    mark_done()
  end
end

function value_for(key)
  local v = string.rep(key, math.ceil(size / #key))
  return string.sub(v, 1, size)
end

function mark_done()
  finished = true
  local f = io.open(done_path, "w")
  if f then
    f:write(tostring(answered) .. "\n")
    f:close()
  end
end

function request()
  if next_index >= keys then
    return wrk.format("GET", "/healthz")
  end
  local key = string.format("k%015d", next_index)
  if probe_pending then
    probe_pending = false
  else
    next_index = next_index + threads
  end
  return wrk.format("PUT", "/api/v1/keys/" .. key, nil,
                    '{"value":"' .. value_for(key) .. '"}')
end

function response(status, headers, body)
  if finished or string.find(body, '"status":"ok"', 1, true) then
    return
  end
  answered = answered + 1
  if answered >= quota then
    mark_done()
  end
end
