-- wrk doing what the load generator's etcd session does (subjects/etcd EtcdSession), for bench/loadgen.py:
-- JSON POSTs to etcd's v3 gateway, half /v3/kv/put and half /v3/kv/range (linearizable), over 32 keys with
-- base64 keys and values, and an answer counts only when it is HTTP 200 with a "header" (the session's check).
-- Prints one JSON line at the end: requests answered, answers that failed the check, socket errors.
--
--   wrk -t1 -c16 -d5s -s bench/wrk_etcd.lua http://127.0.0.1:PORT -- KEY_PREFIX

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for j = 3, 0, -1 do
      local k = math.floor(n / 64 ^ j) % 64
      chars[#chars + 1] = B64:sub(k + 1, k + 1)
    end
    if not b then chars[3], chars[4] = "=", "=" elseif not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

local keys, values = {}, {}
bad = 0  -- a global: done() reads it from each thread with thread:get
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local prefix = args[1] or "loadgen-k"
  for i = 0, 31 do keys[i + 1] = b64(string.format("chaos/kv/%s%02d", prefix, i)) end
  -- Values shaped like the generator's ("<window tag>-<seq>"), encoded once: wrk's own CPU is measured.
  for i = 1, 1024 do values[i] = b64(string.format("%08d-%d", 12345678, i)) end
  math.randomseed(os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local seq = 0

function request()
  seq = seq + 1
  local key = keys[math.random(1, 32)]
  if math.random() < 0.5 then
    return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. key .. '","value":"' .. values[seq % 1024 + 1] .. '"}')
  end
  return wrk.format(nil, "/v3/kv/range", nil, '{"key":"' .. key .. '"}')
end

function response(status, headers, body)
  if status ~= 200 or not body:find('"header"', 1, true) then bad = bad + 1 end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("bad") end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bad":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, failed, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
