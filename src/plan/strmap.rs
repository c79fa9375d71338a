//! A compact string-to-string map for the labels and annotations the store keeps per Secret.
//!
//! A `BTreeMap<String, String>` allocates a node with room for eleven entries however few it
//! holds, and a pull Secret has three or four: per Secret that is many times the data itself. Here the whole map is one exact-sized
//! string: entries sorted by key, each length-prefixed, and the keys every pull Secret carries
//! written as a short code. Lookups scan it, which for a handful of entries is as fast as a
//! search and costs no memory.
//!
//! Encoding, per entry: the key as `#<index into KNOWN_KEYS>:` or `<byte length>:<key>`, then
//! the value as `<byte length>:<value>`.

use std::fmt;

use crate::binding::names::BINDING_LABEL;
use crate::plan::{EXPIRY_ANNOTATION, INPUTS_ANNOTATION, REFRESH_ANNOTATION};

/// Keys written as a code instead of in full.
const KNOWN_KEYS: &[&str] = &[
    BINDING_LABEL,
    EXPIRY_ANNOTATION,
    REFRESH_ANNOTATION,
    INPUTS_ANNOTATION,
];

/// Sorted, unique keys, in one allocation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrMap {
    blob: Box<str>,
}

/// The entries of an encoded map, in order. Stops at anything malformed, which only a bug in
/// [`encode`] could produce.
struct Entries<'a> {
    rest: &'a str,
}

/// Splits `<decimal length>:<text of that many bytes>` off the front of `s`.
fn take_counted(s: &str) -> Option<(&str, &str)> {
    let (len, rest) = s.split_once(':')?;
    let len: usize = len.parse().ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.rest.is_empty() {
            return None;
        }
        let (key, rest) = match self.rest.strip_prefix('#') {
            Some(coded) => {
                let (index, rest) = coded.split_once(':')?;
                let key: &'static str = KNOWN_KEYS.get(index.parse::<usize>().ok()?)?;
                (key, rest)
            }
            None => take_counted(self.rest)?,
        };
        let (value, rest) = take_counted(rest)?;
        self.rest = rest;
        Some((key, value))
    }
}

/// Encodes entries already sorted by key with no duplicates.
fn encode<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> Box<str> {
    let mut blob = String::new();
    for (key, value) in entries {
        match KNOWN_KEYS.iter().position(|k| *k == key) {
            Some(i) => blob.push_str(&format!("#{i}:")),
            None => blob.push_str(&format!("{}:{key}", key.len())),
        }
        blob.push_str(&format!("{}:{value}", value.len()));
    }
    blob.into_boxed_str()
}

/// Sorts by key and keeps the last value of each key, as repeated inserts would.
fn normalise(mut entries: Vec<(String, String)>) -> Vec<(String, String)> {
    // Stable: among equal keys the insertion order survives, so the last one can win.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    out
}

impl StrMap {
    /// An empty map.
    pub fn new() -> StrMap {
        StrMap::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let mut entries: Vec<(String, String)> = self
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        entries.push((key.into(), value.into()));
        *self = StrMap::from_entries(entries);
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.blob = Box::default();
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.blob.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        Entries { rest: &self.blob }
    }

    fn from_entries(entries: Vec<(String, String)>) -> StrMap {
        let entries = normalise(entries);
        StrMap {
            blob: encode(entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for StrMap {
    /// Later duplicates win, as they would in a map built by repeated inserts.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> StrMap {
        StrMap::from_entries(
            iter.into_iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
                .collect(),
        )
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for StrMap {
    fn from(pairs: [(K, V); N]) -> StrMap {
        pairs.into_iter().collect()
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_every_key_whatever_the_insertion_order() {
        let m: StrMap = [("b", "2"), ("a", "1"), ("c", "3")].into();
        assert_eq!(m.get("a"), Some("1"));
        assert_eq!(m.get("b"), Some("2"));
        assert_eq!(m.get("c"), Some("3"));
        assert_eq!(m.get("d"), None);
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn a_later_duplicate_wins_when_collecting() {
        let m: StrMap = [("k", "first"), ("k", "second")].into();
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("k"), Some("second"));
    }

    #[test]
    fn insert_replaces_or_adds_in_order() {
        let mut m = StrMap::new();
        m.insert("z", "1");
        m.insert("a", "2");
        m.insert("z", "3");
        assert_eq!(m.iter().collect::<Vec<_>>(), [("a", "2"), ("z", "3")]);
        assert!(m.contains_key("a"));
        m.clear();
        assert!(m.is_empty());
    }

    #[test]
    fn known_keys_are_coded_and_any_text_round_trips() {
        let tricky = "a:b#1:2:\u{0}é";
        let m: StrMap = [
            (INPUTS_ANNOTATION, "hash"),
            (BINDING_LABEL, "binding"),
            ("12:x", tricky),
            ("", ""),
        ]
        .into();
        assert_eq!(m.get(INPUTS_ANNOTATION), Some("hash"));
        assert_eq!(m.get(BINDING_LABEL), Some("binding"));
        assert_eq!(m.get("12:x"), Some(tricky));
        assert_eq!(m.get(""), Some(""));
        assert_eq!(m.len(), 4);
        assert!(
            !m.blob.contains(BINDING_LABEL),
            "known keys are not stored in full: {:?}",
            m.blob
        );
    }

    #[test]
    fn a_pull_secrets_metadata_fits_in_one_small_allocation() {
        let m: StrMap = [
            (BINDING_LABEL, "my-binding-name"),
            (EXPIRY_ANNOTATION, "2026-11-29T03:00:00Z"),
            (REFRESH_ANNOTATION, "2026-11-29T00:00:00Z"),
            (
                INPUTS_ANNOTATION,
                "2wucoufm4eqegr6z5nmg00bvmwguubf86kfxk6yir9pw",
            ),
        ]
        .into();
        assert!(m.blob.len() < 140, "{} bytes", m.blob.len());
    }
}
