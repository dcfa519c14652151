//! The Lua scripts, for one server ([`COMMIT`], [`LABEL`], [`UNCOUNT`]: a transaction's
//! marker and its entities' hashes in one call) and for a cluster ([`ENTITY_COMMIT`],
//! [`ENTITY_LABEL`], [`ENTITY_UNCOUNT`]: one entity's hash and its per-transaction
//! markers, all in that entity's slot). Both share the functions that change a bucket
//! (`bucket_ops!`), so the two layouts count alike.

/// The scripts' shared function: bucket `b` of hash `k` (zeros when absent) and the
/// oldest bucket kept (`nil` when none), in one call.
macro_rules! read_bucket {
    () => {
        r"
local function read(k, b)
  local v = redis.call('HMGET', k, 'b' .. b, 'lo')
  local lo = tonumber(v[2])
  if not v[1] then return 0, 0, 0, lo end
  local c, f, s = string.match(v[1], '^(%S+) (%S+) (%S+)$')
  return tonumber(c) or 0, tonumber(f) or 0, tonumber(s) or 0, lo
end
"
    };
}

/// The commit script's trimming: delete the buckets of hash `k` before `oldest`, from its
/// oldest kept `lo`. Up to 64 a call, walking from `lo`; when `lo` is further behind than
/// that (an entity idle for days, or a far-past bucket counted before any watermark), one
/// pass over the hash's fields instead, so trimming always catches up in one call.
macro_rules! trim_buckets {
    () => {
        r"
local function trim(k, lo, oldest)
  if oldest - lo <= 64 then
    for x = lo, oldest - 1 do redis.call('HDEL', k, 'b' .. x, 'c' .. x, 'f' .. x, 's' .. x) end
    redis.call('HSET', k, 'lo', oldest)
    return
  end
  local keep = nil
  for _, f in ipairs(redis.call('HKEYS', k)) do
    local x = tonumber(string.sub(f, 2))
    if x and f ~= 'lo' then
      if x < oldest then redis.call('HDEL', k, f) elseif keep == nil or x < keep then keep = x end
    end
  end
  redis.call('HSET', k, 'lo', keep or oldest)
end
"
    };
}

/// The functions every script uses: `read` and `trim` above, and
/// - `add(k, b, dc, df, amount, oldest)`: bucket `b` of hash `k` gains `dc` transactions,
///   `df` frauds and `amount`; a new oldest bucket is recorded as `lo`, and with `oldest`
///   (not `nil`) the buckets before it are trimmed;
/// - `take(k, b, amount)`: one transaction of `amount` taken back from bucket `b`; a
///   bucket left with nothing is deleted.
macro_rules! bucket_ops {
    () => {
        concat!(
            read_bucket!(),
            trim_buckets!(),
            r"
local function add(k, b, dc, df, amount, oldest)
  local c, f, s, lo = read(k, b)
  local v = string.format('%d %d %.17g', c + dc, f + df, s + amount)
  if lo == nil or b < lo then
    redis.call('HSET', k, 'b' .. b, v, 'lo', b)
  else
    redis.call('HSET', k, 'b' .. b, v)
    if oldest and lo < oldest then trim(k, lo, oldest) end
  end
end
local function take(k, b, amount)
  local c, f, s = read(k, b)
  if c <= 1 and f == 0 then
    redis.call('HDEL', k, 'b' .. b, 'c' .. b, 'f' .. b, 's' .. b)
  elseif c > 0 then
    redis.call('HSET', k, 'b' .. b, string.format('%d %d %.17g', c - 1, f, s - amount))
  end
end
"
        )
    };
}

/// Counts transactions, each once: KEYS = for each transaction its served marker, then
/// its entity hashes; ARGV = served TTL, oldest bucket kept, entity TTL, then for each
/// transaction its features, bucket, amount and number of entity hashes. One call per
/// chunk of a batch ([`COMMIT_CHUNK`]): the script's per-call cost is shared.
pub(super) const COMMIT: &str = concat!(
    bucket_ops!(),
    r"
local served_ttl = ARGV[1]
local oldest = tonumber(ARGV[2])
local entity_ttl = ARGV[3]
local ki = 1
for ai = 4, #ARGV, 4 do
  local n = tonumber(ARGV[ai + 3])
  if redis.call('SET', KEYS[ki], ARGV[ai], 'NX', 'EX', served_ttl) then
    local b = tonumber(ARGV[ai + 1])
    local amount = tonumber(ARGV[ai + 2])
    for j = ki + 1, ki + n do
      add(KEYS[j], b, 1, 0, amount, oldest)
      redis.call('EXPIRE', KEYS[j], entity_ttl)
    end
  end
  ki = ki + 1 + n
end
return 1
"
);

