//! Command-line flags and environment, parsed into a validated configuration.
//!
//! Flag names and defaults are upstream's (msi-acrpull v0.1.24, spec §5), so a Deployment written for
//! upstream runs unchanged; ours come after them. Parsing is pure: arguments and environment are passed
//! in, nothing is read from the process here.

use std::fmt;
use std::path::PathBuf;

use crate::binding::{ApiVersion, V1beta1Defaults, V1BETA1_ARM_RESOURCE};
pub use crate::ops::logging::LogFormat;

/// The token flow's settings that come from flags, not from the binding.
#[derive(Clone, Debug, Default)]
pub struct FlowConfig {
    /// `--entra-audience=acr`: request Entra/IMDS tokens for the registry audience, not ARM.
    pub acr_audience: bool,
    /// `--authority-host`: the Entra authority for every cloud (else the binding's cloud's).
    pub authority_host: Option<String>,
    /// `--service-account-token-audience`: the one audience of minted ServiceAccount tokens.
    pub token_audience: String,
}

/// Which audience Entra and IMDS tokens are requested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraAudience {
    /// Azure Resource Manager, as upstream does.
    Arm,
    /// The registry audience `https://containerregistry.azure.net`.
    Acr,
}

/// Everything the controller needs from the command line and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of `/metrics`; `None` when disabled with `0`.
    pub metrics_bind_address: Option<String>,
    /// Address of `/healthz` and `/readyz`; `None` when disabled with `0`.
    pub health_probe_bind_address: Option<String>,
    /// Whether to run leader election before doing any work.
    pub leader_elect: bool,
    /// Lease name.
    pub leader_election_id: String,
    /// Lease namespace; `None` means the in-cluster namespace file.
    pub leader_election_namespace: Option<String>,
    /// Audience of ServiceAccount tokens minted for workload identity.
    pub service_account_token_audience: String,
    /// Fraction of a v1beta2 token's lifetime after which it is refreshed, in (0, 1].
    pub ttl_rotation_fraction: f64,
    /// Label selector restricting both binding kinds (empty: all).
    pub label_selector: String,
    /// Allowed registry suffixes as given; `None` when the flag is absent.
    pub allowed_acr_server_suffixes: Option<Vec<String>>,
    /// Explicit kubeconfig path.
    pub kubeconfig: Option<PathBuf>,
    /// `--identity-policy`: which namespaces may use which identities with which registries.
    pub identity_policy: Option<PathBuf>,
    /// IMDS base URL.
    pub imds_endpoint: String,
    /// Entra authority host override (tests, private clouds).
    pub authority_host: Option<String>,
    /// Token audience mode.
    pub entra_audience: EntraAudience,
    /// Client-side Kubernetes API rate limit, requests per second (0: unlimited).
    pub kube_api_qps: f64,
    /// Client-side Kubernetes API burst.
    pub kube_api_burst: u32,
    /// Reconcile worker threads.
    pub workers: usize,
    /// Connection overrides `HOST=ADDR:PORT` (host may start with `*.`).
    pub connect_to: Vec<(String, String)>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset (from `--zap-log-level`).
    pub log_level: String,
    /// v1beta1 defaults and overrides from the environment.
    pub env: EnvDefaults,
}

/// Upstream's environment variables (spec §5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvDefaults {
    /// `ACR_SERVER`: v1beta1 registry when the spec has none.
    pub acr_server: String,
    /// `MANAGED_IDENTITY_CLIENT_ID`: v1beta1 identity default.
    pub managed_identity_client_id: String,
    /// `MANAGED_IDENTITY_RESOURCE_ID`: v1beta1 identity default.
    pub managed_identity_resource_id: String,
    /// `ARM_RESOURCE`: v1beta1 IMDS resource override.
    pub arm_resource: Option<String>,
}

/// Default IMDS endpoint: the link-local metadata address.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Upstream's Lease name; kept so old and new replicas never both lead during a swap.
pub const DEFAULT_LEADER_ELECTION_ID: &str = "aks.azure.com";
/// Upstream's TokenRequest audience.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "api://AzureCRTokenExchange";

