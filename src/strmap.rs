//! A compact string-to-string map for the labels and annotations the store keeps per Secret.
//!
//! A `BTreeMap<String, String>` allocates a node with room for eleven entries however few it
//! holds (about 1.2 KiB for the three or four entries of a pull Secret); at ten thousand Secrets
//! that was the largest single item in acrpull's memory. Sorted pairs in one exact-sized
//! allocation hold the same in about a tenth, and lookups stay logarithmic. Keys are [`Text`], so
//! the well-known ones can be borrowed instead of copied.

use std::fmt;

use crate::text::Text;

/// Sorted, unique keys; each value sized exactly.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrMap {
    entries: Vec<(Text, Box<str>)>,
}

impl StrMap {
    /// An empty map.
    pub fn new() -> StrMap {
        StrMap::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| &*self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<Text>, value: impl Into<Box<str>>) {
        let key = key.into();
        match self.find(&key) {
            Ok(i) => self.entries[i].1 = value.into(),
            Err(i) => self.entries.insert(i, (key, value.into())),
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries = Vec::new();
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<K: Into<Text>, V: Into<Box<str>>> FromIterator<(K, V)> for StrMap {
    /// Later duplicates win, as they would in a map built by repeated inserts.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> StrMap {
        let mut entries: Vec<(Text, Box<str>)> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable sort keeps insertion order among equal keys; keep the last of each run.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Text, Box<str>)> = Vec::with_capacity(entries.len());
        for e in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => deduped.push(e),
            }
        }
        deduped.shrink_to_fit();
        StrMap { entries: deduped }
    }
}

impl<K: Into<Text>, V: Into<Box<str>>, const N: usize> From<[(K, V); N]> for StrMap {
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
    fn collected_maps_hold_no_spare_capacity() {
        let m: StrMap = (0..5).map(|i| (i.to_string(), "v")).collect();
        assert_eq!(m.entries.capacity(), 5);
    }
}