/// Transactions per commit script call: long enough to share the call's cost, short
/// enough not to hold the server (which runs one script at a time) for long.
pub(super) const COMMIT_CHUNK: usize = 64;

/// Counts a fraud label once: KEYS = label marker, then entity hashes; ARGV = marker TTL,
/// bucket, entity TTL.
pub(super) const LABEL: &str = concat!(
    bucket_ops!(),
    r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local b = tonumber(ARGV[2])
for i = 2, #KEYS do
  add(KEYS[i], b, 0, 1, 0, nil)
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
"
);

/// Takes back transactions counted provisionally, each only while its served marker is
/// there: KEYS = for each transaction its served marker, then its entity hashes; ARGV =
/// for each transaction its bucket, amount and number of entity hashes. A bucket left
/// with nothing is deleted. Returns how many were taken back.
pub(super) const UNCOUNT: &str = concat!(
    bucket_ops!(),
    r"
local taken = 0
local ki = 1
for ai = 1, #ARGV, 3 do
  local n = tonumber(ARGV[ai + 2])
  if redis.call('DEL', KEYS[ki]) == 1 then
    taken = taken + 1
    local b = tonumber(ARGV[ai])
    local amount = tonumber(ARGV[ai + 1])
    for j = ki + 1, ki + n do take(KEYS[j], b, amount) end
  end
  ki = ki + 1 + n
end
return taken
"
);

/// Counts transactions in entities of one slot, each once per entity: KEYS = pairs of an
/// entity's hash and the marker hash of its group and the transaction's bucket
/// (`{p}:m:{g}:<bucket>`); ARGV = marker TTL, oldest bucket kept, entity TTL, then for
/// each pair the marker's field (`<entity>:<tx>`), the bucket and the amount.
pub(super) const ENTITY_COMMIT: &str = concat!(
    bucket_ops!(),
    r"
local ttl = ARGV[1]
local oldest = tonumber(ARGV[2])
local fresh = {}
for i = 1, #KEYS, 2 do
  local a = 3 + 3 * (i - 1) / 2
  local m = KEYS[i + 1]
  if redis.call('HSETNX', m, ARGV[a + 1], 1) == 1 then
    if not fresh[m] then
      redis.call('EXPIRE', m, ttl)
      fresh[m] = true
    end
    add(KEYS[i], tonumber(ARGV[a + 2]), 1, 0, tonumber(ARGV[a + 3]), oldest)
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  end
end
return 1
"
);

/// Counts fraud labels in entities of one slot, each once per entity: KEYS = pairs of an
/// entity's hash and its group's label-marker hash for the bucket; ARGV = marker TTL,
/// entity TTL, then for each pair the marker's field and the bucket. Returns 1 or 0 per
/// pair: applied now, or already.
pub(super) const ENTITY_LABEL: &str = concat!(
    bucket_ops!(),
    r"
local out = {}
for i = 1, #KEYS, 2 do
  local a = 2 + (i - 1)
  local applied = 0
  if redis.call('HSETNX', KEYS[i + 1], ARGV[a + 1], 1) == 1 then
    redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
    add(KEYS[i], tonumber(ARGV[a + 2]), 0, 1, 0, nil)
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    applied = 1
  end
  out[#out + 1] = applied
end
return out
"
);

/// Takes transactions back from entities of one slot, each only while its marker is
/// there: KEYS = pairs of an entity's hash and its group's marker hash for the bucket;
/// ARGV = for each pair the marker's field, the bucket and the amount. A bucket left with
/// nothing is deleted.
pub(super) const ENTITY_UNCOUNT: &str = concat!(
    bucket_ops!(),
    r"
for i = 1, #KEYS, 2 do
  local a = 3 * (i - 1) / 2
  if redis.call('HDEL', KEYS[i + 1], ARGV[a + 1]) == 1 then
    take(KEYS[i], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
  end
end
return 1
"
);