impl Default for Config {
    fn default() -> Self {
        Config {
            metrics_bind_address: Some(":8080".into()),
            health_probe_bind_address: Some(":8081".into()),
            leader_elect: false,
            leader_election_id: DEFAULT_LEADER_ELECTION_ID.into(),
            leader_election_namespace: None,
            service_account_token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            ttl_rotation_fraction: 0.5,
            label_selector: String::new(),
            allowed_acr_server_suffixes: None,
            kubeconfig: None,
            identity_policy: None,
            imds_endpoint: DEFAULT_IMDS_ENDPOINT.into(),
            authority_host: None,
            entra_audience: EntraAudience::Arm,
            // 50/s with a burst of 100: ten times upstream's client-go default (5/10 per controller
            // pair, i.e. 20/s), still far below what one API server serves a single client.
            kube_api_qps: 50.0,
            kube_api_burst: 100,
            workers: 4,
            connect_to: Vec::new(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            env: EnvDefaults::default(),
        }
    }
}

// The views of the configuration that the controller and `acrpull check` share, so the two read
// the same flags the same way.
impl Config {
    /// What decoding a binding needs from the environment and flags.
    pub fn v1beta1_defaults(&self) -> V1beta1Defaults {
        V1beta1Defaults {
            acr_server: self.env.acr_server.clone(),
            client_id: self.env.managed_identity_client_id.clone(),
            resource_id: self.env.managed_identity_resource_id.clone(),
            arm_resource: self
                .env
                .arm_resource
                .clone()
                .unwrap_or_else(|| V1BETA1_ARM_RESOURCE.to_string()),
            acr_audience: self.entra_audience == EntraAudience::Acr,
        }
    }

