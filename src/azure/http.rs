//! The HTTP edge for Azure: two ureq agents (IMDS, and Entra/registries) built once with fixed rules.
//!
//! IMDS: plain HTTP, never a proxy, `Metadata: true`. Azure: HTTPS only, webpki roots plus the
//! CAs in `SSL_CERT_FILE`, `HTTPS_PROXY` unless `NO_PROXY` matches. Both: no redirects (requests
//! carry tokens), statuses returned rather than raised, connect 5 s and whole call 30 s.

use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};
use ureq::{Agent, Proxy};

use super::error::HttpError;
use crate::net::percent;
use crate::net::resolve::CachingResolver;

/// Largest response body read; Azure token responses are a few KiB.
const MAX_BODY: u64 = 1024 * 1024;

/// Settings for the HTTP clients. `Default` lists every default.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// PEM file with CAs trusted in addition to the built-in roots (`SSL_CERT_FILE`). Default none.
    pub extra_ca_file: Option<PathBuf>,
    /// Proxy for Entra and registries (`HTTPS_PROXY`). Default none. IMDS never uses it.
    pub https_proxy: Option<String>,
    /// Hosts that bypass the proxy (`NO_PROXY`): comma-separated suffixes or `*`. Default none.
    pub no_proxy: Option<String>,
    /// Hosts whose connections go to a fixed address instead of DNS. Default empty.
    pub connect_to: Vec<ConnectTo>,
    /// Limit on opening a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Limit on a whole call, connect to last body byte. Default 30 s.
    pub call_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            extra_ca_file: None,
            https_proxy: None,
            no_proxy: None,
            connect_to: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
        }
    }
}

impl HttpConfig {
    /// Defaults plus `SSL_CERT_FILE`, `HTTPS_PROXY`/`https_proxy`, `NO_PROXY`/`no_proxy` and
    /// `ACRPULL_CONNECT_TO` (comma-separated `host=ip:port`, host may be `*.suffix`).
    pub fn from_env() -> Result<HttpConfig, HttpSetupError> {
        let var = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| std::env::var(n).ok())
                .find(|v| !v.trim().is_empty())
        };
        let connect_to = match var(&["ACRPULL_CONNECT_TO"]) {
            Some(list) => ConnectTo::parse_list(&list)?,
            None => Vec::new(),
        };
        Ok(HttpConfig {
            extra_ca_file: var(&["SSL_CERT_FILE"]).map(PathBuf::from),
            https_proxy: var(&["HTTPS_PROXY", "https_proxy"]),
            no_proxy: var(&["NO_PROXY", "no_proxy"]),
            connect_to,
            ..HttpConfig::default()
        })
    }
}

/// Why the HTTP clients could not be built at start-up.
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpSetupError {
    /// The extra CA file could not be read.
    CaFileUnreadable(PathBuf, std::io::Error),
    /// The extra CA file is not PEM, or holds no usable certificate.
    CaFileInvalid(PathBuf),
    /// The proxy URL could not be parsed.
    InvalidProxy,
    /// A connect-to rule is not `host=ip:port`.
    InvalidConnectTo,
    /// rustls refused the TLS configuration.
    Tls(rustls::Error),
}

impl fmt::Display for HttpSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpSetupError::CaFileUnreadable(p, e) => {
                write!(f, "cannot read CA file {}: {e}", p.display())
            }
            HttpSetupError::CaFileInvalid(p) => {
                write!(f, "CA file {} holds no valid PEM certificate", p.display())
            }
            HttpSetupError::InvalidProxy => f.write_str("invalid https proxy url"),
            HttpSetupError::InvalidConnectTo => {
                f.write_str("invalid connect-to rule, expected host=ip:port")
            }
            HttpSetupError::Tls(e) => write!(f, "invalid tls configuration: {e}"),
        }
    }
}

impl std::error::Error for HttpSetupError {}

