//! A small, panic-free reader for the YAML subset that kubeconfig files use, producing JSON values.
//!
//! Supported: block mappings and sequences (including `- key: v` items and sequences at the same
//! indentation as their parent key), plain / single- / double-quoted scalars, `|` and `>` block
//! scalars, comments, one document (a leading `---` is skipped), and JSON-style flow collections.
//! Not supported (a typed error, never a panic): anchors, aliases, tags, multiple documents.

use serde_json::{Map, Number, Value};
use std::fmt;

/// Deepest nesting accepted; real kubeconfigs need fewer than ten levels, fuzzers need a floor.
const MAX_DEPTH: usize = 64;

/// Why a document could not be read, with the 1-based line where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line number of the offending line.
    pub line: usize,
    /// What was wrong with it.
    pub kind: YamlErrorKind,
}

/// The kinds of malformed or unsupported YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum YamlErrorKind {
    /// A tab character was used for indentation, which YAML forbids.
    Tab,
    /// A line is indented in a way that fits no open mapping or sequence.
    BadIndentation,
    /// A line inside a mapping is not of the form `key: value`.
    ExpectedKey,
    /// A mapping repeats a key.
    DuplicateKey,
    /// A quoted scalar has no closing quote on its line.
    UnterminatedQuote,
    /// A double-quoted scalar contains an unknown or malformed escape.
    BadEscape,
    /// A flow collection (`{…}` or `[…]`) is malformed or unclosed.
    BadFlow,
    /// Text follows a complete value on the same line.
    TrailingText,
    /// Nesting exceeds the reader's depth limit.
    TooDeep,
    /// A YAML feature outside the supported subset.
    Unsupported(&'static str),
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            YamlErrorKind::Tab => "tab used for indentation",
            YamlErrorKind::BadIndentation => "unexpected indentation",
            YamlErrorKind::ExpectedKey => "expected `key: value`",
            YamlErrorKind::DuplicateKey => "duplicate mapping key",
            YamlErrorKind::UnterminatedQuote => "unterminated quoted scalar",
            YamlErrorKind::BadEscape => "invalid escape in double-quoted scalar",
            YamlErrorKind::BadFlow => "malformed flow collection",
            YamlErrorKind::TrailingText => "unexpected text after value",
            YamlErrorKind::TooDeep => "nesting too deep",
            YamlErrorKind::Unsupported(feature) => {
                return write!(f, "line {}: unsupported yaml feature: {feature}", self.line)
            }
        };
        write!(f, "line {}: {what}", self.line)
    }
}

impl std::error::Error for YamlError {}

/// Parses one YAML document into a JSON value (an empty document is `null`).
pub fn parse(text: &str) -> Result<Value, YamlError> {
    let lines = split_lines(text)?;
    let mut p = Parser { lines, pos: 0 };
    p.skip_document_start()?;
    let Some(first) = p.peek() else {
        return Ok(Value::Null);
    };
    let indent = p.lines[first].indent;
    let value = p.node(indent, None, 0)?;
    if let Some(i) = p.peek() {
        let line = &p.lines[i];
        let kind = match line.text.as_str() {
            "---" => YamlErrorKind::Unsupported("multiple documents"),
            "..." => return Ok(value),
            _ => YamlErrorKind::BadIndentation,
        };
        return Err(YamlError {
            line: line.no,
            kind,
        });
    }
    Ok(value)
}

/// One source line: its indentation, the raw text after it, and the text with comments removed.
struct Line {
    no: usize,
    indent: usize,
    raw: String,
    text: String,
}

fn split_lines(text: &str) -> Result<Vec<Line>, YamlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let rest = &raw[indent..];
        let text = strip_comment(rest).trim_end().to_string();
        if rest.starts_with('\t') && !text.trim_start().is_empty() {
            return Err(YamlError {
                line: i + 1,
                kind: YamlErrorKind::Tab,
            });
        }
        lines.push(Line {
            no: i + 1,
            indent,
            raw: rest.to_string(),
            text: text.trim_start().to_string(),
        });
    }
    Ok(lines)
}

