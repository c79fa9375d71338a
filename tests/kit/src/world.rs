//! One call to start a world: the emulated API server, the fake Azure endpoints on their
//! listeners, a CA file for them, and the real `acrpull` binary as a child process whose log is
//! captured and shown when a test fails. Everything stops when the `World` is dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::azure::{Acr, Audiences, Azure, Entra, ManagedIdentity, Principal, Registry};
use crate::http::{serve_http, serve_https, Handler, Request, Response, Server};
use crate::kube::ApiServer;
use crate::tls::Ca;

/// The tenant of the fake IMDS machine.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The default registry host of a world.
pub const REGISTRY: &str = "myregistry.azurecr.io";
/// The user acrpull runs as when the world applies the shipped RBAC.
pub const CONTROLLER_USER: &str = "system:serviceaccount:acrpull:acrpull";
/// Entra authority hosts the HTTPS listener answers for.
pub const AUTHORITY_HOSTS: [&str; 3] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
];

/// An air-gapped cloud's Entra authority host the HTTPS listener also answers for (a binding's
/// `cloudConfig.entraAuthorityHost` is `https://` + this).
pub const AIRGAPPED_AUTHORITY_HOST: &str = "login.airgapped.example";
/// The ServiceAccount token audience acrpull asks for by default (and the chart's policy allows).
pub const SA_TOKEN_AUDIENCE: &str = "api://AzureCRTokenExchange";
/// How long the `wait_*` helpers give a state to appear. It only bounds how long a broken test
/// hangs, so it is generous: a busy CI machine must not turn a slow pass into a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// A user-assigned identity every world has: client ID, object ID, resource ID.
pub fn identity(n: u32) -> ManagedIdentity {
    ManagedIdentity {
        client_id: format!("00000000-0000-0000-0000-{n:012}"),
        object_id: format!("11111111-0000-0000-0000-{n:012}"),
        resource_id: format!(
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id{n}"
        ),
        principal: Principal::UserAssigned,
    }
}

/// Routes HTTPS requests by `Host`: authority hosts go to Entra, everything else to the registries.
struct AzureRouter {
    entra: Arc<Entra>,
    acr: Arc<Acr>,
}

impl Handler for AzureRouter {
    fn handle(&self, req: Request) -> Response {
        let host = req
            .header("host")
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if AUTHORITY_HOSTS.contains(&host.as_str()) || host.starts_with("login.") {
            self.entra.handle(req)
        } else {
            self.acr.handle(req)
        }
    }
}

/// Captured output of a child process.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicUsize>);

impl Log {
    /// Waits (bounded) until every captured stream has reached its end, so a process that has
    /// exited has had its last lines read.
    pub fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.1.load(std::sync::atomic::Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every line so far, joined.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Whether any line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }
}

fn capture(stream: impl Read + Send + 'static, log: Log, prefix: &'static str) {
    log.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => log.push(format!("{prefix}{l}")),
                Err(_) => break,
            }
        }
        log.1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    });
}

/// A running `acrpull` process.
pub struct Acrpull {
    child: Child,
    /// Its stdout and stderr, interleaved.
    pub log: Log,
}