/// A response we accept for parsing: any non-redirect status, body read up to 1 MiB.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body as text. May hold tokens: never log it.
    pub body: String,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after: Option<Duration>,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("body", &"[redacted]")
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// The two kinds of call the Azure clients make; a trait so tests can answer without a network.
pub trait HttpSend: Send + Sync {
    /// `GET` on IMDS: plain HTTP allowed, no proxy, `Metadata: true`.
    fn imds_get(&self, url: &str) -> Result<HttpResponse, HttpError>;
    /// Form `POST` to Entra or a registry: HTTPS only.
    fn azure_post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<HttpResponse, HttpError>;
}

/// The real agents, built once at start-up.
pub struct HttpClients {
    imds: Agent,
    azure_direct: Agent,
    azure_proxied: Option<Agent>,
    no_proxy: NoProxy,
}

impl fmt::Debug for HttpClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy URL may carry credentials, so only its presence is shown.
        f.debug_struct("HttpClients")
            .field("proxied", &self.azure_proxied.is_some())
            .field("no_proxy", &self.no_proxy)
            .finish_non_exhaustive()
    }
}

impl HttpClients {
    /// Builds the agents; reads the extra CA file now so a bad file fails start-up.
    pub fn new(config: &HttpConfig) -> Result<HttpClients, HttpSetupError> {
        let resolver = ConnectToResolver {
            rules: config.connect_to.clone(),
            fallback: Arc::new(CachingResolver::default()),
        };
        let base = |proxy: Option<Proxy>| {
            Config::builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(config.connect_timeout))
                .timeout_global(Some(config.call_timeout))
                .user_agent(concat!("acrpull/", env!("CARGO_PKG_VERSION")))
                .proxy(proxy)
                .input_buffer_size(crate::net::buffers::INPUT)
                .output_buffer_size(crate::net::buffers::OUTPUT)
                .max_response_header_size(crate::net::buffers::MAX_RESPONSE_HEADER)
        };

        let imds = Agent::with_parts(
            base(None).build(),
            ().chain(TcpConnector::default()),
            resolver.clone(),
        );

        let tls = Arc::new(tls_config(config.extra_ca_file.as_ref())?);
        let azure_agent = |proxy: Option<Proxy>| {
            let connector =
                ().chain(ConnectProxyConnector::default())
                    .chain(TcpConnector::default())
                    .chain(TlsConnector {
                        config: tls.clone(),
                    });
            Agent::with_parts(
                base(proxy).https_only(true).build(),
                connector,
                resolver.clone(),
            )
        };
        let azure_proxied = match &config.https_proxy {
            Some(url) => {
                let url = if url.contains("://") {
                    url.clone()
                } else {
                    format!("http://{url}")
                };
                let proxy = Proxy::new(&url).map_err(|_| HttpSetupError::InvalidProxy)?;
                Some(azure_agent(Some(proxy)))
            }
            None => None,
        };
        Ok(HttpClients {
            imds,
            azure_direct: azure_agent(None),
            azure_proxied,
            no_proxy: NoProxy::parse(config.no_proxy.as_deref().unwrap_or("")),
        })
    }

    fn azure_agent_for(&self, host: &str) -> &Agent {
        match &self.azure_proxied {
            Some(proxied) if !self.no_proxy.matches(host) => proxied,
            _ => &self.azure_direct,
        }
    }
}

impl HttpSend for HttpClients {
    fn imds_get(&self, url: &str) -> Result<HttpResponse, HttpError> {
        let response = self.imds.get(url).header("Metadata", "true").call()?;
        read_response(response)
    }

    fn azure_post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<HttpResponse, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::InvalidUrl)?;
        if uri.scheme_str() != Some("https") {
            return Err(HttpError::InvalidUrl);
        }
        let host = uri.host().ok_or(HttpError::InvalidUrl)?;
        let response = self
            .azure_agent_for(host)
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .send(percent::encode_pairs(form.iter().copied()))?;
        read_response(response)
    }
}

