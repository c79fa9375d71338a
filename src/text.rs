//! Shared text for strings that thousands of records would otherwise each copy.
//!
//! Condition reasons, annotation keys, the Secret type and ownerReference kinds are the same
//! handful of values on every binding and Secret; borrowing them from a static list keeps each
//! record from allocating its own copy.

use std::borrow::Cow;

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
    fn listed_values_are_borrowed_and_others_copied() {
        const KNOWN: &[&str] = &["Ready", "True"];
        assert!(matches!(intern("True", KNOWN), Cow::Borrowed("True")));
        let other = intern("Maybe", KNOWN);
        assert!(matches!(other, Cow::Owned(_)));
        assert_eq!(other, "Maybe");
    }
}
