-- wrk script of benchmarks/serving.py: one fixed request read from files named by environment
-- variables, and a machine-readable summary line at the end.
--   WRK_METHOD          GET or POST (default POST)
--   WRK_BODY_FILE       file whose bytes are the request body (binary safe); unset: no body
--   WRK_CONTENT_TYPE    Content-Type header (default application/json)
--   WRK_HEADER_LENGTH   if set, sent as Inference-Header-Content-Length (OIP binary tensor data)
-- No request()/response() callbacks: wrk then builds the request once per thread and never
-- runs Lua per request, which keeps the load generator cheap.

wrk.method = os.getenv("WRK_METHOD") or "POST"
local body_file = os.getenv("WRK_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
end
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx3xx":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
