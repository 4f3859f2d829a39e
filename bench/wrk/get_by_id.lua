-- W2: read seeded tasks at random. BENCH_IDS names a file with one id a line.
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
  ids[#ids + 1] = line
end
math.randomseed(os.time())

request = function()
  return wrk.format("GET", "/tasks/" .. ids[math.random(#ids)])
end
