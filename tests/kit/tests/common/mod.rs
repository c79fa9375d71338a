//! Shared helpers for the kit's own tests: a minimal Kubernetes HTTP client (ureq) and the
//! target it talks to — the emulator, or a real cluster named by `ACRPULL_CONFORMANCE_KUBECONFIG`.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acrpull_testkit::kube::ApiServer;
use base64::Engine as _;
use serde_json::{json, Value};

/// The env var naming a real cluster's kubeconfig for the conformance suite.
pub const KUBECONFIG_ENV: &str = "ACRPULL_CONFORMANCE_KUBECONFIG";

/// What the tests talk to.
pub struct Target {
    /// The emulator, when no real cluster is configured.
    pub emulator: Option<ApiServer>,
    /// An admin client.
    pub client: Client,
    /// A unique suffix for namespaces this test creates.
    pub suffix: String,
}

fn suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{:x}{}",
        n % 0xfffff,
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl Target {
    /// The emulator, or the real cluster when `ACRPULL_CONFORMANCE_KUBECONFIG` is set.
    pub fn new() -> Target {
        if let Ok(path) = std::env::var(KUBECONFIG_ENV) {
            let text =
                std::fs::read_to_string(&path).expect("the conformance kubeconfig is readable");
            return Target {
                emulator: None,
                client: Client::from_kubeconfig(&text),
                suffix: suffix(),
            };
        }
        static NOTE: std::sync::Once = std::sync::Once::new();
        NOTE.call_once(|| eprintln!("note: running against the emulator ({KUBECONFIG_ENV} unset)"));
        let api = ApiServer::start();
        let text = std::fs::read_to_string(api.kubeconfig_path())
            .expect("the emulator wrote its kubeconfig");
        Target {
            client: Client::from_kubeconfig(&text),
            emulator: Some(api),
            suffix: suffix(),
        }
    }

    /// The emulator only; real clusters skip with a message (returns `None`).
    pub fn emulator_only(&self, why: &str) -> Option<&ApiServer> {
        if self.emulator.is_none() {
            eprintln!("skipped against a real cluster: {why}");
        }
        self.emulator.as_ref()
    }

    /// Creates a namespace with a unique name and returns it.
    pub fn namespace(&self, base: &str) -> String {
        let name = format!("{base}-{}", self.suffix);
        let (code, body) = self
            .client
            .post("/api/v1/namespaces", &json!({"metadata": {"name": name}}));
        assert_eq!(code, 201, "{body}");
        name
    }

    /// Whether the AcrPullBinding v1beta2 CRD is served.
    pub fn has_binding_crd(&self) -> bool {
        let (code, _) = self
            .client
            .get("/apis/acrpull.microsoft.com/v1beta2/acrpullbindings?limit=1");
        if code != 200 {
            eprintln!("skipped: the acrpull.microsoft.com/v1beta2 CRD is not installed");
        }
        code == 200
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.emulator.is_none() {
            // Best effort clean-up of namespaces this test created on a real cluster.
            let (_, list) = self.client.get("/api/v1/namespaces");
            for ns in list["items"].as_array().cloned().unwrap_or_default() {
                let name = ns["metadata"]["name"].as_str().unwrap_or("");
                if name.ends_with(&format!("-{}", self.suffix)) {
                    self.client.delete(&format!("/api/v1/namespaces/{name}"));
                }
            }
        }
    }
}

/// A bearer-token HTTP client for one API server.
pub struct Client {
    agent: ureq::Agent,
    /// Base URL, no trailing slash.
    pub base: String,
    /// The bearer token sent (may be empty).
    pub token: String,
}

/// An open watch stream.
pub struct Watch {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl Watch {
    /// The next event, or `None` when the stream ended (cleanly or not).
    pub fn next_event(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&line).ok(),
        }
    }

    /// Reads events until one satisfies `f`; panics if the stream ends first.
    pub fn until(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            let e = self
                .next_event()
                .expect("the watch ended before the expected event");
            if f(&e) {
                return e;
            }
        }
    }
}

impl Client {
    /// A client from kubeconfig YAML: current context's server, CA data and token.
    pub fn from_kubeconfig(text: &str) -> Client {
        let kc: Value = serde_yaml::from_str::<serde_yaml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .expect("the kubeconfig is YAML");
        let ctx_name = kc["current-context"].as_str().unwrap_or("");
        let find = |list: &str, name: &str| {
            kc[list]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["name"] == name).cloned())
                .unwrap_or(Value::Null)
        };
        let ctx = find("contexts", ctx_name);
        let cluster = find("clusters", ctx["context"]["cluster"].as_str().unwrap_or(""));
        let user = find("users", ctx["context"]["user"].as_str().unwrap_or(""));
        let server = cluster["cluster"]["server"]
            .as_str()
            .expect("kubeconfig has a server");
        let ca_pem = match cluster["cluster"]["certificate-authority-data"].as_str() {
            Some(d) => base64::engine::general_purpose::STANDARD
                .decode(d)
                .expect("certificate-authority-data is base64"),
            None => std::fs::read(
                cluster["cluster"]["certificate-authority"]
                    .as_str()
                    .unwrap_or(""),
            )
            .expect("the kubeconfig names a readable CA"),
        };
        let token = user["user"]["token"].as_str().unwrap_or("").to_string();
        Client::new(server, &ca_pem, &token)
    }

    /// A client trusting this CA (PEM) and sending this token.
    pub fn new(base: &str, ca_pem: &[u8], token: &str) -> Client {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca_pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(certs)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .new_agent();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            agent: self.agent.clone(),
            base: self.base.clone(),
            token: token.to_string(),
        }
    }

    fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
        let mut resp = r.expect("the server answered");
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The `Retry-After` header of a GET, with its code.
    pub fn get_retry_after(&self, path: &str) -> (u16, Option<String>) {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .call()
            .expect("the server answered");
        let ra = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (resp.status().as_u16(), ra)
    }

    /// GET.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut b = self.agent.get(format!("{}{path}", self.base));
        if !self.token.is_empty() {
            b = b.header("authorization", format!("Bearer {}", self.token));
        }
        Client::finish(b.call())
    }

    fn with_body(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let b = match method {
            "POST" => self.agent.post(url),
            "PUT" => self.agent.put(url),
            "PATCH" => self.agent.patch(url),
            _ => self.agent.delete(url).force_send_body(),
        };
        let b = b
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type);
        Client::finish(b.send(body.to_string().as_bytes()))
    }

    /// POST JSON.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.with_body("POST", path, "application/json", body)
    }

    /// PUT JSON.
    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.with_body("PUT", path, "application/json", body)
    }

    /// PATCH with a content type.
    pub fn patch(&self, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        self.with_body("PATCH", path, content_type, body)
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let b = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        Client::finish(b.call())
    }

    /// DELETE with DeleteOptions.
    pub fn delete_with(&self, path: &str, options: &Value) -> (u16, Value) {
        self.with_body("DELETE", path, "application/json", options)
    }

    /// Opens a watch (`path` includes `watch=1` and its parameters); returns the code and, on
    /// 200, the stream.
    pub fn watch(&self, path: &str) -> (u16, Option<Watch>) {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .call()
            .expect("the server answered");
        let code = resp.status().as_u16();
        if code != 200 {
            return (code, None);
        }
        let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        (
            code,
            Some(Watch {
                reader: BufReader::new(reader),
            }),
        )
    }
}

/// Polls `f` until it returns `Some`, or panics after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The object's resourceVersion.
pub fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
