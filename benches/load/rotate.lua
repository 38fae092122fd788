-- wrk script: every request carries the next bearer token from $LOAD_TOKENS (one per
-- line, many tenants) plus a spoofed identity header the proxy must strip. Requests
-- are formatted once in init() so wrk spends its core on sending, not on Lua.
-- done() prints one machine-readable line for benches/load.rs.
local requests = {}
local next_request = 1

function init(args)
  for token in io.lines(os.getenv("LOAD_TOKENS")) do
    requests[#requests + 1] = wrk.format("GET", "/api/orders", {
      ["Authorization"] = "Bearer " .. token,
      ["X-Isogate-Tenant"] = "spoofed",
    })
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOAD_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