/// Cuts a `#` comment that starts at the line start or after whitespace, outside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => {
                let at_token_start = matches!(prev, None | Some(' ' | '\t' | '[' | '{' | ','));
                if c == '#' && matches!(prev, None | Some(' ' | '\t')) {
                    return &s[..i];
                }
                if (c == '"' || c == '\'') && at_token_start {
                    quote = Some(c);
                }
            }
        }
        prev = Some(c);
    }
    s
}

struct Parser {
    lines: Vec<Line>,
    pos: usize,
}

impl Parser {
    /// Index of the next line with content, skipping blank and comment-only lines.
    fn peek(&mut self) -> Option<usize> {
        while self.pos < self.lines.len() && self.lines[self.pos].text.is_empty() {
            self.pos += 1;
        }
        (self.pos < self.lines.len()).then_some(self.pos)
    }

    fn skip_document_start(&mut self) -> Result<(), YamlError> {
        if let Some(i) = self.peek() {
            let line = &self.lines[i];
            if line.text.starts_with('%') {
                return Err(err(line.no, YamlErrorKind::Unsupported("directives")));
            }
            if line.indent == 0 && line.text == "---" {
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// Parses the node whose first line is the next content line, at `indent`.
    fn node(
        &mut self,
        indent: usize,
        parent: Option<usize>,
        depth: usize,
    ) -> Result<Value, YamlError> {
        let Some(i) = self.peek() else {
            return Ok(Value::Null);
        };
        let no = self.lines[i].no;
        if depth > MAX_DEPTH {
            return Err(err(no, YamlErrorKind::TooDeep));
        }
        let text = self.lines[i].text.clone();
        if is_seq_item(&text) {
            self.sequence(indent, depth)
        } else if split_key(&text, no)?.is_some() {
            self.mapping(indent, depth)
        } else {
            self.pos += 1;
            self.inline_value(&text, no, parent, depth)
        }
    }

    fn sequence(&mut self, indent: usize, depth: usize) -> Result<Value, YamlError> {
        let mut items = Vec::new();
        while let Some(i) = self.peek() {
            let line = &self.lines[i];
            if line.indent < indent || !is_seq_item(&line.text) {
                if line.indent > indent {
                    return Err(err(line.no, YamlErrorKind::BadIndentation));
                }
                break;
            }
            if line.indent > indent {
                return Err(err(line.no, YamlErrorKind::BadIndentation));
            }
            let after_dash = &line.text[1..];
            let rest = after_dash.trim_start_matches(' ');
            if rest.is_empty() {
                self.pos += 1;
                items.push(self.child(indent, depth)?);
            } else {
                // Re-read the item's content as if it started on its own line, one level deeper.
                let offset = 1 + after_dash.len() - rest.len();
                let rest = rest.to_string();
                let line = &mut self.lines[i];
                line.indent += offset;
                line.text = rest;
                let item_indent = line.indent;
                items.push(self.node(item_indent, Some(indent), depth + 1)?);
            }
        }
        Ok(Value::Array(items))
    }

    /// The value of a key or dash with nothing after it: a deeper block, or null.
    fn child(&mut self, indent: usize, depth: usize) -> Result<Value, YamlError> {
        match self.peek() {
            Some(j) if self.lines[j].indent > indent => {
                let child_indent = self.lines[j].indent;
                self.node(child_indent, Some(indent), depth + 1)
            }
            _ => Ok(Value::Null),
        }
    }

    fn mapping(&mut self, indent: usize, depth: usize) -> Result<Value, YamlError> {
        let mut map = Map::new();
        while let Some(i) = self.peek() {
            let (no, line_indent) = (self.lines[i].no, self.lines[i].indent);
            if line_indent < indent || matches!(self.lines[i].text.as_str(), "---" | "...") {
                break;
            }
            if line_indent > indent {
                return Err(err(no, YamlErrorKind::BadIndentation));
            }
            let text = self.lines[i].text.clone();
            let Some((key, rest)) = split_key(&text, no)? else {
                return Err(err(no, YamlErrorKind::ExpectedKey));
            };
            self.pos += 1;
            if map.contains_key(&key) {
                return Err(err(no, YamlErrorKind::DuplicateKey));
            }
            let value = if rest.is_empty() {
                match self.peek() {
                    Some(j)
                        if self.lines[j].indent == indent && is_seq_item(&self.lines[j].text) =>
                    {
                        self.sequence(indent, depth + 1)?
                    }
                    _ => self.child(indent, depth)?,
                }
            } else {
                self.inline_value(rest, no, Some(indent), depth + 1)?
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    /// A value written on the current line (already consumed), possibly continuing below it.
    fn inline_value(
        &mut self,
        text: &str,
        no: usize,
        parent: Option<usize>,
        depth: usize,
    ) -> Result<Value, YamlError> {
        match text.chars().next() {
            Some('&') => Err(err(no, YamlErrorKind::Unsupported("anchors"))),
            Some('*') => Err(err(no, YamlErrorKind::Unsupported("aliases"))),
            Some('!') => Err(err(no, YamlErrorKind::Unsupported("tags"))),
            Some('{' | '[') => self.flow(text, no, depth),
            Some('"' | '\'') => {
                let (s, used) = quoted(text, no)?;
                if !text[used..].trim().is_empty() {
                    return Err(err(no, YamlErrorKind::TrailingText));
                }
                Ok(Value::String(s))
            }
            Some('|' | '>') => self.block_scalar(text, no, parent),
            _ => {
                let mut s = text.to_string();
                // A plain scalar may fold onto following, more indented, lines.
                while let Some(j) = self.peek() {
                    let line = &self.lines[j];
                    if parent.is_some_and(|p| line.indent <= p)
                        || parent.is_none() && line.indent == 0
                    {
                        break;
                    }
                    if is_seq_item(&line.text) || split_key(&line.text, line.no)?.is_some() {
                        return Err(err(line.no, YamlErrorKind::BadIndentation));
                    }
                    s.push(' ');
                    s.push_str(&line.text);
                    self.pos += 1;
                }
                Ok(plain_scalar(&s))
            }
        }
    }

    /// Reads a flow collection that may span several lines, then parses it.
    fn flow(&mut self, first: &str, no: usize, depth: usize) -> Result<Value, YamlError> {
        let mut buf = first.to_string();
        let mut scan = FlowScan::default();
        scan.feed(first);
        while !scan.balanced() {
            let Some(j) = self.peek() else {
                return Err(err(no, YamlErrorKind::BadFlow));
            };
            buf.push(' ');
            buf.push_str(&self.lines[j].text);
            scan.feed(&self.lines[j].text);
            self.pos += 1;
        }
        let chars: Vec<char> = buf.chars().collect();
        let mut f = Flow {
            chars: &chars,
            pos: 0,
            no,
        };
        let value = f.value(depth)?;
        f.skip_ws();
        if f.pos != chars.len() {
            return Err(err(no, YamlErrorKind::TrailingText));
        }
        Ok(value)
    }

    /// `|` (literal) and `>` (folded) scalars with optional `-`/`+` chomping.
    fn block_scalar(
        &mut self,
        header: &str,
        no: usize,
        parent: Option<usize>,
    ) -> Result<Value, YamlError> {
        let folded = header.starts_with('>');
        let indicators = &header[1..];
        if indicators.chars().any(|c| c.is_ascii_digit()) {
            return Err(err(
                no,
                YamlErrorKind::Unsupported("block indentation indicator"),
            ));
        }
        if !indicators.chars().all(|c| c == '-' || c == '+') {
            return Err(err(no, YamlErrorKind::TrailingText));
        }
        let min = parent.map_or(0, |p| p + 1);
        let mut body: Vec<String> = Vec::new();
        let mut block_indent = None;
        while self.pos < self.lines.len() {
            let line = &self.lines[self.pos];
            let blank = line.raw.trim().is_empty();
            if !blank {
                if line.indent < min || block_indent.is_some_and(|b| line.indent < b) {
                    break;
                }
                block_indent.get_or_insert(line.indent);
            }
            let cut = block_indent.map_or(0, |b| b.min(line.indent));
            let pad = " ".repeat(line.indent.saturating_sub(cut));
            body.push(if blank {
                String::new()
            } else {
                format!("{pad}{}", line.raw)
            });
            self.pos += 1;
        }
        while body.last().is_some_and(|l| l.is_empty()) && !indicators.contains('+') {
            body.pop();
        }
        let mut s = if folded {
            fold_lines(&body)
        } else {
            body.join("\n")
        };
        if !indicators.contains('-') && !body.is_empty() {
            s.push('\n');
        }
        Ok(Value::String(s))
    }
}

fn fold_lines(body: &[String]) -> String {
    let mut s = String::new();
    for (i, l) in body.iter().enumerate() {
        if i > 0 {
            s.push(if l.is_empty() || body[i - 1].is_empty() {
                '\n'
            } else {
                ' '
            });
        }
        s.push_str(l);
    }
    s
}

fn err(line: usize, kind: YamlErrorKind) -> YamlError {
    YamlError { line, kind }
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Splits `key: rest` if the line is a mapping entry; `rest` may be empty.
fn split_key(text: &str, no: usize) -> Result<Option<(String, &str)>, YamlError> {
    if text.starts_with('"') || text.starts_with('\'') {
        let Ok((key, used)) = quoted(text, no) else {
            return Ok(None);
        };
        let after = text[used..].trim_start_matches(' ');
        return Ok(after
            .strip_prefix(':')
            .filter(|r| r.is_empty() || r.starts_with(' '))
            .map(|r| (key, r.trim_start())));
    }
    if text.starts_with(['{', '[', '|', '>', '&', '*', '!']) || is_seq_item(text) {
        return Ok(None);
    }
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
            let key = text[..i].trim_end();
            if key.is_empty() {
                return Ok(None);
            }
            return Ok(Some((key.to_string(), text[i + 1..].trim_start())));
        }
    }
    Ok(None)
}

/// Parses a quoted scalar at the start of `text`; returns it and the bytes consumed.
fn quoted(text: &str, no: usize) -> Result<(String, usize), YamlError> {
    let (s, used_chars) = quoted_chars(text.chars(), no)?;
    let used = text
        .char_indices()
        .nth(used_chars)
        .map_or(text.len(), |(i, _)| i);
    Ok((s, used))
}

/// Parses a quoted scalar from `chars`; returns it and the number of chars consumed.
fn quoted_chars(
    chars: impl Iterator<Item = char>,
    no: usize,
) -> Result<(String, usize), YamlError> {
    let mut chars = chars.peekable();
    let Some(q) = chars.next() else {
        return Err(err(no, YamlErrorKind::UnterminatedQuote));
    };
    let mut used = 1;
    let mut out = String::new();
    while let Some(c) = chars.next() {
        used += 1;
        if c == q {
            if q == '\'' && chars.peek() == Some(&'\'') {
                chars.next();
                used += 1;
                out.push('\'');
                continue;
            }
            return Ok((out, used));
        }
        if q == '"' && c == '\\' {
            let Some(e) = chars.next() else {
                return Err(err(no, YamlErrorKind::BadEscape));
            };
            used += 1;
            let hex_len = match e {
                'x' => 2,
                'u' => 4,
                'U' => 8,
                _ => 0,
            };
            if hex_len > 0 {
                let mut code = 0u32;
                for _ in 0..hex_len {
                    let d = chars
                        .next()
                        .and_then(|h| h.to_digit(16))
                        .ok_or(err(no, YamlErrorKind::BadEscape))?;
                    used += 1;
                    code = code * 16 + d;
                }
                out.push(char::from_u32(code).ok_or(err(no, YamlErrorKind::BadEscape))?);
                continue;
            }
            out.push(match e {
                '0' => '\0',
                'a' => '\u{7}',
                'b' => '\u{8}',
                't' | '\t' => '\t',
                'n' => '\n',
                'v' => '\u{b}',
                'f' => '\u{c}',
                'r' => '\r',
                'e' => '\u{1b}',
                ' ' => ' ',
                '"' => '"',
                '/' => '/',
                '\\' => '\\',
                'N' => '\u{85}',
                '_' => '\u{a0}',
                _ => return Err(err(no, YamlErrorKind::BadEscape)),
            });
            continue;
        }
        out.push(c);
    }
    Err(err(no, YamlErrorKind::UnterminatedQuote))
}

/// Resolves a plain scalar to null, bool, number or string (YAML 1.2 core schema, decimal only).
fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    // A leading zero (`0755`) would lose digits as a number; keep it as written.
    let leading_zero = s.len() > 1 && s.starts_with('0') && s.as_bytes()[1].is_ascii_digit();
    let numeric = !leading_zero
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    if numeric {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

/// Tracks bracket depth outside quotes across the lines of a flow collection, in one pass.
#[derive(Default)]
struct FlowScan {
    level: i64,
    quote: Option<char>,
    escaped: bool,
}

impl FlowScan {
    fn feed(&mut self, s: &str) {
        for c in s.chars() {
            match self.quote {
                Some('"') if self.escaped => self.escaped = false,
                Some('"') if c == '\\' => self.escaped = true,
                Some(q) if c == q => self.quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' => self.quote = Some(c),
                    '{' | '[' => self.level += 1,
                    '}' | ']' => self.level -= 1,
                    _ => {}
                },
            }
        }
    }

    /// True once every bracket has been closed (or over-closed, which the parser reports).
    fn balanced(&self) -> bool {
        self.level <= 0
    }
}

/// A recursive-descent reader for flow collections (a superset of JSON).
struct Flow<'a> {
    chars: &'a [char],
    pos: usize,
    no: usize,
}

impl Flow<'_> {
    fn bad(&self) -> YamlError {
        err(self.no, YamlErrorKind::BadFlow)
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, YamlError> {
        if depth > MAX_DEPTH {
            return Err(err(self.no, YamlErrorKind::TooDeep));
        }
        self.skip_ws();
        match self.chars.get(self.pos) {
            Some('{') => self.object(depth),
            Some('[') => self.array(depth),
            Some('"' | '\'') => Ok(Value::String(self.quoted()?)),
            Some(_) => {
                let s = self.plain(false);
                if s.is_empty() {
                    return Err(self.bad());
                }
                Ok(plain_scalar(&s))
            }
            None => Err(self.bad()),
        }
    }

    fn quoted(&mut self) -> Result<String, YamlError> {
        let (s, used) = quoted_chars(self.chars[self.pos..].iter().copied(), self.no)?;
        self.pos += used;
        Ok(s)
    }

    /// Plain text up to a flow indicator (and, for keys, up to `: `).
    fn plain(&mut self, key: bool) -> String {
        let start = self.pos;
        while let Some(&c) = self.chars.get(self.pos) {
            if matches!(c, ',' | ']' | '}') {
                break;
            }
            if c == ':' {
                let next = self.chars.get(self.pos + 1);
                if key || next.is_none_or(|n| n.is_whitespace() || matches!(n, ',' | ']' | '}')) {
                    break;
                }
            }
            self.pos += 1;
        }
        self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    }

    fn array(&mut self, depth: usize) -> Result<Value, YamlError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.chars.get(self.pos) == Some(&']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.chars.get(self.pos) {
                Some(',') => self.pos += 1,
                Some(']') => {}
                _ => return Err(self.bad()),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, YamlError> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.skip_ws();
            if self.chars.get(self.pos) == Some(&'}') {
                self.pos += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.chars.get(self.pos) {
                Some('"' | '\'') => self.quoted()?,
                Some(_) => self.plain(true),
                None => return Err(self.bad()),
            };
            self.skip_ws();
            let value = if self.chars.get(self.pos) == Some(&':') {
                self.pos += 1;
                self.skip_ws();
                if matches!(self.chars.get(self.pos), Some(',' | '}')) {
                    Value::Null
                } else {
                    self.value(depth + 1)?
                }
            } else {
                Value::Null
            };
            if map.insert(key, value).is_some() {
                return Err(err(self.no, YamlErrorKind::DuplicateKey));
            }
            self.skip_ws();
            match self.chars.get(self.pos) {
                Some(',') => self.pos += 1,
                Some('}') => {}
                _ => return Err(self.bad()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KIND: &str = r#"apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://127.0.0.1:37861
  name: kind-kind
contexts:
- context:
    cluster: kind-kind
    user: kind-kind
  name: kind-kind
current-context: kind-kind
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"#;

    #[test]
    fn kind_kubeconfig_reads_as_nested_maps_and_lists() {
        let v = parse(KIND).unwrap();
        assert_eq!(v["current-context"], "kind-kind");
        assert_eq!(v["clusters"][0]["name"], "kind-kind");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:37861"
        );
        assert_eq!(v["contexts"][0]["context"]["user"], "kind-kind");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["preferences"], json!({}));
    }

    #[test]
    fn az_aks_exec_kubeconfig_keeps_args_and_env_lists() {
        let text = r#"apiVersion: v1
clusters:
  - cluster:
      certificate-authority-data: QUJD
      server: "https://myaks-dns-abc.hcp.westeurope.azmk8s.io:443"
    name: myaks
contexts:
  - context:
      cluster: myaks
      namespace: 'team a'   # trailing comment
      user: clusterUser_rg_myaks
    name: myaks
current-context: myaks
kind: Config
users:
  - name: clusterUser_rg_myaks
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1beta1
        args:
          - get-token
          - --login
          - azurecli
          - --server-id
          - 6dae42f8-4368-4678-94ff-3960e28e3630
        command: kubelogin
        env: null
        installHint: |
          kubelogin is not installed which is required to connect to AAD enabled cluster.

          To learn more, please go to https://aka.ms/aks/kubelogin
        provideClusterInfo: false
"#;
        let v = parse(text).unwrap();
        let exec = &v["users"][0]["user"]["exec"];
        assert_eq!(exec["command"], "kubelogin");
        assert_eq!(exec["args"][1], "--login");
        assert_eq!(exec["args"].as_array().unwrap().len(), 5);
        assert_eq!(exec["env"], Value::Null);
        assert_eq!(exec["provideClusterInfo"], false);
        assert!(exec["installHint"]
            .as_str()
            .unwrap()
            .starts_with("kubelogin is not installed which is required to connect to AAD enabled cluster.\n\nTo learn"));
        assert_eq!(v["contexts"][0]["context"]["namespace"], "team a");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://myaks-dns-abc.hcp.westeurope.azmk8s.io:443"
        );
    }

    #[test]
    fn json_kubeconfig_is_read_as_flow_style() {
        let text = r##"{
  "apiVersion": "v1",
  "clusters": [{"name": "c", "cluster": {"server": "https://h:6443", "insecure-skip-tls-verify": true}}],
  "users": [{"name": "u", "user": {"token": "a#b"}}],
  "n": 3
}"##;
        let v = parse(text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["insecure-skip-tls-verify"],
            true
        );
        assert_eq!(v["users"][0]["user"]["token"], "a#b");
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn quoting_escapes_and_comments_are_honoured() {
        let text = "# header\na: 'it''s'\nb: \"tab\\there \\u00e9\"\nc: plain # comment\nd: \"x # not a comment\"\ne: '123'\nf: 123\ng: ~\n";
        let v = parse(text).unwrap();
        assert_eq!(v["a"], "it's");
        assert_eq!(v["b"], "tab\there é");
        assert_eq!(v["c"], "plain");
        assert_eq!(v["d"], "x # not a comment");
        assert_eq!(v["e"], "123");
        assert_eq!(v["f"], 123);
        assert_eq!(parse("m: 0755").unwrap()["m"], "0755");
        assert_eq!(v["g"], Value::Null);
    }

    #[test]
    fn flow_sequences_and_nested_sequences_parse() {
        let v = parse("args: [get-token, \"--x\", 'y']\nm:\n- - a\n  - b\n- c\n---\n").unwrap_err();
        assert_eq!(v.kind, YamlErrorKind::Unsupported("multiple documents"));
        let v = parse("---\nargs: [get-token, \"--x\", 'y']\nm:\n- - a\n  - b\n- c\n").unwrap();
        assert_eq!(v["args"], json!(["get-token", "--x", "y"]));
        assert_eq!(v["m"], json!([["a", "b"], "c"]));
    }

    #[test]
    fn bad_input_reports_the_line_number() {
        let e = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.kind, YamlErrorKind::BadIndentation);
        let e = parse("a: 1\nb: \"open\n").unwrap_err();
        assert_eq!(
            (e.line, e.kind.clone()),
            (2, YamlErrorKind::UnterminatedQuote)
        );
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((e.line, e.kind.clone()), (2, YamlErrorKind::DuplicateKey));
        let e = parse("x:\n\ty: 1\n").unwrap_err();
        assert_eq!((e.line, e.kind.clone()), (2, YamlErrorKind::Tab));
        let e = parse("a: &anchor 1\n").unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::Unsupported("anchors"));
        let e = parse("a: [1, 2\n").unwrap_err();
        assert_eq!((e.line, e.kind.clone()), (1, YamlErrorKind::BadFlow));
        assert_eq!(e.to_string(), "line 1: malformed flow collection");
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_block: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let inputs = [
            "",
            "-",
            "- -",
            ":",
            "::",
            "'",
            "\"",
            "\"\\",
            "\"\\u12",
            "{",
            "}",
            "]",
            "[}",
            "{a",
            "a: |",
            "a: >-\n",
            "- a\nb: c",
            "a:\n- b\n c",
            "\u{feff}a: b",
            "é: ü",
            "a: \"\\ud800\"",
            "? x",
            "a:b",
            "- : x",
            "{: }",
            "[,]",
            "{,}",
            "a: 'x' y",
            "a: |9\n  x",
            "%YAML 1.2",
            deep.as_str(),
            deep_block.as_str(),
        ];
        for input in inputs {
            let _ = parse(input);
        }
        assert_eq!(parse(&deep).unwrap_err().kind, YamlErrorKind::TooDeep);
        assert_eq!(parse(&deep_block).unwrap_err().kind, YamlErrorKind::TooDeep);
    }

    #[test]
    fn plain_scalars_fold_across_indented_lines() {
        let v = parse("a: one\n  two\nb: x\n").unwrap();
        assert_eq!(v["a"], "one two");
        assert_eq!(v["b"], "x");
    }

    #[test]
    fn serde_yaml_style_output_with_block_literals_and_crlf_parses() {
        let text = "apiVersion: v1\r\nclusters:\r\n- cluster:\r\n    certificate-authority: |-\r\n      -----BEGIN CERTIFICATE-----\r\n      MIIB\r\n      -----END CERTIFICATE-----\r\n    server: https://127.0.0.1:6443\r\n  name: kit\r\nusers:\r\n- name: kit\r\n  user:\r\n    token: '0123'\r\n    exec: ~\r\n";
        let v = parse(text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority"],
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
        );
        assert_eq!(v["clusters"][0]["name"], "kit");
        assert_eq!(v["users"][0]["user"]["token"], "0123");
        assert_eq!(v["users"][0]["user"]["exec"], Value::Null);
    }

    #[test]
    fn flow_collections_may_span_lines_inside_block_mappings() {
        let v = parse(
            "exec:\n  args: [\n    get-token,  # why\n    \"--login\"\n  ]\n  env: []\nnext: 1\n",
        )
        .unwrap();
        assert_eq!(v["exec"]["args"], json!(["get-token", "--login"]));
        assert_eq!(v["exec"]["env"], json!([]));
        assert_eq!(v["next"], 1);
    }

    #[test]
    fn random_inputs_never_panic() {
        let alphabet: Vec<char> = " \n\t-:#'\"{}[],|>&*!~?%\\abc01é\r".chars().collect();
        let mut rng = crate::clock::Rng::with_seed(0xACE);
        for _ in 0..20_000 {
            let len = rng.range_inclusive(0, 48) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[rng.range_inclusive(0, alphabet.len() as u64 - 1) as usize])
                .collect();
            let _ = parse(&s);
        }
    }

    #[test]
    fn large_documents_parse_in_linear_time() {
        let users: Vec<String> = (0..10_000)
            .map(|i| format!("{{\"name\": \"u{i}\", \"user\": {{\"token\": \"t{i}\"}}}}"))
            .collect();
        let json_text = format!("{{\"users\": [\n{}\n]}}", users.join(",\n"));
        let v = parse(&json_text).unwrap();
        assert_eq!(v["users"][9_999]["user"]["token"], "t9999");
        let one_line = json_text.replace('\n', " ");
        assert_eq!(parse(&one_line).unwrap(), v);
        let yaml_text: String = (0..10_000)
            .map(|i| format!("- name: u{i}\n  user:\n    token: \"t{i}\"\n"))
            .collect();
        assert_eq!(parse(&yaml_text).unwrap()[5]["user"]["token"], "t5");
    }
}
