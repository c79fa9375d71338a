//! The kit's HTTP plumbing: request and response types shared by every fake server.
//!
//! Handlers are plain functions of a [`Request`], so each fake can be tested without a socket;
//! the listeners that feed them (plain HTTP and HTTPS on 127.0.0.1) live further down this file.

use std::net::SocketAddr;

/// One HTTP request as a handler sees it: the whole body already read.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// The path without the query string, percent-decoded.
    pub path: String,
    /// Query parameters in order, percent-decoded (`+` means space).
    pub query: Vec<(String, String)>,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    /// The request body (empty when none was sent).
    pub body: Vec<u8>,
    /// The peer address, when the request came over a socket.
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// A request with only a method and a path-and-query, for handler tests.
    pub fn new(method: &str, path_and_query: &str) -> Request {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, parse_query(q)),
            None => (path_and_query, Vec::new()),
        };
        Request {
            method: method.to_ascii_uppercase(),
            path: percent_decode(path),
            query,
            ..Request::default()
        }
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the body (builder style, for tests).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as `application/x-www-form-urlencoded`.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_query(&String::from_utf8_lossy(&self.body))
    }
}

/// One piece of a streamed response body.
pub enum Chunk {
    /// Bytes to send as one HTTP chunk.
    Data(Vec<u8>),
    /// Cut the connection here, without the terminating chunk: a stream broken mid-way.
    Abort,
}

/// A response body: whole, or streamed chunk by chunk (watches).
pub enum Body {
    /// Sent with `Content-Length`.
    Full(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`; the iterator may block while it waits for events.
    /// The stream ends when the iterator returns `None`.
    Stream(Box<dyn Iterator<Item = Chunk> + Send>),
}

/// One HTTP response.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers to send besides `Content-Length`/`Transfer-Encoding`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Full(value.to_string().into_bytes()),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Body::Full(text.as_bytes().to_vec()),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The whole body, for tests (a stream is drained until it ends or aborts).
    pub fn body_bytes(self) -> Vec<u8> {
        match self.body {
            Body::Full(b) => b,
            Body::Stream(it) => {
                let mut out = Vec::new();
                for c in it {
                    match c {
                        Chunk::Data(d) => out.extend(d),
                        Chunk::Abort => break,
                    }
                }
                out
            }
        }
    }

    /// The whole body parsed as JSON (`Null` when it is not JSON), for tests.
    pub fn body_json(self) -> serde_json::Value {
        serde_json::from_slice(&self.body_bytes()).unwrap_or(serde_json::Value::Null)
    }
}

/// Something that answers requests. Every fake server is one.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Called from many threads at once.
    fn handle(&self, req: Request) -> Response;
}

/// Parses `a=b&c=d` with percent-decoding and `+` as space.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Percent-decodes a string; malformed escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_decoded() {
        let r = Request::new("get", "/a%2Fb?x=1+2&y=%3D&z");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.query_param("x"), Some("1 2"));
        assert_eq!(r.query_param("y"), Some("="));
        assert_eq!(r.query_param("z"), Some(""));
    }

    #[test]
    fn trailing_percent_is_kept() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("%41"), "A");
    }
}