    /// The token flow's flags.
    pub fn flow_config(&self) -> FlowConfig {
        FlowConfig {
            acr_audience: self.entra_audience == EntraAudience::Acr,
            authority_host: self.authority_host.clone(),
            token_audience: self.service_account_token_audience.clone(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the controller.
    Run(Box<Config>),
    /// Print usage and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// `acrpull check`: run one binding's token flow and report each step.
    Check(Box<CheckArgs>),
    /// `acrpull check --help`.
    CheckHelp,
}

/// A command line that cannot be run; the process exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A flag we do not know.
    UnknownFlag(String),
    /// A flag that needs a value got none.
    MissingValue(String),
    /// A flag value that does not parse or is out of range.
    InvalidValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A positional argument where none is accepted.
    UnexpectedArgument(String),
    /// `acrpull check` flags that do not name one binding.
    CheckTarget(&'static str),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownFlag(n) => write!(f, "unknown flag: {n}"),
            UsageError::MissingValue(n) => write!(f, "flag needs a value: --{n}"),
            UsageError::InvalidValue {
                flag,
                value,
                expected,
            } => write!(
                f,
                "invalid value {value:?} for --{flag}: expected {expected}"
            ),
            UsageError::UnexpectedArgument(a) => write!(f, "unexpected argument: {a}"),
            UsageError::CheckTarget(why) => write!(f, "check: {why}"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Every flag with its help text, in the order `--help` lists them. Booleans are marked.
const FLAGS: &[(&str, bool, &str)] = &[
    ("metrics-bind-address", false, "address for /metrics; \"0\" disables (default \":8080\")"),
    ("health-probe-bind-address", false, "address for /healthz and /readyz; \"0\" disables (default \":8081\")"),
    ("leader-elect", true, "elect a leader through a Lease before doing any work (default false)"),
    ("leader-election-id", false, "name of the Lease (default \"aks.azure.com\")"),
    ("leader-election-namespace", false, "namespace of the Lease (default: the pod's namespace)"),
    ("service-account-token-audience", false, "audience of ServiceAccount tokens for workload identity (default \"api://AzureCRTokenExchange\")"),
    ("ttl-rotation-fraction", false, "fraction of a v1beta2 token's lifetime after which it is refreshed, 0 < f <= 1 (default 0.5)"),
    ("label-selector", false, "only reconcile bindings matching this label selector (default: all)"),
    ("allowed-acr-server-suffixes", false, "comma-separated registry suffixes tokens may be sent to; repeatable; \"*\" allows any (default azurecr.io,azurecr.us,azurecr.cn)"),
    ("kubeconfig", false, "kubeconfig file (default: $KUBECONFIG, then in-cluster)"),
    ("identity-policy", false, "JSON file saying which namespaces may use which identities with which registries; re-read when it changes (default: no policy)"),
    ("imds-endpoint", false, "Instance Metadata Service base URL (default \"http://169.254.169.254\"; $AZURE_POD_IDENTITY_AUTHORITY_HOST overrides)"),
    ("authority-host", false, "Entra authority host for every cloud, e.g. https://login.example/ (default: per cloud)"),
    ("entra-audience", false, "audience of Entra and IMDS tokens: arm or acr (default arm)"),
    ("kube-api-qps", false, "client-side Kubernetes API rate limit, requests per second; 0 = unlimited (default 50)"),
    ("kube-api-burst", false, "client-side Kubernetes API burst (default 100)"),
    ("workers", false, "reconcile worker threads (default 4)"),
    ("connect-to", false, "HOST=ADDR:PORT: connect to ADDR:PORT for HOST (or *.SUFFIX); repeatable"),
    ("log-format", false, "text or json (default text)"),
    ("zap-log-level", false, "log level when RUST_LOG is unset: debug, info, error or a number (upstream compatibility)"),
    ("zap-devel", true, "accepted for upstream compatibility; ignored"),
    ("zap-encoder", false, "console or json (upstream compatibility; json = --log-format json)"),
    ("zap-stacktrace-level", false, "accepted for upstream compatibility; ignored"),
    ("zap-time-encoding", false, "accepted for upstream compatibility; ignored"),
];

/// The `--help` text.
pub fn usage() -> String {
    let mut s = String::from(
        "acrpull: keeps Azure Container Registry pull secrets fresh for AcrPullBinding objects.\n\n\
         Usage: acrpull [flags]\n       acrpull check [flags]   (diagnose one binding; see acrpull check --help)\n       \
         acrpull --version\n\nFlags:\n",
    );
    for (name, boolean, help) in FLAGS {
        let arg = if *boolean { "" } else { " <value>" };
        s.push_str(&format!("  --{name}{arg}\n      {help}\n"));
    }
    s.push_str(
        "\nEnvironment:\n  RUST_LOG                      log filter, e.g. info or acrpull=debug\n  \
         ACR_SERVER                    v1beta1 registry when a binding names none\n  \
         MANAGED_IDENTITY_CLIENT_ID    v1beta1 default identity (client ID)\n  \
         MANAGED_IDENTITY_RESOURCE_ID  v1beta1 default identity (resource ID)\n  \
         ARM_RESOURCE                  v1beta1 IMDS resource (default https://management.azure.com/)\n  \
         AZURE_POD_IDENTITY_AUTHORITY_HOST  IMDS base URL override\n  \
         SSL_CERT_FILE                 extra CA certificates for Entra and registries\n  \
         HTTPS_PROXY, NO_PROXY         proxy for Entra and registry traffic (never for IMDS)\n  \
         POD_NAME                      leader-election identity\n",
    );
    s
}

/// Parses arguments (without the program name) and environment lookups into a command.
pub fn parse<I, S>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut cfg = Config {
        env: EnvDefaults {
            acr_server: env("ACR_SERVER").unwrap_or_default(),
            managed_identity_client_id: env("MANAGED_IDENTITY_CLIENT_ID").unwrap_or_default(),
            managed_identity_resource_id: env("MANAGED_IDENTITY_RESOURCE_ID").unwrap_or_default(),
            arm_resource: env("ARM_RESOURCE").filter(|v| !v.trim().is_empty()),
        },
        ..Config::default()
    };
    if let Some(host) = env("AZURE_POD_IDENTITY_AUTHORITY_HOST").filter(|v| !v.is_empty()) {
        cfg.imds_endpoint = host;
    }
    let mut imds_from_flag = None;
    let mut args = args.into_iter().map(Into::into).peekable();
    let check = args.next_if(|a| a == "check").is_some();
    let mut check_flags = CheckFlags::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "-help" | "--help" if check => return Ok(Command::CheckHelp),
            "-h" | "-help" | "--help" => return Ok(Command::Help),
            "-version" | "--version" | "-V" => return Ok(Command::Version),
            _ => {}
        }
        // Go's flag package accepts one or two dashes; upstream's manifests use both.
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(UsageError::UnexpectedArgument(arg));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        let check_flag = check && CHECK_FLAGS.iter().any(|(n, _)| *n == name);
        let boolean = if check_flag {
            &false
        } else {
            let Some((_, boolean, _)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
                return Err(UsageError::UnknownFlag(arg));
            };
            boolean
        };
        let value = if *boolean {
            inline.unwrap_or_else(|| "true".into())
        } else {
            match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| UsageError::MissingValue(name.clone()))?,
            }
        };
        if check_flag {
            check_flags.apply(&name, value)?;
        } else {
            apply(&mut cfg, &name, value, &mut imds_from_flag)?;
        }
    }
    if let Some(v) = imds_from_flag {
        cfg.imds_endpoint = v;
    }
    if check {
        return Ok(Command::Check(Box::new(check_flags.finish(cfg)?)));
    }
    Ok(Command::Run(Box::new(cfg)))
}

fn invalid(flag: &str, value: &str, expected: &'static str) -> UsageError {
    UsageError::InvalidValue {
        flag: flag.into(),
        value: value.into(),
        expected,
    }
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(flag, v, "true or false")),
    }
}

fn bind_address(v: String) -> Option<String> {
    (v != "0").then_some(v)
}

