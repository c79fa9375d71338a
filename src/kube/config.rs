//! Where the API server is and how to reach it: in-cluster files, or a kubeconfig (`--kubeconfig`, `KUBECONFIG`).

use super::auth::{self, Auth, BearerToken, ExecConfig};
use super::error::ConfigError;
use super::yaml;
use base64::Engine as _;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// Where a pod's ServiceAccount credentials are mounted; overridable for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InClusterPaths {
    /// The projected, rotating token. Defaults to `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub token: PathBuf,
    /// The cluster CA bundle. Defaults to `…/serviceaccount/ca.crt`.
    pub ca: PathBuf,
    /// The pod's namespace. Defaults to `…/serviceaccount/namespace`.
    pub namespace: PathBuf,
}

impl Default for InClusterPaths {
    fn default() -> Self {
        let dir = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
        InClusterPaths {
            token: dir.join("token"),
            ca: dir.join("ca.crt"),
            namespace: dir.join("namespace"),
        }
    }
}

/// TLS material for the API server connection.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// PEM CA bundle to trust; `None` trusts the webpki roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM client private key (redacted in `Debug`).
    pub client_key_pem: Option<Vec<u8>>,
    /// Skip server certificate verification (`insecure-skip-tls-verify: true`).
    pub insecure_skip_verify: bool,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("client_cert_pem", &self.client_cert_pem.is_some())
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// Everything needed to build a [`super::Client`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL, `https://host:port` (no trailing slash).
    pub server: String,
    /// Trust and client-certificate settings.
    pub tls: TlsSettings,
    /// Bearer-token source.
    pub auth: Auth,
    /// The default namespace: the pod's namespace in-cluster, or the context's namespace.
    pub namespace: Option<String>,
    /// Client-side request rate; ≤ 0 means unlimited. Defaults to 50.
    pub qps: f64,
    /// Client-side burst. Defaults to 100.
    pub burst: u32,
    /// An explicit proxy URL (`proxy-url` in a kubeconfig); environment proxies are never used. Defaults to none.
    pub proxy: Option<String>,
    /// TCP connect timeout. Defaults to 10 s.
    pub connect_timeout: Duration,
    /// Whole-request timeout for everything but watches. Defaults to 30 s.
    pub request_timeout: Duration,
}

