/**
 * The Lua a StreamReader registration runs on Redis: trimming what every group processed,
 * the per-stream leases and the proxy's liveness key, and the idle sweep's reads (per slot,
 * or one script per cluster node). Kept apart from stream-consumer.ts, which decides when
 * each runs.
 */
import { NodeScript } from "./node-scripts.js";

/**
 * Deletes what every consumer group of the stream has processed: entries older than the
 * oldest pending entry of any group, or than the last delivered one of a group with none
 * pending. Other registrations' groups (and foreign ones) keep everything they still need.
 */
export const TRIM_SCRIPT = `
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a1, a2, b1, b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end
local min1, min2 = nil, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local m1, m2
  if tonumber(info['pending']) > 0 then
    m1, m2 = parse(redis.call('XPENDING', KEYS[1], info['name'])[2])
  else
    m1, m2 = parse(info['last-delivered-id'])
    m2 = m2 + 1
  end
  if min1 == nil or less(m1, m2, min1, min2) then min1, min2 = m1, m2 end
end
if min1 == nil then return 0 end
local minid = string.format('%d-%d', min1, min2)
local trimmed = redis.pcall('XTRIM', KEYS[1], 'MINID', minid)
if type(trimmed) == 'number' then return trimmed end
-- Before Redis 6.2 XTRIM has no MINID: the oldest entries below minid, up to 1000 a time (the
-- rest on the next trim), go by an exact MAXLEN; what it reads is what it deletes.
local older
if min2 > 0 then older = string.format('%d-%d', min1, min2 - 1)
elseif min1 > 0 then older = string.format('%d-18446744073709551615', min1 - 1)
else return 0 end
local gone = redis.call('XRANGE', KEYS[1], '-', older, 'COUNT', 1000)
if #gone == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', redis.call('XLEN', KEYS[1]) - #gone)`;

/**
 * Takes the lease of one stream for one consumer group, or says who holds it: -1 it was this
 * proxy's already, -2 taken (free, or its holder's liveness key `ARGV[3]<holder>` is gone: a
 * dead or stalled proxy), else the name of the live holder.
 */
export const LEASE_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
if v and redis.call('EXISTS', ARGV[3] .. v) == 1 then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return -2`;

/**
 * This proxy's liveness for a group, its value this consumer object's token: 1 renewed, 0
 * set anew (it had run out, or another object of the same name set it: the leases it held
 * may have been taken meanwhile).
 */
export const ALIVE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0`;

/** Refreshes the lease keys still this proxy's; the (1-based) indexes of those that are not. */
export const REFRESH_SCRIPT = `
local lost = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) else lost[#lost + 1] = i end
end
return lost`;

/** Deletes the keys whose value is ARGV[1]: the leases this proxy gives back at a clean stop, its liveness key. */
export const RELEASE_SCRIPT = `
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 0`;

/**
 * The (1-based) indexes of the streams whose group has entries pending to a consumer other
 * than ARGV[2] (one that may have died with them); a stream or group gone counts as none.
 */
export const PENDING_SCRIPT = `
local found = {}
for i, k in ipairs(KEYS) do
  local ok, summary = pcall(redis.call, 'XPENDING', k, ARGV[1])
  if ok and tonumber(summary[1]) > 0 and type(summary[4]) == 'table' then
    for _, c in ipairs(summary[4]) do
      if c[1] ~= ARGV[2] then found[#found + 1] = i break end
    end
  end
end
return found`;

/**
 * The idle sweep's read on one cluster node: XREADGROUP of every stream given (ARGV[4] on,
 * all on this node, in any slots), one at a time. Per stream: its entries, 0 for none, or
 * the error text (its slot moved away, its group is gone...): that stream alone is read
 * again the per-slot way, which follows MOVED and ASK.
 */
export const NODE_READ_SCRIPT = new NodeScript(
  "stream sweep read",
  `#!lua flags=allow-cross-slot-keys
local out = {}
for i = 4, #ARGV do
  local r = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', ARGV[i], '>')
  if type(r) == 'table' and r.err then out[i - 3] = r.err
  elseif type(r) == 'table' and type(r[1]) == 'table' then out[i - 3] = r[1][2]
  else out[i - 3] = 0 end
end
return out`,
);

/**
 * PENDING_SCRIPT on one cluster node, streams of many slots as ARGV[3] on: per stream 1 when
 * its group has entries pending to a consumer other than ARGV[2], 0 when not (a stream or
 * group gone counts as none), or the error text (its slot moved away: claimed the per-slot way).
 */
export const NODE_PENDING_SCRIPT = new NodeScript(
  "stream sweep pending",
  `#!lua flags=no-writes,allow-cross-slot-keys
local out = {}
for i = 3, #ARGV do
  local found = 0
  local summary = redis.pcall('XPENDING', ARGV[i], ARGV[1])
  if type(summary) == 'table' and summary.err then
    if string.sub(summary.err, 1, 7) ~= 'NOGROUP' then found = summary.err end
  elseif tonumber(summary[1]) > 0 and type(summary[4]) == 'table' then
    for _, c in ipairs(summary[4]) do
      if c[1] ~= ARGV[2] then found = 1 break end
    end
  end
  out[i - 2] = found
end
return out`,
);
