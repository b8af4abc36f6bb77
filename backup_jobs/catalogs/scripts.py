"""The Redis catalog's Lua scripts: each write that must be atomic is one script.

Keys and arguments are documented above each script. Status decisions are made in Python and
passed in as flags and scores, so no job status name is spelled twice.
"""

from __future__ import annotations

# bump(counter, restart): the item's next fencing token. A counter that is not an integer any
# more restarts from ``restart`` (the clock in ms, above every count issued before).
_BUMP = """
local function bump(counter, restart)
  local token = redis.pcall('INCR', counter)
  if type(token) == 'table' then
    redis.call('SET', counter, restart)
    return tonumber(restart)
  end
  return token
end
"""

# read_records(keys): each key's value (false if absent or not a string), then for each its
# Redis type if it exists but is not a string ('' otherwise).
_READ = """
local function read_records(keys)
  local reply = {}
  for i, key in ipairs(keys) do
    local value = redis.pcall('GET', key)
    if type(value) == 'string' then
      reply[i], reply[#keys + i] = value, ''
    else
      reply[i] = false
      reply[#keys + i] = type(value) == 'table' and redis.call('TYPE', key)['ok'] or ''
    end
  end
  return reply
end
"""

# KEYS[1] lease, KEYS[2] fencing counter; ARGV[1] holder, ARGV[2] TTL in ms, ARGV[3] a stale
# holder to take over from ('' = none), ARGV[4] the counter to restart from if it is corrupt.
# Returns {acquired, token, holder}.
ACQUIRE = (
    _BUMP
    + """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, bump(KEYS[2], ARGV[4]), ARGV[1]}
end
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'table' or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, bump(KEYS[2], ARGV[4]), ARGV[1]}
end
if not holder then holder = '' end
return {0, 0, holder}
"""
)