impl Config {
    /// A config for `server` with no credentials and every other setting at its default.
    pub fn new(server: impl Into<String>) -> Self {
        Config {
            server: server.into().trim_end_matches('/').to_string(),
            tls: TlsSettings::default(),
            auth: Auth::None,
            namespace: None,
            qps: 50.0,
            burst: 100,
            proxy: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Resolves the config the way the binary does: `--kubeconfig`, else `KUBECONFIG`, else in-cluster.
    pub fn load(kubeconfig_flag: Option<&Path>) -> Result<Config, ConfigError> {
        Self::resolve(
            kubeconfig_flag,
            std::env::var("KUBECONFIG").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
            &InClusterPaths::default(),
        )
    }

    /// The pure part of [`Config::load`]; `KUBECONFIG` may be a `:`-list, of which the first entry is used.
    pub fn resolve(
        kubeconfig_flag: Option<&Path>,
        kubeconfig_env: Option<&str>,
        service_host: Option<&str>,
        service_port: Option<&str>,
        paths: &InClusterPaths,
    ) -> Result<Config, ConfigError> {
        if let Some(path) = kubeconfig_flag {
            return Self::from_kubeconfig(path, None);
        }
        let from_env =
            kubeconfig_env.and_then(|list| list.split(':').find(|p| !p.trim().is_empty()));
        if let Some(path) = from_env {
            return Self::from_kubeconfig(Path::new(path.trim()), None);
        }
        match (service_host, service_port) {
            (Some(h), Some(p)) if !h.is_empty() && !p.is_empty() => Self::in_cluster(h, p, paths),
            _ => Err(ConfigError::NoConfig),
        }
    }

    /// The in-cluster config: service host and port, rotating token file, CA and namespace files.
    pub fn in_cluster(
        host: &str,
        port: &str,
        paths: &InClusterPaths,
    ) -> Result<Config, ConfigError> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut config = Config::new(format!("https://{host}:{port}"));
        config.tls.ca_pem = Some(read(&paths.ca)?);
        // Fail at start-up, not at the first request, when the token is not mounted.
        auth::read_token_file(&paths.token)?;
        config.auth = Auth::TokenFile(paths.token.clone());
        config.namespace = std::fs::read_to_string(&paths.namespace)
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        Ok(config)
    }

    /// Reads a kubeconfig file, using `context` or else its `current-context`.
    pub fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let doc = yaml::parse(&text).map_err(|source| ConfigError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_kubeconfig_value(&doc, dir, context)
    }

    /// Builds the config from a parsed kubeconfig; relative paths are resolved against `dir`.
    pub fn from_kubeconfig_value(
        doc: &Value,
        dir: &Path,
        context: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let ctx_name = match context {
            Some(c) => c,
            None => str_field(doc, "current-context")
                .filter(|c| !c.is_empty())
                .ok_or(ConfigError::Missing {
                    field: "current-context",
                })?,
        };
        let ctx = named(doc, "contexts", "context", ctx_name)?;
        let cluster_name = str_field(ctx, "cluster").ok_or(ConfigError::Missing {
            field: "context.cluster",
        })?;
        let cluster = named(doc, "clusters", "cluster", cluster_name)?;
        let server = str_field(cluster, "server").ok_or(ConfigError::Missing {
            field: "cluster.server",
        })?;
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(ConfigError::BadServer);
        }
        let mut config = Config::new(server);
        config.namespace = str_field(ctx, "namespace")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        config.tls.ca_pem = material(
            cluster,
            dir,
            "certificate-authority-data",
            "certificate-authority",
        )?;
        config.tls.insecure_skip_verify = bool_field(cluster, "insecure-skip-tls-verify");
        if str_field(cluster, "tls-server-name").is_some() {
            log::warn!(
                "kubeconfig tls-server-name is not supported; verifying the server address instead"
            );
        }
        config.proxy = str_field(cluster, "proxy-url").map(str::to_string);
        if let Some(user_name) = str_field(ctx, "user").filter(|u| !u.is_empty()) {
            let user = named(doc, "users", "user", user_name)?;
            apply_user(&mut config, user, dir)?;
        }
        Ok(config)
    }

    /// The ureq TLS settings: the CA bundle, the client certificate, and verification.
    pub fn tls_config(&self) -> Result<TlsConfig, ConfigError> {
        let mut b = TlsConfig::builder().provider(TlsProvider::Rustls);
        if let Some(ca) = &self.tls.ca_pem {
            let certs = parse_certs(ca, "certificate-authority")?;
            b = b.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        match (&self.tls.client_cert_pem, &self.tls.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain = parse_certs(cert, "client-certificate")?;
                let key = parse_key(key)?;
                b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
            }
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    field: "user.client-key",
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    field: "user.client-certificate",
                })
            }
            (None, None) => {}
        }
        if self.tls.insecure_skip_verify {
            log::warn!(
                "insecure-skip-tls-verify is set: the API server's certificate is not verified"
            );
            b = b.disable_verification(true);
        }
        Ok(b.build())
    }
}

fn apply_user(config: &mut Config, user: &Value, dir: &Path) -> Result<(), ConfigError> {
    for (key, feature) in [
        ("auth-provider", "auth-provider"),
        ("username", "username/password"),
        ("password", "username/password"),
        ("as", "impersonation"),
        ("as-uid", "impersonation"),
        ("as-groups", "impersonation"),
    ] {
        if user.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ConfigError::Unsupported { feature });
        }
    }
    config.tls.client_cert_pem =
        material(user, dir, "client-certificate-data", "client-certificate")?;
    config.tls.client_key_pem = material(user, dir, "client-key-data", "client-key")?;
    config.auth = if let Some(t) = str_field(user, "token").filter(|t| !t.is_empty()) {
        Auth::Token(BearerToken::new(t))
    } else if let Some(f) = str_field(user, "tokenFile").filter(|f| !f.is_empty()) {
        Auth::TokenFile(relative_to(dir, f))
    } else if let Some(exec) = user.get("exec").filter(|e| !e.is_null()) {
        Auth::Exec(exec_config(exec, dir)?)
    } else {
        Auth::None
    };
    Ok(())
}

