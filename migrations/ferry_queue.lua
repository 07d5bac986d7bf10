#!lua name=ferry_queue
--[[
Ferry's queue engine: every state change of a job is ONE call of a function
here, so a job's record, its stream entry, its retry schedule and its
dead-letter entry never disagree, whatever crashes in between.

Job records are hashes: id, kind, queue, payload, state, attempts,
max_attempts, created_ms, updated_ms, started_ms, finished_ms, due_ms,
last_error, result, worker (a queued job's record has no attempts, 0, nor
updated_ms, its creation, until it first runs). Times are Redis server time in milliseconds (TIME),
so the fleet agrees on one clock. All keys of a call share one hash tag.

The attempt log, for people (`ferry jobs show`, the dashboard's job page;
the engine never reads it): `attempt:<n>` = '<started_ms> <worker>' for
each of the first ATTEMPTS_LOGGED starts (written in the start's own HSET),
`retry:<n>` = '<ms> <due_ms> <error>' when attempt n was retried (in the
retry's own HSET), `replayed_ms` when a dead job was replayed (attempts
restart at 1, so older log fields are from before it). A handed-back
attempt is not counted, and the next start overwrites its field.

States: queued -> running -> succeeded | retrying | dead; retrying -> running.
]]

-- Starts logged per job (`attempt:<n>`): a job is started at most about
-- max_attempts times FERRY_MAX_DELIVERIES, so this is a bound, not a cut.
local ATTEMPTS_LOGGED = 32

-- Numbers written on the hot paths are passed to Redis as text made once:
-- Lua turns a number into text with printf's float formatting, and that
-- was about a sixth of Redis's work per job in a drain (instructions
-- counted with callgrind, bench/RESULTS.md). The attempt after n, and the
-- log field of each logged attempt, keyed by the text Redis returns:
local NEXT_ATTEMPT = {}
local ATTEMPT_FIELD = {}
for n = 0, ATTEMPTS_LOGGED do
  NEXT_ATTEMPT[n .. ''] = (n + 1) .. ''
end
for n = 1, ATTEMPTS_LOGGED do
  ATTEMPT_FIELD[n .. ''] = 'attempt:' .. n
end

-- A fetch's answer: this many items per entry (see fetch).
local FETCH_STRIDE = 8

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- now_ms() as text, for writing: TIME's seconds followed by the first three
-- digits of its (zero-padded) microseconds, with no number conversion.
local function now_text()
  local t = redis.call('TIME')
  local us = t[2]
  return t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
end

local function finished(state)
  return state == 'succeeded' or state == 'dead'
end

