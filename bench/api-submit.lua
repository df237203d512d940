-- wrk script: a full job submission, as a CI client sends it: API key + a fresh Idempotency-Key per
-- request (so every request inserts). Same body as the ceiling's post.lua.
-- Env: MOMENTUM_API_KEY, BENCH_RUN (makes keys unique across runs).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
local key = os.getenv("MOMENTUM_API_KEY")
local run = os.getenv("BENCH_RUN") or "run"
local body = '{"type":"pretrain","dataset":"fmnist@1","model":{"arch":"vit_tiny","patch":4},"optim":{"lr":1.5e-4,"batch":256},"epochs":10}'

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
    ["Idempotency-Key"] = run .. "-" .. tostring(tid) .. "-" .. counter,
  }
  return wrk.format("POST", "/v1/jobs", headers, body)
end