/// Splits a repeatable comma-separated flag value: items trimmed, empties dropped (upstream's
/// `commaSeparatedValues`).
pub fn comma_separated(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn apply(
    cfg: &mut Config,
    name: &str,
    v: String,
    imds_from_flag: &mut Option<String>,
) -> Result<(), UsageError> {
    match name {
        "metrics-bind-address" => cfg.metrics_bind_address = bind_address(v),
        "health-probe-bind-address" => cfg.health_probe_bind_address = bind_address(v),
        "leader-elect" => cfg.leader_elect = parse_bool(name, &v)?,
        "leader-election-id" if !v.trim().is_empty() => cfg.leader_election_id = v,
        "leader-election-id" => return Err(invalid(name, &v, "a Lease name")),
        "leader-election-namespace" => cfg.leader_election_namespace = Some(v),
        "service-account-token-audience" if !v.trim().is_empty() => {
            cfg.service_account_token_audience = v
        }
        "service-account-token-audience" => return Err(invalid(name, &v, "an audience")),
        "ttl-rotation-fraction" => {
            let f: f64 = v
                .trim()
                .parse()
                .map_err(|_| invalid(name, &v, "a number in (0, 1]"))?;
            // Upstream accepted anything: 0 mints continuously, above 1 refreshes after expiry.
            if !(f > 0.0 && f <= 1.0) {
                return Err(invalid(name, &v, "a number in (0, 1]"));
            }
            cfg.ttl_rotation_fraction = f;
        }
        "label-selector" => cfg.label_selector = v.trim().to_string(),
        "allowed-acr-server-suffixes" => cfg
            .allowed_acr_server_suffixes
            .get_or_insert_with(Vec::new)
            .extend(comma_separated(&v)),
        "kubeconfig" if !v.is_empty() => cfg.kubeconfig = Some(PathBuf::from(v)),
        "kubeconfig" => {}
        "identity-policy" if !v.trim().is_empty() => cfg.identity_policy = Some(PathBuf::from(v)),
        "identity-policy" => return Err(invalid(name, &v, "a file path")),
        "imds-endpoint" => {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(invalid(name, &v, "an http:// or https:// URL"));
            }
            *imds_from_flag = Some(v.trim_end_matches('/').to_string());
        }
        "authority-host" => {
            if !v.starts_with("https://") {
                return Err(invalid(name, &v, "an https:// URL"));
            }
            let mut h = v;
            if !h.ends_with('/') {
                h.push('/');
            }
            cfg.authority_host = Some(h);
        }
        "entra-audience" => {
            cfg.entra_audience = match v.as_str() {
                "arm" => EntraAudience::Arm,
                "acr" => EntraAudience::Acr,
                _ => return Err(invalid(name, &v, "arm or acr")),
            }
        }
        "kube-api-qps" => {
            let q: f64 = v.parse().map_err(|_| invalid(name, &v, "a number >= 0"))?;
            if !(q >= 0.0 && q.is_finite()) {
                return Err(invalid(name, &v, "a number >= 0"));
            }
            cfg.kube_api_qps = q;
        }
        "kube-api-burst" => {
            cfg.kube_api_burst = v.parse().map_err(|_| invalid(name, &v, "a whole number"))?
        }
        "workers" => {
            let n: usize = v
                .parse()
                .map_err(|_| invalid(name, &v, "a whole number from 1 to 64"))?;
            if !(1..=64).contains(&n) {
                return Err(invalid(name, &v, "a whole number from 1 to 64"));
            }
            cfg.workers = n;
        }
        "connect-to" => {
            let (host, addr) = v
                .split_once('=')
                .filter(|(h, a)| !h.is_empty() && a.parse::<std::net::SocketAddr>().is_ok())
                .ok_or_else(|| invalid(name, &v, "HOST=ADDR:PORT"))?;
            cfg.connect_to
                .push((host.to_ascii_lowercase(), addr.to_string()));
        }
        "log-format" => {
            cfg.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid(name, &v, "text or json")),
            }
        }
        "zap-encoder" => {
            cfg.log_format = match v.as_str() {
                "console" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid(name, &v, "console or json")),
            }
        }
        "zap-log-level" => {
            cfg.log_level = match v.as_str() {
                "debug" => "debug".into(),
                "info" => "info".into(),
                "error" => "error".into(),
                n => match n.parse::<i32>() {
                    // zap levels are negative numbers for verbosity: 1 = info, 2+ = debug/trace.
                    Ok(i) if i <= 1 => "info".into(),
                    Ok(2) => "debug".into(),
                    Ok(_) => "trace".into(),
                    Err(_) => return Err(invalid(name, &v, "debug, info, error or a number")),
                },
            }
        }
        "zap-devel" => {
            parse_bool(name, &v)?;
        }
        "zap-stacktrace-level" | "zap-time-encoding" => {}
        _ => return Err(UsageError::UnknownFlag(format!("--{name}"))),
    }
    Ok(())
}