-- Acknowledge and delete a stream entry: acknowledged work leaves the stream
-- (it is never trimmed with MAXLEN, which could drop unacknowledged work).
local function release(stream, group, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end

-- KEYS: stream, job record, [idempotency key]
-- ARGV: job id, kind, queue, payload, max_attempts, idempotency ttl (s)
-- -> {job id, 1} created, or {existing job id, 0} for a known idempotency key.
-- The idempotency key is set in the same call as the enqueue, so a retry that
-- arrives while the first request is still running never makes a second job.
local function enqueue(keys, args)
  local idem = keys[3]
  if idem then
    -- Claims the key and reads a claim already there in one command.
    local existing = redis.call('SET', idem, args[1], 'NX', 'GET', 'EX', args[6])
    if existing then
      return {existing, 0}
    end
  end
  -- The smallest record a queued job needs: `attempts` (0) and
  -- `updated_ms` (the creation) are implied until the job first runs.
  -- Hashes this small are listpacks, searched from the front: the fields
  -- every start and completion reads come first.
  redis.call('HSET', keys[2], 'state', 'queued', 'kind', args[2], 'payload', args[4],
    'max_attempts', args[5], 'created_ms', now_text(), 'id', args[1], 'queue', args[3])
  redis.call('XADD', keys[1], '*', 'job', args[1])
  return {args[1], 1}
end

-- Marks one job running and counts the attempt, writing the answer into
-- `out` after its first `n` items (fetch puts the entry and job ids first;
-- building the row in place spares a copy per job on the hot path).
-- `now` is now_text().
-- -> out[n+1..]: {status, kind, payload, attempts, max_attempts, created_ms};
--    status 'run', 'missing' (record gone, e.g. purged) or 'finished'
--    (already succeeded or dead: a late duplicate); after 'missing' or
--    'finished' nothing is written.
local function start_one(key, worker, now, out, n)
  local r = redis.call('HMGET', key, 'state', 'kind', 'payload', 'attempts', 'max_attempts', 'created_ms')
  if not r[1] then
    out[n + 1] = 'missing'
    return out
  end
  if finished(r[1]) then
    out[n + 1] = 'finished'
    return out
  end
  -- One write for the whole start: the attempt is counted in the same HSET
  -- (the record is only ever changed inside these functions, so the read
  -- above is still current).
  local attempts = NEXT_ATTEMPT[r[4] or '0'] or ((tonumber(r[4]) or 0) + 1) .. ''
  local logged = ATTEMPT_FIELD[attempts]
  if logged then
    -- The attempt log's entry rides on the same HSET: no extra command.
    redis.call('HSET', key, 'state', 'running', 'attempts', attempts, 'started_ms', now, 'updated_ms', now, 'worker', worker,
      logged, now .. ' ' .. worker)
  else
    redis.call('HSET', key, 'state', 'running', 'attempts', attempts, 'started_ms', now, 'updated_ms', now, 'worker', worker)
  end
  -- A due time belongs to a job waiting for its retry, and to no other
  -- (so a completion need not look for one).
  if r[1] == 'retrying' then
    redis.call('HDEL', key, 'due_ms')
  end
  out[n + 1] = 'run'
  out[n + 2] = r[2]
  out[n + 3] = r[3]
  out[n + 4] = attempts
  out[n + 5] = r[5]
  out[n + 6] = r[6]
  return out
end

-- KEYS: the job records of a fetched batch
-- ARGV: worker id
-- -> one start_one answer per key.
local function start(keys, args)
  local now = now_text()
  local out = {}
  for i, key in ipairs(keys) do
    out[i] = start_one(key, args[1], now, {}, 0)
  end
  return out
end

-- Reads new entries and starts their jobs in one call (the fast path of a
-- busy worker: one round trip per batch instead of two).
-- KEYS: stream
-- ARGV: group, consumer (worker id), count, job record key prefix
-- -> one flat list, FETCH_STRIDE items per entry: entry id, job id, then
--    start_one's answer (padded with false, which Redis sends as nil, after
--    'missing' or 'finished'). Flat, because a table per entry was a
--    measurable share of a drain's work. Stale entries (job missing or
--    finished) are acknowledged and deleted here.
local function fetch_flat(keys, args)
  local reply = redis.call('XREADGROUP', 'GROUP', args[1], args[2], 'COUNT', args[3], 'STREAMS', keys[1], '>')
  if not reply then
    return {}
  end
  local now = now_text()
  local out = {}
  local stream, group, worker, prefix = keys[1], args[1], args[2], args[4]
  for i, entry in ipairs(reply[1][2]) do
    local job_id = entry[2][2]
    local base = (i - 1) * FETCH_STRIDE
    out[base + 1] = entry[1]
    out[base + 2] = job_id
    start_one(prefix .. job_id, worker, now, out, base + 2)
    if out[base + 3] ~= 'run' then
      release(stream, group, entry[1])
      for k = base + 4, base + FETCH_STRIDE do
        out[k] = false
      end
    end
  end
  return out
end

-- fetch_flat with schema 9's answer, a list per entry: what `ferry_fetch`
-- answers binaries of schema 9 and before, which a rollback may run
-- against this library (only the current binary calls fetch_flat).
local function fetch(keys, args)
  local flat = fetch_flat(keys, args)
  local out = {}
  for i = 1, #flat / FETCH_STRIDE do
    local base = (i - 1) * FETCH_STRIDE
    out[i] = {unpack(flat, base + 1, base + FETCH_STRIDE)}
  end
  return out
end