fn read_response(
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<HttpResponse, HttpError> {
    let status = response.status().as_u16();
    if (300..400).contains(&status) {
        return Err(HttpError::Redirect { status });
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()?;
    Ok(HttpResponse {
        status,
        body,
        retry_after,
    })
}

/// The built-in webpki roots plus every certificate of the extra PEM file.
fn tls_config(extra_ca_file: Option<&PathBuf>) -> Result<ClientConfig, HttpSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        let bytes =
            std::fs::read(path).map_err(|e| HttpSetupError::CaFileUnreadable(path.clone(), e))?;
        let blocks =
            pem::parse_many(&bytes).map_err(|_| HttpSetupError::CaFileInvalid(path.clone()))?;
        let certs = blocks
            .iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| CertificateDer::from(b.contents().to_vec()));
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(HttpSetupError::CaFileInvalid(path.clone()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpSetupError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Wraps the TCP (or proxy tunnel) transport in rustls with our own root store, because ureq's
/// `RootCerts` cannot say "webpki roots plus these".
#[derive(Debug)]
struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().ok_or(ureq::Error::Tls("missing host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("invalid dns name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A TLS session over a ureq transport.
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// A host pattern (exact, or `*.suffix`) whose connections go to a fixed address; the TLS name
/// and `Host` header keep the original host. Used by tests and private networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    /// `host` or `*.suffix`, lowercase.
    pub pattern: String,
    /// Where to connect instead.
    pub addr: SocketAddr,
}

impl ConnectTo {
    /// Parses `host=ip:port`.
    pub fn parse(rule: &str) -> Result<ConnectTo, HttpSetupError> {
        let (pattern, addr) = rule
            .trim()
            .split_once('=')
            .ok_or(HttpSetupError::InvalidConnectTo)?;
        let addr = addr
            .trim()
            .parse()
            .map_err(|_| HttpSetupError::InvalidConnectTo)?;
        let pattern = pattern.trim().to_ascii_lowercase();
        if pattern.is_empty() || pattern == "*." {
            return Err(HttpSetupError::InvalidConnectTo);
        }
        Ok(ConnectTo { pattern, addr })
    }

    /// Parses a comma-separated list of rules, ignoring empty items.
    pub fn parse_list(list: &str) -> Result<Vec<ConnectTo>, HttpSetupError> {
        list.split(',')
            .filter(|r| !r.trim().is_empty())
            .map(ConnectTo::parse)
            .collect()
    }

    /// Whether `host` is covered by this rule.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.pattern.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.pattern,
        }
    }
}

/// Resolves hosts named by a [`ConnectTo`] rule to its address, everything else through DNS.
#[derive(Debug, Clone)]
struct ConnectToResolver {
    rules: Vec<ConnectTo>,
    /// Everything no rule names; shared by the agents so a host is looked up once for all.
    fallback: Arc<CachingResolver>,
}

impl Resolver for ConnectToResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(host) = uri.host() {
            if let Some(rule) = self.rules.iter().find(|r| r.matches(host)) {
                let mut addrs = self.empty();
                addrs.push(rule.addr);
                return Ok(addrs);
            }
        }
        self.fallback.resolve(uri, config, timeout)
    }
}

/// `NO_PROXY`: `*` for all, else host suffixes (a leading `.` is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NoProxy {
    all: bool,
    suffixes: Vec<String>,
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                out.all = true;
            } else {
                // Ports in NO_PROXY entries are ignored: the decision is per host.
                let host = item.rsplit_once(':').map_or(item, |(h, p)| {
                    if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') {
                        h
                    } else {
                        item
                    }
                });
                let host = host.trim_start_matches("*.").trim_start_matches('.');
                out.suffixes.push(host.to_ascii_lowercase());
            }
        }
        out
    }

    fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.suffixes
            .iter()
            .any(|s| host == *s || host.ends_with(&format!(".{s}")))
    }
}

/// A scripted [`HttpSend`] for the clients' tests: answers from a list, records what was sent.
#[cfg(test)]
pub(crate) mod fake {
    use super::{HttpError, HttpResponse, HttpSend};
    use std::sync::Mutex;

    /// One recorded request: URL and form fields.
    pub(crate) type Sent = (String, Vec<(String, String)>);

    #[derive(Default)]
    pub(crate) struct FakeHttp {
        pub(crate) answers: Mutex<Vec<Result<HttpResponse, HttpError>>>,
        pub(crate) sent: Mutex<Vec<Sent>>,
    }

