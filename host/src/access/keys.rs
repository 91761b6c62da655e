//! API keys: a key file's format, the set of keys read from one, and the comparison of a key a
//! client sent against them in constant time. Reading the file from disk (and when) is
//! `access::files`'s; deciding what a request gets is `access::gate`'s.
//!
//! A key file holds one key per line; blank lines and lines starting with `#` are skipped, and
//! the whitespace around a key is not part of it. A key is 16 to [`MAX_KEY_LEN`] visible ASCII
//! characters (what fits in `Authorization: Bearer KEY`); a line that is not one is refused
//! with its line number and why, never its text, and the file's other keys still count.

use std::fmt;

/// The shortest key accepted: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 16;
/// The longest key accepted (every comparison runs over this many bytes).
pub const MAX_KEY_LEN: usize = 256;
/// The most keys one file may hold (every request is compared against all of them).
pub const MAX_KEYS: usize = 100;
/// The largest key file read.
pub const MAX_FILE: u64 = 64 * 1024;

/// One key, zero-padded to a fixed size so that comparing it costs the same whatever its
/// length. Invariant: `bytes[len..]` are zeros, and a key holds no zero byte.
struct Key {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl Key {
    fn new(text: &[u8]) -> Option<Key> {
        if text.len() > MAX_KEY_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_KEY_LEN];
        bytes[..text.len()].copy_from_slice(text);
        Some(Key {
            bytes,
            len: text.len(),
        })
    }
}

/// The keys a route accepts. Its `Debug` says how many there are, never what they are.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySet({} keys)", self.keys.len())
    }
}

impl Drop for KeySet {
    fn drop(&mut self) {
        // Best effort: a freed key does not linger in memory for the next allocation to read.
        for key in &mut self.keys {
            key.bytes.fill(0);
            std::hint::black_box(&key.bytes);
        }
    }
}

/// A line of a key file that is not a key, and why (for the log; the line itself is not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Its line number, from 1.
    pub line: usize,
    /// Why it is not a key.
    pub why: RefusedKey,
}

/// Why a line of a key file is not a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedKey {
    /// Shorter than [`MIN_KEY_LEN`] bytes: guessable.
    TooShort(usize),
    /// Longer than [`MAX_KEY_LEN`] bytes.
    TooLong(usize),
    /// It holds a byte that is not visible ASCII (a space inside it, a control character,
    /// UTF-8): a client could not send it as a bearer token.
    NotVisibleAscii,
    /// The file already holds [`MAX_KEYS`] keys.
    TooMany,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match self.why {
            RefusedKey::TooShort(n) => write!(
                f,
                "a key of {n} bytes is too short (at least {MIN_KEY_LEN}: a short key can be \
                 guessed)"
            ),
            RefusedKey::TooLong(n) => {
                write!(f, "a key of {n} bytes is too long (at most {MAX_KEY_LEN})")
            }
            RefusedKey::NotVisibleAscii => write!(
                f,
                "a key may hold only visible ASCII characters (no spaces, no control \
                 characters)"
            ),
            RefusedKey::TooMany => write!(f, "more than {MAX_KEYS} keys: the rest are ignored"),
        }
    }
}