// ---- `acrpull check` ----

/// How `acrpull check` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One block per step, for people.
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// A binding described on the command line instead of read from the cluster (always v1beta2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagBinding {
    /// `--registry`: the server as a binding would name it.
    pub registry: String,
    /// `--scope`: space-separated registry scopes.
    pub scope: String,
    /// `--client-id`: a user-assigned identity by client ID.
    pub client_id: Option<String>,
    /// `--resource-id`: a user-assigned identity by ARM resource ID.
    pub resource_id: Option<String>,
    /// `--environment`: the cloud (default `PublicCloud`).
    pub environment: String,
}

/// Which binding `acrpull check` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// Read from the cluster.
    Cluster {
        /// `--namespace` (default `default`).
        namespace: String,
        /// `--name`.
        name: String,
        /// `--kind` (default v1beta2).
        version: ApiVersion,
    },
    /// Given by flags.
    Flags(FlagBinding),
}

/// Everything `acrpull check` needs: the controller's global flags plus the binding to check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckArgs {
    /// Global flags (`--kubeconfig`, `--imds-endpoint`, `--connect-to`, allow-list, audience…).
    pub config: Config,
    /// The binding.
    pub target: CheckTarget,
    /// `--output`.
    pub output: OutputFormat,
}

/// `acrpull check`'s own flags with their help text; every flag takes a value.
const CHECK_FLAGS: &[(&str, &str)] = &[
    ("namespace", "namespace of the binding to read from the cluster (default \"default\")"),
    ("name", "name of the binding to read from the cluster"),
    ("kind", "API version of that binding: v1beta2 (acrpull.microsoft.com) or v1beta1 (msi-acrpull.microsoft.com) (default v1beta2)"),
    ("registry", "check this registry instead of a cluster binding, e.g. myregistry.azurecr.io"),
    ("scope", "with --registry: registry scopes, e.g. \"repository:app:pull\""),
    ("client-id", "with --registry: user-assigned identity by client ID (default: the node's system-assigned identity)"),
    ("resource-id", "with --registry: user-assigned identity by ARM resource ID"),
    ("environment", "with --registry: PublicCloud, USGovernmentCloud or ChinaCloud (default PublicCloud)"),
    ("output", "text or json (default text)"),
];

/// The controller flags that matter to `acrpull check` (the others are accepted and ignored).
const CHECK_GLOBAL_FLAGS: [&str; 7] = [
    "kubeconfig",
    "imds-endpoint",
    "connect-to",
    "entra-audience",
    "allowed-acr-server-suffixes",
    "authority-host",
    "service-account-token-audience",
];

/// `acrpull check`'s flags as given, before they are checked to name exactly one binding.
#[derive(Debug, Default)]
struct CheckFlags {
    namespace: Option<String>,
    name: Option<String>,
    kind: Option<ApiVersion>,
    registry: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    resource_id: Option<String>,
    environment: Option<String>,
    output: Option<OutputFormat>,
}

impl CheckFlags {
    fn apply(&mut self, name: &str, v: String) -> Result<(), UsageError> {
        let non_empty = |v: String| {
            if v.trim().is_empty() {
                Err(invalid(name, &v, "a non-empty value"))
            } else {
                Ok(v.trim().to_string())
            }
        };
        match name {
            "namespace" => self.namespace = Some(non_empty(v)?),
            "name" => self.name = Some(non_empty(v)?),
            "kind" => {
                self.kind = Some(match v.as_str() {
                    "v1beta2" | "acrpull.microsoft.com/v1beta2" => ApiVersion::V1beta2,
                    "v1beta1" | "msi-acrpull.microsoft.com/v1beta1" => ApiVersion::V1beta1,
                    _ => return Err(invalid(name, &v, "v1beta2 or v1beta1")),
                })
            }
            "registry" => self.registry = Some(non_empty(v)?),
            "scope" => self.scope = Some(non_empty(v)?),
            "client-id" => self.client_id = Some(non_empty(v)?),
            "resource-id" => self.resource_id = Some(non_empty(v)?),
            "environment" => {
                if !matches!(
                    v.as_str(),
                    "PublicCloud" | "USGovernmentCloud" | "ChinaCloud"
                ) {
                    return Err(invalid(
                        name,
                        &v,
                        "PublicCloud, USGovernmentCloud or ChinaCloud",
                    ));
                }
                self.environment = Some(v)
            }
            "output" => {
                self.output = Some(match v.as_str() {
                    "text" => OutputFormat::Text,
                    "json" => OutputFormat::Json,
                    _ => return Err(invalid(name, &v, "text or json")),
                })
            }
            _ => return Err(UsageError::UnknownFlag(format!("--{name}"))),
        }
        Ok(())
    }

