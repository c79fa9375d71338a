//! Label and field selectors: the kit's own parser, deliberately independent of the product's.

use std::collections::BTreeMap;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches objects without the key).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold (an empty selector matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Why a selector did not parse; the text becomes a 400's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl std::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn tokenize(s: &str) -> Result<Vec<Tok>, SelectorError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::DoubleEq);
                i += 2
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::NotEq);
                i += 2
            }
            '!' => {
                out.push(Tok::Not);
                i += 1
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => {
                return Err(SelectorError(format!(
                    "unable to parse requirement: unexpected character {other:?}"
                )))
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err<T>(&self, what: &str) -> Result<T, SelectorError> {
        Err(SelectorError(format!(
            "unable to parse requirement: {what}"
        )))
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => self.err("expected a label key"),
        }
    }

    /// A value may be empty (`key=`), ending at a comma or the end.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Tok::Word(_)) => match self.next() {
                Some(Tok::Word(w)) => Ok(w),
                _ => unreachable!("peeked a word"),
            },
            None | Some(Tok::Comma) => Ok(String::new()),
            _ => self.err("expected a value"),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Some(Tok::Open) {
            return self.err("expected '(' after in/notin");
        }
        let mut vals = Vec::new();
        loop {
            match self.next() {
                Some(Tok::Word(w)) => vals.push(w),
                Some(Tok::Close) if vals.is_empty() => return self.err("empty set"),
                _ => return self.err("expected a value in the set"),
            }
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::Close) => return Ok(vals),
                _ => return self.err("expected ',' or ')' in the set"),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Tok::Not) {
            self.next();
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        match self.peek().cloned() {
            None | Some(Tok::Comma) => Ok(Requirement::Exists(key)),
            Some(Tok::Eq) | Some(Tok::DoubleEq) => {
                self.next();
                Ok(Requirement::Equals(key, self.value()?))
            }
            Some(Tok::NotEq) => {
                self.next();
                Ok(Requirement::NotEquals(key, self.value()?))
            }
            Some(Tok::Word(w)) if w == "in" => {
                self.next();
                Ok(Requirement::In(key, self.set()?))
            }
            Some(Tok::Word(w)) if w == "notin" => {
                self.next();
                Ok(Requirement::NotIn(key, self.set()?))
            }
            _ => self.err("expected an operator"),
        }
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query grammar.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut p = Parser {
            toks: tokenize(s)?,
            pos: 0,
        };
        let mut reqs = Vec::new();
        if p.toks.is_empty() {
            return Ok(LabelSelector(reqs));
        }
        loop {
            reqs.push(p.requirement()?);
            match p.next() {
                None => return Ok(LabelSelector(reqs)),
                Some(Tok::Comma) => continue,
                Some(_) => return p.err("expected ','"),
            }
        }
    }

    /// Whether these labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether a stored object's `metadata.labels` satisfy every requirement. Reads the labels
    /// in place: lists and watches test every object, so copying its labels would dominate.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels = obj["metadata"]["labels"].as_object();
        // A non-string label value cannot pass validation; read as "" like the old copy did.
        self.matches_with(|k| labels?.get(k).map(|v| v.as_str().unwrap_or("")))
    }

    /// Whether the labels `get` looks up satisfy every requirement.
    fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `field=value`, `field==value`, `field!=value`, comma-separated.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            out.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether an object with this name and namespace satisfies every term.
    pub fn matches(&self, name: &str, namespace: &str) -> bool {
        self.0.iter().all(|(f, equal, v)| {
            let actual = if f == "metadata.name" {
                name
            } else {
                namespace
            };
            (actual == v) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_parses() {
        let s = LabelSelector::parse("a=1, b==2,c!=3,d in (x, y),e notin (z),f,!g").unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::Equals("a".into(), "1".into()),
                Requirement::Equals("b".into(), "2".into()),
                Requirement::NotEquals("c".into(), "3".into()),
                Requirement::In("d".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("e".into(), vec!["z".into()]),
                Requirement::Exists("f".into()),
                Requirement::DoesNotExist("g".into()),
            ]
        );
    }

    #[test]
    fn negative_operators_match_missing_keys() {
        let s = LabelSelector::parse("a!=1,b notin (2)").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("a", "1")])));
        assert!(!s.matches(&labels(&[("b", "2")])));
    }

    #[test]
    fn prefixed_keys_and_empty_values_work() {
        let s = LabelSelector::parse("acrpull.microsoft.com/binding=b1,empty=").unwrap();
        assert!(s.matches(&labels(&[
            ("acrpull.microsoft.com/binding", "b1"),
            ("empty", "")
        ])));
        assert!(!s.matches(&labels(&[
            ("acrpull.microsoft.com/binding", "b2"),
            ("empty", "")
        ])));
    }

    #[test]
    fn objects_match_on_their_labels_in_place() {
        let s = LabelSelector::parse("a=1,!b,c notin (x)").unwrap();
        let obj = |labels: Value| serde_json::json!({"metadata": {"labels": labels}});
        assert!(s.matches_object(&obj(serde_json::json!({"a": "1"}))));
        assert!(!s.matches_object(&obj(serde_json::json!({"a": "1", "b": ""}))));
        assert!(!s.matches_object(&obj(serde_json::json!({"a": "1", "c": "x"}))));
        assert!(!s.matches_object(&serde_json::json!({"metadata": {}})));
        assert!(LabelSelector::default().matches_object(&serde_json::json!({})));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a in ()").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a=1 b=2").is_err());
    }

    #[test]
    fn field_selector_matches_name_and_namespace() {
        let f = FieldSelector::parse("metadata.name=x,metadata.namespace!=kube-system").unwrap();
        assert!(f.matches("x", "default"));
        assert!(!f.matches("x", "kube-system"));
        assert!(!f.matches("y", "default"));
        assert!(FieldSelector::parse("spec.foo=1").is_err());
    }
}
