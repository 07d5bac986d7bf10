#!lua name=ferry_fleet
--[[
Fleet coordination around every AI provider call: ONE call before it
(ferry_admit) and ONE after it (ferry_settle), so the limiter, the
concurrency leases and the circuit breaker cost two round trips in all.

Per provider, all keys share the hash tag {<prefix>:provider:<name>}:
  rate        GCRA theoretical arrival time (ms) for requests
  tokens      GCRA theoretical arrival time (ms) for tokens
  leases      sorted set of in-flight call leases, scored by expiry (ms)
  breaker     hash: state (closed|open|half_open), open_until, probe,
              probe_until, reason, changed_at, slow_until (a 429 hint)
  window      hash of per-second counters "<sec>:c" (calls), "<sec>:f" (failures)
Time is Redis TIME: the fleet shares one clock.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- GCRA (the algorithm of redis-cell). `interval` ms per unit, `burst` units
-- may go back to back. Returns allowed, wait (ms), the new TAT to store.
local function gcra(key, now, interval, burst, cost)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  if cost > burst then
    cost = burst
  end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - interval * burst
  if allow_at > now then
    return false, math.ceil(allow_at - now), tat
  end
  return true, 0, new_tat
end

-- KEYS: rate, tokens, leases, breaker, window
-- ARGV: 1 requests/min (0: no limit), 2 request burst, 3 tokens/min (0: no
--       limit), 4 estimated tokens, 5 max concurrency (0: no limit),
--       6 lease id, 7 lease ttl (ms), 8 probe ttl (ms)
-- -> {'ok', 0, 'call'|'probe'} or {'open'|'rate'|'tokens'|'concurrency', wait ms}
local function admit(keys, args)
  local now = now_ms()
  local rpm, burst, tpm = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local cost, max_conc = tonumber(args[4]), tonumber(args[5])
  local b = redis.call('HMGET', keys[4], 'state', 'open_until', 'probe', 'probe_until', 'slow_until')
  local state = b[1] or 'closed'
  local role = 'call'
  if state == 'open' then
    local open_until = tonumber(b[2] or '0')
    if now < open_until then
      return {'open', open_until - now}
    end
    state = 'half_open'
  end
  if state == 'half_open' then
    local probe_until = tonumber(b[4] or '0')
    if b[3] and now < probe_until then
      return {'open', probe_until - now}
    end
    role = 'probe'
  end
  local slow_until = tonumber(b[5] or '0')
  if slow_until > now then
    return {'rate', slow_until - now}
  end
  if max_conc > 0 then
    redis.call('ZREMRANGEBYSCORE', keys[3], '-inf', now)
    if redis.call('ZCARD', keys[3]) >= max_conc then
      local first = redis.call('ZRANGE', keys[3], 0, 0, 'WITHSCORES')
      local wait = 50
      if first[2] then
        wait = math.min(wait, tonumber(first[2]) - now)
      end
      return {'concurrency', math.max(wait, 1)}
    end
  end
  local rate_tat, token_tat
  if rpm > 0 then
    local ok, wait
    ok, wait, rate_tat = gcra(keys[1], now, 60000 / rpm, burst, 1)
    if not ok then
      return {'rate', wait}
    end
  end
  if tpm > 0 then
    local ok, wait
    ok, wait, token_tat = gcra(keys[2], now, 60000 / tpm, tpm, cost)
    if not ok then
      return {'tokens', wait}
    end
  end
  -- Every check passed: take what was checked.
  if rpm > 0 then
    redis.call('SET', keys[1], rate_tat, 'PX', math.ceil(rate_tat - now) + 60000)
  end
  if tpm > 0 then
    redis.call('SET', keys[2], token_tat, 'PX', math.ceil(token_tat - now) + 60000)
  end
  if max_conc > 0 then
    redis.call('ZADD', keys[3], now + tonumber(args[7]), args[6])
    redis.call('PEXPIRE', keys[3], tonumber(args[7]) * 2)
  end
  if role == 'probe' then
    redis.call('HSET', keys[4], 'state', 'half_open', 'probe', args[6], 'probe_until', now + tonumber(args[8]), 'changed_at', now)
  end
  return {'ok', 0, role}
end

local function open_breaker(key, now, until_ms, reason)
  redis.call('HSET', key, 'state', 'open', 'open_until', until_ms, 'reason', reason, 'changed_at', now)
  redis.call('HDEL', key, 'probe', 'probe_until')
end

-- KEYS: rate, tokens, leases, breaker, window
-- ARGV: 1 lease id, 2 role ('call'|'probe'), 3 result ('ok'|'fail'|'quota'|
--       'auth'|'rate_limited'|'neutral'), 4 token correction (actual -
--       estimate), 5 hint (ms; a 429's Retry-After), 6 window (s), 7 minimum
--       calls, 8 failure ratio to open, 9 open for (ms), 10 open for after
--       quota/auth (ms), 11 tokens/min, 12 reason text
-- -> {state after, 1 if this call changed it else 0}
local function settle(keys, args)
  local now = now_ms()
  local result = args[3]
  redis.call('ZREM', keys[3], args[1])
  local tpm, correction = tonumber(args[11]), tonumber(args[4])
  if tpm > 0 and correction ~= 0 then
    local tat = tonumber(redis.call('GET', keys[2]) or now)
    tat = math.max(tat + (60000 / tpm) * correction, now)
    redis.call('SET', keys[2], tat, 'PX', math.ceil(tat - now) + 60000)
  end
  local hint = tonumber(args[5])
  if hint > 0 then
    -- One worker saw a 429 with a hint: the whole fleet waits.
    local slow_until = tonumber(redis.call('HGET', keys[4], 'slow_until') or '0')
    if now + hint > slow_until then
      redis.call('HSET', keys[4], 'slow_until', now + hint)
    end
  end
  local state = redis.call('HGET', keys[4], 'state') or 'closed'
  local failed = result == 'fail'
  local severe = result == 'quota' or result == 'auth'
  if args[2] == 'probe' and state == 'half_open' then
    if failed or severe then
      local for_ms = severe and tonumber(args[10]) or tonumber(args[9])
      open_breaker(keys[4], now, now + for_ms, args[12])
      return {'open', 1}
    end
    if result == 'rate_limited' then
      -- Not a verdict on the provider's health: let another probe go.
      redis.call('HDEL', keys[4], 'probe', 'probe_until')
      return {'half_open', 0}
    end
    redis.call('HSET', keys[4], 'state', 'closed', 'changed_at', now, 'reason', '')
    redis.call('HDEL', keys[4], 'probe', 'probe_until', 'open_until')
    redis.call('DEL', keys[5])
    return {'closed', 1}
  end
  if severe then
    if state ~= 'open' then
      open_breaker(keys[4], now, now + tonumber(args[10]), args[12])
      return {'open', 1}
    end
    return {state, 0}
  end
  if result == 'neutral' or result == 'rate_limited' then
    return {state, 0}
  end
  local window = tonumber(args[6])
  local sec = math.floor(now / 1000)
  redis.call('HINCRBY', keys[5], sec .. ':c', 1)
  if failed then
    redis.call('HINCRBY', keys[5], sec .. ':f', 1)
  end
  redis.call('HDEL', keys[5], (sec - window) .. ':c', (sec - window) .. ':f')
  redis.call('EXPIRE', keys[5], window * 2)
  if state == 'closed' and failed then
    local fields = {}
    for s = sec - window + 1, sec do
      fields[#fields + 1] = s .. ':c'
      fields[#fields + 1] = s .. ':f'
    end
    local counts = redis.call('HMGET', keys[5], unpack(fields))
    local calls, fails = 0, 0
    for i = 1, #counts, 2 do
      calls = calls + tonumber(counts[i] or '0')
      fails = fails + tonumber(counts[i + 1] or '0')
    end
    if calls >= tonumber(args[7]) and fails / calls >= tonumber(args[8]) then
      open_breaker(keys[4], now, now + tonumber(args[9]), args[12])
      return {'open', 1}
    end
  end
  return {state, 0}
end

-- KEYS: breaker, window
-- ARGV: 'reset' | 'open', open for (ms), reason
local function breaker_admin(keys, args)
  local now = now_ms()
  if args[1] == 'reset' then
    redis.call('DEL', keys[1], keys[2])
    return 'closed'
  end
  open_breaker(keys[1], now, now + tonumber(args[2]), args[3])
  return 'open'
end

-- A plain GCRA limit on one key (a WeChat user, an API key).
-- KEYS: the limit's key
-- ARGV: per minute, burst, cost
-- -> {1, 0} allowed (and taken), or {0, wait ms}
local function limit(keys, args)
  local now = now_ms()
  local ok, wait, tat = gcra(keys[1], now, 60000 / tonumber(args[1]), tonumber(args[2]), tonumber(args[3]))
  if not ok then
    return {0, wait}
  end
  redis.call('SET', keys[1], tat, 'PX', math.ceil(tat - now) + 60000)
  return {1, 0}
end

redis.register_function('ferry_limit', limit)
redis.register_function('ferry_admit', admit)
redis.register_function('ferry_settle', settle)
redis.register_function('ferry_breaker_admin', breaker_admin)
