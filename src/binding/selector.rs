//! Kubernetes label selectors: parsing and matching.
//!
//! The grammar of `labels.Parse` (what upstream's `--label-selector` uses): requirements joined by
//! `,` (AND), each `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`,
//! `key>n`, `key<n`. Keys and values are validated like Kubernetes so the API server accepts the
//! canonical form we send as the `labelSelector` query parameter. The lexer is single-pass and
//! value sets are ordered sets, so hostile input costs O(n log n) at worst.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::binding::names::{is_dns_subdomain, is_valid_label_value};

/// A parsed selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    /// `=` (`double` remembers `==` for the canonical form).
    Equals {
        value: String,
        double: bool,
    },
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    GreaterThan(i64),
    LessThan(i64),
}

/// Why a selector does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorError {
    /// A token other than the one the grammar allows here.
    Unexpected {
        /// What was found (`end of string` at the end).
        found: String,
        /// What the grammar allows.
        expected: &'static str,
    },
    /// A key that is not a Kubernetes qualified name.
    InvalidKey {
        /// The key.
        key: String,
    },
    /// A value that is not a Kubernetes label value.
    InvalidValue {
        /// The value.
        value: String,
    },
    /// An empty value set; kept for callers, though `()` reads as `("")` like Kubernetes.
    EmptySet {
        /// The key.
        key: String,
    },
    /// `>`/`<` with something other than an integer.
    NotAnInteger {
        /// The value.
        value: String,
    },
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectorError::Unexpected { found, expected } => {
                write!(f, "found {found:?}, expected: {expected}")
            }
            SelectorError::InvalidKey { key } => write!(f, "invalid label key {key:?}"),
            SelectorError::InvalidValue { value } => write!(f, "invalid label value {value:?}"),
            SelectorError::EmptySet { key } => {
                write!(f, "values set for {key:?} can't be empty with in or notin")
            }
            SelectorError::NotAnInteger { value } => {
                write!(f, "{value:?} is not an integer, required for > and <")
            }
        }
    }
}

impl std::error::Error for SelectorError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Not => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::End => "end of string".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

fn lex(input: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let tok = match c {
            '!' if chars.peek().map(|p| p.1) == Some('=') => {
                chars.next();
                Token::NotEq
            }
            '!' => Token::Not,
            '=' if chars.peek().map(|p| p.1) == Some('=') => {
                chars.next();
                Token::DoubleEq
            }
            '=' => Token::Eq,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '>' => Token::Gt,
            '<' => Token::Lt,
            _ => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_whitespace() || is_special(d) {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                match &input[i..end] {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    word => Token::Ident(word.to_string()),
                }
            }
        };
        out.push(tok);
    }
    out.push(Token::End);
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    /// An identifier; keywords count as plain words in value positions.
    fn word(&mut self, expected: &'static str) -> Result<String, SelectorError> {
        match self.next() {
            Token::Ident(s) => Ok(s),
            Token::In => Ok("in".into()),
            Token::NotIn => Ok("notin".into()),
            t => Err(SelectorError::Unexpected {
                found: t.describe(),
                expected,
            }),
        }
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        let key = self.word("identifier")?;
        if !is_qualified_name(&key) {
            return Err(SelectorError::InvalidKey { key });
        }
        Ok(key)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Token::Not {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek().clone() {
            Token::End | Token::Comma => Op::Exists,
            Token::Eq | Token::DoubleEq | Token::NotEq => {
                let t = self.next();
                let value = self.single_value()?;
                match t {
                    Token::NotEq => Op::NotEquals(value),
                    t => Op::Equals {
                        value,
                        double: t == Token::DoubleEq,
                    },
                }
            }
            Token::In | Token::NotIn => {
                let t = self.next();
                let set = self.value_set()?;
                if set.is_empty() {
                    return Err(SelectorError::EmptySet { key });
                }
                if t == Token::In {
                    Op::In(set)
                } else {
                    Op::NotIn(set)
                }
            }
            Token::Gt | Token::Lt => {
                let t = self.next();
                let raw = self.word("integer")?;
                let n = raw
                    .parse::<i64>()
                    .map_err(|_| SelectorError::NotAnInteger { value: raw })?;
                if t == Token::Gt {
                    Op::GreaterThan(n)
                } else {
                    Op::LessThan(n)
                }
            }
            t => {
                return Err(SelectorError::Unexpected {
                    found: t.describe(),
                    expected: "=, !=, ==, in, notin, >, <, ',' or end of string",
                })
            }
        };
        Ok(Requirement { key, op })
    }

    /// The value after `=`/`==`/`!=`; nothing before `,` or the end is the empty value.
    fn single_value(&mut self) -> Result<String, SelectorError> {
        let value = match self.peek() {
            Token::End | Token::Comma => String::new(),
            _ => self.word("identifier")?,
        };
        check_value(value)
    }

    /// `( a, b, … )`; like Kubernetes, a missing item between commas is the empty value.
    fn value_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            t => {
                return Err(SelectorError::Unexpected {
                    found: t.describe(),
                    expected: "(",
                })
            }
        }
        let mut set = BTreeSet::new();
        if *self.peek() == Token::Close {
            // Kubernetes reads `()` as the set holding the empty value; its canonical form of
            // `(,)` is `()` again, so refusing it broke the round-trip (found by fuzzing).
            self.next();
            set.insert(String::new());
            return Ok(set);
        }
        loop {
            let value = match self.peek() {
                Token::Comma | Token::Close => String::new(),
                _ => self.word("identifier")?,
            };
            set.insert(check_value(value)?);
            match self.next() {
                Token::Comma => continue,
                Token::Close => return Ok(set),
                t => {
                    return Err(SelectorError::Unexpected {
                        found: t.describe(),
                        expected: ", or )",
                    })
                }
            }
        }
    }
}