    impl FakeHttp {
        pub(crate) fn push(&self, answer: HttpResponse) {
            self.answers.lock().unwrap().push(Ok(answer));
        }

        pub(crate) fn form(&self, index: usize) -> Vec<(String, String)> {
            self.sent.lock().unwrap()[index].1.clone()
        }
    }

    impl HttpSend for FakeHttp {
        fn imds_get(&self, url: &str) -> Result<HttpResponse, HttpError> {
            self.sent.lock().unwrap().push((url.to_owned(), Vec::new()));
            self.answers.lock().unwrap().remove(0)
        }

        fn azure_post_form(
            &self,
            url: &str,
            form: &[(&str, &str)],
        ) -> Result<HttpResponse, HttpError> {
            let form = form.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            self.sent
                .lock()
                .unwrap()
                .push((url.to_owned(), form.collect()));
            self.answers.lock().unwrap().remove(0)
        }
    }

    pub(crate) fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            body: body.to_owned(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    #[test]
    fn connect_to_matches_exact_hosts_and_wildcard_suffixes() {
        let exact = ConnectTo::parse("myregistry.azurecr.io=127.0.0.1:8443").unwrap();
        assert!(exact.matches("MyRegistry.azurecr.io"));
        assert!(!exact.matches("other.azurecr.io"));
        let wild = ConnectTo::parse("*.azurecr.io=127.0.0.1:8443").unwrap();
        assert!(wild.matches("a.azurecr.io"));
        assert!(!wild.matches("azurecr.io"));
        assert!(!wild.matches("a.azurecr.io.evil.example"));
        assert!(ConnectTo::parse("nohost").is_err());
        assert!(ConnectTo::parse("host=notanaddr").is_err());
    }

    #[test]
    fn no_proxy_matches_suffixes_and_star() {
        let np = NoProxy::parse(" .internal, example.com:443 ,*.corp");
        assert!(np.matches("a.internal"));
        assert!(np.matches("example.com"));
        assert!(np.matches("x.example.com"));
        assert!(np.matches("b.corp"));
        assert!(!np.matches("login.microsoftonline.com"));
        assert!(!np.matches("notexample.com"));
        assert!(NoProxy::parse("*").matches("anything"));
    }

    #[test]
    fn a_bad_ca_file_is_a_startup_error() {
        let dir = std::env::temp_dir().join(format!("acrpull-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.pem");
        std::fs::write(&path, "not a pem").unwrap();
        let config = HttpConfig {
            extra_ca_file: Some(path.clone()),
            ..HttpConfig::default()
        };
        assert!(matches!(
            HttpClients::new(&config),
            Err(HttpSetupError::CaFileInvalid(_))
        ));
        let missing = HttpConfig {
            extra_ca_file: Some(dir.join("missing.pem")),
            ..HttpConfig::default()
        };
        assert!(matches!(
            HttpClients::new(&missing),
            Err(HttpSetupError::CaFileUnreadable(..))
        ));
    }

    #[test]
    fn azure_posts_refuse_plain_http() {
        let clients = HttpClients::new(&HttpConfig::default()).unwrap();
        let err = clients
            .azure_post_form("http://127.0.0.1:1/oauth2/exchange", &[])
            .unwrap_err();
        assert!(matches!(err, HttpError::InvalidUrl));
    }

    /// Serves one canned response and returns the request head it saw.
    fn serve_once(response: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            stream.write_all(response.as_bytes()).unwrap();
            head
        });
        (addr, handle)
    }