    /// Checks that the flags name exactly one binding, from the cluster or from the flags.
    fn finish(self, config: Config) -> Result<CheckArgs, UsageError> {
        let output = self.output.unwrap_or(OutputFormat::Text);
        let given = self.scope.is_some()
            || self.client_id.is_some()
            || self.resource_id.is_some()
            || self.environment.is_some();
        let target = match (self.name, self.registry) {
            (Some(_), Some(_)) => {
                return Err(UsageError::CheckTarget(
                    "--name reads a binding from the cluster; it cannot be combined with --registry",
                ))
            }
            (None, None) => {
                return Err(UsageError::CheckTarget(
                    "name a binding with --name (and --namespace), or describe one with --registry and --scope",
                ))
            }
            (Some(_), None) if given => {
                return Err(UsageError::CheckTarget(
                    "--scope, --client-id, --resource-id and --environment describe a binding given by --registry",
                ))
            }
            (Some(name), None) => CheckTarget::Cluster {
                namespace: self.namespace.unwrap_or_else(|| "default".into()),
                name,
                version: self.kind.unwrap_or(ApiVersion::V1beta2),
            },
            (None, Some(_)) if self.namespace.is_some() || self.kind.is_some() => {
                return Err(UsageError::CheckTarget(
                    "--namespace and --kind go with --name, not --registry",
                ))
            }
            (None, Some(registry)) => {
                if self.client_id.is_some() && self.resource_id.is_some() {
                    return Err(UsageError::CheckTarget(
                        "--client-id and --resource-id cannot be combined",
                    ));
                }
                let Some(scope) = self.scope else {
                    return Err(UsageError::CheckTarget("--registry needs --scope"));
                };
                CheckTarget::Flags(FlagBinding {
                    registry,
                    scope,
                    client_id: self.client_id,
                    resource_id: self.resource_id,
                    environment: self.environment.unwrap_or_else(|| "PublicCloud".into()),
                })
            }
        };
        Ok(CheckArgs {
            config,
            target,
            output,
        })
    }
}