impl KeySet {
    /// Parses a key file's contents: the keys, and the lines refused (to be logged).
    pub fn parse(text: &[u8]) -> (KeySet, Vec<Refused>) {
        let mut keys = Vec::new();
        let mut refused = Vec::new();
        for (at, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let why = if line.len() < MIN_KEY_LEN {
                Some(RefusedKey::TooShort(line.len()))
            } else if line.len() > MAX_KEY_LEN {
                Some(RefusedKey::TooLong(line.len()))
            } else if !line.iter().all(|b| b.is_ascii_graphic()) {
                Some(RefusedKey::NotVisibleAscii)
            } else if keys.len() >= MAX_KEYS {
                Some(RefusedKey::TooMany)
            } else {
                None
            };
            match why.map_or_else(
                || Key::new(line).ok_or(RefusedKey::TooLong(line.len())),
                Err,
            ) {
                Ok(key) => keys.push(key),
                Err(why) => refused.push(Refused { line: at + 1, why }),
            }
        }
        (KeySet { keys }, refused)
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none (a route that needs one of none is closed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `given` is one of the keys. Every key is compared, each over all
    /// [`MAX_KEY_LEN`] bytes and without stopping at the first difference, so the time taken
    /// tells neither where a guess went wrong nor which key (if any) matched, nor a key's
    /// length. Only the number of keys shows, and a `given` too long to be a key is refused at
    /// once (its length is the client's own).
    pub fn contains(&self, given: &[u8]) -> bool {
        let Some(given) = Key::new(given) else {
            return false;
        };
        let mut found = 0u8;
        for key in &self.keys {
            found |= std::hint::black_box(same(key, &given));
        }
        found == 1
    }
}

/// 1 when `a` and `b` are the same key, else 0: every byte is looked at, whatever differs.
fn same(a: &Key, b: &Key) -> u8 {
    let mut diff = 0u8;
    for (x, y) in a.bytes.iter().zip(b.bytes.iter()) {
        diff |= x ^ y;
    }
    // The lengths too (the padding is zeros and a key holds no zero byte, so the bytes alone
    // would already differ; this keeps the rule from resting on that).
    let lengths = (a.len ^ b.len) as u64;
    let lengths = (lengths | (lengths >> 32)) as u32;
    let lengths = (lengths | (lengths >> 16)) as u16;
    let lengths = (lengths | (lengths >> 8)) as u8;
    let diff = diff | lengths;
    // 0 -> 1, anything else -> 0, without a branch.
    let spread = u16::from(diff).wrapping_sub(1) >> 8;
    (spread & 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-first";
    const B: &str = "fedcba9876543210-second";

    #[test]
    fn a_key_file_skips_blanks_and_comments_and_refuses_bad_lines_by_number() {
        let text = format!(
            "# keys for /echo\n\n  {A}  \nshort\n{B}\r\nhas a space inside it\n{}\n",
            "x".repeat(MAX_KEY_LEN + 1)
        );
        let (keys, refused) = KeySet::parse(text.as_bytes());
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(A.as_bytes()));
        assert!(
            keys.contains(B.as_bytes()),
            "a CRLF line ending is not part of a key"
        );
        let lines: Vec<(usize, RefusedKey)> = refused.iter().map(|r| (r.line, r.why)).collect();
        assert_eq!(
            lines,
            [
                (4, RefusedKey::TooShort(5)),
                (6, RefusedKey::NotVisibleAscii),
                (7, RefusedKey::TooLong(MAX_KEY_LEN + 1)),
            ]
        );
        let said = refused[0].to_string();
        assert!(
            said.contains("line 4") && said.contains("too short"),
            "{said}"
        );
        assert!(
            !said.contains("short\n"),
            "the refused text is never repeated"
        );
        assert_eq!(
            format!("{keys:?}"),
            "KeySet(2 keys)",
            "Debug never shows a key"
        );
    }

    #[test]
    fn a_file_holds_at_most_max_keys() {
        let text: String = (0..MAX_KEYS + 2)
            .map(|i| format!("key-number-{i:08}\n"))
            .collect();
        let (keys, refused) = KeySet::parse(text.as_bytes());
        assert_eq!(keys.len(), MAX_KEYS);
        assert_eq!(refused.len(), 2);
        assert!(refused.iter().all(|r| r.why == RefusedKey::TooMany));
    }

    #[test]
    fn only_a_whole_key_matches() {
        let (keys, _) = KeySet::parse(format!("{A}\n{B}\n").as_bytes());
        let longer = format!("{A}x");
        let nul = format!("{A}\0");
        let table: &[(&[u8], bool)] = &[
            (A.as_bytes(), true),
            (B.as_bytes(), true),
            (&A.as_bytes()[..A.len() - 1], false), // a prefix
            (longer.as_bytes(), false),
            (nul.as_bytes(), false), // the same bytes as A's padding: told apart by length
            (b"", false),
            (b"0123456789abcdef-firsT", false), // the last byte differs
            (b"1123456789abcdef-first", false), // the first byte differs
            (&[b'x'; MAX_KEY_LEN + 1], false),
        ];
        for (given, expected) in table {
            assert_eq!(
                keys.contains(given),
                *expected,
                "{:?}",
                String::from_utf8_lossy(given)
            );
        }
        assert!(
            !KeySet::default().contains(A.as_bytes()),
            "no keys: none match"
        );
    }

    #[test]
    fn the_comparison_has_no_early_exit_and_says_one_or_zero() {
        let key = |text: &str| Key::new(text.as_bytes()).expect("fits");
        assert_eq!(same(&key(A), &key(A)), 1);
        assert_eq!(same(&key(A), &key(B)), 0);
        // Lengths that differ by a multiple of 256 are still told apart.
        let long = Key::new(&[b'a'; 256]).expect("fits");
        let mut short = Key::new(&[b'a'; 256]).expect("fits");
        short.len = 0;
        assert_eq!(same(&long, &short), 0);
        for differing in [0x01u8, 0x80, 0xff] {
            let mut other = key(A);
            other.bytes[3] ^= differing;
            assert_eq!(same(&key(A), &other), 0, "{differing:#x}");
        }
    }
}
