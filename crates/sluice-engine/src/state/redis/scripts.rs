//! The two server-side scripts of the Redis state layout (see `docs/redis.md`).
//!
//! One Redis hash per entity key holds that key's event log:
//!
//! | field | value |
//! |---|---|
//! | `e` | epoch: a random id given when the hash was created (a re-created key is a new epoch) |
//! | `v` | version: how many entries were ever appended |
//! | `b` | base: the first entry still held (older ones were trimmed) |
//! | `h` | the newest event time among trimmed entries (absent until something is trimmed) |
//! | `0`, `1`, ... | entry `n`: one event's observation of the key's fields |
//!
//! Both scripts touch only `KEYS[1]`, so they work on a cluster and during slot migration.

/// Index of [`READ`] among the scripts loaded by the backend.
pub const READ_SCRIPT: usize = 0;
/// Index of [`COMMIT`].
pub const COMMIT_SCRIPT: usize = 1;

/// Lua shared by both scripts: `log(k, m, out)` appends the hash's metadata `m` (from
/// `HMGET e v b h`) and its entries, in order, to `out`. Reads 1,000 fields per `HMGET` so as to
/// stay within Lua's stack.
macro_rules! log_fn {
    () => {
        r#"
local function log(k, m, out)
  local v, b = tonumber(m[2]), tonumber(m[3])
  out[#out + 1] = m[1]; out[#out + 1] = m[2]; out[#out + 1] = m[3]; out[#out + 1] = m[4] or ''
  local i = b
  while i < v do
    local last = math.min(i + 999, v - 1)
    local names = {}
    for j = i, last do names[#names + 1] = tostring(j) end
    local vals = redis.call('HMGET', k, unpack(names))
    for _, x in ipairs(vals) do out[#out + 1] = x or '' end
    i = last + 1
  end
  return out
end
"#
    };
}

/// Returns the whole log: `{e, v, b, h, entry_b, ..., entry_v-1}`, or `{''}` when the key does
/// not exist.
pub const READ: &str = concat!(
    log_fn!(),
    r#"
local k = KEYS[1]
local m = redis.call('HMGET', k, 'e', 'v', 'b', 'h')
if not m[1] then return {''} end
return log(k, m, {})
"#
);

/// Appends entries if the log is still at the version the writer computed from.
///
/// `ARGV`: expected epoch (`''`: the key must not exist), expected version, epoch to create
/// the key with, new base (entries below it are deleted), new `h` (`''`: unchanged), TTL in
/// milliseconds, then the entries. Returns `{1}` on success; otherwise `{0}` followed by the
/// current log as [`READ`] returns it, so the writer can catch up without another round trip.
pub const COMMIT: &str = concat!(
    log_fn!(),
    r#"
local k = KEYS[1]
local m = redis.call('HMGET', k, 'e', 'v', 'b', 'h')
local e = m[1] or ''
local v = tonumber(m[2] or '0')
if e ~= ARGV[1] or v ~= tonumber(ARGV[2]) then
  if not m[1] then return {0, ''} end
  return log(k, m, {0})
end
local b = tonumber(m[3] or '0')
local nb = tonumber(ARGV[4])
local i = b
while i < nb do
  local last = math.min(i + 999, nb - 1)
  local names = {}
  for j = i, last do names[#names + 1] = tostring(j) end
  redis.call('HDEL', k, unpack(names))
  i = last + 1
end
local set = {'v', v + #ARGV - 6, 'b', math.max(b, nb)}
if e == '' then set[#set + 1] = 'e'; set[#set + 1] = ARGV[3] end
if ARGV[5] ~= '' then set[#set + 1] = 'h'; set[#set + 1] = ARGV[5] end
redis.call('HSET', k, unpack(set))
local j = 7
while j <= #ARGV do
  local last = math.min(j + 499, #ARGV)
  local kv = {}
  for x = j, last do
    kv[#kv + 1] = tostring(v + x - 7)
    kv[#kv + 1] = ARGV[x]
  end
  redis.call('HSET', k, unpack(kv))
  j = last + 1
end
redis.call('PEXPIRE', k, ARGV[6])
return {1}
"#
);
