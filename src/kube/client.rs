//! The API client: authenticated, rate-limited, metered JSON requests to the Kubernetes API server.

use super::auth::{BearerToken, Credentials};
use super::config::Config;
use super::error::{ConfigError, Error};
use super::ratelimit::RateLimiter;
use crate::clock::{Clock, SystemClock};
use crate::net::percent;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::http::Response;
use ureq::{Agent, Body, RequestBuilder};

/// Largest non-watch response body read; a page of 500 small objects is far below it.
const MAX_BODY: u64 = 64 << 20;
/// Largest single watch event line; etcd caps objects near 1.5 MiB.
const MAX_EVENT_LINE: u64 = 16 << 20;
/// A watch read may stay idle this much longer than `timeoutSeconds` before the connection counts as dead.
pub const WATCH_IDLE_MARGIN: Duration = Duration::from_secs(5);

/// A Kubernetes resource type and how its URL paths are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Plural resource name, e.g. `secrets`.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl Resource {
    /// Core `v1` Secrets.
    pub const SECRETS: Resource = Resource::core("secrets", true);
    /// Core `v1` ServiceAccounts (also the `token` subresource for TokenRequest).
    pub const SERVICE_ACCOUNTS: Resource = Resource::core("serviceaccounts", true);
    #[cfg(test)]
    /// Core `v1` Namespaces.
    pub const NAMESPACES: Resource = Resource::core("namespaces", false);
    /// `acrpull.microsoft.com/v1beta2` AcrPullBindings.
    pub const ACR_PULL_BINDINGS_V1BETA2: Resource = Resource {
        group: "acrpull.microsoft.com",
        version: "v1beta2",
        plural: "acrpullbindings",
        namespaced: true,
    };
    /// `msi-acrpull.microsoft.com/v1beta1` AcrPullBindings.
    pub const ACR_PULL_BINDINGS_V1BETA1: Resource = Resource {
        group: "msi-acrpull.microsoft.com",
        version: "v1beta1",
        plural: "acrpullbindings",
        namespaced: true,
    };
    /// `coordination.k8s.io/v1` Leases.
    pub const LEASES: Resource = Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        namespaced: true,
    };

    const fn core(plural: &'static str, namespaced: bool) -> Resource {
        Resource {
            group: "",
            version: "v1",
            plural,
            namespaced,
        }
    }

    /// `apiVersion` as written in objects, e.g. `v1` or `acrpull.microsoft.com/v1beta2`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL path: `namespace` is ignored for cluster-scoped resources and `None` means all namespaces.
    pub fn path(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> String {
        let mut p = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if let (true, Some(ns)) = (self.namespaced, namespace) {
            p.push_str("/namespaces/");
            p.push_str(&percent::encode(ns));
        }
        p.push('/');
        p.push_str(self.plural);
        if let Some(n) = name {
            p.push('/');
            p.push_str(&percent::encode(n));
            if let Some(s) = subresource {
                p.push('/');
                p.push_str(&percent::encode(s));
            }
        }
        p
    }
}

/// Query parameters of a LIST (and, minus paging, of a WATCH).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `limit` (page size).
    pub limit: Option<u32>,
    /// `continue` token from the previous page.
    pub continue_token: Option<String>,
}

impl ListParams {
    fn selectors(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.label_selector.as_ref().filter(|s| !s.is_empty()) {
            q.push(("labelSelector", s.clone()));
        }
        if let Some(s) = self.field_selector.as_ref().filter(|s| !s.is_empty()) {
            q.push(("fieldSelector", s.clone()));
        }
        q
    }
}

/// One page of a LIST.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The objects (kind and apiVersion are absent in list items, as the server sends them).
    pub items: Vec<Value>,
    /// The list's `metadata.resourceVersion`.
    pub resource_version: String,
    /// The `metadata.continue` token, if there are more pages.
    pub continue_token: Option<String>,
}