fn exec_config(exec: &Value, dir: &Path) -> Result<ExecConfig, ConfigError> {
    let command = str_field(exec, "command").ok_or(ConfigError::Missing {
        field: "user.exec.command",
    })?;
    let api_version = str_field(exec, "apiVersion").unwrap_or("");
    if !auth::API_VERSIONS.contains(&api_version) {
        return Err(ConfigError::Unsupported {
            feature: "exec apiVersion (want client.authentication.k8s.io/v1 or v1beta1)",
        });
    }
    let args = match exec.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            a.iter()
                .map(scalar_string)
                .collect::<Option<_>>()
                .ok_or(ConfigError::Missing {
                    field: "user.exec.args",
                })?
        }
        Some(_) => {
            return Err(ConfigError::Missing {
                field: "user.exec.args",
            })
        }
    };
    let env = match exec.get("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| {
                Some((
                    str_field(e, "name")?.to_string(),
                    e.get("value").and_then(scalar_string)?,
                ))
            })
            .collect::<Option<_>>()
            .ok_or(ConfigError::Missing {
                field: "user.exec.env",
            })?,
        Some(_) => {
            return Err(ConfigError::Missing {
                field: "user.exec.env",
            })
        }
    };
    Ok(ExecConfig {
        command: command.to_string(),
        args,
        env,
        api_version: api_version.to_string(),
        dir: dir.to_path_buf(),
    })
}

/// Finds `doc[list][i][inner]` whose `name` is `name`.
fn named<'a>(
    doc: &'a Value,
    list: &'static str,
    inner: &'static str,
    name: &str,
) -> Result<&'a Value, ConfigError> {
    doc.get(list)
        .and_then(Value::as_array)
        .and_then(|items| items.iter().find(|i| str_field(i, "name") == Some(name)))
        .and_then(|i| i.get(inner))
        .filter(|v| v.is_object())
        .ok_or_else(|| ConfigError::NotFound {
            kind: inner,
            name: name.to_string(),
        })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Scalars in YAML may resolve to numbers or bools; args and env values are strings all the same.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bool_field(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Reads `<data_key>` (base64) or else the file named by `<file_key>`.
fn material(
    v: &Value,
    dir: &Path,
    data_key: &'static str,
    file_key: &'static str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    if let Some(data) = str_field(v, data_key).filter(|d| !d.is_empty()) {
        let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|_| ConfigError::Base64 { field: data_key });
    }
    match str_field(v, file_key).filter(|f| !f.is_empty()) {
        Some(f) => read(&relative_to(dir, f)).map(Some),
        None => Ok(None),
    }
}

fn relative_to(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_certs(
    pem_bytes: &[u8],
    what: &'static str,
) -> Result<Vec<Certificate<'static>>, ConfigError> {
    let items = pem::parse_many(pem_bytes).map_err(|_| ConfigError::Pem { what })?;
    let certs: Vec<Certificate<'static>> = items
        .iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| Certificate::from_der(p.contents()).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(ConfigError::Pem { what });
    }
    Ok(certs)
}

