//! The kit's HTTP plumbing: request and response types shared by every fake server.
//!
//! Handlers are plain functions of a [`Request`], so each fake can be tested without a socket;
//! the listeners that feed them (plain HTTP and HTTPS on 127.0.0.1) live further down this file.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One HTTP request as a handler sees it: the whole body already read.
///
/// `Debug` redacts credential headers and prints only the body's length: bodies carry client
/// assertions and tokens.
#[derive(Clone, Default)]
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

/// Headers whose values never appear in `Debug` output.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let secret = SECRET_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s));
                (n.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("peer", &self.peer)
            .finish()
    }
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

/// How long an idle keep-alive connection, or a stalled request, may sit before it is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one write may block on a client that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads bigger than this are refused: a test never needs more, a bug might send more.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Request bodies bigger than this are refused.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A running listener on 127.0.0.1. Dropping it stops accepting, cuts open connections and joins
/// the accept thread.
pub struct Server {
    addr: SocketAddr,
    scheme: &'static str,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; if the connect fails the listener is already gone.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Ok(open) = self.open.lock() {
            for s in open.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Serves `handler` over plain HTTP on 127.0.0.1 (an ephemeral port).
pub fn serve_http(handler: Arc<dyn Handler>) -> io::Result<Server> {
    serve(handler, None)
}

/// Serves `handler` over HTTPS on 127.0.0.1 (an ephemeral port) with this TLS configuration.
pub fn serve_https(
    handler: Arc<dyn Handler>,
    tls: Arc<rustls::ServerConfig>,
) -> io::Result<Server> {
    serve(handler, Some(tls))
}

fn serve(handler: Arc<dyn Handler>, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let open: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let accept = {
        let (stop, open) = (stop.clone(), open.clone());
        std::thread::Builder::new()
            .name(format!("kit-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, handler, tls, stop, open))?
    };
    Ok(Server {
        addr,
        scheme,
        stop,
        open,
        accept: Some(accept),
    })
}

fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let (Ok(clone), Ok(mut map)) = (stream.try_clone(), open.lock()) {
            map.insert(id, clone);
        }
        let (handler, tls, conns) = (handler.clone(), tls.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("kit-conn".into())
            .spawn(move || {
                // Errors here are client disconnects or garbage: the connection just ends.
                let _ = serve_connection(stream, handler, tls);
                if let Ok(mut map) = conns.lock() {
                    map.remove(&id);
                }
            });
        if spawned.is_err() {
            log::warn!("kit: cannot spawn a connection thread");
            if let Ok(mut map) = open.lock() {
                map.remove(&id);
            }
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    handler: Arc<dyn Handler>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    match tls {
        None => serve_stream(stream, peer, &*handler),
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
            serve_stream(rustls::StreamOwned::new(conn, stream), peer, &*handler)
        }
    }
}

/// Answers requests on one connection until the client closes it or asks to.
fn serve_stream<S: Read + Write>(
    stream: S,
    peer: Option<SocketAddr>,
    handler: &dyn Handler,
) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let (req, keep_alive) = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Bad(why)) => {
                let resp = Response::text(400, why).with_header("connection", "close");
                return write_response(reader.get_mut(), resp, false).map(|_| ());
            }
        };
        let req = Request { peer, ..req };
        let resp = handler.handle(req);
        if !write_response(reader.get_mut(), resp, keep_alive)? || !keep_alive {
            return Ok(());
        }
    }
}