-- KEYS: stream, then the job records of a batch of successes
-- ARGV: group, retention (s), then per job: entry id, result
-- -> per job 1 when this call made it succeed, 0 when it had already
--    finished. One call for the whole batch: the acknowledgement of many
--    jobs costs one XACK and one XDEL.
local function complete(keys, args)
  local now = now_text()
  local entries = {}
  local out = {}
  for i = 2, #keys do
    local base = (i - 2) * 2 + 3
    entries[#entries + 1] = args[base]
    local state = redis.call('HGET', keys[i], 'state')
    if state and not finished(state) then
      redis.call('HSET', keys[i], 'state', 'succeeded', 'result', args[base + 1], 'finished_ms', now, 'updated_ms', now)
      -- Only a job waiting for its retry has a due time to forget (a late
      -- success can find it there; a start forgets it otherwise).
      if state == 'retrying' then
        redis.call('HDEL', keys[i], 'due_ms')
      end
      redis.call('EXPIRE', keys[i], args[2])
      out[i - 1] = 1
    else
      out[i - 1] = 0
    end
  end
  if #entries > 0 then
    redis.call('XACK', keys[1], args[1], unpack(entries))
    redis.call('XDEL', keys[1], unpack(entries))
  end
  return out
end

-- KEYS: stream, job record, delayed set
-- ARGV: group, entry id, delay (ms), error
-- -> 1 scheduled, 0 when the job had already finished.
local function retry(keys, args)
  release(keys[1], args[1], args[2])
  local state = redis.call('HGET', keys[2], 'state')
  if not state or finished(state) then
    return 0
  end
  local now = now_ms()
  local due = now + tonumber(args[3])
  local r = redis.call('HMGET', keys[2], 'id', 'attempts')
  local id = r[1]
  -- The attempt log's `retry:<n>` rides on the same HSET (n < max_attempts,
  -- or the job would be dead: bounded).
  redis.call('HSET', keys[2], 'state', 'retrying', 'last_error', args[4], 'due_ms', due, 'updated_ms', now,
    'retry:' .. (r[2] or '0'), now .. ' ' .. due .. ' ' .. args[4])
  redis.call('ZADD', keys[3], due, id)
  return 1
end

-- KEYS: stream, job record, dead-letter stream
-- ARGV: group, entry id (may be empty), reason
-- -> 1 dead-lettered, 0 when the job had already finished.
local function dead_letter(keys, args)
  release(keys[1], args[1], args[2])
  local state = redis.call('HGET', keys[2], 'state')
  if not state or finished(state) then
    return 0
  end
  local now = now_ms()
  local id = redis.call('HGET', keys[2], 'id')
  redis.call('HSET', keys[2], 'state', 'dead', 'last_error', args[3], 'finished_ms', now, 'updated_ms', now)
  redis.call('HDEL', keys[2], 'due_ms')
  redis.call('XADD', keys[3], '*', 'job', id, 'reason', args[3])
  return 1
end