fn parse_key(pem_bytes: &[u8]) -> Result<PrivateKey<'static>, ConfigError> {
    let bad = || ConfigError::Pem { what: "client-key" };
    let items = pem::parse_many(pem_bytes).map_err(|_| bad())?;
    // ureq does not export its key-kind enum, so hand it the one key block back in PEM form.
    let key = items
        .iter()
        .find(|p| {
            matches!(
                p.tag(),
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
            )
        })
        .ok_or_else(bad)?;
    PrivateKey::from_pem(pem::encode(key).as_bytes()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::auth::tests::temp_dir;

    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUBl0=\n-----END CERTIFICATE-----\n";

    fn write_kubeconfig(dir: &Path, user: &str) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c1\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority: certs/ca.pem\ncontexts:\n- name: dev\n  context:\n    cluster: c1\n    user: u1\n    namespace: team\nusers:\n- name: u1\n  user:\n{user}"
        );
        let path = dir.join("config");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("certs/ca.pem"), CA).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn relative_paths_resolve_against_the_kubeconfig_directory() {
        let dir = temp_dir("relative");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("certs/ca.pem"), CA).unwrap();
        std::fs::write(dir.join("tok"), "t0k\n").unwrap();
        let path = write_kubeconfig(&dir, "    tokenFile: tok\n");
        let c = Config::from_kubeconfig(&path, None).unwrap();
        assert_eq!(c.server, "https://10.0.0.1:6443");
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert_eq!(c.tls.ca_pem.as_deref(), Some(CA.as_bytes()));
        assert!(matches!(&c.auth, Auth::TokenFile(p) if *p == dir.join("tok")));
        assert!(c.tls_config().is_ok());
    }

    #[test]
    fn exec_plugin_settings_are_read_with_args_and_env() {
        let dir = temp_dir("exec-cfg");
        let user = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: kubelogin\n      args: [get-token, --server-id, 6dae]\n      env:\n      - name: AAD_LOGIN_METHOD\n        value: msi\n";
        let c = Config::from_kubeconfig(&write_kubeconfig(&dir, user), None).unwrap();
        let Auth::Exec(e) = &c.auth else {
            panic!("expected exec auth")
        };
        assert_eq!(e.command, "kubelogin");
        assert_eq!(e.args, vec!["get-token", "--server-id", "6dae"]);
        assert_eq!(
            e.env,
            vec![("AAD_LOGIN_METHOD".to_string(), "msi".to_string())]
        );
        assert!(!format!("{c:?}").contains("msi"));
    }

    #[test]
    fn unsupported_auth_is_named_in_the_error() {
        let dir = temp_dir("unsupported");
        let path = write_kubeconfig(&dir, "    auth-provider:\n      name: azure\n");
        let e = Config::from_kubeconfig(&path, None).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Unsupported {
                    feature: "auth-provider"
                }
            ),
            "{e}"
        );
        let path = write_kubeconfig(&dir, "    username: admin\n    password: hunter2\n");
        let e = Config::from_kubeconfig(&path, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kubeconfig uses unsupported username/password"
        );
    }

    #[test]
    fn missing_context_and_bad_base64_are_typed_errors() {
        let doc = yaml::parse("current-context: nope\ncontexts: []\n").unwrap();
        let e = Config::from_kubeconfig_value(&doc, Path::new("."), None).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::NotFound {
                kind: "context",
                ..
            }
        ));
        let doc = yaml::parse(
            "current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: '!!!'}}]\n",
        )
        .unwrap();
        let e = Config::from_kubeconfig_value(&doc, Path::new("."), None).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Base64 {
                field: "certificate-authority-data"
            }
        ));
    }

    #[test]
    fn in_cluster_brackets_ipv6_and_reads_namespace() {
        let dir = temp_dir("in-cluster");
        let paths = InClusterPaths {
            token: dir.join("token"),
            ca: dir.join("ca.crt"),
            namespace: dir.join("namespace"),
        };
        std::fs::write(&paths.token, "tok").unwrap();
        std::fs::write(&paths.ca, CA).unwrap();
        std::fs::write(&paths.namespace, "kube-system\n").unwrap();
        let c = Config::resolve(None, None, Some("fd00::1"), Some("443"), &paths).unwrap();
        assert_eq!(c.server, "https://[fd00::1]:443");
        assert_eq!(c.namespace.as_deref(), Some("kube-system"));
        assert!(matches!(c.auth, Auth::TokenFile(_)));
        let c = Config::in_cluster("10.96.0.1", "443", &paths).unwrap();
        assert_eq!(c.server, "https://10.96.0.1:443");
        assert!(matches!(
            Config::resolve(None, None, None, None, &paths),
            Err(ConfigError::NoConfig)
        ));
    }

    #[test]
    fn kubeconfig_env_list_uses_its_first_entry_before_in_cluster() {
        let dir = temp_dir("env-list");
        let path = write_kubeconfig(&dir, "    token: abc\n");
        let list = format!("{}:/nonexistent/other", path.display());
        let c = Config::resolve(
            None,
            Some(&list),
            Some("10.0.0.9"),
            Some("443"),
            &InClusterPaths::default(),
        )
        .unwrap();
        assert_eq!(c.server, "https://10.0.0.1:6443");
        assert!(matches!(&c.auth, Auth::Token(t) if t.expose() == "abc"));
        assert!(!format!("{c:?}").contains("abc"));
    }

    #[test]
    fn bad_pem_is_rejected_when_building_tls() {
        let mut c = Config::new("https://h");
        c.tls.ca_pem = Some(b"not pem".to_vec());
        assert!(matches!(
            c.tls_config(),
            Err(ConfigError::Pem {
                what: "certificate-authority"
            })
        ));
        c.tls.ca_pem = None;
        c.tls.client_cert_pem = Some(CA.as_bytes().to_vec());
        assert!(matches!(c.tls_config(), Err(ConfigError::Missing { .. })));
    }

    #[test]
    fn invalid_kubeconfig_yaml_reports_file_and_line() {
        let dir = temp_dir("bad-yaml");
        let path = dir.join("config");
        std::fs::write(
            &path,
            "current-context: a\nclusters:\n  - name: c\n   cluster: {}\n",
        )
        .unwrap();
        let e = Config::from_kubeconfig(&path, None).unwrap_err();
        let ConfigError::Yaml { source, .. } = &e else {
            panic!("expected a yaml error, got {e}")
        };
        assert_eq!(source.line, 4);
        assert!(e.to_string().contains("line 4"), "{e}");
    }

    #[test]
    fn tls_settings_debug_hides_the_client_key() {
        let tls = TlsSettings {
            client_key_pem: Some(b"-----BEGIN PRIVATE KEY-----SECRETKEY".to_vec()),
            ..TlsSettings::default()
        };
        let shown = format!("{tls:?}");
        assert!(
            !shown.contains("SECRETKEY") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    mod tls {
        //! A real TLS handshake against a loopback rustls server that requires a client certificate.
        use super::super::*;
        use crate::kube::auth::Auth;
        use crate::kube::client::Client;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;

        const CA_PEM: &str = include_str!("testdata/ca.crt");
        const SERVER_CERT: &str = include_str!("testdata/server.crt");
        const SERVER_KEY: &str = include_str!("testdata/server.key");
        const CLIENT_CERT: &str = include_str!("testdata/client.crt");
        const CLIENT_KEY: &str = include_str!("testdata/client.key");

        fn der(pem_text: &str) -> Vec<u8> {
            pem::parse(pem_text)
                .expect("test pem is valid")
                .into_contents()
        }

        /// Serves one HTTPS request answering `{"ok":true}` if the handshake (with client auth) succeeds.
        fn serve_tls() -> String {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(der(CA_PEM)))
                .expect("test ca is valid");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .expect("verifier");
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("protocols")
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![CertificateDer::from(der(SERVER_CERT))],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(SERVER_KEY))),
                )
                .expect("server cert");
            let config = Arc::new(config);
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            std::thread::spawn(move || {
                while let Ok((tcp, _)) = listener.accept() {
                    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut reader = BufReader::new(&mut tls);
                    let mut line = String::new();
                    let mut ok = true;
                    while ok {
                        line.clear();
                        ok = reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n";
                    }
                    let body = r#"{"ok":true}"#;
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.flush();
                }
            });
            format!("https://127.0.0.1:{port}")
        }

        fn config(server: &str) -> Config {
            let mut c = Config::new(server);
            c.tls.ca_pem = Some(CA_PEM.as_bytes().to_vec());
            c.tls.client_cert_pem = Some(CLIENT_CERT.as_bytes().to_vec());
            c.tls.client_key_pem = Some(CLIENT_KEY.as_bytes().to_vec());
            c.auth = Auth::Token(BearerToken::new("t"));
            c
        }

        #[test]
        fn kubeconfig_ca_and_client_certificate_complete_a_real_handshake() {
            let server = serve_tls();
            let client = Client::new(&config(&server)).unwrap();
            assert_eq!(client.get("/version").unwrap()["ok"], true);
        }

        #[test]
        fn an_untrusted_server_is_refused_unless_verification_is_disabled() {
            let server = serve_tls();
            let mut c = config(&server);
            c.tls.ca_pem = None;
            let e = Client::new(&c).unwrap().get("/version").unwrap_err();
            assert!(matches!(e, crate::kube::Error::Transport(_)), "{e}");
            c.tls.insecure_skip_verify = true;
            assert_eq!(
                Client::new(&c).unwrap().get("/version").unwrap()["ok"],
                true
            );
        }

        #[test]
        fn a_missing_client_certificate_fails_the_handshake() {
            let server = serve_tls();
            let mut c = config(&server);
            c.tls.client_cert_pem = None;
            c.tls.client_key_pem = None;
            assert!(Client::new(&c).unwrap().get("/version").is_err());
        }
    }
}
