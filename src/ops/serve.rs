//! The `/metrics` and probe listeners: a minimal HTTP/1.1 server on a std `TcpListener`.
//!
//! Each connection gets one short-lived thread, one request and `Connection: close`. Slow or bad
//! clients cannot hold a thread long (5 s for the whole request head, 8 KiB at most) nor exhaust
//! threads (16 connections at once; more get 503 at once). No HTTP crate: the needs are tiny.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::ops::health::{Health, Report};
use crate::ops::metrics::{self, Metrics};

/// Time a client has to send its whole request head; also the write timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read; probes and scrapers send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;

/// Connections served at once; more are answered 503 without a thread.
const MAX_CONNECTIONS: usize = 16;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without `?` (empty when none).
    pub query: String,
}

impl Request {
    /// Whether the query has the key `key` (`?verbose`, `?verbose=1`, `?a&verbose`).
    pub fn has_query_key(&self, key: &str) -> bool {
        self.query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(key))
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Answers a `GET`/`HEAD` of one path.
pub type Handler = Box<dyn Fn(&Request) -> Response + Send + Sync>;

/// The paths a listener serves.
#[derive(Default)]
pub struct Routes {
    routes: Vec<(String, Handler)>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.routes.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("Routes").field("paths", &paths).finish()
    }
}

impl Routes {
    /// No paths (everything is 404).
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Serves `path` (exact match) with `handler`.
    pub fn get(mut self, path: &str, handler: Handler) -> Routes {
        self.routes.push((path.to_string(), handler));
        self
    }

    /// The response to one raw request head.
    fn respond(&self, head: &[u8]) -> Response {
        let Some(req) = parse_head(head) else {
            return Response::text(400, "bad request\n");
        };
        let Some((_, handler)) = self.routes.iter().find(|(p, _)| *p == req.path) else {
            return Response::text(404, "not found\n");
        };
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "method not allowed\n");
        }
        handler(&req)
    }
}

/// `GET /metrics`.
pub fn metrics_routes(metrics: Arc<Metrics>) -> Routes {
    Routes::new().get(
        "/metrics",
        Box::new(move |_| Response {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: metrics.render(),
        }),
    )
}

/// `GET /healthz`, `/readyz`, and upstream's `/healthz/healthz`, `/readyz/readyz`; `?verbose` lists
/// every check.
pub fn probe_routes(health: Arc<Health>) -> Routes {
    let live = |h: Arc<Health>| -> Handler {
        Box::new(move |r: &Request| probe_response("healthz", &h.liveness(), r))
    };
    let ready = |h: Arc<Health>| -> Handler {
        Box::new(move |r: &Request| probe_response("readyz", &h.readiness(), r))
    };
    Routes::new()
        .get("/healthz", live(health.clone()))
        .get("/healthz/healthz", live(health.clone()))
        .get("/readyz", ready(health.clone()))
        .get("/readyz/readyz", ready(health))
}

/// `ok`, or one `[-]name failed: detail` line per failing check (every check with `?verbose`).
fn probe_response(probe: &str, report: &Report, req: &Request) -> Response {
    let verbose = req.has_query_key("verbose");
    let ok = report.ok();
    if ok && !verbose {
        return Response::text(200, "ok");
    }
    let mut body = String::new();
    for c in report.checks.iter().filter(|c| verbose || !c.ok) {
        if c.ok {
            body.push_str(&format!("[+]{} ok\n", c.name));
        } else {
            body.push_str(&format!("[-]{} failed: {}\n", c.name, c.detail));
        }
    }
    let verdict = if ok { "passed" } else { "failed" };
    body.push_str(&format!("{probe} check {verdict}\n"));
    Response::text(if ok { 200 } else { 500 }, body)
}

/// Parses `METHOD SP target SP HTTP/1.x` from the first line of `head`.
fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
    })
}

/// Resolves a Go-style listen address: `:8080` (all interfaces), `127.0.0.1:8080`, `[::]:8080`,
/// `localhost:8080`.
pub fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let invalid = || io::Error::new(ErrorKind::InvalidInput, "invalid listen address");
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        // Dual-stack first, as Go does; IPv4 when the host has no IPv6.
        return Ok(vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ]);
    }
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(invalid());
    }
    Ok(addrs)
}