# KEYS[1] lease; ARGV[1] holder, ARGV[2] TTL in ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lease; ARGV[1] holder.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Every fenced script starts so: KEYS[1] is the item's fencing counter, ARGV[1] the writer's
# token ('' = unfenced write); a stale token writes nothing.
_FENCE_CHECK = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
"""

# KEYS[1] fence counter, KEYS[2] record; ARGV[1] token ('' = unfenced), ARGV[2] JSON.
FENCED_SET = (
    _FENCE_CHECK
    + """
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS[1] record; ARGV[1] the unreadable value seen, ARGV[2] the new JSON. Writes only if the
# record still holds what was seen (or is not a string at all): a job's newer write wins.
REPAIR = """
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'table' or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Every script that writes a job's indexes writes each through ``index``, so that it never stops
# half-way: an index is derived data, and one of the wrong Redis type (``SET bj:queued
# garbage``) makes the write fail with WRONGTYPE (caught: ``redis.pcall``), is deleted by
# ``fix_index`` and written again (made anew, of the right type). Types are asked only then, not
# before every write: a save touches 15 indexes, and their TYPE calls were a third of a job's
# Redis commands. The script then asks for a repair pass, which puts back the entries the key
# lost, by deleting the field named by its last ARGV from the hash named by its last KEYS (the
# ticks hash), and returns each replaced key with its type and the type wanted, for a problem.
# An error other than WRONGTYPE is raised as before (the second write meets it again).
_FIX_INDEX = """
local replaced = {}
local function fix_index(key, want)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= want then
    redis.call('DEL', key)
    redis.pcall('HDEL', KEYS[#KEYS], ARGV[#ARGV])
    replaced[#replaced + 1] = key
    replaced[#replaced + 1] = kind
    replaced[#replaced + 1] = want
  end
end
local function index(command, want, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply['err'] then
    fix_index(key, want)
    reply = redis.call(command, key, ...)
  end
  return reply
end
"""

# KEYS[1] fence counter, KEYS[2] job record, KEYS[3] in-progress set, KEYS[4] item lease,
# KEYS[5] retry set, KEYS[6] queued set, KEYS[7] the vault's job index, KEYS[8] its operation
# index, KEYS[9] its item index, KEYS[10] the retention index, KEYS[11] a VM state record
# written with the job (the job record's key again when none), KEYS[12..#KEYS-1] every status
# index of the vault, KEYS[#KEYS] ticks hash; ARGV[1] token ('' = unfenced), ARGV[2] JSON,
# ARGV[3] job id, ARGV[4] '1' if running, ARGV[5] the status the stored job must have now
# ('' = any), ARGV[6] retry score ('' = not waiting), ARGV[7] sweep score ('' = not queued),
# ARGV[8] queue time, ARGV[9] end time ('' = not final), ARGV[10] the KEYS number of the job's
# status index, ARGV[11] the VM state's JSON ('' = none): written only with the job, under the
# same fence, ARGV[12] the ticks hash's index-repair field (last: ``fix_index`` reads it so).
# Returns {1, 0, replaced indexes...} written, 0 fenced out, -1 not in the expected status.
# (``extra``: what START_JOB read, returned before the replaced indexes.)
_SAVE_JOB_BODY = """
if ARGV[5] ~= '' then
  local raw = redis.call('GET', KEYS[2])
  if not raw then return -1 end
  local ok, stored = pcall(cjson.decode, raw)
  if not ok or type(stored) ~= 'table' or stored['status'] ~= ARGV[5] then return -1 end
end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[11] ~= '' then redis.call('SET', KEYS[11], ARGV[11]) end
if ARGV[4] == '1' then
  index('SADD', 'set', KEYS[3], ARGV[3])
else
  index('SREM', 'set', KEYS[3], ARGV[3])
  -- A lease of the wrong type is no job's: ACQUIRE replaces it.
  if redis.pcall('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
end
if ARGV[6] ~= '' then
  index('ZADD', 'zset', KEYS[5], ARGV[6], ARGV[3])
else
  index('ZREM', 'zset', KEYS[5], ARGV[3])
end
if ARGV[7] ~= '' then
  index('ZADD', 'zset', KEYS[6], ARGV[7], ARGV[3])
else
  index('ZREM', 'zset', KEYS[6], ARGV[3])
end
for i = 7, 9 do index('ZADD', 'zset', KEYS[i], ARGV[8], ARGV[3]) end
if ARGV[9] ~= '' then
  index('ZADD', 'zset', KEYS[10], ARGV[9], ARGV[3])
else
  index('ZREM', 'zset', KEYS[10], ARGV[3])
end
-- The job leaves every other status index in the write that puts it into its own.
local current = tonumber(ARGV[10])
for i = 12, #KEYS - 1 do
  if i == current then
    index('ZADD', 'zset', KEYS[i], ARGV[8], ARGV[3])
  else
    index('ZREM', 'zset', KEYS[i], ARGV[3])
  end
end
local reply = {1, token}
for _, value in ipairs(extra) do reply[#reply + 1] = value end
for _, value in ipairs(replaced) do reply[#reply + 1] = value end
return reply
"""
SAVE_JOB = _FENCE_CHECK + "local token, extra = 0, {}\n" + _FIX_INDEX + _SAVE_JOB_BODY

# Starts an attempt in one step: takes the item's lease (KEYS[4]) for the job (ARGV[3]) if it is
# free (or not a string: no job's), bumps the fencing counter (KEYS[1]), writes the new token
# into the job's JSON (ARGV[2] says ``"fencing_token":null``) and saves it as SAVE_JOB does.
# KEYS as SAVE_JOB's followed by records to read as it starts (the job's VM, for the operations
# that begin by reading it); ARGV as SAVE_JOB's (ARGV[1] unused: the token is the one issued
# here, ARGV[5] the status the stored job must have) followed by ARGV[13] the counter to
# restart from if it is corrupt, ARGV[14] the lease's TTL in ms and ARGV[15] how many records
# to read. Nothing is taken or written unless the stored job has that status. Returns {1,
# token, the records read as READ_RECORDS returns them, replaced indexes...} started, {0,
# holder} the lease is held ('' = it expired meanwhile), {-1, 0} the job is not in the
# expected status.
START_JOB = (
    _BUMP
    + _READ
    + """
local reads = {}
for i = tonumber(table.remove(ARGV)), 1, -1 do reads[i] = table.remove(KEYS) end
local ttl = table.remove(ARGV)
local restart = table.remove(ARGV)
local raw = redis.pcall('GET', KEYS[2])
local ok, stored = pcall(cjson.decode, type(raw) == 'string' and raw or '')
if not ok or type(stored) ~= 'table' or stored['status'] ~= ARGV[5] then return {-1, 0} end
ARGV[5] = ''
if not redis.call('SET', KEYS[4], ARGV[3], 'NX', 'PX', ttl) then
  local holder = redis.pcall('GET', KEYS[4])
  if type(holder) ~= 'table' then return {0, holder or ''} end
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ttl)
end
local token = bump(KEYS[1], restart)
ARGV[2] = string.gsub(ARGV[2], '"fencing_token":null', '"fencing_token":' .. token, 1)
local extra = read_records(reads)
"""
    + _FIX_INDEX
    + _SAVE_JOB_BODY
)

# KEYS[1] job record, KEYS[2] queued set, KEYS[3..#KEYS-1] the jobs page's indexes of the job
# (its vault's, its status's, its operation's, its item's), KEYS[#KEYS] ticks hash; ARGV[1]
# JSON, ARGV[2] queue time, ARGV[3] id, ARGV[4] sweep score, ARGV[5] the index-repair field.
# Returns {1 created or 0 (the id exists), replaced indexes...}.
CREATE_JOB = (
    _FIX_INDEX
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return {0} end
index('ZADD', 'zset', KEYS[2], ARGV[4], ARGV[3])
for i = 3, #KEYS - 1 do index('ZADD', 'zset', KEYS[i], ARGV[2], ARGV[3]) end
return {1, unpack(replaced)}
"""
)

# KEYS[1] job record, KEYS[2..] every index it may be in; ARGV[1] the record as read, ARGV[2]
# job id. Deletes the record and its entries only if it still holds what was read (a final
# job, checked by the caller). Returns 1 if deleted.
DELETE_JOB = """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do redis.pcall('ZREM', KEYS[i], ARGV[2]) end
return 1
"""

# Read-only scripts say so, so that a server refusing writes (MISCONF, OOM) still runs them.
# _PICK: of the indexes in KEYS, the one with the fewest entries queued in [lo, hi] (walked).
_PICK = """#!lua flags=no-writes
local lo = ARGV[1] ~= '' and ARGV[1] or '-inf'
local hi = ARGV[2] ~= '' and ARGV[2] or '+inf'
local walk, fewest = 1, nil
for i = 1, #KEYS do
  local n = redis.call('ZCOUNT', KEYS[i], lo, hi)
  if fewest == nil or n < fewest then walk, fewest = i, n end
end
local key = KEYS[walk]
local function in_all(member)
  for j = 1, #KEYS do
    if j ~= walk and not redis.call('ZSCORE', KEYS[j], member) then return false end
  end
  return true
end
-- Ranks in newest-first order: [start, stop] is the time range.
local start = 0
if ARGV[2] ~= '' then start = redis.call('ZCOUNT', key, '(' .. ARGV[2], '+inf') end
local stop = redis.call('ZCOUNT', key, lo, '+inf') - 1
"""

# KEYS the indexes to intersect; ARGV[1] since ('' = none), ARGV[2] until ('' = none), both
# inclusive, ARGV[3] the score of the position to start after ('' = from the top), ARGV[4] its
# job id, ARGV[5] page size, ARGV[6] the most entries to look at. Order: score, then member,
# both descending (ZREVRANGE's). Returns {1 if entries remain after the last one looked at,
# its score, its member, the ids found...}.
PAGE = (
    _PICK
    + """
local function before(a, b)  -- a < b, byte by byte (Redis orders members so)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
if ARGV[3] ~= '' then
  local at = redis.call('ZSCORE', key, ARGV[4])
  local r
  if at and tonumber(at) == tonumber(ARGV[3]) then
    r = redis.call('ZREVRANK', key, ARGV[4]) + 1
  else  -- the job left this index: count what is above its place
    r = redis.call('ZCOUNT', key, '(' .. ARGV[3], '+inf')
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, ARGV[3], ARGV[3])) do
      if not before(m, ARGV[4]) then r = r + 1 end
    end
  end
  if r > start then start = r end
end
local limit, budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local step = limit
if #KEYS > 1 then step = math.min(budget, math.max(limit * 4, 200)) end
local found, last_score, last_member = {}, '', ''
local pos = start
while #found < limit and pos <= stop and pos - start < budget do
  local chunk = redis.call('ZREVRANGE', key, pos, math.min(stop, pos + step - 1), 'WITHSCORES')
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    pos = pos + 1
    last_member, last_score = chunk[i], chunk[i + 1]
    if in_all(last_member) then
      found[#found + 1] = last_member
      if #found == limit then break end
    end
  end
end
return {pos <= stop and 1 or 0, last_score, last_member, unpack(found)}
"""
)

# KEYS the indexes to intersect; ARGV[1] since, ARGV[2] until ('' = none; inclusive). Returns
# how many jobs are in all of them in that range: one ZCOUNT for one index.
COUNT = (
    _PICK
    + """
if #KEYS == 1 then return fewest end
local count, pos = 0, start
while pos <= stop do
  local chunk = redis.call('ZREVRANGE', key, pos, math.min(stop, pos + 999))
  for _, member in ipairs(chunk) do
    if in_all(member) then count = count + 1 end
  end
  pos = pos + #chunk
  if #chunk == 0 then break end
end
return count
"""
)

# KEYS a few records to read. Returns each one's value (nil if absent or not a string), then
# for each its Redis type if it exists but is not a string ('' otherwise): one command where a
# pipeline of an MGET and a TYPE per key cost a VM lookup three.
READ_RECORDS = "#!lua flags=no-writes\n" + _READ + "return read_records(KEYS)\n"

# KEYS[1] an index a read found of the wrong type, KEYS[2] ticks hash; ARGV[1] the type it
# should have, ARGV[2] the index-repair field. Returns {key, its type, wanted} if it replaced it.
REPLACE_INDEX = (
    _FIX_INDEX
    + """
fix_index(KEYS[1], ARGV[1])
return replaced
"""
)

# KEYS[1] job record, KEYS[2] an index of the ticks; ARGV[1] the record as the repair pass read
# it, ARGV[2] the entry's score ('' = the index is a set), ARGV[3] job id. Puts the entry back
# only if the record still holds what was read: a job saved since has the indexes of that save.
# Returns 1 if the entry was missing and is back.
RESTORE_ENTRY = """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('SADD', KEYS[2], ARGV[3]) end
return redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3])
"""

# KEYS[1] policy record, KEYS[2] the vault's policy index, KEYS[3] the policy's item set;
# ARGV[1] the policy's name. Deletes only a policy no item uses; returns the items using it.
DELETE_POLICY = """
local used = redis.call('SMEMBERS', KEYS[3])
if #used > 0 then return used end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return {}
"""

# An item's ``recovery_points`` is the size of its VM's mirror index at every write, so that a
# prune removing points and a backup adding one never lose each other's count. Records are
# compact sorted JSON (``records.dump``): the field appears once, as ``"recovery_points":N``
# (inside a string its quotes would be escaped, so nothing else matches).
_WITH_COUNT = """
local function with_count(json, index)
  local n = redis.call('ZCARD', index)
  return (string.gsub(json, '"recovery_points":%-?%d+', '"recovery_points":' .. n, 1))
end
"""

# KEYS[1] fence counter, KEYS[2] item record, KEYS[3] the vault's item index, KEYS[4] the
# item's policy's item set, KEYS[5] its previous policy's item set, KEYS[6] the schedule,
# KEYS[7] the VM's recovery point index; ARGV[1] token ('' = unfenced), ARGV[2] JSON, ARGV[3]
# VM id, ARGV[4] schedule member, ARGV[5] '1' if the policy counts the item, ARGV[6] '1' if
# the item is scheduled, ARGV[7] its next run's score ('' = leave it).
PUT_ITEM = (
    _FENCE_CHECK
    + _WITH_COUNT
    + """
redis.call('SET', KEYS[2], with_count(ARGV[2], KEYS[7]))
redis.call('SADD', KEYS[3], ARGV[3])
if KEYS[5] ~= KEYS[4] then redis.call('SREM', KEYS[5], ARGV[3]) end
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[4], ARGV[3])
else
  redis.call('SREM', KEYS[4], ARGV[3])
end
if ARGV[6] ~= '1' then
  redis.call('ZREM', KEYS[6], ARGV[4])
elseif ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[4])
end
return 1
"""
)

# KEYS[1] the schedule; ARGV[1] member, ARGV[2] the score it must still have, ARGV[3] its new
# score ('' = remove it). Returns 1 if it moved.
MOVE_RUN = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS[1] point record, KEYS[2] the VM's recovery point index, KEYS[3] the item record;
# ARGV[1] point id, ARGV[2] JSON ('' = remove the point), ARGV[3] its score. Adds or removes
# a mirrored point and sets the item's count to match, in one step.
PUT_POINT = (
    _WITH_COUNT
    + """
-- The VM's index of points is derived data (the manifests are the truth, and prune mirrors
-- them again): one of the wrong Redis type is replaced, and the reply says so.
local replaced = ''
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'zset' and kind ~= 'none' then
  redis.call('DEL', KEYS[2])
  replaced = kind
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
local raw = redis.pcall('GET', KEYS[3])
if type(raw) == 'string' then redis.call('SET', KEYS[3], with_count(raw, KEYS[2])) end
return replaced
"""
)

# KEYS[1] fence counter, KEYS[2] item record, KEYS[3] the vault's item index, KEYS[4] its
# policy's item set, KEYS[5] the schedule, KEYS[6] its skipped/missed runs, KEYS[7] its
# active backup; ARGV[1] token ('' = unfenced), ARGV[2] VM id, ARGV[3] schedule member.
REMOVE_ITEM = (
    _FENCE_CHECK
    + """
redis.call('DEL', KEYS[2], KEYS[6], KEYS[7])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[3])
return 1
"""
)
