#!lua name=ferry_batch
--[[
Batches and API jobs on the `batch` queue: the jobs API's single chat jobs
(with an owner's in-flight quota and an idempotency key) and JSONL batches
(many chat jobs, counted, cancellable, with a completion webhook).

Jobs of the `batch` queue record their outcomes through the functions here
(ferry_batch_complete, _retry, _dead_letter, _hand_back), which do exactly
what their ferry_queue namesakes do and, in the SAME call, keep the batch's
counts and the owner's in-flight count: the counts are exact under
at-least-once delivery because a job is counted only by the call that moves
it out of `running` (a late duplicate finds it finished and counts nothing).
A job record without batch fields is handled exactly as ferry_queue would.
The copies (now_ms, finished, release, complete, retry, dead_letter,
hand_back) match ferry_queue's line for line but for lines ending in
`-- batch accounting` (only here) or `-- batch was: <line>` (changed here;
<line> is ferry_queue's): tests/tests/lua_copies.rs checks it.

Extra job record fields (full key names, built by common/src/keys.rs):
  batch, batch_key, running_key   the batch id, its hash, its running set
  owner_key                       the owner's in-flight counter
  owner_released                  1 once that counter was decremented
  custom_id                       the caller's id of a batch line
Batch hash (batch_key): id, status (validating|in_progress|cancelling|
completed|cancelled|failed), owner, total, written, reserved, succeeded,
failed, cancelled, created_ms, committed_ms, cancel_requested_ms,
finished_ms, retention, running_key, jobs_key, owner_key, webhook_url,
webhook_job, webhook_job_key, webhook_max_attempts, skipped, error; an
OpenAI Batch API batch also openai_input_file, openai_endpoint,
openai_window, openai_metadata, openai_errors (written by create, read by
the api only).
`cancelled` is a final job state here (ferry_queue knows only succeeded and
dead): no function of this library ever re-runs a cancelled job, and no
cancelled job is left on a stream or in the delayed set.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function now_text()
  local t = redis.call('TIME')
  local us = t[2]
  return t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
end

local function finished(state)
  return state == 'succeeded' or state == 'dead' or state == 'cancelled' -- batch was: return state == 'succeeded' or state == 'dead'
end

local function release(stream, group, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end

-- A batch whose total is known and whose jobs all finished becomes final,
-- once: its keys expire with the job records, and its webhook job (if any)
-- is enqueued on `stream` in this same call.
local function maybe_finish(stream, batch_key, now)
  local b = redis.call('HMGET', batch_key, 'status', 'total', 'succeeded', 'failed', 'cancelled',
    'committed_ms', 'retention', 'webhook_job', 'webhook_job_key', 'webhook_max_attempts',
    'id', 'jobs_key', 'running_key')
  if b[1] ~= 'in_progress' and b[1] ~= 'cancelling' then
    return
  end
  if not b[6] then
    return -- still enqueuing: the total is not known yet
  end
  local done = tonumber(b[3] or '0') + tonumber(b[4] or '0') + tonumber(b[5] or '0')
  if done < tonumber(b[2] or '0') then
    return
  end
  local final = 'completed'
  if b[1] == 'cancelling' then
    final = 'cancelled'
  end
  redis.call('HSET', batch_key, 'status', final, 'finished_ms', now)
  local retention = tonumber(b[7] or '604800')
  redis.call('EXPIRE', batch_key, retention)
  redis.call('EXPIRE', b[12], retention)
  redis.call('DEL', b[13])
  if b[8] and b[8] ~= '' then
    local payload = cjson.encode({batch_id = b[11]})
    redis.call('HSET', b[9], 'id', b[8], 'kind', 'batch.webhook', 'queue', 'batch',
      'payload', payload, 'state', 'queued', 'attempts', 0, 'max_attempts', b[10] or '8',
      'created_ms', now, 'updated_ms', now)
    redis.call('XADD', stream, '*', 'job', b[8])
  end
end

-- After a job left `running`: `outcome` is 'succeeded', 'failed' or
-- 'cancelled' for a final state, nil when it goes back to waiting.
local function account(stream, record, outcome, now)
  local f = redis.call('HMGET', record, 'id', 'batch_key', 'running_key', 'owner_key', 'owner_released')
  if outcome and f[4] and not f[5] then
    redis.call('DECR', f[4])
    redis.call('HSET', record, 'owner_released', 1)
  end
  if not f[2] then
    return
  end
  redis.call('SREM', f[3], f[1])
  if outcome then
    redis.call('HINCRBY', f[2], outcome, 1)
    maybe_finish(stream, f[2], now)
  end
end

local function is_batch_job(record)
  return redis.call('HEXISTS', record, 'batch_key') == 1
end

-- KEYS: stream, job record, owner in-flight counter, [idempotency key]
-- ARGV: job id, kind, queue, payload, max_attempts, idempotency ttl (s),
--       in-flight limit (0: none)
-- -> {job id, 1} created, {existing id, 0} for a known idempotency key,
--    {'', -1, in flight} when the owner is at the limit.
local function submit_job(keys, args)
  local idem = keys[4]
  if idem then
    local existing = redis.call('GET', idem)
    if existing then
      return {existing, 0}
    end
  end
  local limit = tonumber(args[7])
  local in_flight = tonumber(redis.call('GET', keys[3]) or '0')
  if limit > 0 and in_flight >= limit then
    return {'', -1, in_flight}
  end
  local now = now_ms()
  redis.call('HSET', keys[2], 'id', args[1], 'kind', args[2], 'queue', args[3],
    'payload', args[4], 'state', 'queued', 'attempts', 0, 'max_attempts', args[5],
    'created_ms', now, 'updated_ms', now, 'owner_key', keys[3])
  redis.call('INCR', keys[3])
  if idem then
    redis.call('SET', idem, args[1], 'EX', args[6])
  end
  redis.call('XADD', keys[1], '*', 'job', args[1])
  return {args[1], 1}
end

-- Opens a batch whose lines were all validated, reserving its jobs against
-- the owner's in-flight limit in the same call (two submissions racing
-- cannot both pass the check).
-- KEYS: batch, owner in-flight counter
-- ARGV: id, owner, jobs (n), in-flight limit (0: none), retention (s),
--       running key, jobs key, skipped lines, webhook url ('' none),
--       webhook job id, webhook job record key, webhook max attempts,
--       then (schema 8) field, value pairs kept on the batch as they are
--       (an OpenAI Batch API batch's openai_* fields)
-- -> {1, created ms} or {0, in flight} when the owner is over the limit.
local function create(keys, args)
  local n, limit = tonumber(args[3]), tonumber(args[4])
  local in_flight = tonumber(redis.call('GET', keys[2]) or '0')
  if limit > 0 and in_flight + n > limit then
    return {0, in_flight}
  end
  local now = now_ms()
  redis.call('INCRBY', keys[2], n)
  redis.call('HSET', keys[1], 'id', args[1], 'status', 'validating', 'owner', args[2],
    'total', n, 'written', 0, 'reserved', n, 'succeeded', 0, 'failed', 0, 'cancelled', 0,
    'created_ms', now, 'retention', args[5], 'running_key', args[6], 'jobs_key', args[7],
    'owner_key', keys[2], 'skipped', args[8])
  if args[9] ~= '' then
    redis.call('HSET', keys[1], 'webhook_url', args[9], 'webhook_job', args[10],
      'webhook_job_key', args[11], 'webhook_max_attempts', args[12])
  end
  for i = 13, #args - 1, 2 do
    redis.call('HSET', keys[1], args[i], args[i + 1])
  end
  return {1, now}
end

-- Writes one chunk of a batch's jobs: records, stream entries, and their
-- ids on the batch's list, in line order.
-- KEYS: stream, batch, jobs list, then one record per job
-- ARGV: batch id, kind, queue, max_attempts, running key, owner key, then
--       per job: job id, custom_id, payload
-- -> jobs written, or -1 when the batch is no longer being enqueued.
local function enqueue(keys, args)
  local status = redis.call('HGET', keys[2], 'status')
  if status ~= 'validating' and status ~= 'cancelling' then
    return -1
  end
  if redis.call('HEXISTS', keys[2], 'committed_ms') == 1 then
    return -1
  end
  local now = now_ms()
  local n = 0
  for i = 4, #keys do
    local base = 7 + (i - 4) * 3
    local id = args[base]
    redis.call('HSET', keys[i], 'id', id, 'kind', args[2], 'queue', args[3],
      'payload', args[base + 2], 'state', 'queued', 'attempts', 0, 'max_attempts', args[4],
      'created_ms', now, 'updated_ms', now, 'batch', args[1], 'batch_key', keys[2],
      'running_key', args[5], 'owner_key', args[6], 'custom_id', args[base + 1])
    redis.call('RPUSH', keys[3], id)
    redis.call('XADD', keys[1], '*', 'job', id)
    n = n + 1
  end
  redis.call('HINCRBY', keys[2], 'written', n)
  return n
end

-- Every job is in: the total is final and the batch is in progress (or
-- stays cancelling). Reserved but unwritten jobs go back to the owner.
-- KEYS: stream, batch
-- -> the batch's status after the call.
local function commit(keys, args)
  local b = redis.call('HMGET', keys[2], 'status', 'written', 'reserved', 'owner_key', 'committed_ms')
  if not b[1] or b[5] then
    return b[1] or ''
  end
  local now = now_ms()
  local written, reserved = tonumber(b[2]), tonumber(b[3])
  if reserved > written then
    redis.call('DECRBY', b[4], reserved - written)
  end
  local status = b[1]
  if status == 'validating' then
    status = 'in_progress'
  end
  redis.call('HSET', keys[2], 'status', status, 'total', written, 'reserved', written, 'committed_ms', now)
  maybe_finish(keys[1], keys[2], now)
  return redis.call('HGET', keys[2], 'status')
end

-- A submission that could not finish enqueuing (Redis failed mid-way):
-- the batch fails, what it reserved and did not write goes back to the
-- owner, and the jobs it wrote are cancelled when a worker meets them.
-- KEYS: batch
-- ARGV: reason
local function abort(keys, args)
  local b = redis.call('HMGET', keys[1], 'written', 'reserved', 'owner_key', 'committed_ms', 'retention',
    'jobs_key', 'running_key')
  if not b[1] or b[4] then
    return 0
  end
  local written, reserved = tonumber(b[1]), tonumber(b[2])
  if reserved > written then
    redis.call('DECRBY', b[3], reserved - written)
  end
  local now = now_ms()
  redis.call('HSET', keys[1], 'status', 'failed', 'error', args[1], 'total', written,
    'reserved', written, 'committed_ms', now, 'finished_ms', now)
  local retention = tonumber(b[5] or '604800')
  redis.call('EXPIRE', keys[1], retention)
  redis.call('EXPIRE', b[6], retention)
  redis.call('EXPIRE', b[7], retention)
  return 1
end

-- KEYS: batch
-- -> the status after the call ('' for an unknown batch). Queued jobs are
-- cancelled when a worker meets them (ferry_batch_begin); running ones finish.
local function cancel(keys, args)
  local status = redis.call('HGET', keys[1], 'status')
  if not status then
    return ''
  end
  if status == 'validating' or status == 'in_progress' then
    redis.call('HSET', keys[1], 'status', 'cancelling', 'cancel_requested_ms', now_ms())
    return 'cancelling'
  end
  return status
end

-- Called by the handler before it does any work: a job of a cancelled (or
-- failed) batch is recorded cancelled here, its entry acknowledged, in this
-- one call; any other is counted running.
-- KEYS: stream, job record
-- ARGV: group, entry id, retention (s)
-- -> 'run', 'cancelled', or 'finished' (another delivery already ended it).
local function begin(keys, args)
  local f = redis.call('HMGET', keys[2], 'state', 'batch_key', 'id', 'running_key')
  if not f[2] then
    return 'run'
  end
  if f[1] ~= 'running' then
    return 'finished'
  end
  local status = redis.call('HGET', f[2], 'status')
  if status == 'cancelling' or status == 'cancelled' or status == 'failed' or not status then
    local now = now_ms()
    release(keys[1], args[1], args[2])
    redis.call('HSET', keys[2], 'state', 'cancelled', 'last_error', 'the batch was cancelled',
      'finished_ms', now, 'updated_ms', now)
    redis.call('HDEL', keys[2], 'due_ms')
    redis.call('EXPIRE', keys[2], args[3])
    account(keys[1], keys[2], 'cancelled', now)
    return 'cancelled'
  end
  redis.call('SADD', f[4], f[3])
  return 'run'
end

-- ferry_complete, counting. KEYS: stream, records...; ARGV: group,
-- retention, then per job: entry id, result.
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
      if state == 'retrying' then
        redis.call('HDEL', keys[i], 'due_ms')
      end
      redis.call('EXPIRE', keys[i], args[2])
      account(keys[1], keys[i], 'succeeded', now) -- batch accounting
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

-- ferry_retry, counting. KEYS: stream, record, delayed; ARGV: group,
-- entry id, delay (ms), error.
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
  redis.call('HSET', keys[2], 'state', 'retrying', 'last_error', args[4], 'due_ms', due, 'updated_ms', now,
    'retry:' .. (r[2] or '0'), now .. ' ' .. due .. ' ' .. args[4])
  redis.call('ZADD', keys[3], due, id)
  account(keys[1], keys[2], nil, now) -- batch accounting
  return 1
end

-- ferry_dead_letter, counting. A batch line that failed is reported in the
-- batch's results, not the dead-letter stream (a replay would count it
-- twice); other jobs go to the dead-letter stream as usual.
-- KEYS: stream, record, dead-letter stream; ARGV: group, entry id, reason.
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
  if is_batch_job(keys[2]) then -- batch accounting
    local retention = redis.call('HGET', redis.call('HGET', keys[2], 'batch_key'), 'retention') -- batch accounting
    redis.call('EXPIRE', keys[2], tonumber(retention or '604800')) -- batch accounting
  else -- batch accounting
    redis.call('XADD', keys[3], '*', 'job', id, 'reason', args[3])
  end -- batch accounting
  account(keys[1], keys[2], 'failed', now) -- batch accounting
  return 1
end

-- ferry_hand_back, counting. KEYS: stream, record; ARGV: group, entry id.
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
  local now = now_ms() -- batch accounting
  redis.call('HSET', keys[2], 'state', 'queued', 'updated_ms', now) -- batch was: redis.call('HSET', keys[2], 'state', 'queued', 'updated_ms', now_ms())
  redis.call('XADD', keys[1], '*', 'job', id)
  account(keys[1], keys[2], nil, now) -- batch accounting
  return 1
end

redis.register_function('ferry_batch_submit_job', submit_job)
redis.register_function('ferry_batch_create', create)
redis.register_function('ferry_batch_enqueue', enqueue)
redis.register_function('ferry_batch_commit', commit)
redis.register_function('ferry_batch_abort', abort)
redis.register_function('ferry_batch_cancel', cancel)
redis.register_function('ferry_batch_begin', begin)
redis.register_function('ferry_batch_complete', complete)
redis.register_function('ferry_batch_retry', retry)
redis.register_function('ferry_batch_dead_letter', dead_letter)
redis.register_function('ferry_batch_hand_back', hand_back)