-- KEYS: delayed set, stream
-- ARGV: most to move
-- -> how many due retries went back to the stream. Atomic, so every worker
-- may run it at once: a job is moved by exactly one of them.
local function promote(keys, args)
  local due = redis.call('ZRANGEBYSCORE', keys[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(args[1]))
  for _, id in ipairs(due) do
    redis.call('XADD', keys[2], '*', 'job', id)
  end
  if #due > 0 then
    redis.call('ZREM', keys[1], unpack(due))
  end
  return #due
end

-- KEYS: dead-letter stream, stream, job record
-- ARGV: dead-letter entry id
-- -> 1 replayed (attempts reset, back on the stream), 0 when the job is gone.
local function replay(keys, args)
  local id = redis.call('HGET', keys[3], 'id')
  redis.call('XDEL', keys[1], args[1])
  if not id then
    return 0
  end
  local now = now_ms()
  redis.call('PERSIST', keys[3])
  redis.call('HSET', keys[3], 'state', 'queued', 'attempts', 0, 'updated_ms', now, 'replayed_ms', now)
  redis.call('HDEL', keys[3], 'finished_ms', 'due_ms')
  redis.call('XADD', keys[2], '*', 'job', id)
  return 1
end

-- KEYS: stream, job record
-- ARGV: group, entry id
-- -> 1 when the job went back to the stream, 0 when it had already finished.
-- For a worker shutting down: its unfinished jobs become available at once
-- instead of after the visibility timeout. The abandoned attempt is not
-- counted against the job.
local function hand_back(keys, args)
  release(keys[1], args[1], args[2])
  local state = redis.call('HGET', keys[2], 'state')
  if not state or finished(state) then
    return 0
  end
  local id = redis.call('HGET', keys[2], 'id')
  if tonumber(redis.call('HGET', keys[2], 'attempts') or '0') > 0 then
    redis.call('HINCRBY', keys[2], 'attempts', -1)
  end
  redis.call('HSET', keys[2], 'state', 'queued', 'updated_ms', now_ms())
  redis.call('XADD', keys[1], '*', 'job', id)
  return 1
end

-- Whether `entry` is pending in `group` and held by `consumer` (false when
-- the stream or its group is gone, e.g. Redis restarted empty).
local function holds(stream, group, consumer, entry)
  if redis.call('EXISTS', stream) == 0 then
    return false
  end
  local pending = redis.pcall('XPENDING', stream, group, entry, entry, 1)
  if pending.err then
    return false
  end
  local p = pending[1]
  return p ~= nil and p[2] == consumer
end

-- KEYS: stream, job record
-- ARGV: group, consumer, entry id, then name, value pairs
-- -> 1 noted, 0 when the entry is no longer this consumer's (taken over,
--    finished, or gone): then nothing is written.
-- A handler's note (an answer obtained, a part WeChat accepted) is written
-- only while its job is still its own, and renews the job's lease in the
-- same call (`XCLAIM ... JUSTID` counts no delivery): a worker back from a
-- Redis outage holds its job again the moment its first note lands.
local function note(keys, args)
  local group, consumer, entry = args[1], args[2], args[3]
  if not holds(keys[1], group, consumer, entry) then
    return 0
  end
  redis.call('XCLAIM', keys[1], group, consumer, 0, entry, 'JUSTID')
  local fields = {}
  for i = 4, #args, 2 do
    fields[#fields + 1] = 'note:' .. args[i]
    fields[#fields + 1] = args[i + 1]
  end
  if #fields > 0 then
    redis.call('HSET', keys[2], unpack(fields))
  end
  return 1
end

-- KEYS: stream
-- ARGV: group, consumer, entry ids...
-- -> the entry ids renewed: those still held by this consumer. An entry
--    another worker took over is left alone (a plain `XCLAIM <self> 0`
--    would take it back, and both would run it).
local function renew(keys, args)
  local group, consumer = args[1], args[2]
  local held = {}
  for i = 3, #args do
    if holds(keys[1], group, consumer, args[i]) then
      held[#held + 1] = args[i]
    end
  end
  if #held > 0 then
    local claim = {'XCLAIM', keys[1], group, consumer, 0}
    for _, id in ipairs(held) do
      claim[#claim + 1] = id
    end
    claim[#claim + 1] = 'JUSTID'
    redis.call(unpack(claim))
  end
  return held
end

-- KEYS: stream
-- ARGV: group, consumer
-- -> 1 when the consumer was removed from the group, 0 when it still holds
--    entries (removing it would drop them from the pending list).
local function forget_consumer(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 then
    return 0
  end
  local pending = redis.pcall('XPENDING', keys[1], args[1], '-', '+', 1, args[2])
  if pending.err or #pending > 0 then
    return 0
  end
  redis.call('XGROUP', 'DELCONSUMER', keys[1], args[1], args[2])
  return 1
end

redis.register_function('ferry_enqueue', enqueue)
redis.register_function('ferry_hand_back', hand_back)
redis.register_function('ferry_start', start)
redis.register_function('ferry_fetch', fetch)
redis.register_function('ferry_fetch_flat', fetch_flat)
redis.register_function('ferry_complete', complete)
redis.register_function('ferry_retry', retry)
redis.register_function('ferry_dead_letter', dead_letter)
redis.register_function('ferry_promote', promote)
redis.register_function('ferry_replay', replay)
redis.register_function('ferry_note', note)
redis.register_function('ferry_renew', renew)
redis.register_function('ferry_forget_consumer', forget_consumer)
