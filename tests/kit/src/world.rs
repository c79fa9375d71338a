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
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
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
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => log.push(format!("{prefix}{l}")),
                Err(_) => break,
            }
        }
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
        let mut names: Vec<&str> =
            vec!["*.azurecr.io", "*.azurecr.us", "*.azurecr.cn", "localhost"];
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

    /// A kubeconfig for the controller's ServiceAccount, limited to the shipped RBAC rules.
    pub fn controller_kubeconfig(&self) -> PathBuf {
        let rbac = std::fs::read_to_string(repo_root().join("manifests/11-rbac.yaml"))
            .expect("manifests/11-rbac.yaml is readable");
        self.api
            .load_rbac(&rbac)
            .expect("the shipped RBAC manifest loads");
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