/// A running listener.
#[derive(Debug)]
pub struct ServerHandle {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    #[cfg(test)]
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    #[cfg(test)]
    /// Stops accepting and waits for the accept loop to end; in-flight requests finish on their own.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop blocks in accept(); one connection wakes it to see the flag. A dual-stack
        // `[::]` socket on a host whose IPv6 loopback is disabled still takes IPv4, hence the
        // fallback. If no connection gets through, the thread is left to end with the process
        // rather than hang here.
        let port = self.local.port();
        let candidates: Vec<SocketAddr> = match self.local.ip() {
            IpAddr::V6(ip) if ip.is_unspecified() => vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            ],
            IpAddr::V4(ip) if ip.is_unspecified() => {
                vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]
            }
            _ => vec![self.local],
        };
        let woken = candidates
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
        if !woken {
            log::debug!("could not wake the listener on {}; leaving it", self.local);
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

/// Listens on `addr` (Go syntax, see [`resolve`]) and serves `routes` until [`ServerHandle::stop`].
pub fn serve(addr: &str, routes: Routes) -> io::Result<ServerHandle> {
    let listener = TcpListener::bind(&resolve(addr)?[..])?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let routes = Arc::new(routes);
    let flag = stop.clone();
    let thread = thread::Builder::new()
        .name(format!("serve-{}", local.port()))
        .spawn(move || accept_loop(listener, routes, flag))?;
    Ok(ServerHandle {
        local,
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(listener: TcpListener, routes: Arc<Routes>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::debug!("accept failed on {:?}: {e}", listener.local_addr().ok());
                // Typically EMFILE; do not spin on it.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            reject_busy(stream);
            continue;
        }
        let slot = Slot(active.clone());
        let routes = routes.clone();
        let spawned = thread::Builder::new()
            .name("serve-conn".into())
            .spawn(move || {
                let _slot = slot;
                handle(stream, &routes);
            });
        if let Err(e) = spawned {
            log::debug!("could not spawn a connection thread: {e}");
        }
    }
}

/// One taken connection slot, given back on drop (even if the handler panics, or the thread
/// never starts and the closure holding it is dropped).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reject_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_response(&mut stream, &Response::text(503, "busy\n"), false);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

fn handle(mut stream: TcpStream, routes: &Routes) {
    // Accepted sockets may inherit non-blocking mode on some platforms; timeouts need blocking.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let (response, head_only) = match read_head(&mut stream, Instant::now() + REQUEST_TIMEOUT) {
        Ok(head) => {
            let is_head = parse_head(&head).is_some_and(|r| r.method == "HEAD");
            (routes.respond(&head), is_head)
        }
        Err(HeadError::TooLarge) => (Response::text(431, "request header too large\n"), false),
        Err(HeadError::Io) => return,
    };
    let _ = write_response(&mut stream, &response, head_only);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// Closed, timed out or broke before the head ended.
    Io,
}

/// Reads until the blank line ending the head, within `deadline`.
fn read_head(stream: &mut impl ReadTimeout, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Io);
        }
        stream.set_timeout(left).map_err(|_| HeadError::Io)?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(HeadError::Io),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Io),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A readable stream whose read timeout can be set (a socket, or a test double).
trait ReadTimeout: Read {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()>;
}

impl ReadTimeout for TcpStream {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

/// The end of the head (`\r\n\r\n`, or a bare `\n\n`), if present.
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn write_response(stream: &mut impl Write, r: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&r.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::ops::health::HealthConfig;

    fn probes() -> (Routes, Arc<Health>) {
        let h = Arc::new(Health::new(HealthConfig::default(), Arc::new(SystemClock)));
        (probe_routes(h.clone()), h)
    }

    #[test]
    fn request_line_is_parsed_into_method_path_and_query() {
        let r = parse_head(b"GET /readyz?verbose&x=1 HTTP/1.1\r\nHost: a\r\n").expect("valid");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/readyz");
        assert!(r.has_query_key("verbose"));
        assert!(r.has_query_key("x"));
        assert!(!r.has_query_key("verb"));
    }

    #[test]
    fn malformed_request_lines_are_rejected() {
        for bad in [
            &b"GET /x\r\n"[..],
            b"GET x HTTP/1.1\r\n",
            b"GET /x HTTP/2\r\n",
            b"get /x HTTP/1.1\r\n",
            b"GET /x HTTP/1.1 extra\r\n",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse_head(bad), None, "{bad:?}");
        }
        let (routes, _) = probes();
        assert_eq!(routes.respond(b"nonsense").status, 400);
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        let (routes, _) = probes();
        assert_eq!(routes.respond(b"GET /nope HTTP/1.1\r\n").status, 404);
        assert_eq!(routes.respond(b"POST /healthz HTTP/1.1\r\n").status, 405);
        assert_eq!(routes.respond(b"HEAD /healthz HTTP/1.1\r\n").status, 200);
    }

