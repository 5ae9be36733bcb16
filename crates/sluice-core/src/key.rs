//! Keys: how the values of a feature's `by` fields become one byte string, and which key group
//! it falls in.
//!
//! The encoding is stable across runs and versions (checkpoints and remote state depend on it):
//! each field value is a type tag followed by its canonical text and a length, so `"42"` (a
//! string) and `42` (a number) are different keys and no two field lists encode alike.

use xxhash_rust::xxh3::xxh3_64;

/// Number of key groups: the fixed unit of ownership, snapshot and rescaling.
pub const KEY_GROUPS: u32 = 256;

/// The 64-bit hash of an encoded key (xxh3): stable, and used both for key groups and for the
/// state maps, so a key is hashed once per event.
#[inline]
pub fn key_hash(encoded_key: &[u8]) -> u64 {
    xxh3_64(encoded_key)
}

/// The token of an event id (`[event] id`), from its canonical bytes: the 128-bit xxh3
/// hash, as two halves. Two ids share a token with probability 2^-128 per pair.
pub fn id_token(canonical_id: &[u8]) -> (u64, u64) {
    let h = xxhash_rust::xxh3::xxh3_128(canonical_id);
    ((h >> 64) as u64, h as u64)
}

/// The key group of a key hash: `hash mod KEY_GROUPS`.
#[inline]
pub fn group_of(hash: u64) -> u32 {
    (hash % u64::from(KEY_GROUPS)) as u32
}

/// The key group holding the keys of partition `partition` (< [`KEY_GROUPS`]) of a
/// partitioned source whose state follows its partitions: the partition's bits reversed, so
/// that consecutive partitions spread over the shards (`shard_of` splits the group range).
#[inline]
pub fn partition_group(partition: u32) -> u32 {
    u32::from((partition as u8).reverse_bits())
}

/// The key group of an encoded key: `xxh3_64(key) mod KEY_GROUPS`.
#[inline]
pub fn key_group(encoded_key: &[u8]) -> u32 {
    group_of(key_hash(encoded_key))
}

/// The shard (0..shards) that owns a key group: contiguous ranges of groups, so that a
/// change in the number of shards moves whole ranges.
#[inline]
pub fn shard_of(group: u32, shards: usize) -> usize {
    (group as usize * shards) / KEY_GROUPS as usize
}

/// Appends key field values to a buffer in the canonical key encoding.
#[derive(Debug)]
pub struct KeyEncoder<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> KeyEncoder<'a> {
    /// Starts encoding at the end of `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    fn tagged(&mut self, tag: u8, text: &[u8]) {
        self.buf.push(tag);
        self.buf.extend_from_slice(text);
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_le_bytes());
    }

    /// A string value.
    pub fn str(&mut self, s: &str) {
        self.tagged(b's', s.as_bytes());
    }

    /// A string value given as its UTF-8 bytes (already validated by the caller).
    pub fn str_bytes(&mut self, s: &[u8]) {
        self.tagged(b's', s);
    }

    /// A number value; integral numbers encode like integers (`42.0` and `42` are one key).
    pub fn num(&mut self, v: f64) {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            self.int(v as i64);
        } else {
            let mut b = ryu::Buffer::new();
            self.tagged(b'n', b.format(v).as_bytes());
        }
    }

    /// An integer value.
    pub fn int(&mut self, v: i64) {
        let mut b = itoa::Buffer::new();
        self.tagged(b'n', b.format(v).as_bytes());
    }

    /// A boolean value.
    pub fn bool(&mut self, v: bool) {
        self.tagged(b'b', if v { b"true" } else { b"false" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut KeyEncoder<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        f(&mut KeyEncoder::new(&mut buf));
        buf
    }

    #[test]
    fn types_and_boundaries_are_distinct() {
        assert_ne!(enc(|e| e.str("42")), enc(|e| e.int(42)));
        assert_eq!(enc(|e| e.num(42.0)), enc(|e| e.int(42)));
        assert_ne!(
            enc(|e| {
                e.str("ab");
                e.str("c")
            }),
            enc(|e| {
                e.str("a");
                e.str("bc")
            })
        );
    }

    /// `by = []`: the global key encodes as no bytes, which no key of one or more fields does
    /// (each field is at least a tag and a length), so it is one key in one key group.
    #[test]
    fn the_global_key_is_empty_and_unlike_any_other() {
        let global = enc(|_| {});
        assert!(global.is_empty());
        assert_eq!(enc(|e| e.str("")).len(), 5);
        assert_eq!(key_group(&global), key_group(&enc(|_| {})));
        assert_eq!(key_hash(&global), xxh3_64(b""));
    }

    #[test]
    fn groups_are_stable_and_spread() {
        // Pinned: key groups must not change between versions (checkpoints depend on them).
        assert_eq!(
            key_group(&enc(|e| e.str("u42"))),
            key_group(&enc(|e| e.str("u42")))
        );
        let mut seen = [0u32; KEY_GROUPS as usize];
        for i in 0..100_000 {
            seen[key_group(&enc(|e| e.str(&format!("u{i}")))) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 250 && n < 550), "{seen:?}");
        assert_eq!(shard_of(0, 3), 0);
        assert_eq!(shard_of(255, 3), 2);
        assert_eq!(shard_of(255, 1), 0);
        // Partitions 0..4 land on both of two shards, and groups identify partitions.
        let groups: Vec<u32> = (0..4).map(partition_group).collect();
        assert_eq!(groups, [0, 128, 64, 192]);
        assert_eq!(
            groups.iter().map(|&g| shard_of(g, 2)).collect::<Vec<_>>(),
            [0, 1, 0, 1]
        );
        let all: std::collections::HashSet<u32> = (0..KEY_GROUPS).map(partition_group).collect();
        assert_eq!(all.len(), KEY_GROUPS as usize);
    }
}