impl Acrpull {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and with what code.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                self.log.wait_closed(Duration::from_secs(5));
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Acrpull {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start acrpull in a world.
#[derive(Clone, Debug)]
pub struct AcrpullOptions {
    /// Extra flags.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run under the RBAC rules shipped in `manifests/` (as the controller's ServiceAccount),
    /// instead of as a cluster admin.
    pub shipped_rbac: bool,
}

impl Default for AcrpullOptions {
    fn default() -> Self {
        AcrpullOptions {
            args: Vec::new(),
            env: Vec::new(),
            shipped_rbac: true,
        }
    }
}

/// The emulated cluster, the fake Azure, and any acrpull processes started in it.
pub struct World {
    /// The emulated API server.
    pub api: ApiServer,
    /// The fake Azure endpoints.
    pub azure: Azure,
    imds_server: Server,
    azure_server: Server,
    azure_ca_file: PathBuf,
    ca: Ca,
    dir: PathBuf,
    procs: Vec<Log>,
}

/// Where the repository's files are (the kit lives in `tests/kit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl World {
    /// Starts the API server and the fakes, with identity 1 assigned to the node, registry
    /// [`REGISTRY`] granting it pull on every repository, and namespace `default` (with its
    /// `default` ServiceAccount) present.
    pub fn start() -> World {
        let api = ApiServer::start();
        let azure = Azure::new(TENANT);
        let ca = Ca::new();
        // 127.0.0.1 lets a real registry on loopback (see `registry`) use this listener as its
        // token realm and acrpull reach its `/oauth2/*` calls for `127.0.0.1:<port>` here.
        let mut names: Vec<&str> = vec![
            "*.azurecr.io",
            "*.azurecr.us",
            "*.azurecr.cn",
            "localhost",
            "127.0.0.1",
        ];
        names.extend(AUTHORITY_HOSTS);
        names.push(AIRGAPPED_AUTHORITY_HOST);
        let imds_server = serve_http(azure.imds.clone()).expect("fake IMDS listens on loopback");
        let router = AzureRouter {
            entra: azure.entra.clone(),
            acr: azure.acr.clone(),
        };
        let azure_server = serve_https(Arc::new(router), ca.server_config(&names))
            .expect("fake Azure listens on loopback");
        let dir = api.dir().join("world");
        std::fs::create_dir_all(&dir).expect("the world's temp dir can be created");
        let azure_ca_file = ca
            .write_pem(&dir)
            .expect("the Azure CA file can be written");
        let world = World {
            api,
            azure,
            imds_server,
            azure_server,
            azure_ca_file,
            ca,
            dir,
            procs: Vec::new(),
        };
        world.azure.add_managed_identity(identity(1));
        world.add_registry(REGISTRY, Audiences::ArmAndAcr);
        world.grant(&identity(1).object_id, REGISTRY, "*", &["pull"]);
        let _ = world.api.create_namespace("default");
        world.wait_for("the default ServiceAccount", Duration::from_secs(5), || {
            world.api.get("serviceaccounts", "default", "default")
        });
        world
    }

    /// Adds a registry to the fake ACR.
    pub fn add_registry(&self, host: &str, audiences: Audiences) {
        self.azure.acr.add_registry(Registry {
            host: host.to_string(),
            accepted_audiences: audiences,
            repositories: Vec::new(),
        });
    }

    /// Grants `principal` the `actions` on `repo` (`*` = every repository) of `host`.
    pub fn grant(&self, principal: &str, host: &str, repo: &str, actions: &[&str]) {
        self.azure.acr.grant(principal, host, &[(repo, actions)]);
    }

    /// The fake IMDS base URL.
    pub fn imds_url(&self) -> String {
        self.imds_server.url()
    }

    /// The address of the HTTPS listener serving Entra and every registry.
    pub fn azure_addr(&self) -> std::net::SocketAddr {
        self.azure_server.addr()
    }

    /// The CA file that makes acrpull trust the fake Azure endpoints.
    pub fn azure_ca_file(&self) -> &Path {
        &self.azure_ca_file
    }

    /// The CA acrpull trusts (through [`azure_ca_file`](Self::azure_ca_file)): for extra fake
    /// servers a test wants acrpull to reach over verified TLS.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// A scratch directory removed with the world.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The flags that point acrpull at this world (before any test-specific flags).
    pub fn base_args(&self, kubeconfig: &Path) -> Vec<String> {
        let addr = self.azure_addr();
        let mut args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--imds-endpoint={}", self.imds_url()),
            "--metrics-bind-address=0".into(),
            "--health-probe-bind-address=0".into(),
            format!("--connect-to=*.azurecr.io={addr}"),
            format!("--connect-to=*.azurecr.us={addr}"),
            format!("--connect-to=*.azurecr.cn={addr}"),
        ];
        for h in AUTHORITY_HOSTS {
            args.push(format!("--connect-to={h}={addr}"));
        }
        args.push(format!("--connect-to={AIRGAPPED_AUTHORITY_HOST}={addr}"));
        args
    }

