-- The soak mix: create, list and retrieve in turn through the gateway, each
-- thread stopping after its quota of responses (BENCH_QUOTA), so a run is a
-- request count rather than a duration. Requests are formatted once in init().
-- Env: BENCH_HEADERS ("Name: value" lines), BENCH_BODY_FILE (the create body),
-- BENCH_CREATE_PATH, BENCH_LIST_PATH, BENCH_RETRIEVE_PATH.
-- done() prints: BENCH_SOAK {"responses": N, "unexpected": N}.

local quota = tonumber(os.getenv("BENCH_QUOTA") or "10000")
local requests_ = {}
local turn = 0
responses = 0
unexpected = 0

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local headers = {}
  for name, value in (os.getenv("BENCH_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
    headers[name] = value
  end
  local post_headers = {["Content-Type"] = "application/json"}
  for k, v in pairs(headers) do post_headers[k] = v end
  requests_[1] = wrk.format("POST", os.getenv("BENCH_CREATE_PATH"), post_headers, read_file(os.getenv("BENCH_BODY_FILE")))
  requests_[2] = wrk.format("GET", os.getenv("BENCH_LIST_PATH"), headers)
  requests_[3] = wrk.format("GET", os.getenv("BENCH_RETRIEVE_PATH"), headers)
end

function request()
  turn = turn % 3 + 1
  return requests_[turn]
end

function response(status, headers, body)
  responses = responses + 1
  if not (status == 200 or status == 201) then
    unexpected = unexpected + 1
  end
  if responses == quota then
    -- wrk's main thread sleeps for all of -d whatever the threads do: tell
    -- run.py, which then interrupts wrk (SIGINT ends the run and calls done()).
    io.stderr:write("BENCH_QUOTA_REACHED\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total, bad = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("responses")
    bad = bad + thread:get("unexpected")
  end
  io.write(string.format('BENCH_SOAK {"responses": %d, "unexpected": %d, "p50_us": %d, "p99_us": %d}\n',
    total, bad, latency:percentile(50), latency:percentile(99)))
end