/// DELETE preconditions: the delete fails with 409 unless the object still has this uid / resourceVersion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// Required `metadata.uid`.
    pub uid: Option<String>,
    /// Required `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

/// Request counts by verb and HTTP code (0 = no response), shared by all clones of a client.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Mutex<BTreeMap<(&'static str, u16), u64>>>);

impl Metrics {
    fn record(&self, verb: &'static str, code: u16) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((verb, code)).or_insert(0) += 1;
    }

    /// `(verb, code) → count`, sorted.
    pub fn snapshot(&self) -> Vec<((String, u16), u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((v, c), n)| ((v.to_string(), *c), *n))
            .collect()
    }
}

/// A cheap-to-clone Kubernetes API client; all clones share one connection pool, limiter and credential.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.base)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

struct Inner {
    agent: Agent,
    base: String,
    creds: Credentials,
    limiter: RateLimiter,
    metrics: Metrics,
    namespace: Option<String>,
}

/// The HTTP methods the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A request body and its content type.
struct Payload {
    content_type: &'static str,
    bytes: Vec<u8>,
}

impl Client {
    /// Builds the client (TLS, timeouts, limiter) once; the real clock paces requests.
    pub fn new(config: &Config) -> Result<Client, ConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Client::new`], with an injected clock for the rate limiter.
    pub fn with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Client, ConfigError> {
        if !(config.server.starts_with("https://") || config.server.starts_with("http://")) {
            return Err(ConfigError::BadServer);
        }
        let proxy = match &config.proxy {
            Some(url) => Some(ureq::Proxy::new(url).map_err(|_| ConfigError::Unsupported {
                feature: "proxy-url",
            })?),
            None => None,
        };
        let agent_config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy)
            .tls_config(config.tls_config()?)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            .user_agent(concat!("acrpull/", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            .input_buffer_size(crate::net::buffers::INPUT)
            .output_buffer_size(crate::net::buffers::OUTPUT)
            .max_response_header_size(crate::net::buffers::MAX_RESPONSE_HEADER)
            .build();
        let agent = Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::default(),
            crate::net::resolve::CachingResolver::default(),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                agent,
                base: config.server.trim_end_matches('/').to_string(),
                creds: Credentials::new(config.auth.clone()),
                limiter: RateLimiter::new(config.qps, config.burst, clock),
                metrics: Metrics::default(),
                namespace: config.namespace.clone(),
            }),
        })
    }

    /// The per-verb, per-code request counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics.clone()
    }

    /// GET one object.
    pub fn get(&self, path: &str) -> Result<Value, Error> {
        self.json("GET", Method::Get, path, &[], None)
    }

    /// LIST one page of objects.
    pub fn list(&self, path: &str, params: &ListParams) -> Result<ListPage, Error> {
        let mut query = params.selectors();
        if let Some(l) = params.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = params.continue_token.as_ref().filter(|c| !c.is_empty()) {
            query.push(("continue", c.clone()));
        }
        let mut v = self.json("LIST", Method::Get, path, &query, None)?;
        let meta = &v["metadata"];
        let resource_version = meta["resourceVersion"].as_str().unwrap_or("").to_string();
        let continue_token = meta["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        let mut items = match v.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        items.iter_mut().for_each(drop_managed_fields);
        Ok(ListPage {
            items,
            resource_version,
            continue_token,
        })
    }

    /// POST a new object (fails with 409 AlreadyExists if the name is taken).
    pub fn create(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.json("POST", Method::Post, path, &[], Some(json_payload(body)?))
    }

    /// PUT a whole object; its `metadata.resourceVersion` makes this fail with 409 if stale.
    pub fn replace(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.json("PUT", Method::Put, path, &[], Some(json_payload(body)?))
    }

    /// PATCH with an RFC 7386 merge patch (lists are replaced wholesale).
    pub fn patch_merge(&self, path: &str, patch: &Value) -> Result<Value, Error> {
        let payload = Payload {
            content_type: "application/merge-patch+json",
            bytes: serde_json::to_vec(patch)?,
        };
        self.json("PATCH", Method::Patch, path, &[], Some(payload))
    }

    /// PATCH with an RFC 6902 JSON patch (a list of ops, `test` ops included).
    pub fn patch_json(&self, path: &str, ops: &Value) -> Result<Value, Error> {
        let payload = Payload {
            content_type: "application/json-patch+json",
            bytes: serde_json::to_vec(ops)?,
        };
        self.json("PATCH", Method::Patch, path, &[], Some(payload))
    }

    /// DELETE an object, optionally only if it still has the given uid / resourceVersion.
    pub fn delete(
        &self,
        path: &str,
        preconditions: Option<&Preconditions>,
    ) -> Result<Value, Error> {
        let payload = match preconditions {
            None => None,
            Some(p) => {
                let mut pre = serde_json::Map::new();
                if let Some(uid) = &p.uid {
                    pre.insert("uid".into(), uid.clone().into());
                }
                if let Some(rv) = &p.resource_version {
                    pre.insert("resourceVersion".into(), rv.clone().into());
                }
                let body = serde_json::json!({
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "preconditions": pre,
                });
                Some(json_payload(&body)?)
            }
        };
        self.json("DELETE", Method::Delete, path, &[], payload)
    }

    /// POST to a subresource such as `serviceaccounts/<name>/token` (TokenRequest).
    pub fn post_subresource(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.json("POST", Method::Post, path, &[], Some(json_payload(body)?))
    }

    /// Opens a WATCH from `resource_version`; the server ends it after `timeout_secs`.
    pub fn watch(
        &self,
        path: &str,
        params: &ListParams,
        resource_version: &str,
        timeout_secs: u32,
    ) -> Result<WatchStream, Error> {
        let mut query = params.selectors();
        query.push(("watch", "1".into()));
        query.push(("allowWatchBookmarks", "true".into()));
        query.push(("timeoutSeconds", timeout_secs.to_string()));
        if !resource_version.is_empty() {
            query.push(("resourceVersion", resource_version.to_string()));
        }
        let idle = Duration::from_secs(u64::from(timeout_secs)) + WATCH_IDLE_MARGIN;
        let resp = self.send("WATCH", Method::Get, path, &query, None, Some(idle))?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(error_from_response(
                parts.status.as_u16(),
                &parts.headers,
                body,
            ));
        }
        Ok(WatchStream {
            reader: BufReader::new(body.into_reader()),
        })
    }

    /// Sends a request and decodes a JSON answer, mapping failures to typed errors.
    fn json(
        &self,
        verb: &'static str,
        method: Method,
        path: &str,
        query: &[(&'static str, String)],
        payload: Option<Payload>,
    ) -> Result<Value, Error> {
        let resp = self.send(verb, method, path, query, payload, None)?;
        let (parts, mut body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(error_from_response(
                parts.status.as_u16(),
                &parts.headers,
                body,
            ));
        }
        let bytes = body.with_config().limit(MAX_BODY).read_to_vec()?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Rate-limits, authenticates, sends and meters one request; on 401 re-reads the credential and retries once.
    fn send(
        &self,
        verb: &'static str,
        method: Method,
        path: &str,
        query: &[(&'static str, String)],
        payload: Option<Payload>,
        watch_idle: Option<Duration>,
    ) -> Result<Response<Body>, Error> {
        let mut url = format!("{}{}", self.inner.base, path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&percent::encode_pairs(
                query.iter().map(|(k, v)| (*k, v.as_str())),
            ));
        }
        for attempt in 0..2 {
            self.inner.limiter.acquire();
            let token = self.inner.creds.bearer(attempt > 0)?;
            let started = Instant::now();
            let result = self.send_once(method, &url, token.as_ref(), payload.as_ref(), watch_idle);
            let code = result.as_ref().map_or(0, |r| r.status().as_u16());
            self.inner.metrics.record(verb, code);
            log::debug!("{verb} {path} {code} {}ms", started.elapsed().as_millis());
            let resp = result?;
            if code == 401 && attempt == 0 && token.is_some() {
                continue;
            }
            return Ok(resp);
        }
        Err(Error::Unauthorized)
    }

    fn send_once(
        &self,
        method: Method,
        url: &str,
        token: Option<&BearerToken>,
        payload: Option<&Payload>,
        watch_idle: Option<Duration>,
    ) -> Result<Response<Body>, ureq::Error> {
        let agent = &self.inner.agent;
        let prepare = |rb| prepare(rb, token, watch_idle);
        match (method, payload) {
            (Method::Get, _) => prepare(agent.get(url)).call(),
            (Method::Delete, None) => prepare(agent.delete(url)).call(),
            (Method::Delete, Some(p)) => with_body(prepare(agent.delete(url)).force_send_body(), p),
            (Method::Post, p) => {
                with_body(prepare_body(agent.post(url), token), p.unwrap_or(&EMPTY))
            }
            (Method::Put, p) => with_body(prepare_body(agent.put(url), token), p.unwrap_or(&EMPTY)),
            (Method::Patch, p) => {
                with_body(prepare_body(agent.patch(url), token), p.unwrap_or(&EMPTY))
            }
        }
    }
}

const EMPTY: Payload = Payload {
    content_type: "application/json",
    bytes: Vec::new(),
};

fn json_payload(body: &Value) -> Result<Payload, Error> {
    Ok(Payload {
        content_type: "application/json",
        bytes: serde_json::to_vec(body)?,
    })
}

/// Adds the bearer token and, for a watch, swaps the whole-request timeout for a per-read idle timeout.
fn prepare(
    rb: RequestBuilder<ureq::typestate::WithoutBody>,
    token: Option<&BearerToken>,
    watch_idle: Option<Duration>,
) -> RequestBuilder<ureq::typestate::WithoutBody> {
    let rb = authorize(rb, token);
    match watch_idle {
        Some(idle) => rb
            .config()
            .timeout_global(None)
            .timeout_per_read(Some(idle))
            .build(),
        None => rb,
    }
}

fn prepare_body(
    rb: RequestBuilder<ureq::typestate::WithBody>,
    token: Option<&BearerToken>,
) -> RequestBuilder<ureq::typestate::WithBody> {
    authorize(rb, token)
}

fn authorize<B>(rb: RequestBuilder<B>, token: Option<&BearerToken>) -> RequestBuilder<B> {
    match token {
        Some(t) => rb.header("Authorization", format!("Bearer {}", t.expose())),
        None => rb,
    }
}

fn with_body(
    rb: RequestBuilder<ureq::typestate::WithBody>,
    p: &Payload,
) -> Result<Response<Body>, ureq::Error> {
    rb.content_type(p.content_type).send(&p.bytes[..])
}

/// Maps a failed response to an error: 429 with its `Retry-After`, 401, or the decoded `Status`.
fn error_from_response(code: u16, headers: &ureq::http::HeaderMap, mut body: Body) -> Error {
    match code {
        429 => {
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Error::TooManyRequests { retry_after }
        }
        401 => Error::Unauthorized,
        _ => {
            let status = body
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .unwrap_or(Value::Null);
            Error::from_status(code, &status)
        }
    }
}

/// The newline-delimited JSON events of an open watch.
pub struct WatchStream {
    reader: BufReader<ureq::BodyReader<'static>>,
}

/// One decoded watch event.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: String,
    /// The object (a `Status` for `ERROR`).
    pub object: Value,
}

impl WatchStream {
    /// The next event; `Ok(None)` when the server closed the stream normally.
    pub fn next_event(&mut self) -> Result<Option<RawEvent>, Error> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_EVENT_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::Transport(ureq::Error::Io(e)))?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(event) = decode_watch_line(&line)? {
                return Ok(Some(event));
            }
        }
    }
}

/// Decodes one line of a watch stream; `Ok(None)` for a blank keep-alive line. Pure, so the
/// fuzz targets can reach it without a socket.
pub fn decode_watch_line(line: &[u8]) -> Result<Option<RawEvent>, Error> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut v: Value = serde_json::from_slice(line)?;
    let kind = v["type"].as_str().unwrap_or("").to_string();
    let mut object = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    drop_managed_fields(&mut object);
    Ok(Some(RawEvent { kind, object }))
}

/// Removes `metadata.managedFields`, which acrpull never reads: on a real API server it is often
/// half of an object's JSON, and parsed list pages wait in the watch channels at start-up.
fn drop_managed_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kube::auth::Auth;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    /// A canned HTTP/1.1 answer: status, extra headers, and body chunks (sent chunked when more than one).
    pub(crate) struct Canned {
        pub status: u16,
        pub headers: Vec<(&'static str, String)>,
        pub chunks: Vec<String>,
    }

    impl Canned {
        pub(crate) fn json(status: u16, body: &str) -> Canned {
            Canned {
                status,
                headers: vec![],
                chunks: vec![body.to_string()],
            }
        }
    }

    /// What the server saw of one request.
    #[derive(Debug)]
    pub(crate) struct Seen {
        pub request_line: String,
        pub headers: Vec<String>,
        pub body: String,
    }

    /// Serves `answers` in order on 127.0.0.1, one per connection; returns the base URL and the requests seen.
    pub(crate) fn serve(answers: Vec<Canned>) -> (String, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                if let Some(seen) = answer_one(stream, answer) {
                    let _ = tx.send(seen);
                }
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn answer_one(mut stream: TcpStream, answer: Canned) -> Option<Seen> {
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).ok()?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push(h);
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).ok()?;
        let mut head = format!(
            "HTTP/1.1 {} X\r\nConnection: close\r\nContent-Type: application/json\r\n",
            answer.status
        );
        for (k, v) in &answer.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if answer.chunks.len() == 1 {
            head.push_str(&format!(
                "Content-Length: {}\r\n\r\n{}",
                answer.chunks[0].len(),
                answer.chunks[0]
            ));
            stream.write_all(head.as_bytes()).ok()?;
        } else {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).ok()?;
            for c in &answer.chunks {
                stream
                    .write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
                    .ok()?;
                stream.flush().ok()?;
            }
            stream.write_all(b"0\r\n\r\n").ok()?;
        }
        stream.flush().ok()?;
        Some(Seen {
            request_line: request_line.trim_end().to_string(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub(crate) fn client(base: &str, auth: Auth) -> Client {
        let mut config = Config::new(base);
        config.auth = auth;
        Client::new(&config).expect("client config is valid")
    }

    fn auth_header(seen: &Seen) -> Option<&str> {
        seen.headers
            .iter()
            .find(|h| h.to_ascii_lowercase().starts_with("authorization:"))
            .map(|h| h["authorization:".len()..].trim())
    }

    #[test]
    fn paths_are_built_for_core_group_and_namespaced_resources() {
        assert_eq!(
            Resource::SECRETS.path(Some("ns"), Some("s"), None),
            "/api/v1/namespaces/ns/secrets/s"
        );
        assert_eq!(Resource::SECRETS.path(None, None, None), "/api/v1/secrets");
        assert_eq!(
            Resource::SERVICE_ACCOUNTS.path(Some("ns"), Some("sa"), Some("token")),
            "/api/v1/namespaces/ns/serviceaccounts/sa/token"
        );
        assert_eq!(
            Resource::NAMESPACES.path(Some("ignored"), Some("x"), None),
            "/api/v1/namespaces/x"
        );
        assert_eq!(
            Resource::ACR_PULL_BINDINGS_V1BETA2.path(Some("a"), Some("b"), Some("status")),
            "/apis/acrpull.microsoft.com/v1beta2/namespaces/a/acrpullbindings/b/status"
        );
        assert_eq!(
            Resource::ACR_PULL_BINDINGS_V1BETA1.api_version(),
            "msi-acrpull.microsoft.com/v1beta1"
        );
        assert_eq!(
            Resource::LEASES.path(Some("kube-system"), Some("aks.azure.com"), None),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/aks.azure.com"
        );
        assert_eq!(
            Resource::SECRETS.path(Some("a/b"), None, None),
            "/api/v1/namespaces/a%2Fb/secrets"
        );
    }

    #[test]
    fn watch_lines_arrive_without_managed_fields() {
        let line = br#"{"type":"MODIFIED","object":{"metadata":{"name":"s","managedFields":[{"manager":"m"}],"labels":{"a":"b"}}}}"#;
        let event = decode_watch_line(line).unwrap().unwrap();
        assert_eq!(event.kind, "MODIFIED");
        assert!(event.object["metadata"].get("managedFields").is_none());
        assert_eq!(event.object["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn list_sends_selectors_and_paging_and_returns_the_continue_token() {
        let (base, seen) = serve(vec![Canned::json(
            200,
            r#"{"kind":"SecretList","metadata":{"resourceVersion":"42","continue":"next"},"items":[{"metadata":{"name":"a","managedFields":[{"manager":"kubectl"}]}}]}"#,
        )]);
        let c = client(&base, Auth::None);
        let params = ListParams {
            label_selector: Some("acr.microsoft.com/binding".into()),
            limit: Some(500),
            continue_token: Some("c1".into()),
            ..ListParams::default()
        };
        let page = c.list("/api/v1/secrets", &params).unwrap();
        assert_eq!(page.resource_version, "42");
        assert_eq!(page.continue_token.as_deref(), Some("next"));
        assert_eq!(page.items[0]["metadata"]["name"], "a");
        assert!(
            page.items[0]["metadata"].get("managedFields").is_none(),
            "never read, so never kept"
        );
        let req = seen.recv().unwrap();
        assert_eq!(
            req.request_line,
            "GET /api/v1/secrets?labelSelector=acr.microsoft.com%2Fbinding&limit=500&continue=c1 HTTP/1.1"
        );
        assert_eq!(c.metrics().snapshot(), vec![(("LIST".to_string(), 200), 1)]);
    }

    #[test]
    fn unauthorized_rereads_the_token_file_and_retries_once() {
        let dir = crate::kube::auth::tests::temp_dir("client-401");
        let token = dir.join("token");
        std::fs::write(&token, "old").unwrap();
        let (base, seen) = serve(vec![
            Canned::json(401, r#"{"kind":"Status","code":401}"#),
            Canned::json(200, r#"{"metadata":{"name":"x"}}"#),
        ]);
        let c = client(&base, Auth::TokenFile(token.clone()));
        c.inner.creds.bearer(false).unwrap();
        std::fs::write(&token, "new").unwrap();
        let v = c.get("/api/v1/namespaces/a/secrets/x").unwrap();
        assert_eq!(v["metadata"]["name"], "x");
        assert_eq!(auth_header(&seen.recv().unwrap()), Some("Bearer old"));
        assert_eq!(auth_header(&seen.recv().unwrap()), Some("Bearer new"));
    }

    #[test]
    fn a_second_unauthorized_is_an_error() {
        let (base, _seen) = serve(vec![Canned::json(401, "{}"), Canned::json(401, "{}")]);
        let c = client(&base, Auth::Token(BearerToken::new("t")));
        assert!(matches!(
            c.get("/api/v1/namespaces"),
            Err(Error::Unauthorized)
        ));
        assert_eq!(c.metrics().snapshot(), vec![(("GET".to_string(), 401), 2)]);
    }

    #[test]
    fn too_many_requests_surfaces_retry_after_without_retrying() {
        let (base, _seen) = serve(vec![Canned {
            status: 429,
            headers: vec![("Retry-After", "3".into())],
            chunks: vec!["{}".into()],
        }]);
        let c = client(&base, Auth::None);
        let e = c.get("/api/v1/namespaces").unwrap_err();
        assert!(
            matches!(e, Error::TooManyRequests { retry_after: Some(d) } if d == Duration::from_secs(3))
        );
    }

    #[test]
    fn status_bodies_become_typed_errors() {
        let (base, _seen) = serve(vec![Canned::json(
            409,
            r#"{"kind":"Status","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified"}"#,
        )]);
        let c = client(&base, Auth::None);
        let e = c
            .replace("/api/v1/namespaces/a/secrets/x", &serde_json::json!({}))
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
    }

    #[test]
    fn writes_send_their_content_types_and_delete_sends_preconditions() {
        let (base, seen) = serve(vec![
            Canned::json(200, "{}"),
            Canned::json(200, "{}"),
            Canned::json(200, "{}"),
        ]);
        let c = client(&base, Auth::None);
        c.patch_merge("/p", &serde_json::json!({"a": 1})).unwrap();
        c.patch_json(
            "/p",
            &serde_json::json!([{"op": "test", "path": "/a", "value": 1}]),
        )
        .unwrap();
        let pre = Preconditions {
            uid: Some("u1".into()),
            resource_version: Some("7".into()),
        };
        c.delete("/d", Some(&pre)).unwrap();
        let ct = |s: &Seen| {
            s.headers
                .iter()
                .find(|h| h.to_ascii_lowercase().starts_with("content-type:"))
                .map(|h| h["content-type:".len()..].trim().to_string())
        };
        let merge = seen.recv().unwrap();
        assert_eq!(merge.request_line, "PATCH /p HTTP/1.1");
        assert_eq!(ct(&merge).as_deref(), Some("application/merge-patch+json"));
        assert_eq!(
            ct(&seen.recv().unwrap()).as_deref(),
            Some("application/json-patch+json")
        );
        let del = seen.recv().unwrap();
        assert_eq!(del.request_line, "DELETE /d HTTP/1.1");
        let body: Value = serde_json::from_str(&del.body).unwrap();
        assert_eq!(
            body["preconditions"],
            serde_json::json!({"uid": "u1", "resourceVersion": "7"})
        );
    }

    #[test]
    fn redirects_are_not_followed() {
        let (base, seen) = serve(vec![Canned {
            status: 302,
            headers: vec![("Location", "http://127.0.0.1:1/elsewhere".into())],
            chunks: vec!["{}".into()],
        }]);
        let c = client(&base, Auth::Token(BearerToken::new("t")));
        let e = c.get("/x").unwrap_err();
        assert_eq!(e.code(), Some(302));
        assert!(seen.recv().is_ok());
    }

    #[test]
    fn watch_stream_yields_chunked_events_then_ends() {
        let (base, seen) = serve(vec![Canned {
            status: 200,
            headers: vec![],
            chunks: vec![
                "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"5\"}}}\n{\"type\":\"BOOK".into(),
                "MARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\n".into(),
            ],
        }]);
        let c = client(&base, Auth::None);
        let mut w = c
            .watch("/api/v1/secrets", &ListParams::default(), "4", 290)
            .unwrap();
        assert_eq!(w.next_event().unwrap().unwrap().kind, "ADDED");
        let bm = w.next_event().unwrap().unwrap();
        assert_eq!(
            (bm.kind.as_str(), &bm.object["metadata"]["resourceVersion"]),
            ("BOOKMARK", &Value::from("9"))
        );
        assert!(w.next_event().unwrap().is_none());
        let req = seen.recv().unwrap();
        assert_eq!(
            req.request_line,
            "GET /api/v1/secrets?watch=1&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=4 HTTP/1.1"
        );
    }
}
