#!lua name=ferry_wechat
--[[
What the fleet keeps between one WeChat user's messages, so every worker and
every api process applies WeChat's rules the same way (WECHAT.md):

Per user, all keys share the hash tag {<prefix>:user:<openid>}:
  cs_quota      hash: at (ms: the newest user action), max (messages it
                allows), until (ms). WeChat's allowance does not add up: a
                newer action resets it to that action's maximum.
  cs_sends      sorted set: the messages taken, scored by when (ms).
  continuation  hash: at (ms: the message whose answer this is the rest
                of), text, unseen (1: the user saw none of it yet; 0: they
                were told to write 继续), claimed_by (the 继续 job sending
                it). A newer message's answer replaces an older one's.
  reply:<msg>   string: the passive reply to one push; every one of
                WeChat's tries of that push is answered with it.
Time is Redis TIME; `at` values come from the messages (CreateTime).
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- KEYS: cs_quota, cs_sends
-- ARGV: 1 action time (ms), 2 messages the action allows, 3 for how long
--       (ms), 4 messages wanted (0: only record the action), 5 a token
--       unique to this call
-- -> messages granted, 0..wanted
-- The allowance belongs to the newest action seen; every message taken
-- since that action's time counts against it, whichever action it was
-- taken for (WeChat counts what it is sent after each action).
local function cs_take(keys, args)
  local at, max, window = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local want = tonumber(args[4])
  local now = now_ms()
  local q = redis.call('HMGET', keys[1], 'at', 'max', 'until')
  local cur_at = tonumber(q[1] or '-1')
  local cur_max, until_ms = tonumber(q[2] or '0'), tonumber(q[3] or '0')
  if at > cur_at then
    cur_at, cur_max, until_ms = at, max, at + window
    redis.call('HSET', keys[1], 'at', cur_at, 'max', cur_max, 'until', until_ms)
  end
  local keep_for = math.max(until_ms - now, window, 1000)
  redis.call('PEXPIRE', keys[1], keep_for)
  if want <= 0 or now >= until_ms then
    return 0
  end
  redis.call('ZREMRANGEBYSCORE', keys[2], '-inf', '(' .. cur_at)
  local used = redis.call('ZCARD', keys[2])
  local granted = math.max(0, math.min(cur_max - used, want))
  for i = 1, granted do
    redis.call('ZADD', keys[2], now, args[5] .. ':' .. i)
  end
  redis.call('PEXPIRE', keys[2], keep_for)
  return granted
end

-- KEYS: continuation
-- ARGV: 1 message time (ms), 2 text ('': nothing left, clear what an older
--       message kept), 3 unseen (0|1), 4 ttl (ms)
-- -> 1 kept (or cleared), 0 refused: a newer message's answer is kept
local function keep(keys, args)
  local cur = tonumber(redis.call('HGET', keys[1], 'at') or '-1')
  if tonumber(args[1]) < cur then
    return 0
  end
  redis.call('DEL', keys[1])
  if args[2] ~= '' then
    redis.call('HSET', keys[1], 'at', args[1], 'text', args[2], 'unseen', args[3])
    redis.call('PEXPIRE', keys[1], args[4])
  end
  return 1
end

-- KEYS: continuation
-- ARGV: 1 claimer (the 继续 job's id)
-- -> {text, at, unseen}; {} when nothing is kept; {'busy'} when another
--    继续 is sending it
local function kept_claim(keys, args)
  local c = redis.call('HMGET', keys[1], 'text', 'at', 'unseen', 'claimed_by')
  if not c[1] then
    return {}
  end
  if c[4] and c[4] ~= args[1] then
    return {'busy'}
  end
  redis.call('HSET', keys[1], 'claimed_by', args[1])
  return {c[1], c[2], c[3] or '0'}
end

-- KEYS: reply:<msg>, continuation, tries:<msg>
-- ARGV: 1 message time (ms), 2 the reply (one passive reply's worth),
--       3 the rest ('': none), 4 the whole answer, 5 reply ttl (ms),
--       6 continuation ttl (ms), 7 fresh (1: the push is young enough for
--       WeChat to be trying it), 8 channel the api processes listen on
-- A push is held only if an api counted its tries (tries:<msg>): one that
-- reached Redis through the spool, while Redis was away, was answered
-- with the pending notice without a slot to say so.
-- -> 'replied': the reply waits for WeChat's try (and the rest for 继续);
--    'kept': the push was answered already (the pending notice) or is too
--    old, so the whole answer waits, unseen, for the user's next message
local function passive_answer(keys, args)
  local slot = redis.call('GET', keys[1])
  if slot == args[2] then
    -- This answer's own reply (a retry of the job that put it there).
    return 'replied'
  end
  if args[7] == '1' and not slot and redis.call('EXISTS', keys[3]) == 1 then
    redis.call('SET', keys[1], args[2], 'PX', args[5])
    keep({keys[2]}, {args[1], args[3], '0', args[6]})
    redis.call('PUBLISH', args[8], keys[1])
    return 'replied'
  end
  keep({keys[2]}, {args[1], args[4], '1', args[6]})
  return 'kept'
end

-- KEYS: reply:<msg>, continuation, tries:<msg>
-- ARGV: 1 the kept answer's time (ms, as read), 2 the reply, 3 the rest
--       ('': none), 4 reply ttl (ms), 5 channel, 6 fresh (as above)
-- -> 1 when the unseen answer became this push's reply, else 0 (it changed
--    meanwhile, the push is answered already, or nobody holds it)
local function passive_hand_over(keys, args)
  local c = redis.call('HMGET', keys[2], 'at', 'unseen')
  if c[1] ~= args[1] or c[2] ~= '1' or redis.call('EXISTS', keys[1]) == 1 then
    return 0
  end
  if args[6] ~= '1' or redis.call('EXISTS', keys[3]) == 0 then
    return 0
  end
  redis.call('SET', keys[1], args[2], 'PX', args[4])
  if args[3] == '' then
    redis.call('DEL', keys[2])
  else
    redis.call('HSET', keys[2], 'text', args[3], 'unseen', '0')
  end
  redis.call('PUBLISH', args[5], keys[1])
  return 1
end

redis.register_function('ferry_cs_take', cs_take)
redis.register_function('ferry_keep', keep)
redis.register_function('ferry_kept_claim', kept_claim)
redis.register_function('ferry_passive_answer', passive_answer)
redis.register_function('ferry_passive_hand_over', passive_hand_over)