    #[test]
    fn readyz_fails_with_a_reason_until_synced_on_both_paths() {
        let (routes, h) = probes();
        h.track_kind("v1beta2");
        let r = routes.respond(b"GET /readyz HTTP/1.1\r\n");
        assert_eq!(r.status, 500);
        assert!(
            r.body
                .contains("[-]sync:v1beta2 failed: initial list pending\n"),
            "{}",
            r.body
        );
        assert!(r.body.ends_with("readyz check failed\n"));
        h.mark_synced("v1beta2");
        for path in ["/readyz", "/readyz/readyz"] {
            let r = routes.respond(format!("GET {path} HTTP/1.1\r\n").as_bytes());
            assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
        }
    }

    #[test]
    fn verbose_lists_every_check() {
        let (routes, h) = probes();
        let _w = h.register_worker("worker:0");
        let r = routes.respond(b"GET /healthz/healthz?verbose HTTP/1.1\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "[+]worker:0 ok\nhealthz check passed\n");
    }

    #[test]
    fn go_style_addresses_resolve() {
        let all = resolve(":8080").expect("valid");
        assert!(all
            .iter()
            .all(|a| a.ip().is_unspecified() && a.port() == 8080));
        assert_eq!(
            resolve("127.0.0.1:9").expect("valid"),
            vec!["127.0.0.1:9".parse::<SocketAddr>().expect("literal")]
        );
        assert_eq!(
            resolve("[::]:8081").expect("valid"),
            vec!["[::]:8081".parse::<SocketAddr>().expect("literal")]
        );
        assert!(resolve(":http").is_err());
        assert!(resolve("0").is_err());
    }

    /// A stream that yields its chunks one read at a time, then blocks "forever" (times out).
    struct Chunks(Vec<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(ErrorKind::WouldBlock, "timed out"));
            }
            let c = self.0.remove(0);
            buf[..c.len()].copy_from_slice(&c);
            Ok(c.len())
        }
    }

    impl ReadTimeout for Chunks {
        fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn head_is_read_across_chunks_and_bounded() {
        let far = Instant::now() + Duration::from_secs(60);
        let mut s = Chunks(vec![
            b"GET / HTTP/1.1\r\nHo".to_vec(),
            b"st: x\r\n\r\nbody".to_vec(),
        ]);
        assert_eq!(
            read_head(&mut s, far).expect("complete"),
            b"GET / HTTP/1.1\r\nHost: x"
        );
        let mut big = Chunks(vec![vec![b'a'; 1024]; 10]);
        assert_eq!(read_head(&mut big, far), Err(HeadError::TooLarge));
        let mut stalled = Chunks(vec![b"GET / HTTP/1.1\r\n".to_vec()]);
        assert_eq!(read_head(&mut stalled, far), Err(HeadError::Io));
        let mut late = Chunks(vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()]);
        assert_eq!(read_head(&mut late, Instant::now()), Err(HeadError::Io));
    }

    fn get(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("server listens");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("socket option");
        s.write_all(raw).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn metrics_are_served_over_tcp_and_stop_frees_the_port() {
        let m = Arc::new(Metrics::new("9.9.9", "rev"));
        let server = serve("127.0.0.1:0", metrics_routes(m)).expect("bind");
        let addr = server.local_addr();
        let out = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(out.contains("acrpull_build_info{version=\"9.9.9\",revision=\"rev\"} 1\n"));
        let out = get(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("Allow: GET, HEAD\r\n"));
        let out = get(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "HEAD has no body: {out}");
        server.stop();
        // The listener is closed once stop returns, so the port can be bound again.
        let again = TcpListener::bind(addr);
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn stop_works_for_a_listener_on_all_interfaces() {
        let (routes, _) = probes();
        let server = serve(":0", routes).expect("bind");
        let port = server.local_addr().port();
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let out = get(loopback, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("\r\n\r\nok"), "{out}");
        server.stop();
        assert!(TcpStream::connect(loopback).is_err(), "closed after stop");
    }

    #[test]
    fn connections_over_the_cap_get_503_at_once() {
        let (routes, _) = probes();
        let server = serve("127.0.0.1:0", routes).expect("bind");
        let addr = server.local_addr();
        // Silent clients each hold a slot until their 5 s head timeout.
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).expect("server listens"))
            .collect();
        // The refusal is written without reading the request, so read before sending anything
        // (a request still unread at close would turn the close into a reset).
        let mut s = TcpStream::connect(addr).expect("server listens");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("socket option");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        drop(held);
        server.stop();
    }
}
