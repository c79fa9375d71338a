//! Shared text for strings that thousands of records would otherwise each copy.
//!
//! Condition reasons, annotation keys, the Secret type and ownerReference kinds are the same
//! handful of values on every binding and Secret; borrowing them from a static list keeps each
//! record from allocating its own copy. Registry servers, scopes, audiences, namespaces and
//! ServiceAccount names are shared by many bindings too, but not known in advance: [`share`]
//! hands out one reference-counted copy per distinct value.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A string shared by every record holding the same value.
pub type Shared = Arc<str>;

struct Pool {
    values: HashSet<Arc<str>>,
    /// Size after the last sweep; the next sweep runs when the pool has doubled since.
    swept_at: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// The pool's copy of `s`, added if new. Values no record holds any more are swept out when the
/// pool has doubled since the last sweep, so it stays proportional to what is in use.
pub fn share(s: &str) -> Shared {
    let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let pool = guard.get_or_insert_with(|| Pool {
        values: HashSet::new(),
        swept_at: 0,
    });
    if let Some(v) = pool.values.get(s) {
        return Arc::clone(v);
    }
    if pool.values.len() >= 2 * pool.swept_at.max(64) {
        pool.values.retain(|v| Arc::strong_count(v) > 1);
        pool.swept_at = pool.values.len();
    }
    let v: Arc<str> = Arc::from(s);
    pool.values.insert(Arc::clone(&v));
    v
}

/// A string borrowed from a static list when it is one of its values, else owned.
pub type Text = Cow<'static, str>;

/// `s` borrowed from `known` when it is listed there, else copied.
pub fn intern(s: &str, known: &[&'static str]) -> Text {
    match known.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let a = share("registry.azurecr.io/shared-test");
        let b = share("registry.azurecr.io/shared-test");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "registry.azurecr.io/shared-test");
    }

    #[test]
    fn values_nobody_holds_are_swept_as_the_pool_grows() {
        let kept = share("kept-across-sweeps");
        for i in 0..10_000 {
            drop(share(&format!("transient-{i}")));
        }
        let size = POOL.lock().unwrap().as_ref().map_or(0, |p| p.values.len());
        assert!(size < 5_000, "the pool holds {size} values");
        assert!(Arc::ptr_eq(&kept, &share("kept-across-sweeps")));
    }

    #[test]
    fn listed_values_are_borrowed_and_others_copied() {
        const KNOWN: &[&str] = &["Ready", "True"];
        assert!(matches!(intern("True", KNOWN), Cow::Borrowed("True")));
        let other = intern("Maybe", KNOWN);
        assert!(matches!(other, Cow::Owned(_)));
        assert_eq!(other, "Maybe");
    }
}
