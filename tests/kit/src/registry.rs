//! A real container registry (Debian's `docker-registry`, distribution v2.8) that trusts the fake
//! ACR's tokens, plus the tools to push a tiny image into it and pull it back with `skopeo`.
//!
//! How the pieces line up:
//! - The registry serves HTTPS on `127.0.0.1:<port>` with a leaf from the kit [`Ca`]; that address
//!   is its `service`, the fake ACR registry's `host` (so registry tokens carry it as `aud`) and the
//!   key of the `.dockerconfigjson` entry a client uses.
//! - Its token auth has `realm` = the fake ACR's `/oauth2/token`, `issuer` = `Azure Container
//!   Registry` (the fake's issuer) and `rootcertbundle` = a CA made here. That CA certifies the
//!   kit signing key, and the fake ACR is told to put the certificate in every token's `x5c`
//!   header, which is how distribution finds and trusts the key.
//! - Clients (skopeo) trust the kit CA through a cert dir holding `ca.crt`, for the registry and
//!   the realm alike: TLS verification stays on.
//!
//! For an end-to-end test, acrpull's binding names [`RealRegistry::host`] as its server and
//! acrpull runs with `ACRPULL_CONNECT_TO` = [`RealRegistry::connect_to_rule`] (its
//! `/oauth2/exchange` and `/oauth2/token` calls then reach the fake ACR, which finds the registry
//! by `Host`) and `SSL_CERT_FILE` = the kit CA; the Secret it writes is then a valid `--authfile`.
//! That rule covers every `127.0.0.1` URL acrpull calls, so point its IMDS at `localhost:<port>`
//! instead, and turn the emulator's CRD validation off for v1beta2 (its CEL rule refuses a server
//! with a port). `tests/e2e/registry.rs` does all of this.
//!
//! Limit: the realm is reached as `127.0.0.1:<fake ACR port>`, and the fake ACR resolves that to
//! the first registry whose host is `127.0.0.1`: use one real registry per fake ACR.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};

use crate::azure::{Acr, Audiences, Registry, ACR_AUDIENCE};
use crate::http::{Handler, Request};
use crate::jwt::Signer;
use crate::tls::Ca;

/// The registry program (Debian package `docker-registry`).
pub const REGISTRY_PROGRAM: &str = "docker-registry";
/// The client program (Debian package `skopeo`).
pub const SKOPEO_PROGRAM: &str = "skopeo";
/// The user name acrpull writes into pull Secrets (spec §2.5).
pub const NULL_GUID: &str = "00000000-0000-0000-0000-000000000000";
/// The issuer the fake ACR puts in registry tokens; the registry must expect exactly this.
const ACR_ISSUER: &str = "Azure Container Registry";
/// The kit signing key (the same bytes `jwt::Signer::kit()` uses), to certify its public half.
const KIT_KEY_PKCS8: &[u8] = include_bytes!("../testdata/sa-signing-key.pk8");
/// How long the registry may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often a port collision (another process took the port we picked) is retried.
const START_ATTEMPTS: usize = 3;

