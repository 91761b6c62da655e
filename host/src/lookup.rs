//! The hash of the maps looked up on every request (a route's live version, a version's
//! settings, a route's key rule): a multiply-and-rotate over 8-byte words, several times
//! cheaper than the standard SipHash on short route names. Safe against flooding here: these
//! maps hold only what the operator configured or dropped in; a client's request only looks
//! keys up, and a lookup, however chosen, never grows a map.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by route names, generations and the like, with [`WordHasher`].
pub type LookupMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// Mixes each 8-byte word into the state with a rotate, an xor and an odd multiplier. A
/// product's high bits depend on every bit of the input, its low bits only on the low bits:
/// `finish` folds the high bits down, since the map picks a bucket with the low bits (and tags
/// entries with the top seven).
#[derive(Clone, Copy, Debug, Default)]
pub struct WordHasher(u64);

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl WordHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            self.mix(u64::from_le_bytes(eight));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut eight = [0u8; 8];
            eight[..tail.len()].copy_from_slice(tail);
            self.mix(u64::from_le_bytes(eight));
        }
        // The length too: a tail is padded with zeros, so `echo` and `echo\0` would meet.
        self.mix(bytes.len() as u64);
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash_of(key: &str) -> u64 {
        BuildHasherDefault::<WordHasher>::default().hash_one(key)
    }

    #[test]
    fn names_that_differ_in_one_byte_or_length_hash_apart() {
        let names = [
            "echo",
            "echp",
            "echo1",
            "echo\0",
            "minilm",
            "minilm-py",
            "",
            "a",
            "b",
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(hash_of(a), hash_of(b), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn route_names_spread_over_buckets_and_tags() {
        // Names alike but for a digit or two, as an operator's routes often are.
        let hashes: Vec<u64> = (0..1024).map(|i| hash_of(&format!("model-{i}"))).collect();
        let fullest = |bits: &dyn Fn(u64) -> usize| {
            let mut count = [0usize; 64];
            hashes.iter().for_each(|&h| count[bits(h)] += 1);
            count.into_iter().max().unwrap_or(0)
        };
        // 16 a bucket on average; a degenerate hash piles them into a few.
        assert!(
            fullest(&|h| (h & 63) as usize) <= 32,
            "low bits (the bucket)"
        );
        assert!(fullest(&|h| (h >> 58) as usize) <= 32, "top bits (the tag)");
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map: LookupMap<String, usize> = LookupMap::default();
        for i in 0..1000 {
            map.insert(format!("route-{i}"), i);
        }
        assert!((0..1000).all(|i| map.get(&format!("route-{i}")) == Some(&i)));
        assert_eq!(map.get("route-1000"), None);
    }
}