    fn load_shipped_rbac(&self) {
        let rbac = std::fs::read_to_string(repo_root().join("manifests/11-rbac.yaml"))
            .expect("manifests/11-rbac.yaml is readable");
        self.api
            .load_rbac(&rbac)
            .expect("the shipped RBAC manifest loads");
    }

    /// A kubeconfig for the controller's ServiceAccount (shipped RBAC) whose user reads its bearer
    /// token from a file (`tokenFile:`), holding `token` for now; returns (kubeconfig, token file).
    /// Rotate with [`World::rotate_controller_token`].
    pub fn controller_token_file_kubeconfig(&self, token: &str) -> (PathBuf, PathBuf) {
        self.load_shipped_rbac();
        self.api.add_user(token, CONTROLLER_USER);
        let token_file = self.dir.join("controller.token");
        std::fs::write(&token_file, token).expect("the token file can be written");
        let path = self.dir.join("controller-tokenfile.kubeconfig");
        crate::tls::write_kubeconfig_token_file(
            &path,
            &self.api.url(),
            self.api.ca_pem(),
            &token_file,
        )
        .expect("the controller kubeconfig can be written");
        (path, token_file)
    }

    /// Rotates the controller's credential: `new` becomes valid, the file is rewritten (atomically,
    /// as the kubelet swaps projected volumes), and `old` is revoked (401 from now on).
    pub fn rotate_controller_token(&self, token_file: &Path, old: &str, new: &str) {
        self.api.add_user(new, CONTROLLER_USER);
        let tmp = token_file.with_extension("new");
        std::fs::write(&tmp, new).expect("the new token can be written");
        std::fs::rename(&tmp, token_file).expect("the token file can be replaced");
        self.api.remove_token(old);
    }

