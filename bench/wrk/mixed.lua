-- The soak's mix: 1 in 5 requests W1 (POST /tasks), 3 in 5 W2 (GET /tasks/{id} of a random seeded task, BENCH_IDS
-- names a file with one id a line), 1 in 5 W3 (GET /tasks?limit=50).
-- BENCH_DELAY_MS, when set, makes each connection wait that long before each of its requests, to hold the load under
-- the peak (wrk has no fixed-rate mode). wrk waits whole milliseconds, so the fraction is drawn at random: the mean
-- wait is BENCH_DELAY_MS.
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
  ids[#ids + 1] = line
end
math.randomseed(os.time())

-- Formatted once, in init: wrk sets the Host header only then.
local post, list
init = function()
  local headers = { Host = wrk.headers["Host"], ["Content-Type"] = "application/json" }
  post = wrk.format("POST", "/tasks", headers, '{"name":"soak task"}')
  list = wrk.format("GET", "/tasks?limit=50")
end

request = function()
  local pick = math.random(5)
  if pick == 1 then
    return post
  elseif pick == 2 then
    return list
  end
  return wrk.format("GET", "/tasks/" .. ids[math.random(#ids)])
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS"))
if delay_ms then
  local whole = math.floor(delay_ms)
  delay = function()
    return math.random() < delay_ms - whole and whole + 1 or whole
  end
end