    #[test]
    fn imds_requests_carry_metadata_and_reach_connect_to_addresses() {
        let (addr, server) =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        let config = HttpConfig {
            connect_to: vec![ConnectTo {
                pattern: "imds.test".into(),
                addr,
            }],
            ..HttpConfig::default()
        };
        let clients = HttpClients::new(&config).unwrap();
        let response = clients.imds_get("http://imds.test/metadata").unwrap();
        assert_eq!(response.status, 200);
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.contains("metadata: true"), "{head}");
        assert!(head.contains("host: imds.test"), "{head}");
        assert!(!head.contains("x-forwarded-for"), "{head}");
    }

    /// A one-shot HTTPS server with the unit-test CA's certificate for `myregistry.azurecr.io`;
    /// returns the request head and body it received, or the handshake error.
    fn serve_tls_once(
        body: &'static str,
    ) -> (SocketAddr, std::thread::JoinHandle<Result<String, String>>) {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        let certs = pem::parse_many(include_str!("testdata/server.pem"))
            .unwrap()
            .into_iter()
            .map(|p| CertificateDer::from(p.contents().to_vec()))
            .collect();
        let key = pem::parse(include_str!("testdata/server.key")).unwrap();
        let key = PrivatePkcs8KeyDer::from(key.contents().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key.into())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(server)).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            let mut reader = BufReader::new(&mut tls);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) => return Err("closed".to_owned()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut request_body = vec![0; length];
            reader.read_exact(&mut request_body).unwrap();
            head.push_str(&String::from_utf8(request_body).unwrap());
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(reply.as_bytes()).unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            Ok(head)
        });
        (addr, handle)
    }

    fn ca_file() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("acrpull-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, include_str!("testdata/ca.pem")).unwrap();
        path
    }

    #[test]
    fn https_posts_trust_the_extra_ca_and_keep_the_original_host() {
        let (addr, server) = serve_tls_once(r#"{"refresh_token":"rt"}"#);
        let config = HttpConfig {
            extra_ca_file: Some(ca_file()),
            connect_to: vec![ConnectTo::parse(&format!("*.azurecr.io={addr}")).unwrap()],
            ..HttpConfig::default()
        };
        let clients = HttpClients::new(&config).unwrap();
        let response = clients
            .azure_post_form(
                "https://myregistry.azurecr.io/oauth2/exchange?api-version=2021-07-01",
                &[
                    ("grant_type", "access_token"),
                    ("service", "myregistry.azurecr.io"),
                ],
            )
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, r#"{"refresh_token":"rt"}"#);
        let head = server.join().unwrap().unwrap();
        assert!(
            head.starts_with("POST /oauth2/exchange?api-version=2021-07-01 HTTP/1.1"),
            "{head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("host: myregistry.azurecr.io"), "{head}");
        assert!(
            lower.contains("content-type: application/x-www-form-urlencoded"),
            "{head}"
        );
        assert!(
            head.ends_with("grant_type=access_token&service=myregistry.azurecr.io"),
            "{head}"
        );
    }

    #[test]
    fn https_without_the_extra_ca_fails_verification() {
        let (addr, server) = serve_tls_once("{}");
        let config = HttpConfig {
            connect_to: vec![ConnectTo::parse(&format!("myregistry.azurecr.io={addr}")).unwrap()],
            ..HttpConfig::default()
        };
        let clients = HttpClients::new(&config).unwrap();
        let err = clients
            .azure_post_form("https://myregistry.azurecr.io/oauth2/exchange", &[])
            .unwrap_err();
        assert!(matches!(err, HttpError::Transport(_)), "{err}");
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn no_proxy_hosts_bypass_the_proxy() {
        let config = HttpConfig {
            https_proxy: Some("proxy.internal:3128".into()),
            no_proxy: Some("azurecr.io".into()),
            ..HttpConfig::default()
        };
        let clients = HttpClients::new(&config).unwrap();
        assert!(std::ptr::eq(
            clients.azure_agent_for("r.azurecr.io"),
            &clients.azure_direct
        ));
        let proxied = clients.azure_proxied.as_ref().unwrap();
        assert!(std::ptr::eq(
            clients.azure_agent_for("login.microsoftonline.com"),
            proxied
        ));
    }

    #[test]
    fn redirects_are_errors_and_never_followed() {
        let (addr, server) = serve_once(
            "HTTP/1.1 302 Found\r\nLocation: http://elsewhere.test/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let clients = HttpClients::new(&HttpConfig::default()).unwrap();
        let err = clients
            .imds_get(&format!("http://{addr}/metadata"))
            .unwrap_err();
        assert!(matches!(err, HttpError::Redirect { status: 302 }), "{err}");
        server.join().unwrap();
    }
}