/// The `acrpull check --help` text.
pub fn check_usage() -> String {
    let mut s = String::from(
        "acrpull check: runs the token flow of one AcrPullBinding step by step and reports each step\n\
         (identity, Entra token audience and expiry, registry token expiry and granted access) without\n\
         ever printing a token. Exit code 0 when every step works, 1 when one fails, 2 on bad flags.\n\n\
         Usage: acrpull check --name <binding> [--namespace <ns>] [--kind v1beta2|v1beta1] [flags]\n       \
         acrpull check --registry <server> --scope <scope> [--client-id <id> | --resource-id <id>] [flags]\n\n\
         Flags:\n",
    );
    for (name, help) in CHECK_FLAGS {
        s.push_str(&format!("  --{name} <value>\n      {help}\n"));
    }
    s.push_str("\nController flags used by check (the others are accepted and ignored):\n");
    for name in CHECK_GLOBAL_FLAGS {
        if let Some((_, _, help)) = FLAGS.iter().find(|(n, _, _)| *n == name) {
            s.push_str(&format!("  --{name} <value>\n      {help}\n"));
        }
    }
    s.push_str(
        "\nEnvironment: ACR_SERVER, MANAGED_IDENTITY_CLIENT_ID, MANAGED_IDENTITY_RESOURCE_ID and ARM_RESOURCE\n\
         complete v1beta1 bindings as in the controller; SSL_CERT_FILE, HTTPS_PROXY and NO_PROXY apply.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn run(args: &[&str]) -> Result<Config, UsageError> {
        match parse(args.iter().copied(), &no_env)? {
            Command::Run(c) => Ok(*c),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        assert_eq!(run(&[]).unwrap(), Config::default());
    }

    #[test]
    fn upstream_deployment_arguments_parse() {
        let c = run(&[
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=127.0.0.1:8080",
            "--leader-elect",
            "--ttl-rotation-fraction=0.5",
            "--allowed-acr-server-suffixes=azurecr.io",
        ])
        .unwrap();
        assert!(c.leader_elect);
        assert_eq!(c.metrics_bind_address.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            c.allowed_acr_server_suffixes,
            Some(vec!["azurecr.io".into()])
        );
    }

    #[test]
    fn single_dash_and_separate_values_are_accepted() {
        let c = run(&["-label-selector", "tier=a", "-leader-elect=false"]).unwrap();
        assert_eq!(c.label_selector, "tier=a");
        assert!(!c.leader_elect);
    }

    #[test]
    fn comma_separated_values_trim_and_drop_empties() {
        assert!(comma_separated("").is_empty());
        assert_eq!(comma_separated("azurecr.io"), vec!["azurecr.io"]);
        assert_eq!(
            comma_separated(" azurecr.io, , azurecr.cn "),
            vec!["azurecr.io", "azurecr.cn"]
        );
    }

    #[test]
    fn repeated_suffix_flags_accumulate() {
        let c = run(&[
            "--allowed-acr-server-suffixes=azurecr.io,azurecr.cn",
            "--allowed-acr-server-suffixes",
            "azurecr.de",
        ])
        .unwrap();
        assert_eq!(
            c.allowed_acr_server_suffixes,
            Some(vec![
                "azurecr.io".into(),
                "azurecr.cn".into(),
                "azurecr.de".into()
            ])
        );
    }

    #[test]
    fn ttl_fraction_outside_zero_to_one_is_a_usage_error() {
        for bad in ["0", "-0.1", "1.01", "nan", "x"] {
            let arg = format!("--ttl-rotation-fraction={bad}");
            assert!(
                matches!(run(&[&arg]), Err(UsageError::InvalidValue { .. })),
                "{bad} must be refused"
            );
        }
        assert_eq!(
            run(&["--ttl-rotation-fraction=1"])
                .unwrap()
                .ttl_rotation_fraction,
            1.0
        );
    }

    #[test]
    fn unknown_flag_and_missing_value_are_usage_errors() {
        assert_eq!(
            run(&["--nope"]),
            Err(UsageError::UnknownFlag("--nope".into()))
        );
        assert_eq!(
            run(&["--label-selector"]),
            Err(UsageError::MissingValue("label-selector".into()))
        );
        assert!(matches!(
            run(&["positional"]),
            Err(UsageError::UnexpectedArgument(_))
        ));
    }

    #[test]
    fn identity_policy_takes_a_path() {
        let c = run(&["--identity-policy=/etc/acrpull/policy.json"]).unwrap();
        assert_eq!(
            c.identity_policy,
            Some(PathBuf::from("/etc/acrpull/policy.json"))
        );
        assert!(run(&["--identity-policy="]).is_err());
    }

    #[test]
    fn zero_disables_the_listeners() {
        let c = run(&["--metrics-bind-address=0", "--health-probe-bind-address=0"]).unwrap();
        assert_eq!(c.metrics_bind_address, None);
        assert_eq!(c.health_probe_bind_address, None);
    }

    #[test]
    fn environment_defaults_are_read() {
        let env = |k: &str| match k {
            "ACR_SERVER" => Some("r.azurecr.io".to_string()),
            "MANAGED_IDENTITY_CLIENT_ID" => Some("cid".to_string()),
            "ARM_RESOURCE" => Some("https://management.usgovcloudapi.net/".to_string()),
            "AZURE_POD_IDENTITY_AUTHORITY_HOST" => Some("http://127.0.0.1:9".to_string()),
            _ => None,
        };
        let Ok(Command::Run(c)) = parse(Vec::<String>::new(), &env) else {
            panic!("expected run");
        };
        assert_eq!(c.env.acr_server, "r.azurecr.io");
        assert_eq!(c.env.managed_identity_client_id, "cid");
        assert_eq!(
            c.env.arm_resource.as_deref(),
            Some("https://management.usgovcloudapi.net/")
        );
        assert_eq!(c.imds_endpoint, "http://127.0.0.1:9");
    }

    #[test]
    fn imds_flag_beats_the_environment() {
        let env = |k: &str| {
            (k == "AZURE_POD_IDENTITY_AUTHORITY_HOST").then(|| "http://127.0.0.1:9".to_string())
        };
        let Ok(Command::Run(c)) = parse(["--imds-endpoint=http://127.0.0.1:7/"], &env) else {
            panic!("expected run");
        };
        assert_eq!(c.imds_endpoint, "http://127.0.0.1:7");
    }

    #[test]
    fn connect_to_needs_a_socket_address() {
        let c = run(&["--connect-to=*.AzureCR.io=127.0.0.1:8443"]).unwrap();
        assert_eq!(
            c.connect_to,
            vec![("*.azurecr.io".into(), "127.0.0.1:8443".into())]
        );
        assert!(run(&["--connect-to=host=nowhere"]).is_err());
    }

    #[test]
    fn help_lists_every_flag() {
        let u = usage();
        for (name, _, _) in FLAGS {
            assert!(u.contains(&format!("--{name}")), "{name} missing from help");
        }
        assert_eq!(parse(["--help"], &no_env), Ok(Command::Help));
        assert_eq!(parse(["--version"], &no_env), Ok(Command::Version));
    }
    fn check(args: &[&str]) -> Result<CheckArgs, UsageError> {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        match parse(all, &no_env)? {
            Command::Check(c) => Ok(*c),
            other => panic!("expected check, got {other:?}"),
        }
    }

    #[test]
    fn check_by_name_reads_a_v1beta2_binding_in_default_unless_told() {
        let c = check(&["--name", "app"]).unwrap();
        assert_eq!(
            c.target,
            CheckTarget::Cluster {
                namespace: "default".into(),
                name: "app".into(),
                version: ApiVersion::V1beta2
            }
        );
        assert_eq!(c.output, OutputFormat::Text);
        let c = check(&[
            "--name=app",
            "--namespace=team",
            "--kind=v1beta1",
            "--output=json",
        ])
        .unwrap();
        assert_eq!(
            c.target,
            CheckTarget::Cluster {
                namespace: "team".into(),
                name: "app".into(),
                version: ApiVersion::V1beta1
            }
        );
        assert_eq!(c.output, OutputFormat::Json);
    }

    #[test]
    fn check_by_flags_describes_a_binding_and_keeps_the_controller_flags() {
        let c = check(&[
            "--kubeconfig=/k",
            "--metrics-bind-address=0",
            "--imds-endpoint=http://127.0.0.1:9",
            "--connect-to=*.azurecr.io=127.0.0.1:8443",
            "--allowed-acr-server-suffixes=azurecr.io",
            "--entra-audience=acr",
            "--registry=r.azurecr.io",
            "--scope",
            "repository:app:pull",
            "--resource-id=/subscriptions/s/id",
        ])
        .unwrap();
        assert_eq!(
            c.target,
            CheckTarget::Flags(FlagBinding {
                registry: "r.azurecr.io".into(),
                scope: "repository:app:pull".into(),
                client_id: None,
                resource_id: Some("/subscriptions/s/id".into()),
                environment: "PublicCloud".into(),
            })
        );
        assert_eq!(c.config.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(c.config.imds_endpoint, "http://127.0.0.1:9");
        assert_eq!(c.config.entra_audience, EntraAudience::Acr);
        assert_eq!(c.config.connect_to.len(), 1);
        assert_eq!(
            c.config.allowed_acr_server_suffixes,
            Some(vec!["azurecr.io".into()])
        );
    }

    #[test]
    fn check_needs_exactly_one_binding() {
        for bad in [
            &[][..],
            &["--name=a", "--registry=r.azurecr.io"][..],
            &["--name=a", "--scope=repository:a:pull"][..],
            &["--registry=r.azurecr.io"][..],
            &["--registry=r.azurecr.io", "--scope=s", "--namespace=x"][..],
            &[
                "--registry=r.azurecr.io",
                "--scope=s",
                "--client-id=c",
                "--resource-id=r",
            ][..],
        ] {
            assert!(
                matches!(check(bad), Err(UsageError::CheckTarget(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn check_flag_values_are_validated() {
        assert!(matches!(
            check(&["--name=a", "--kind=v2"]),
            Err(UsageError::InvalidValue { .. })
        ));
        assert!(matches!(
            check(&["--registry=r", "--scope=s", "--environment=Mars"]),
            Err(UsageError::InvalidValue { .. })
        ));
        assert!(matches!(
            check(&["--name=a", "--output=yaml"]),
            Err(UsageError::InvalidValue { .. })
        ));
        assert!(matches!(
            check(&["--name="]),
            Err(UsageError::InvalidValue { .. })
        ));
    }

    #[test]
    fn check_flags_belong_to_check_only() {
        assert_eq!(
            run(&["--name=a"]),
            Err(UsageError::UnknownFlag("--name=a".into()))
        );
        assert!(matches!(
            parse(["--leader-elect", "check"], &no_env),
            Err(UsageError::UnexpectedArgument(_))
        ));
    }

    #[test]
    fn check_help_lists_its_flags_and_the_controller_flags_it_uses() {
        assert_eq!(parse(["check", "--help"], &no_env), Ok(Command::CheckHelp));
        let u = check_usage();
        for (name, _) in CHECK_FLAGS {
            assert!(
                u.contains(&format!("--{name} ")),
                "{name} missing from check help"
            );
        }
        for name in CHECK_GLOBAL_FLAGS {
            assert!(
                u.contains(&format!("--{name} ")),
                "{name} missing from check help"
            );
        }
        assert!(usage().contains("acrpull check"));
    }
}