    /// Every write (create, update, patch, delete) the controller's user made to an object,
    /// oldest first. Events are left out: they are best-effort notes sent from their own thread,
    /// whenever it gets to them (see `controller_event_writes`).
    pub fn controller_writes(&self) -> Vec<crate::kube::LoggedRequest> {
        self.api
            .request_log()
            .into_iter()
            .filter(|r| r.user == CONTROLLER_USER && r.resource != "events")
            .filter(|r| {
                matches!(
                    r.verb.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
            })
            .collect()
    }

    /// Every Event the controller's user wrote, oldest first.
    pub fn controller_event_writes(&self) -> Vec<crate::kube::LoggedRequest> {
        self.api
            .request_log()
            .into_iter()
            .filter(|r| r.user == CONTROLLER_USER && r.resource == "events")
            .filter(|r| matches!(r.verb.as_str(), "create" | "patch"))
            .collect()
    }

    /// A kubeconfig for the controller's ServiceAccount, limited to the shipped RBAC rules.
    pub fn controller_kubeconfig(&self) -> PathBuf {
        self.load_shipped_rbac();
        let token = "acrpull-controller-token";
        self.api.add_user(token, CONTROLLER_USER);
        let path = self.dir.join("controller.kubeconfig");
        crate::tls::write_kubeconfig(&path, &self.api.url(), self.api.ca_pem(), token)
            .expect("the controller kubeconfig can be written");
        path
    }

    /// Starts `binary` (the real acrpull) against this world.
    pub fn start_acrpull(&mut self, binary: &Path, opts: &AcrpullOptions) -> Acrpull {
        let kubeconfig = if opts.shipped_rbac {
            self.controller_kubeconfig()
        } else {
            self.api.kubeconfig_path().to_path_buf()
        };
        self.start_acrpull_with_kubeconfig(binary, opts, &kubeconfig)
    }

    /// Starts `binary` against this world with this kubeconfig (`opts.shipped_rbac` is ignored).
    pub fn start_acrpull_with_kubeconfig(
        &mut self,
        binary: &Path,
        opts: &AcrpullOptions,
        kubeconfig: &Path,
    ) -> Acrpull {
        let kubeconfig = kubeconfig.to_path_buf();
        let mut cmd = Command::new(binary);
        cmd.args(self.base_args(&kubeconfig))
            .args(&opts.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SSL_CERT_FILE", &self.azure_ca_file)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the acrpull binary starts");
        let log = Log::default();
        if let Some(out) = child.stdout.take() {
            capture(out, log.clone(), "");
        }
        if let Some(err) = child.stderr.take() {
            capture(err, log.clone(), "");
        }
        self.procs.push(log.clone());
        Acrpull { child, log }
    }

    /// Polls `f` every 25 ms until it returns `Some`, or panics after `timeout` naming `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Creates a namespace and waits for its `default` ServiceAccount.
    pub fn namespace(&self, name: &str) {
        self.api
            .create_namespace(name)
            .expect("the namespace can be created");
        self.wait_for(
            &format!("the default ServiceAccount of {name}"),
            Duration::from_secs(5),
            || self.api.get("serviceaccounts", name, "default"),
        );
    }

    /// Creates a ServiceAccount (with optional annotations).
    pub fn service_account(&self, ns: &str, name: &str, annotations: Value) -> Value {
        self.api
            .create(
                "serviceaccounts",
                ns,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": name, "namespace": ns, "annotations": annotations}}),
            )
            .expect("the ServiceAccount can be created")
    }
}

/// Workload identity and cross-tenant set-up in the fake Entra.
impl World {
    /// Lets tokens of ServiceAccount `ns/sa` (kit issuer, audience [`SA_TOKEN_AUDIENCE`])
    /// authenticate as the app `client_id` in `tenant`, and grants the app pull on every
    /// repository of [`REGISTRY`] (the app's object id is its client id).
    pub fn federate_service_account(&self, ns: &str, sa: &str, client_id: &str, tenant: &str) {
        self.azure.entra.add_federated_credential(
            client_id,
            tenant,
            crate::azure::FederatedCredential {
                issuer: crate::kube::TOKEN_ISSUER.to_string(),
                subject: format!("system:serviceaccount:{ns}:{sa}"),
                audience: SA_TOKEN_AUDIENCE.to_string(),
            },
        );
        self.grant(client_id, REGISTRY, "*", &["pull"]);
    }

    /// Lets the node identity `n` (its `api://AzureADTokenExchange` token from IMDS) authenticate
    /// as the app `client_id` in `tenant` (cross-tenant), granting the app pull on [`REGISTRY`].
    pub fn federate_managed_identity(&self, n: u32, client_id: &str, tenant: &str) {
        self.azure.entra.add_federated_credential(
            client_id,
            tenant,
            crate::azure::FederatedCredential {
                issuer: format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
                subject: identity(n).object_id,
                audience: crate::azure::TOKEN_EXCHANGE_AUDIENCE.to_string(),
            },
        );
        self.grant(client_id, REGISTRY, "*", &["pull"]);
    }

    /// Fake Azure requests answered by `service` (`imds`, `entra`, `acr`).
    pub fn azure_requests(&self, service: &str) -> Vec<crate::azure::LoggedRequest> {
        self.azure
            .shared
            .requests()
            .into_iter()
            .filter(|r| r.service == service)
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, log) in self.procs.iter().enumerate() {
                eprintln!("---- acrpull #{i} log ----\n{}\n---- end ----", log.text());
            }
        }
    }
}