fn check_value(value: String) -> Result<String, SelectorError> {
    if is_valid_label_value(&value) {
        Ok(value)
    } else {
        Err(SelectorError::InvalidValue { value })
    }
}

/// A Kubernetes qualified name: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 characters of
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (non-empty).
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_valid_label_value(name)
}

impl Selector {
    /// Parses a selector; blank input is the empty selector.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            tokens: lex(input),
            pos: 0,
        };
        let mut requirements = Vec::new();
        if *p.peek() == Token::End {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                Token::End => break,
                Token::Comma => continue,
                t => {
                    return Err(SelectorError::Unexpected {
                        found: t.describe(),
                        expected: ", or end of string",
                    })
                }
            }
        }
        // Kubernetes sorts requirements by key; the canonical string follows.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }

    /// Whether the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Equals { value, .. } => v == Some(value),
                Op::NotEquals(value) => v != Some(value),
                Op::In(set) => v.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                Op::GreaterThan(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                Op::LessThan(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

impl fmt::Display for Selector {
    /// The canonical form, as Kubernetes prints it (used as the `labelSelector` parameter).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let k = &r.key;
            match &r.op {
                Op::Exists => write!(f, "{k}")?,
                Op::DoesNotExist => write!(f, "!{k}")?,
                Op::Equals { value, double } => {
                    write!(f, "{k}{}{value}", if *double { "==" } else { "=" })?
                }
                Op::NotEquals(value) => write!(f, "{k}!={value}")?,
                Op::In(set) => write!(f, "{k} in ({})", join(set))?,
                Op::NotIn(set) => write!(f, "{k} notin ({})", join(set))?,
                Op::GreaterThan(n) => write!(f, "{k}>{n}")?,
                Op::LessThan(n) => write!(f, "{k}<{n}")?,
            }
        }
        Ok(())
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(",")
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
    fn blank_selector_matches_everything() {
        let s = Selector::parse("   ").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn upstream_selector_semantics_hold() {
        let s = Selector::parse("environment!=prod,tier in (frontend,backend)").unwrap();
        assert!(s.matches(&labels(&[("environment", "dev"), ("tier", "frontend")])));
        assert!(s.matches(&labels(&[("tier", "backend")])));
        assert!(!s.matches(&labels(&[("environment", "prod"), ("tier", "frontend")])));
        assert!(!s.matches(&labels(&[("environment", "dev"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("environment", "dev")])));
    }

    #[test]
    fn an_unclosed_set_is_an_error() {
        assert!(Selector::parse("environment in (prod").is_err());
    }

    #[test]
    fn every_operator_parses_and_matches() {
        let l = labels(&[("a", "1"), ("b", "x"), ("n", "5")]);
        for (sel, want) in [
            ("a", true),
            ("!a", false),
            ("!z", true),
            ("a=1", true),
            ("a==1", true),
            ("a!=1", false),
            ("z!=1", true),
            ("b in (x,y)", true),
            ("b notin (x,y)", false),
            ("z notin (x)", true),
            ("n>4", true),
            ("n<5", false),
            ("b>1", false),
            ("a=", false),
            ("z=", false),
        ] {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn whitespace_is_tolerated_and_the_canonical_form_is_sorted() {
        let s = Selector::parse("  tier  notin ( b , a ) ,  env = prod , !gone, x==y ").unwrap();
        assert_eq!(s.to_string(), "env=prod,!gone,tier notin (a,b),x==y");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn prefixed_keys_are_accepted_and_bad_keys_refused() {
        assert!(Selector::parse("example.com/team=a").is_ok());
        assert!(Selector::parse("app.kubernetes.io/name in (x)").is_ok());
        for bad in ["-a=b", "a/b/c=d", "Bad_Prefix/x=y", "/x", &"k".repeat(64)] {
            assert!(
                matches!(Selector::parse(bad), Err(SelectorError::InvalidKey { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_values_and_syntax_are_errors() {
        for bad in [
            "a=b c",
            "a in x",
            "a,",
            ",a",
            "a=(",
            "a>x",
            "a in (b c)",
            "a=-b",
            "!",
            "a==",
            "a in (b,",
        ] {
            // "a==" is fine in Kubernetes (empty value); only assert it does not panic.
            let r = Selector::parse(bad);
            if bad != "a==" {
                assert!(r.is_err(), "{bad} parsed as {r:?}");
            }
        }
        let long = format!("a={}", "v".repeat(64));
        assert!(matches!(
            Selector::parse(&long),
            Err(SelectorError::InvalidValue { .. })
        ));
    }

    #[test]
    fn empty_items_in_a_set_are_the_empty_value() {
        let s = Selector::parse("a in (x,,y)").unwrap();
        assert_eq!(s.to_string(), "a in (,x,y)");
        assert!(s.matches(&labels(&[("a", "")])));
    }

    #[test]
    fn an_empty_set_holds_the_empty_value_like_kubernetes() {
        let s = Selector::parse("a in (),b notin ()").unwrap();
        assert_eq!(s.to_string(), "a in (),b notin ()");
        assert!(s.matches(&labels(&[("a", ""), ("b", "x")])));
        assert!(!s.matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn a_set_of_only_empty_items_round_trips() {
        // Regression (fuzz/corpus/label_selector/regression_empty_items): printed as `e in ()`,
        // which once failed to parse back.
        let s = Selector::parse("e in ( ,,),b").unwrap();
        assert_eq!(s.to_string(), "b,e in ()");
        assert_eq!(Selector::parse(&s.to_string()), Ok(s));
    }

    #[test]
    fn hostile_input_neither_panics_nor_blows_up() {
        let inputs = [
            "((((((((".to_string(),
            "!!!!".to_string(),
            "a in (".to_string() + &"x,".repeat(50_000) + ")",
            "é=ü,ß".to_string(),
            "a=\u{0}".to_string(),
            ",".repeat(100_000),
            "a".repeat(200_000),
            "a in (".to_string() + &"(".repeat(10_000),
        ];
        for i in inputs {
            let _ = Selector::parse(&i);
        }
        let many: Vec<String> = (0..20_000).map(|i| format!("k{i}=v")).collect();
        let s = Selector::parse(&many.join(",")).unwrap();
        assert_eq!(s.requirements.len(), 20_000);
    }
}
