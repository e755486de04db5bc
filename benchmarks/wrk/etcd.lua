-- etcd.lua -- closed-loop key-value load for wrk (1 request in flight per connection) in the etcd v3
-- JSON gateway's shape (keys and values base64); benchmarks/vs_etcd.py runs it against etcd:
--   put:   POST $PUT_PATH   {"key": b64(key), "value": b64(value)}
--   range: POST $RANGE_PATH {"key": b64(key)}                  (linearizable, etcd default)
--          POST $RANGE_PATH {"key": b64(key), "serializable": true}   (when SERIALIZABLE=1)
--
-- Environment (all optional):
--   OP=put|range          operation (default put)
--   SERIALIZABLE=1        add "serializable": true to range bodies
--   PUT_PATH=/v3/kv/put   RANGE_PATH=/v3/kv/range
--   VALUE_SIZE=256        bytes of value for put
--   KEYS_PER_THREAD=10000 distinct put keys per wrk thread (bench/<thread>/<i>), cycled
--   READ_KEYS=1000        range keys are bench/r/<i>, i uniform in [0, READ_KEYS) -- pre-populate them!
--   MAX_REQS=0            per-thread request cap (0 = none); the thread stops once reached
--
-- Output: done() prints one machine-readable line starting with "RESULT".
-- Requests are pre-formatted in init() so the per-request Lua cost is a table lookup.

local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(v / 262144) % 64
    local c2 = math.floor(v / 4096) % 64
    local c3 = math.floor(v / 64) % 64
    local c4 = v % 64
    out[#out + 1] = chars:sub(c1 + 1, c1 + 1) .. chars:sub(c2 + 1, c2 + 1)
      .. (b and chars:sub(c3 + 1, c3 + 1) or '=') .. (c and chars:sub(c4 + 1, c4 + 1) or '=')
  end
  return table.concat(out)
end

local function envnum(name, default)
  local v = os.getenv(name)
  if v == nil or v == '' then return default end
  return tonumber(v)
end

local op = os.getenv('OP') or 'put'
local serializable = os.getenv('SERIALIZABLE') == '1'
local put_path = os.getenv('PUT_PATH') or '/v3/kv/put'
local range_path = os.getenv('RANGE_PATH') or '/v3/kv/range'
local value_size = envnum('VALUE_SIZE', 256)
local keys_per_thread = envnum('KEYS_PER_THREAD', 10000)
local read_keys = envnum('READ_KEYS', 1000)
local max_reqs = envnum('MAX_REQS', 0)

-- main-thread state: hand each thread an id
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set('tid', next_id)
end

-- per-thread state
local pool, pool_n, idx, sent = {}, 0, 0, 0

function init(args)
  local tid = tonumber(wrk.thread:get('tid')) or 0
  local headers = { ['Content-Type'] = 'application/json' }
  if op == 'put' then
    local v = b64(string.rep('v', value_size))
    for i = 0, keys_per_thread - 1 do
      local body = '{"key":"' .. b64('bench/' .. tid .. '/' .. i) .. '","value":"' .. v .. '"}'
      pool[#pool + 1] = wrk.format('POST', put_path, headers, body)
    end
  else
    local extra = serializable and ',"serializable":true' or ''
    for i = 0, read_keys - 1 do
      local body = '{"key":"' .. b64('bench/r/' .. i) .. '"' .. extra .. '}'
      pool[#pool + 1] = wrk.format('POST', range_path, headers, body)
    end
    -- different random order per thread
    math.randomseed(tid * 7919 + os.time())
  end
  pool_n = #pool
end

function request()
  sent = sent + 1
  if max_reqs > 0 and sent > max_reqs then wrk.thread:stop() end
  if op == 'put' then
    idx = idx % pool_n + 1
  else
    idx = math.random(pool_n)
  end
  return pool[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  local dur = summary.duration / 1e6
  io.write(string.format(
    'RESULT op=%s%s requests=%d duration_s=%.3f rps=%.1f mean_ms=%.3f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f ' ..
    'err_status=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n',
    op, (op ~= 'put' and serializable) and '_serializable' or '',
    summary.requests, dur, summary.requests / dur, latency.mean / 1000,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect, e.read, e.write, e.timeout))
end