/// The condition of type `t` in a binding's status.
pub fn condition<'a>(binding: &'a Value, t: &str) -> Option<&'a Value> {
    binding["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

/// Whether a binding is fully Ready: `Ready` and `TokenValid` true, a token expiry in the future,
/// no error, and the current generation observed.
pub fn is_ready(binding: &Value) -> bool {
    let status = &binding["status"];
    let future = status["tokenExpirationTime"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|t| t > time::OffsetDateTime::now_utc());
    let cond = |t: &str| condition(binding, t).is_some_and(|c| c["status"] == "True");
    cond("Ready")
        && cond("TokenValid")
        && future
        && status["error"].as_str().unwrap_or("").is_empty()
        && status["observedGeneration"] == binding["metadata"]["generation"]
}

/// The names in a ServiceAccount's `imagePullSecrets`, in order.
pub fn pull_secret_names(sa: &Value) -> Vec<String> {
    sa["imagePullSecrets"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A v1beta2 managed-identity binding object.
pub fn binding_v1beta2(
    ns: &str,
    name: &str,
    server: &str,
    scope: &str,
    client_id: &str,
    sa: &str,
) -> Value {
    json!({
        "apiVersion": "acrpull.microsoft.com/v1beta2",
        "kind": "AcrPullBinding",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "acr": {"server": server, "scope": scope, "environment": "PublicCloud"},
            "auth": {"managedIdentity": {"clientID": client_id}},
            "serviceAccountName": sa
        }
    })
}

/// A v1beta2 workload-identity binding object; `ids` = explicit (client, tenant).
pub fn binding_v1beta2_workload(
    ns: &str,
    name: &str,
    scope: &str,
    sa_ref: &str,
    ids: Option<(&str, &str)>,
    target: &str,
) -> Value {
    let mut wi = json!({"serviceAccountRef": sa_ref});
    if let Some((c, t)) = ids {
        wi["clientID"] = json!(c);
        wi["tenantID"] = json!(t);
    }
    json!({
        "apiVersion": "acrpull.microsoft.com/v1beta2",
        "kind": "AcrPullBinding",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "acr": {"server": REGISTRY, "scope": scope, "environment": "PublicCloud"},
            "auth": {"workloadIdentity": wi},
            "serviceAccountName": target
        }
    })
}

/// A v1beta1 binding object.
pub fn binding_v1beta1(
    ns: &str,
    name: &str,
    server: &str,
    scope: &str,
    client_id: &str,
    sa: &str,
) -> Value {
    let mut spec =
        json!({"acrServer": server, "scope": scope, "managedIdentityClientID": client_id});
    if !sa.is_empty() {
        spec["serviceAccountName"] = json!(sa);
    }
    json!({
        "apiVersion": "msi-acrpull.microsoft.com/v1beta1",
        "kind": "AcrPullBinding",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    })
}

// ---- helpers for the end-to-end tests ----

/// The label acrpull puts on its pull Secrets.
pub const BINDING_LABEL: &str = "acr.microsoft.com/binding";
/// The finalizer acrpull puts on bindings (both versions).
pub const FINALIZER: &str = "msi-acrpull.microsoft.com";
/// The Secret annotation holding the token expiry.
pub const EXPIRY_ANNOTATION: &str = "acr.microsoft.com/token.expiry";
/// The Secret annotation holding when the token was obtained.
pub const REFRESH_ANNOTATION: &str = "acr.microsoft.com/token.refresh";
/// The Secret annotation holding the inputs hash.
pub const INPUTS_ANNOTATION: &str = "acr.microsoft.com/token.inputs";
/// The registry user name in pull Secrets.
pub const NULL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// The `.dockerconfigjson` of a pull Secret, decoded (panics with the reason if it is not one).
pub fn docker_config(secret: &Value) -> Value {
    use base64::Engine as _;
    let data = secret["data"][".dockerconfigjson"]
        .as_str()
        .expect("the Secret has data[.dockerconfigjson]");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect(".dockerconfigjson is base64");
    serde_json::from_slice(&bytes).expect(".dockerconfigjson is JSON")
}

/// The password (registry token) in a pull Secret for `server`.
pub fn secret_password(secret: &Value, server: &str) -> String {
    docker_config(secret)["auths"][server]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `exp` of a JWT, unverified, as RFC 3339 UTC with whole seconds.
pub fn jwt_expiry(token: &str) -> Option<String> {
    let claims = crate::jwt::claims_unverified(token).ok()?;
    let exp = claims["exp"].as_i64()?;
    rfc3339(exp)
}

/// Unix seconds as RFC 3339 UTC (`2006-01-02T15:04:05Z`).
pub fn rfc3339(unix: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Parses RFC 3339 into unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Asserts that `secret` is exactly the pull Secret acrpull writes for `binding` (type, label,
/// the three annotations, the controller ownerReference, the dockerconfigjson bytes) and that its
/// password is a token the fakes issued. `label` is the expected label value. Returns the password.
pub fn assert_pull_secret(
    w: &World,
    secret: &Value,
    binding: &Value,
    server: &str,
    label: &str,
) -> String {
    use base64::Engine as _;
    let name = secret["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson", "{name}");
    assert_eq!(
        secret["metadata"]["labels"][BINDING_LABEL], label,
        "label of {name}"
    );
    let ann = &secret["metadata"]["annotations"];
    for a in [EXPIRY_ANNOTATION, REFRESH_ANNOTATION, INPUTS_ANNOTATION] {
        assert!(ann[a].is_string(), "{name} lacks annotation {a}: {ann}");
    }
    let owners = secret["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{name} owners: {owners:?}");
    let o = &owners[0];
    assert_eq!(o["apiVersion"], binding["apiVersion"]);
    assert_eq!(o["kind"], "AcrPullBinding");
    assert_eq!(o["name"], binding["metadata"]["name"]);
    assert_eq!(o["uid"], binding["metadata"]["uid"]);
    assert_eq!(o["controller"], true);
    assert_eq!(o["blockOwnerDeletion"], true);
    let cfg = docker_config(secret);
    let auths = cfg["auths"].as_object().expect("auths is an object");
    assert_eq!(auths.len(), 1, "{name}: {:?}", auths.keys());
    let entry = cfg["auths"][server]
        .as_object()
        .expect("auths has the server");
    let keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["auth", "email", "password", "username"], "{name}");
    assert_eq!(entry["username"], NULL_GUID);
    assert_eq!(entry["email"], "msi-acrpull@azurecr.io");
    let password = entry["password"].as_str().unwrap_or_default().to_string();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{NULL_GUID}:{password}"));
    assert_eq!(entry["auth"], auth.as_str(), "{name}: auth");
    assert!(
        w.azure.issued_tokens().contains(&password),
        "{name}: the password is not a token the fake ACR issued"
    );
    // Upstream's exact bytes: compact, keys in this order.
    let raw = base64::engine::general_purpose::STANDARD
        .decode(
            secret["data"][".dockerconfigjson"]
                .as_str()
                .unwrap_or_default(),
        )
        .unwrap_or_default();
    let exact = format!(
        "{{\"auths\":{{{}:{{\"username\":\"{NULL_GUID}\",\"password\":{},\"email\":\"msi-acrpull@azurecr.io\",\"auth\":\"{auth}\"}}}}}}",
        json!(server),
        json!(password)
    );
    // Not printed: it holds the (fake) token.
    assert!(
        raw == exact.as_bytes(),
        "{name}: .dockerconfigjson bytes differ from upstream's format"
    );
    assert_eq!(
        ann[EXPIRY_ANNOTATION].as_str().map(str::to_string),
        jwt_expiry(&password),
        "{name}: expiry annotation is the token's exp"
    );
    password
}

impl World {
    /// Waits until the binding's status shows a token and no error; returns the binding.
    pub fn wait_ready(&self, res: &str, ns: &str, name: &str) -> Value {
        self.wait_for(&format!("{ns}/{name} ready"), WAIT, || {
            let b = self.api.get(res, ns, name)?;
            let s = &b["status"];
            let ok = s["tokenExpirationTime"].is_string()
                && s["lastTokenRefreshTime"].is_string()
                && s.get("error").is_none_or(|e| e.is_null() || e == "");
            ok.then_some(b)
        })
    }

    /// Waits until the binding's `status.error` satisfies `f`; returns the binding.
    pub fn wait_error(&self, res: &str, ns: &str, name: &str, f: impl Fn(&str) -> bool) -> Value {
        self.wait_for(&format!("{ns}/{name} status error"), WAIT, || {
            let b = self.api.get(res, ns, name)?;
            b["status"]["error"].as_str().is_some_and(&f).then_some(b)
        })
    }

    /// The names in a ServiceAccount's `imagePullSecrets`, in order (empty if it is absent).
    pub fn pull_secrets(&self, ns: &str, sa: &str) -> Vec<String> {
        self.api
            .get("serviceaccounts", ns, sa)
            .and_then(|s| s["imagePullSecrets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until a ServiceAccount's pull secrets are exactly `want`.
    pub fn wait_pull_secrets(&self, ns: &str, sa: &str, want: &[&str]) {
        let mut last = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            last = self.pull_secrets(ns, sa);
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{ns}/{sa} imagePullSecrets are {last:?}, expected {want:?}");
    }

    /// Reads, edits and writes back an object, retrying on conflicts with the controller.
    pub fn edit(&self, res: &str, ns: &str, name: &str, f: impl Fn(&mut Value)) -> Value {
        self.edit_with(res, ns, name, f, "", |obj| self.api.put(res, ns, obj))
    }

    /// Same as [`World::edit`] for the status subresource.
    pub fn edit_status(&self, res: &str, ns: &str, name: &str, f: impl Fn(&mut Value)) -> Value {
        self.edit_with(res, ns, name, f, "the status of ", |obj| {
            self.api.put_status(res, ns, obj)
        })
    }

    /// The read-edit-write loop of [`World::edit`], writing with `write`.
    fn edit_with(
        &self,
        res: &str,
        ns: &str,
        name: &str,
        f: impl Fn(&mut Value),
        what: &str,
        write: impl Fn(Value) -> Result<Value, crate::kube::ApiError>,
    ) -> Value {
        for _ in 0..50 {
            let mut obj = self
                .api
                .get(res, ns, name)
                .unwrap_or_else(|| panic!("{res} {ns}/{name} exists"));
            f(&mut obj);
            match write(obj) {
                Ok(v) => return v,
                Err(e) if e.code == 409 => continue,
                Err(e) => panic!("editing {what}{res} {ns}/{name}: {e:?}"),
            }
        }
        panic!("editing {what}{res} {ns}/{name} kept conflicting");
    }

    /// Sets a ServiceAccount's `imagePullSecrets` to `names`.
    pub fn set_pull_secrets(&self, ns: &str, sa: &str, names: &[&str]) {
        let refs: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
        self.edit("serviceaccounts", ns, sa, |o| {
            o["imagePullSecrets"] = json!(refs);
        });
    }

    /// Adds a managed identity to the VM and grants it pull on every repository of [`REGISTRY`].
    pub fn add_identity(&self, n: u32) -> ManagedIdentity {
        let id = identity(n);
        self.azure.add_managed_identity(id.clone());
        self.grant(&id.object_id, REGISTRY, "*", &["pull"]);
        id
    }

    /// Adds a registry granting identity 1 pull on every repository.
    pub fn add_granted_registry(&self, host: &str) {
        self.add_registry(host, Audiences::ArmAndAcr);
        self.grant(&identity(1).object_id, host, "*", &["pull"]);
    }
}

/// A free TCP port on 127.0.0.1 (for acrpull's metrics and probe listeners).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A plain-HTTP GET: status and body, or `None` when nothing answered.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    let code = r.status().as_u16();
    Some((code, r.body_mut().read_to_string().ok()?))
}
