-- Sends the raw HTTP/1.1 request in BENCH_REQUEST_FILE (head and body, as the other generators send it) and
-- prints one JSON line with the results (bench/wrkrun.py parses it).
local f = assert(io.open(os.getenv("BENCH_REQUEST_FILE"), "rb"))
local raw = f:read("*a")
f:close()

request = function()
  return raw
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