/// Why the real registry or skopeo could not be used.
#[derive(Debug)]
pub enum RegistryError {
    /// A program is not installed; tests skip on this.
    Missing(&'static str),
    /// Writing the registry's files or starting a process failed.
    Io(io::Error),
    /// A certificate could not be issued.
    Certificate(rcgen::Error),
    /// The registry exited before it answered (its log is in the registry's directory).
    Exited(ExitStatus),
    /// The registry did not answer on `/v2/` before the deadline.
    NotReady,
    /// A fake Azure call the helpers make failed with this status.
    Azure(u16),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Missing(p) => write!(f, "{p} is not installed"),
            RegistryError::Io(e) => write!(f, "registry i/o: {e}"),
            RegistryError::Certificate(e) => write!(f, "registry certificate: {e}"),
            RegistryError::Exited(s) => write!(f, "registry exited early: {s}"),
            RegistryError::NotReady => f.write_str("registry did not become ready in time"),
            RegistryError::Azure(s) => write!(f, "fake azure answered {s}"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Io(e) => Some(e),
            RegistryError::Certificate(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for RegistryError {
    fn from(e: io::Error) -> RegistryError {
        RegistryError::Io(e)
    }
}

impl From<rcgen::Error> for RegistryError {
    fn from(e: rcgen::Error) -> RegistryError {
        RegistryError::Certificate(e)
    }
}

/// `Err(Missing(..))` naming the first of `docker-registry` and `skopeo` that is not on `PATH`.
/// Tests call this first and skip (with a printed reason) on error.
pub fn tools_available() -> Result<(), RegistryError> {
    for program in [REGISTRY_PROGRAM, SKOPEO_PROGRAM] {
        if find_program(program).is_none() {
            return Err(RegistryError::Missing(program));
        }
    }
    Ok(())
}

/// The full path of `program` on `PATH`, if it is there and is a file.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A directory under the system temp dir, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory; `label` shows in its name.
    pub fn new(label: &str) -> io::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "acrpull-kit-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir must not turn a passing test into a panic.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A CA for registry-token signing keys and the certificate it issued for the kit signing key.
pub struct TokenTrust {
    root_pem: String,
    chain: Vec<Vec<u8>>,
}

impl TokenTrust {
    /// A fresh CA (ECDSA P-256) and a leaf certifying the kit's RSA signing key.
    pub fn new() -> Result<TokenTrust, RegistryError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "acrpull test kit token CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let kit_key = KeyPair::try_from(KIT_KEY_PKCS8)?;
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name
            .push(DnType::CommonName, "acrpull test kit token signer");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_cert = leaf.signed_by(&kit_key, &issuer)?;
        Ok(TokenTrust {
            root_pem: ca_cert.pem(),
            chain: vec![leaf_cert.der().to_vec()],
        })
    }

    /// The CA certificate, PEM (the registry's `rootcertbundle`).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The `x5c` chain, DER, leaf first (what [`Acr::set_token_certificate_chain`] takes).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
}

/// A running `docker-registry` on 127.0.0.1 using token auth against the fake ACR. Dropping it
/// kills the process and removes its directory (storage, config, certificates).
pub struct RealRegistry {
    child: Child,
    dir: TempDir,
    host: String,
}

impl fmt::Debug for RealRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealRegistry")
            .field("host", &self.host)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl RealRegistry {
    /// Starts the registry with TLS from `ca` and token auth whose realm is
    /// `<acr_url>/oauth2/token` (the fake ACR served over HTTPS with a `ca` leaf for
    /// `127.0.0.1`). Adds the registry to `acr` (host `127.0.0.1:<port>`) and makes `acr` sign
    /// registry tokens with an `x5c` header this registry trusts. Grants are the caller's:
    /// `acr.grant(principal, registry.host(), ..)`.
    pub fn start(ca: &Ca, acr: &Acr, acr_url: &str) -> Result<RealRegistry, RegistryError> {
        let program =
            find_program(REGISTRY_PROGRAM).ok_or(RegistryError::Missing(REGISTRY_PROGRAM))?;
        let trust = TokenTrust::new()?;
        acr.set_token_certificate_chain(trust.chain());
        let realm = format!("{}/oauth2/token", acr_url.trim_end_matches('/'));
        let mut last = RegistryError::NotReady;
        for _ in 0..START_ATTEMPTS {
            match RealRegistry::start_once(&program, ca, &trust, &realm) {
                Ok(registry) => {
                    acr.add_registry(Registry {
                        host: registry.host.clone(),
                        accepted_audiences: Audiences::ArmAndAcr,
                        repositories: Vec::new(),
                    });
                    return Ok(registry);
                }
                // Most likely the port we picked was taken in between: pick another.
                Err(e @ RegistryError::Exited(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn start_once(
        program: &Path,
        ca: &Ca,
        trust: &TokenTrust,
        realm: &str,
    ) -> Result<RealRegistry, RegistryError> {
        let dir = TempDir::new("registry")?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let files = RegistryFiles::in_dir(dir.path());
        let (chain, key) = ca.leaf(&["127.0.0.1", "localhost"]);
        let chain_pem: String = chain
            .iter()
            .map(|c| pem("CERTIFICATE", c.as_ref()))
            .collect();
        std::fs::write(&files.tls_cert, chain_pem)?;
        std::fs::write(&files.tls_key, pem("PRIVATE KEY", key.secret_der()))?;
        std::fs::write(&files.token_roots, trust.root_pem())?;
        std::fs::create_dir_all(&files.client_certs)?;
        ca.write_pem(&files.client_certs)?;
        let config = registry_config(&files, &host, realm);
        std::fs::write(&files.config, config)?;
        let log = std::fs::File::create(&files.log)?;
        let child = Command::new(program)
            .arg("serve")
            .arg(&files.config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut registry = RealRegistry { child, dir, host };
        registry.wait_ready(ca)?;
        Ok(registry)
    }

    /// Polls `/v2/` until the registry answers (401: it wants a token), it exits, or the deadline.
    fn wait_ready(&mut self, ca: &Ca) -> Result<(), RegistryError> {
        let agent = trusting_agent(ca);
        let url = format!("https://{}/v2/", self.host);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(RegistryError::Exited(status));
            }
            if let Ok(resp) = agent.get(&url).call() {
                if resp.status().as_u16() == 401 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(RegistryError::NotReady);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`: the registry's address, its token `service`, the fake ACR registry
    /// host, and the server key in a `.dockerconfigjson`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A directory holding the kit CA as `ca.crt` (skopeo's `--cert-dir`).
    pub fn cert_dir(&self) -> PathBuf {
        RegistryFiles::in_dir(self.dir.path()).client_certs
    }

    /// The `ACRPULL_CONNECT_TO` rule that sends acrpull's `https://<host>/oauth2/...` calls for
    /// this registry to the fake ACR at `acr_addr`, so a binding whose server is [`host`](Self::host)
    /// gets its tokens from the fake while image clients reach this registry.
    pub fn connect_to_rule(&self, acr_addr: std::net::SocketAddr) -> String {
        format!("127.0.0.1={acr_addr}")
    }

    /// `docker://<host>/<repository>:<tag>`.
    pub fn image_ref(&self, repository: &str, tag: &str) -> String {
        format!("docker://{}/{repository}:{tag}", self.host)
    }

    /// The registry's own log so far (for failure messages; it holds no credentials).
    pub fn log(&self) -> String {
        std::fs::read_to_string(RegistryFiles::in_dir(self.dir.path()).log).unwrap_or_default()
    }
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        // Already-exited children make kill fail; either way we reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the registry's files live inside its directory.
struct RegistryFiles {
    root: PathBuf,
    config: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    token_roots: PathBuf,
    log: PathBuf,
    client_certs: PathBuf,
}

impl RegistryFiles {
    fn in_dir(dir: &Path) -> RegistryFiles {
        RegistryFiles {
            root: dir.join("storage"),
            config: dir.join("config.yml"),
            tls_cert: dir.join("tls.crt"),
            tls_key: dir.join("tls.key"),
            token_roots: dir.join("token-roots.pem"),
            log: dir.join("registry.log"),
            client_certs: dir.join("certs"),
        }
    }
}

/// The registry's `config.yml`: filesystem storage, TLS, and token auth against the fake ACR.
fn registry_config(files: &RegistryFiles, host: &str, realm: &str) -> String {
    let config = json!({
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": true}},
        "storage": {
            "filesystem": {"rootdirectory": files.root},
            "delete": {"enabled": true},
        },
        "http": {
            "addr": host,
            "secret": "acrpull-test-kit",
            "tls": {"certificate": files.tls_cert, "key": files.tls_key},
        },
        "auth": {"token": {
            "realm": realm,
            "service": host,
            "issuer": ACR_ISSUER,
            "rootcertbundle": files.token_roots,
        }},
    });
    serde_yaml::to_string(&config).expect("a JSON object always renders as YAML")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// PEM armour for one DER object.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A ureq agent trusting only the kit CA, not failing on 4xx.
fn trusting_agent(ca: &Ca) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let root = Certificate::from_der(ca.der().as_ref()).to_owned();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![root])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

/// A `.dockerconfigjson` exactly as acrpull writes it (spec §2.5): compact, keys in upstream order.
pub fn docker_config_json(server: &str, token: &str) -> String {
    let auth = STANDARD.encode(format!("{NULL_GUID}:{token}"));
    let s = |v: &str| Value::from(v).to_string();
    format!(
        "{{\"auths\":{{{}:{{\"username\":{},\"password\":{},\"email\":\"msi-acrpull@azurecr.io\",\"auth\":{}}}}}}}",
        s(server),
        s(NULL_GUID),
        s(token),
        s(&auth)
    )
}

/// Writes [`docker_config_json`] to `dir/<name>` and returns the path (skopeo's `--authfile`).
pub fn write_authfile(dir: &Path, name: &str, server: &str, token: &str) -> io::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, docker_config_json(server, token))?;
    Ok(path)
}

/// A registry refresh token for `object_id` at `host`, got the way acrpull gets one: a kit-signed
/// Entra token (tenant `tenant`, ACR audience) exchanged at the fake ACR's `/oauth2/exchange`.
pub fn refresh_token(
    acr: &Acr,
    host: &str,
    tenant: &str,
    object_id: &str,
) -> Result<String, RegistryError> {
    let now = crate::jwt::now_unix();
    let entra = Signer::kit().sign(&json!({
        "iss": format!("https://sts.windows.net/{tenant}/"), "tid": tenant,
        "oid": object_id, "sub": object_id, "appid": object_id, "aud": ACR_AUDIENCE,
        "iat": now, "nbf": now, "exp": now + 3600,
    }));
    let body =
        format!("grant_type=access_token&service={host}&tenant={tenant}&access_token={entra}");
    acr_token(
        acr,
        host,
        "/oauth2/exchange?api-version=2021-07-01",
        body,
        "refresh_token",
    )
}

/// An access token for `scope` (e.g. `repository:app:pull`) from a refresh token, as acrpull asks
/// for it (`POST /oauth2/token`): what its pull Secret carries as the password.
pub fn access_token(
    acr: &Acr,
    host: &str,
    refresh: &str,
    scope: &str,
) -> Result<String, RegistryError> {
    let body =
        format!("grant_type=refresh_token&service={host}&scope={scope}&refresh_token={refresh}");
    acr_token(
        acr,
        host,
        "/oauth2/token?api-version=2021-07-01",
        body,
        "access_token",
    )
}

fn acr_token(
    acr: &Acr,
    host: &str,
    path: &str,
    body: String,
    field: &str,
) -> Result<String, RegistryError> {
    let resp = acr.handle(
        Request::new("POST", path)
            .with_header("Host", host)
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(body),
    );
    let status = resp.status;
    if status != 200 {
        return Err(RegistryError::Azure(status));
    }
    resp.body_json()[field]
        .as_str()
        .map(str::to_string)
        .ok_or(RegistryError::Azure(status))
}

/// A one-layer OCI image layout on disk (`oci:<dir>:<tag>` for skopeo), removed on drop.
#[derive(Debug)]
pub struct TestImage {
    dir: TempDir,
    tag: String,
    manifest_digest: String,
}

impl TestImage {
    /// Builds an image whose single uncompressed layer holds `file_name` with `content`.
    pub fn new(tag: &str, file_name: &str, content: &[u8]) -> io::Result<TestImage> {
        let dir = TempDir::new("image")?;
        let manifest_digest = write_oci_layout(dir.path(), tag, file_name, content)?;
        Ok(TestImage {
            dir,
            tag: tag.to_string(),
            manifest_digest,
        })
    }

    /// `oci:<dir>:<tag>`.
    pub fn source_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.path().display(), self.tag)
    }

    /// The manifest digest (`sha256:<hex>`) as written locally.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }
}

/// Writes an OCI image layout with one layer into `dir`; returns the manifest digest.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    file_name: &str,
    content: &[u8],
) -> io::Result<String> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    let write_blob = |bytes: &[u8]| -> io::Result<(String, usize)> {
        let digest = sha256_digest(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(blobs.join(hex), bytes)?;
        Ok((digest, bytes.len()))
    };
    let layer = tar_one_file(file_name, content);
    let (layer_digest, layer_size) = write_blob(&layer)?;
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = write_blob(config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = write_blob(manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(manifest_digest)
}

/// `sha256:<lowercase hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A ustar archive holding one regular file (mode 0644, owned by root, mtime 0).
fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let put =
        |h: &mut [u8; 512], at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    let name = &name.as_bytes()[..name.len().min(100)];
    put(&mut header, 0, name);
    put(&mut header, 100, b"0000644\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(
        &mut header,
        124,
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0");
    put(&mut header, 148, b"        ");
    header[156] = b'0';
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    out
}

/// What one skopeo run did. Its stderr names images and HTTP errors, never credentials.
#[derive(Debug, Clone)]
pub struct SkopeoOutput {
    /// Whether skopeo exited with status 0.
    pub success: bool,
    /// Standard output (JSON for `inspect`).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs skopeo isolated from the user's setup: its own `HOME`, no default auth files, a policy
/// that accepts any image, and a command timeout.
#[derive(Debug)]
pub struct Skopeo {
    program: PathBuf,
    home: TempDir,
}

impl Skopeo {
    /// A runner; `Missing` when skopeo is not installed.
    pub fn new() -> Result<Skopeo, RegistryError> {
        let program = find_program(SKOPEO_PROGRAM).ok_or(RegistryError::Missing(SKOPEO_PROGRAM))?;
        let home = TempDir::new("skopeo")?;
        std::fs::write(
            home.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        std::fs::write(home.path().join("registries.conf"), "")?;
        Ok(Skopeo { program, home })
    }

    /// A scratch directory that lives as long as this runner (for auth files, copies).
    pub fn scratch(&self) -> &Path {
        self.home.path()
    }

    /// Runs `skopeo <global options> <args>`.
    pub fn run<I, S>(&self, args: I) -> Result<SkopeoOutput, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let home = self.home.path();
        let mut child = Command::new(&self.program)
            .env_clear()
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("CONTAINERS_REGISTRIES_CONF", home.join("registries.conf"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--policy")
            .arg(home.join("policy.json"))
            .arg("--command-timeout")
            .arg("60s")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Small outputs: read stderr on a thread so neither pipe can fill up and block skopeo.
        let mut err_pipe = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let mut stdout = String::new();
        if let Some(p) = child.stdout.as_mut() {
            p.read_to_string(&mut stdout)?;
        }
        let status = child.wait()?;
        let stderr = err_reader.join().unwrap_or_default();
        Ok(SkopeoOutput {
            success: status.success(),
            stdout,
            stderr,
        })
    }

    /// Pushes `image` to `registry` as `<repository>:<tag of the image>`, authenticating with
    /// `password` (a registry refresh or access token allowing push) in an acrpull-format auth file.
    pub fn push(
        &self,
        image: &TestImage,
        registry: &RealRegistry,
        repository: &str,
        password: &str,
    ) -> Result<SkopeoOutput, RegistryError> {
        let authfile = write_authfile(self.scratch(), "push-auth.json", registry.host(), password)?;
        let out = self.run([
            OsStr::new("copy"),
            OsStr::new("--dest-authfile"),
            authfile.as_os_str(),
            OsStr::new("--dest-cert-dir"),
            registry.cert_dir().as_os_str(),
            OsStr::new(&image.source_ref()),
            OsStr::new(&registry.image_ref(repository, &image.tag)),
        ]);
        // The token must not outlive the push on disk.
        let _ = std::fs::remove_file(&authfile);
        out
    }

    /// `skopeo inspect` of `image_ref` with `authfile` (or `--no-creds` when `None`), trusting
    /// the certificates in `cert_dir`.
    pub fn inspect(
        &self,
        image_ref: &str,
        cert_dir: &Path,
        authfile: Option<&Path>,
    ) -> Result<SkopeoOutput, RegistryError> {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("inspect"),
            OsStr::new("--cert-dir"),
            cert_dir.as_os_str(),
        ];
        match authfile {
            Some(f) => args.extend([OsStr::new("--authfile"), f.as_os_str()]),
            None => args.push(OsStr::new("--no-creds")),
        }
        args.push(OsStr::new(image_ref));
        self.run(args)
    }

    /// `skopeo copy` of `image_ref` into the directory `dest` (`dir:` transport).
    pub fn copy_to_dir(
        &self,
        image_ref: &str,
        cert_dir: &Path,
        authfile: &Path,
        dest: &Path,
    ) -> Result<SkopeoOutput, RegistryError> {
        let dest_ref = format!("dir:{}", dest.display());
        self.run([
            OsStr::new("copy"),
            OsStr::new("--src-authfile"),
            authfile.as_os_str(),
            OsStr::new("--src-cert-dir"),
            cert_dir.as_os_str(),
            OsStr::new(image_ref),
            OsStr::new(&dest_ref),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_json_matches_acrpulls_secret_byte_for_byte() {
        let got = docker_config_json("127.0.0.1:5000", "tok");
        let auth = STANDARD.encode(format!("{NULL_GUID}:tok"));
        assert_eq!(
            got,
            format!("{{\"auths\":{{\"127.0.0.1:5000\":{{\"username\":\"00000000-0000-0000-0000-000000000000\",\"password\":\"tok\",\"email\":\"msi-acrpull@azurecr.io\",\"auth\":\"{auth}\"}}}}}}")
        );
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["auths"]["127.0.0.1:5000"]["password"], "tok");
    }

    #[test]
    fn tar_of_one_file_has_a_valid_checksum_and_padding() {
        let tar = tar_one_file("hello.txt", b"hi\n");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[0..9], b"hello.txt");
        assert_eq!(&tar[512..515], b"hi\n");
        let mut header = tar[..512].to_vec();
        let stored = std::str::from_utf8(&header[148..154]).unwrap().to_string();
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(&stored, 8).unwrap(), sum);
        assert_eq!(&tar[124..135], b"00000000003");
    }

    #[test]
    fn sha256_digest_is_prefixed_lowercase_hex() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn oci_layout_blobs_are_named_by_their_digest() {
        let dir = TempDir::new("layout-test").unwrap();
        let digest = write_oci_layout(dir.path(), "v1", "a.txt", b"a").unwrap();
        let manifest_path = dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let manifest_bytes = std::fs::read(&manifest_path).unwrap();
        assert_eq!(sha256_digest(&manifest_bytes), digest);
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer_bytes = std::fs::read(
            dir.path()
                .join("blobs/sha256")
                .join(layer.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(sha256_digest(&layer_bytes), layer);
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest.as_str());
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn registry_config_points_token_auth_at_the_fake_acr() {
        let files = RegistryFiles::in_dir(Path::new("/tmp/x"));
        let yaml = registry_config(
            &files,
            "127.0.0.1:5000",
            "https://127.0.0.1:6000/oauth2/token",
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        let token = &v["auth"]["token"];
        assert_eq!(
            token["realm"].as_str(),
            Some("https://127.0.0.1:6000/oauth2/token")
        );
        assert_eq!(token["service"].as_str(), Some("127.0.0.1:5000"));
        assert_eq!(token["issuer"].as_str(), Some("Azure Container Registry"));
        assert_eq!(
            token["rootcertbundle"].as_str(),
            Some("/tmp/x/token-roots.pem")
        );
        assert_eq!(v["http"]["addr"].as_str(), Some("127.0.0.1:5000"));
        assert_eq!(v["http"]["tls"]["key"].as_str(), Some("/tmp/x/tls.key"));
        assert_eq!(v["version"].as_str(), Some("0.1"));
    }

    #[test]
    fn token_trust_certifies_the_kit_signing_key() {
        let trust = TokenTrust::new().unwrap();
        assert!(trust.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(trust.chain().len(), 1);
        // The leaf's SubjectPublicKeyInfo must hold the kit key's RSA modulus.
        let kit = KeyPair::try_from(KIT_KEY_PKCS8).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&kit);
        let leaf = &trust.chain()[0];
        assert!(leaf.windows(spki.len()).any(|w| w == spki.as_slice()));
    }

    #[test]
    fn token_helpers_mint_what_acrpull_would_get_from_the_fake_acr() {
        let acr = Acr::new();
        let host = "127.0.0.1:5000";
        acr.add_registry(Registry {
            host: host.into(),
            accepted_audiences: Audiences::ArmAndAcr,
            repositories: Vec::new(),
        });
        acr.grant("oid-7", host, &[("app", &["pull"])]);
        let refresh = refresh_token(&acr, host, "t7", "oid-7").unwrap();
        let token = access_token(&acr, host, &refresh, "repository:app:pull").unwrap();
        assert!(acr.authorize(host, &token, "app", "pull"));
        assert!(!acr.authorize(host, &token, "other", "pull"));
        assert!(matches!(
            access_token(&acr, host, "not-a-token", "repository:app:pull"),
            Err(RegistryError::Azure(401))
        ));
        assert!(matches!(
            refresh_token(&acr, "127.0.0.2:1", "t7", "oid-7"),
            Err(RegistryError::Azure(404))
        ));
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let p = pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
    }
}
