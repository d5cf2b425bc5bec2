-- POST bodies for wrk (bench/lib.ts runs it). Arguments after `--`:
--   pick <file>             {"openid":"bench_<n>"}, n at random among the file's numbers (one a
--                           line); every request is formatted once, in init, so request() costs
--                           one table lookup
--   range <lo> <hi>         the same with n at random in lo..hi
--   sequence <file> <T>     n in the file's order, never twice: thread t of T takes lines t, t+T, …
--   update <lo> <hi>        {"user_id":<random lo..hi>,"update":{"nick_name":"改名😀<k>"}}
-- done() prints one line, `WRK_JSON {…}`: counts, latency percentiles (µs) and the CPU wrk
-- itself used (utime + stime from /proc/self/stat, clock ticks). A non-2xx answer and a 2xx whose
-- envelope is not {"code":0,…} are counted by response(); socket errors by wrk.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local mode, reqs, ids, lo, hi, stride
-- Globals, not locals: done() reads them from each thread with thread:get().
cursor, sent, non2xx, notok, wrapped = 0, 0, 0, 0, 0

local function numbers(file)
  local out = {}
  for line in io.lines(file) do out[#out + 1] = tonumber(line) end
  return out
end

local function login(n)
  return wrk.format(nil, nil, nil, '{"openid":"bench_' .. n .. '"}')
end

function init(args)
  mode = args[1]
  if mode == "pick" then
    reqs = {}
    for i, n in ipairs(numbers(args[2])) do reqs[i] = login(n) end
  elseif mode == "range" or mode == "update" then
    lo, hi = tonumber(args[2]), tonumber(args[3])
  elseif mode == "sequence" then
    ids = numbers(args[2])
    stride = tonumber(args[3])
    cursor = tid + 1
  else
    error("unknown mode " .. tostring(mode))
  end
  math.randomseed(os.time() * 1000 + tid)
end

function request()
  sent = sent + 1
  if mode == "pick" then
    return reqs[math.random(#reqs)]
  elseif mode == "range" then
    return login(math.random(lo, hi))
  elseif mode == "sequence" then
    if cursor > #ids then
      cursor = tid + 1
      wrapped = 1
    end
    local n = ids[cursor]
    cursor = cursor + stride
    return login(n)
  else
    return wrk.format(nil, nil, nil,
      '{"user_id":' .. math.random(lo, hi) .. ',"update":{"nick_name":"改名😀' .. sent .. '"}}')
  end
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif body:sub(1, 10) ~= '{"code":0,' then
    notok = notok + 1
  end
end

function done(summary, latency, requests)
  local s, n, k, w = 0, 0, 0, 0
  local used = 0
  for _, t in ipairs(threads) do
    s = s + t:get("sent")
    n = n + t:get("non2xx")
    k = k + t:get("notok")
    w = math.max(w, t:get("wrapped"))
    -- the furthest line any thread reached: the next run starts after it
    local c = t:get("cursor") or 0
    if c - 1 > used then used = c - 1 end
  end
  local f = io.open("/proc/self/stat")
  local stat = f:read("*a")
  f:close()
  -- fields after the command name, which ends at the last ')': utime and stime are the 12th and 13th
  local rest = stat:sub(stat:match(".*()%)") + 2)
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"status":%d,"non2xx":%d,"notok":%d,"sent":%d,"used":%d,"wrapped":%d,' ..
    '"p50":%.1f,"p99":%.1f,"max":%.1f,"cpu_ticks":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status, n, k, s, used, w,
    latency:percentile(50), latency:percentile(99), latency.max,
    tonumber(fields[12]) + tonumber(fields[13])))
end