enum ReadError {
    Io(io::Error),
    Bad(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request<S: Read + Write>(
    r: &mut BufReader<S>,
) -> Result<Option<(Request, bool)>, ReadError> {
    let mut head_bytes = 0usize;
    let Some(line) = read_line(r, &mut head_bytes)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Bad("malformed request line"));
    }
    let mut req = Request::new(method, target);
    loop {
        let Some(line) = read_line(r, &mut head_bytes)? else {
            return Err(ReadError::Bad("truncated head"));
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad("malformed header"));
        };
        req.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        r.get_mut().flush()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    req.body = if chunked {
        read_chunked(r)?
    } else {
        match req.header("content-length") {
            None => Vec::new(),
            Some(n) => {
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| ReadError::Bad("bad content-length"))?;
                if n > MAX_BODY_BYTES {
                    return Err(ReadError::Bad("body too large"));
                }
                let mut body = vec![0; n];
                r.read_exact(&mut body)?;
                body
            }
        }
    };
    Ok(Some((req, keep_alive)))
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` at a clean end of stream.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    let n = r
        .take((MAX_HEAD_BYTES - (*budget).min(MAX_HEAD_BYTES)) as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    *budget += n;
    if *budget > MAX_HEAD_BYTES || buf.last() != Some(&b'\n') {
        return Err(ReadError::Bad("request head too large or truncated"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ReadError::Bad("request head is not UTF-8"))
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = 0;
    loop {
        let line = read_line(r, &mut budget)?.ok_or(ReadError::Bad("truncated chunk"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| ReadError::Bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            while !read_line(r, &mut budget)?
                .ok_or(ReadError::Bad("truncated trailers"))?
                .is_empty()
            {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ReadError::Bad("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ReadError::Bad("chunk not followed by CRLF"));
        }
        budget = 0;
    }
}

/// Writes one response; `Ok(false)` when the connection must not be reused (an aborted stream).
fn write_response<W: Write>(w: &mut W, resp: Response, keep_alive: bool) -> io::Result<bool> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        reason_phrase(resp.status)
    );
    for (n, v) in &resp.headers {
        if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !keep_alive && !resp.headers.iter().any(|(n, _)| n == "connection") {
        head.push_str("connection: close\r\n");
    }
    match resp.body {
        Body::Full(bytes) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
            w.write_all(head.as_bytes())?;
            w.write_all(&bytes)?;
            w.flush()?;
            Ok(true)
        }
        Body::Stream(chunks) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            w.write_all(head.as_bytes())?;
            w.flush()?;
            for chunk in chunks {
                match chunk {
                    Chunk::Data(d) if d.is_empty() => continue,
                    Chunk::Data(d) => {
                        w.write_all(format!("{:x}\r\n", d.len()).as_bytes())?;
                        w.write_all(&d)?;
                        w.write_all(b"\r\n")?;
                        w.flush()?;
                    }
                    Chunk::Abort => return Ok(false),
                }
            }
            w.write_all(b"0\r\n\r\n")?;
            w.flush()?;
            Ok(true)
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
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
    fn debug_output_hides_credentials_and_bodies() {
        let r = Request::new("POST", "/t")
            .with_header("Authorization", "Bearer s3cret")
            .with_body("client_assertion=s3cret");
        let d = format!("{r:?}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(
            d.contains("<redacted>") && d.contains("body_len: 23"),
            "{d}"
        );
    }

    #[test]
    fn trailing_percent_is_kept() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("%41"), "A");
    }

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, req: Request) -> Response {
            if req.path == "/stream" {
                let abort = req.query_param("abort").is_some();
                let mut chunks = vec![
                    Chunk::Data(b"one\n".to_vec()),
                    Chunk::Data(b"two\n".to_vec()),
                ];
                if abort {
                    chunks.push(Chunk::Abort);
                }
                return Response {
                    status: 200,
                    headers: vec![],
                    body: Body::Stream(Box::new(chunks.into_iter())),
                };
            }
            Response::text(
                200,
                &format!(
                    "{} {} {}",
                    req.method,
                    req.path,
                    String::from_utf8_lossy(&req.body)
                ),
            )
        }
    }

    fn raw(server: &Server, request: &[u8]) -> String {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn content_length_body_is_read_and_answered() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(
            &server,
            b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("POST /x abc"), "{out}");
    }

    #[test]
    fn chunked_request_body_is_reassembled() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(
            &server,
            b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        );
        assert!(out.ends_with("POST /c abc"), "{out}");
    }

    #[test]
    fn keep_alive_serves_two_requests_on_one_connection() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(
            &server,
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nconnection: close\r\n\r\n",
        );
        assert!(out.contains("GET /a") && out.contains("GET /b"), "{out}");
    }

    #[test]
    fn expect_continue_is_answered_before_the_body() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(
            &server,
            b"PUT /e HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        );
        assert!(
            out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{out}"
        );
        assert!(out.ends_with("PUT /e ok"), "{out}");
    }

    #[test]
    fn garbage_gets_400() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(&server, b"NONSENSE\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }

    #[test]
    fn streamed_body_is_chunked_and_terminated() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(
            &server,
            b"GET /stream HTTP/1.1\r\nconnection: close\r\n\r\n",
        );
        assert!(out.contains("transfer-encoding: chunked"), "{out}");
        assert!(
            out.ends_with("4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn aborted_stream_has_no_final_chunk() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let out = raw(&server, b"GET /stream?abort=1 HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("4\r\ntwo\n\r\n"), "{out}");
    }

    #[test]
    fn client_disconnect_mid_request_leaves_the_server_serving() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.write_all(b"POST /x HTTP/1.1\r\ncontent-length: 100\r\n\r\nab")
                .unwrap();
        }
        let out = raw(&server, b"GET /ok HTTP/1.1\r\nconnection: close\r\n\r\n");
        assert!(out.ends_with("GET /ok "), "{out}");
    }

    #[test]
    fn dropped_server_refuses_connections() {
        let server = serve_http(Arc::new(Echo)).unwrap();
        let addr = server.addr();
        drop(server);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn https_listener_serves_with_the_kit_ca() {
        let ca = crate::tls::Ca::new();
        let server = serve_https(
            Arc::new(Echo),
            ca.server_config(&["localhost", "127.0.0.1"]),
        )
        .unwrap();
        assert!(server.url().starts_with("https://127.0.0.1:"));
        let agent = test_agent(&ca);
        let body = agent
            .get(format!("{}/hello", server.url()))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(body, "GET /hello ");
    }

    fn test_agent(ca: &crate::tls::Ca) -> ureq::Agent {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let root = Certificate::from_der(ca.der().as_ref()).to_owned();
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(vec![root])))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .build()
            .new_agent()
    }
}
