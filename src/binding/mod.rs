//! The two AcrPullBinding API versions decoded into one internal model.
//!
//! Decoding is tolerant: clusters may run without CRD validation (v1beta1 especially), so wrong
//! types or absurd sizes give typed errors naming the field, never a panic. Errors in `spec` stay
//! inside the model so a binding with a bad spec can still get a status error and be finalized.

use std::borrow::Cow;
use std::fmt;

use crate::binding::text::{share, Shared, Text};

use serde_json::Value;
use time::OffsetDateTime;

use crate::clock::rfc3339;

pub mod error;
pub mod hash;
pub mod names;
pub mod policy;
pub mod selector;
mod spec;

pub use error::{BindingError, TokenStep};
pub mod suffix;
pub mod text;
use spec::{decode_v1beta1, decode_v1beta2, v1beta1_target};

/// The finalizer both API versions share (upstream's name, kept for drop-in replacement).
pub const FINALIZER: &str = "msi-acrpull.microsoft.com";
/// The kind of both binding resources.
pub const KIND: &str = "AcrPullBinding";
/// The ServiceAccount a v1beta1 binding targets when it names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ARM resource v1beta1 asks IMDS for unless `ARM_RESOURCE` overrides it.
pub const V1BETA1_ARM_RESOURCE: &str = "https://management.azure.com/";
/// Longest string we accept in any spec field; real values are far shorter, and a cap keeps a
/// hostile object from making every reconcile hash megabytes.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// Which of the two unrelated binding resources an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiVersion {
    /// `msi-acrpull.microsoft.com/v1beta1` (legacy).
    V1beta1,
    /// `acrpull.microsoft.com/v1beta2`.
    V1beta2,
}

impl ApiVersion {
    /// The `apiVersion` string.
    pub const fn api_version(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "msi-acrpull.microsoft.com/v1beta1",
            ApiVersion::V1beta2 => "acrpull.microsoft.com/v1beta2",
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "msi-acrpull.microsoft.com",
            ApiVersion::V1beta2 => "acrpull.microsoft.com",
        }
    }

    /// The version within the group.
    pub fn version(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "v1beta1",
            ApiVersion::V1beta2 => "v1beta2",
        }
    }
}

/// The v1beta1 defaults taken from the environment (read elsewhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V1beta1Defaults {
    /// `ACR_SERVER`.
    pub acr_server: String,
    /// `MANAGED_IDENTITY_CLIENT_ID`.
    pub client_id: String,
    /// `MANAGED_IDENTITY_RESOURCE_ID`.
    pub resource_id: String,
    /// `ARM_RESOURCE` (empty = `https://management.azure.com/`).
    pub arm_resource: String,
    /// `--entra-audience=acr`: tokens are asked for the registry audience. Not a v1beta1 default
    /// as such, but decoding needs it for the inputs hash of both versions (appended only when
    /// set, so upstream's hash is kept otherwise).
    pub acr_audience: bool,
}

/// Object metadata we act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Namespace.
    pub namespace: Shared,
    /// Name.
    pub name: String,
    /// UID: ownership of Secrets is checked against it.
    pub uid: String,
    /// resourceVersion at observation.
    pub resource_version: String,
    /// metadata.generation (0 when absent).
    pub generation: i64,
    /// Finalizers (non-string entries are dropped).
    pub finalizers: Vec<String>,
    /// Whether `deletionTimestamp` is set.
    pub deleting: bool,
}

/// The status we own and write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// When the Secret's token was obtained.
    pub last_token_refresh_time: Option<OffsetDateTime>,
    /// When the Secret's token expires.
    pub token_expiration_time: Option<OffsetDateTime>,
    /// The current error, `None` when empty or absent.
    pub error: Option<String>,
    /// Our `Ready` condition as observed.
    pub ready: Option<OwnCondition>,
    /// Our `TokenValid` condition as observed.
    pub token_valid: Option<OwnCondition>,
    /// Whether either of ours appeared more than once (the list needs rewriting).
    pub own_duplicated: bool,
    /// Conditions other tools set, kept whole so a status write preserves them.
    pub foreign: Vec<Condition>,
    /// `status.observedGeneration` as observed.
    pub observed_generation: Option<i64>,
}

/// One of acrpull's own conditions as observed, reduced to what a pass needs: its status and
/// transition time (kept while the status holds) and a digest of the whole entry (to tell
/// whether a write would change it). The reason and message are not kept: thousands of bindings
/// each holding their own copies was a tenth of acrpull's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnCondition {
    /// `True`, `False` or `Unknown`.
    pub status: Text,
    /// When `status` last changed, RFC 3339 as written.
    pub last_transition_time: Text,
    /// [`Condition::digest`] of the entry.
    pub digest: u64,
}

/// One entry of `status.conditions`, as Kubernetes' `metav1.Condition` has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `Ready` or `TokenValid`.
    pub type_: Text,
    /// `True`, `False` or `Unknown`.
    pub status: Text,
    /// CamelCase reason.
    pub reason: Text,
    /// Human-readable detail.
    pub message: Text,
    /// When `status` last changed, RFC 3339 as written.
    pub last_transition_time: Text,
    /// The generation the condition was computed for.
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A digest of every field, equal for equal conditions; stable within one process, which is
    /// all it is compared across.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        for field in [
            &self.type_,
            &self.status,
            &self.reason,
            &self.message,
            &self.last_transition_time,
        ] {
            field.as_ref().hash(&mut h);
        }
        self.observed_generation.hash(&mut h);
        h.finish()
    }
}

/// Air-gapped cloud endpoints (`spec.acr.cloudConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    /// Entra authority host, e.g. `https://login.example/`.
    pub entra_authority_host: String,
    /// ARM audience used as the IMDS resource / Entra scope base.
    pub resource_manager_audience: String,
}

/// The Azure cloud a v1beta2 binding lives in.
// The variants are the API's own environment names.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Environment {
    /// Azure public cloud.
    PublicCloud,
    /// Azure US Government.
    USGovernmentCloud,
    /// Azure China.
    ChinaCloud,
    /// A custom cloud; `None` when `cloudConfig` is missing (a spec error, never a crash).
    /// Boxed: rare, and inline it would double the size of every binding's record.
    AirgappedCloud(Option<Box<CloudConfig>>),
}

impl Environment {
    /// The name as written in the spec (part of the inputs hash).
    pub fn name(&self) -> &'static str {
        match self {
            Environment::PublicCloud => "PublicCloud",
            Environment::USGovernmentCloud => "USGovernmentCloud",
            Environment::ChinaCloud => "ChinaCloud",
            Environment::AirgappedCloud(_) => "AirgappedCloud",
        }
    }

    /// The Entra authority host (spec §4.4), `None` for air-gapped without `cloudConfig`.
    pub fn authority_host(&self) -> Option<&str> {
        match self {
            Environment::PublicCloud => Some("https://login.microsoftonline.com/"),
            Environment::USGovernmentCloud => Some("https://login.microsoftonline.us/"),
            Environment::ChinaCloud => Some("https://login.chinacloudapi.cn/"),
            Environment::AirgappedCloud(c) => c.as_ref().map(|c| c.entra_authority_host.as_str()),
        }
    }

    /// The ARM audience (spec §4.4), `None` for air-gapped without `cloudConfig`.
    pub fn arm_audience(&self) -> Option<&str> {
        match self {
            Environment::PublicCloud => Some("https://management.core.windows.net/"),
            Environment::USGovernmentCloud => Some("https://management.core.usgovcloudapi.net"),
            Environment::ChinaCloud => Some("https://management.core.chinacloudapi.cn"),
            Environment::AirgappedCloud(c) => {
                c.as_ref().map(|c| c.resource_manager_audience.as_str())
            }
        }
    }
}

/// How the binding authenticates to Entra.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A user-assigned managed identity by client ID (shared: many bindings use one identity).
    ManagedClientId(Shared),
    /// A user-assigned managed identity by ARM resource ID.
    ManagedResourceId(Shared),
    /// The node's system-assigned identity (v1beta2 `clientID: ""`, like upstream).
    SystemAssigned,
    /// Workload identity federation.
    Workload {
        /// The ServiceAccount whose token is exchanged (honoured, unlike upstream).
        service_account_ref: String,
        /// Explicit client ID (else the SA annotation).
        client_id: Option<String>,
        /// Explicit tenant ID (else the SA annotation).
        tenant_id: Option<String>,
    },
    /// Cross-tenant: the node identity's token for `api://AzureADTokenExchange` is the client
    /// assertion of an application in another tenant
    /// (`spec.auth.managedIdentity.federatedApplication`).
    FederatedApplication {
        /// The node identity whose token is the assertion.
        managed: ManagedIdentity,
        /// The application's tenant.
        tenant_id: String,
        /// The application (client) ID.
        client_id: String,
    },
}

/// A valid, resolved spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The registry server exactly as written (v1beta1: env-defaulted).
    pub server: Shared,
    /// Space-separated registry scopes; empty = v1beta1 unscoped (refresh token as password).
    pub scope: Shared,
    /// The identity that obtains the Entra token.
    pub identity: Identity,
    /// The cloud (v1beta1: always `PublicCloud`; its ARM resource is in `arm_resource`).
    pub environment: Environment,
    /// The IMDS resource / Entra audience; `None` for air-gapped without `cloudConfig`.
    pub arm_resource: Option<Shared>,
    /// The ServiceAccount receiving the pull secret.
    pub target_service_account: Shared,
    /// Upstream's change hash (spec §2.7/§2.8), stored in the Secret's `token.inputs`.
    pub inputs_hash: Shared,
}

impl Spec {
    /// A problem only visible after decoding (kept out of decoding so the object still loads).
    pub fn problem(&self) -> Option<SpecError> {
        match self.environment {
            Environment::AirgappedCloud(None) => Some(SpecError::AirgappedWithoutCloudConfig),
            _ => None,
        }
    }
}

/// A managed identity of the node, as IMDS is asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManagedIdentity {
    /// The node's system-assigned identity.
    System,
    /// A user-assigned identity by client ID.
    ClientId(String),
    /// A user-assigned identity by ARM resource ID.
    ResourceId(String),
}

/// One binding of either version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Which resource it is.
    pub version: ApiVersion,
    /// Its metadata.
    pub meta: Meta,
    /// Its spec, or why it is unusable.
    pub spec: Result<Spec, SpecError>,
    /// Its status as observed.
    pub status: Status,
    /// The target ServiceAccount when readable even if the spec is not (deletion needs it).
    pub target_service_account: Option<Shared>,
}

impl Binding {
    /// Decodes a whole object as the API server returns it.
    pub fn decode(
        version: ApiVersion,
        obj: &Value,
        defaults: &V1beta1Defaults,
    ) -> Result<Binding, DecodeError> {
        let obj = obj.as_object().ok_or(DecodeError::NotAnObject)?;
        if let Some(av) = obj.get("apiVersion") {
            if av.as_str() != Some(version.api_version()) {
                return Err(DecodeError::WrongApiVersion {
                    expected: version.api_version(),
                });
            }
        }
        let meta = decode_meta(obj.get("metadata"))?;
        let status = decode_status(obj.get("status"));
        let spec_value = obj.get("spec");
        let (spec, target) = match version {
            ApiVersion::V1beta1 => {
                let target = v1beta1_target(spec_value);
                (decode_v1beta1(spec_value, defaults), target)
            }
            ApiVersion::V1beta2 => {
                let target = spec_value
                    .and_then(|s| s.get("serviceAccountName"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty() && s.len() <= MAX_FIELD_BYTES)
                    .map(str::to_string);
                (decode_v1beta2(spec_value, defaults.acr_audience), target)
            }
        };
        Ok(Binding {
            version,
            meta,
            spec,
            status,
            target_service_account: target.as_deref().map(share),
        })
    }

    /// The Secret name this binding's version expects.
    pub fn secret_name(&self) -> String {
        match self.version {
            ApiVersion::V1beta1 => names::v1beta1_secret_name(&self.meta.name),
            ApiVersion::V1beta2 => names::v1beta2_secret_name(&self.meta.name),
        }
    }

    /// The value of the binding label on its Secrets.
    pub fn label_value(&self) -> String {
        names::binding_label_value(&self.meta.name)
    }

    /// Whether our finalizer is present.
    pub fn has_finalizer(&self) -> bool {
        self.meta.finalizers.iter().any(|f| f == FINALIZER)
    }
}

/// Why an object cannot be decoded at all (bad metadata); the binding is then skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The object is not a JSON object.
    NotAnObject,
    /// `apiVersion` is not the one being decoded.
    WrongApiVersion {
        /// The expected `apiVersion`.
        expected: &'static str,
    },
    /// A required metadata field is missing or empty.
    Missing {
        /// The field path.
        field: &'static str,
    },
    /// A metadata field has the wrong JSON type.
    WrongType {
        /// The field path.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotAnObject => f.write_str("binding is not a json object"),
            DecodeError::WrongApiVersion { expected } => {
                write!(f, "apiVersion is not {expected}")
            }
            DecodeError::Missing { field } => write!(f, "{field} is missing"),
            DecodeError::WrongType { field, expected } => {
                write!(f, "{field} must be {expected}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a spec cannot be used; shown to users in `status.error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// `spec` itself, or a required field, is missing.
    Missing {
        /// The field path.
        field: String,
    },
    /// A field has the wrong JSON type.
    WrongType {
        /// The field path.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A string field exceeds `MAX_FIELD_BYTES`.
    TooLong {
        /// The field path.
        field: String,
    },
    /// `spec.acr.environment` is not one of the four clouds.
    UnsupportedEnvironment,
    /// v1beta1 resolved neither a client ID nor a resource ID (upstream's text).
    NoIdentity,
    /// v1beta2 sets both or neither of managed and workload identity (the CRD's CEL text).
    AuthNotExactlyOne,
    /// v1beta2 managed identity sets both client and resource ID (the CRD's CEL text).
    ManagedIdentityBothIds,
    /// v1beta2 workload identity sets only one of client and tenant ID (the CRD's CEL text).
    WorkloadIdsNotPaired,
    /// `AirgappedCloud` without `cloudConfig` (a crash upstream).
    AirgappedWithoutCloudConfig,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Missing { field } => write!(f, "{field} is required"),
            SpecError::WrongType { field, expected } => write!(f, "{field} must be {expected}"),
            SpecError::TooLong { field } => {
                write!(f, "{field} is longer than {MAX_FIELD_BYTES} bytes")
            }
            SpecError::UnsupportedEnvironment => f.write_str(
                "spec.acr.environment must be one of PublicCloud, USGovernmentCloud, ChinaCloud, AirgappedCloud",
            ),
            SpecError::NoIdentity => f.write_str("either a client ID or a resource ID is required"),
            SpecError::AuthNotExactlyOne => f.write_str("only one authentication type can be set"),
            SpecError::ManagedIdentityBothIds => f.write_str("only client or resource ID can be set"),
            SpecError::WorkloadIdsNotPaired => f.write_str(
                "custom client and tenant identifiers must be provided together, if at all",
            ),
            SpecError::AirgappedWithoutCloudConfig => f.write_str(
                "a custom cloud configuration must be present for air-gapped cloud environments",
            ),
        }
    }
}

impl std::error::Error for SpecError {}

/// Go's `path.Clean`: collapse slashes, drop `.` and resolve `..`; `""` becomes `.`.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for elem in p.split('/') {
        match elem {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            e => parts.push(e),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

fn decode_meta(meta: Option<&Value>) -> Result<Meta, DecodeError> {
    let meta = match meta {
        None | Some(Value::Null) => return Err(DecodeError::Missing { field: "metadata" }),
        Some(m) => m.as_object().ok_or(DecodeError::WrongType {
            field: "metadata",
            expected: "an object",
        })?,
    };
    let required = |key: &'static str, field: &'static str| -> Result<String, DecodeError> {
        match meta.get(key) {
            None | Some(Value::Null) => Err(DecodeError::Missing { field }),
            Some(Value::String(s)) if s.is_empty() => Err(DecodeError::Missing { field }),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(DecodeError::WrongType {
                field,
                expected: "a string",
            }),
        }
    };
    let finalizers = meta
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Meta {
        namespace: share(&required("namespace", "metadata.namespace")?),
        name: required("name", "metadata.name")?,
        uid: required("uid", "metadata.uid")?,
        resource_version: required("resourceVersion", "metadata.resourceVersion")?,
        generation: meta.get("generation").and_then(Value::as_i64).unwrap_or(0),
        finalizers,
        deleting: meta.get("deletionTimestamp").is_some_and(|v| !v.is_null()),
    })
}

// Condition types and the fixed texts acrpull writes into them (decided in `plan::conditions`).

/// The binding's pull Secret is current and attached.
pub const READY: &str = "Ready";
/// The Secret holds a token that has not expired.
pub const TOKEN_VALID: &str = "TokenValid";

pub(crate) const READY_MESSAGE: &str =
    "the pull secret holds a current token and is attached to the service account";
pub(crate) const PENDING_MESSAGE: &str = "no token has been written yet";
pub(crate) const NO_TOKEN_MESSAGE: &str = "no registry token has been issued yet";

/// Every fixed string acrpull writes into a condition, so observed conditions can borrow them.
const KNOWN: &[&str] = &[
    READY,
    TOKEN_VALID,
    "True",
    "False",
    "Unknown",
    "PullSecretReady",
    "Pending",
    "TokenExpired",
    "NoToken",
    "ServiceAccountNotFound",
    "InvalidSpec",
    "ServerNotAllowed",
    "TokenRequestFailed",
    "SecretConflict",
    "PolicyDenied",
    READY_MESSAGE,
    PENDING_MESSAGE,
    NO_TOKEN_MESSAGE,
];

/// `s` as condition text, borrowed when acrpull itself writes that value, so the store holds no
/// copy of `Ready`, `True` or the fixed messages for each of thousands of bindings.
pub fn intern(s: &str) -> Text {
    crate::binding::text::intern(s, KNOWN)
}

fn decode_status(status: Option<&Value>) -> Status {
    let get = |k: &str| status.and_then(|s| s.get(k)).and_then(Value::as_str);
    let mut out = Status {
        last_token_refresh_time: get("lastTokenRefreshTime").and_then(rfc3339::parse_seconds),
        token_expiration_time: get("tokenExpirationTime").and_then(rfc3339::parse_seconds),
        error: get("error").filter(|e| !e.is_empty()).map(str::to_string),
        observed_generation: status
            .and_then(|s| s.get("observedGeneration"))
            .and_then(Value::as_i64),
        ..Status::default()
    };
    let listed = status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array);
    for c in listed.into_iter().flatten().filter_map(decode_condition) {
        let slot = match &*c.type_ {
            READY => &mut out.ready,
            TOKEN_VALID => &mut out.token_valid,
            _ => {
                out.foreign.push(c);
                continue;
            }
        };
        if slot.is_some() {
            out.own_duplicated = true;
        }
        let digest = c.digest();
        *slot = Some(OwnCondition {
            status: c.status,
            last_transition_time: c.last_transition_time,
            digest,
        });
    }
    out.foreign.shrink_to_fit();
    out
}

fn decode_condition(c: &Value) -> Option<Condition> {
    let text = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .map(|s| match s.char_indices().nth(MAX_FIELD_BYTES) {
                Some((end, _)) => Cow::Owned(s[..end].to_string()),
                None => intern(s),
            })
    };
    Some(Condition {
        type_: text("type")?,
        status: text("status").unwrap_or_default(),
        reason: text("reason").unwrap_or_default(),
        message: text("message").unwrap_or_default(),
        last_transition_time: text("lastTransitionTime").unwrap_or_default(),
        observed_generation: c.get("observedGeneration").and_then(Value::as_i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> V1beta1Defaults {
        V1beta1Defaults {
            acr_server: "DefaultACRServer".into(),
            resource_id: "defaultResourceID".into(),
            ..Default::default()
        }
    }

    fn meta() -> Value {
        json!({"namespace": "ns", "name": "binding", "uid": "u1", "resourceVersion": "7",
               "finalizers": ["msi-acrpull.microsoft.com"]})
    }

    fn v1(spec: Value) -> Binding {
        let obj = json!({"apiVersion": "msi-acrpull.microsoft.com/v1beta1", "kind": "AcrPullBinding",
                         "metadata": meta(), "spec": spec});
        Binding::decode(ApiVersion::V1beta1, &obj, &defaults()).unwrap()
    }

    fn v2(spec: Value) -> Binding {
        let obj = json!({"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
                         "metadata": meta(), "spec": spec});
        Binding::decode(ApiVersion::V1beta2, &obj, &V1beta1Defaults::default()).unwrap()
    }

    fn v2_spec(auth: Value) -> Value {
        json!({"serviceAccountName": "delegate",
               "acr": {"server": "registry.azurecr.io", "scope": "repository:testing:pull,push",
                       "environment": "PublicCloud"},
               "auth": auth})
    }

    #[test]
    fn path_clean_follows_go_semantics() {
        assert_eq!(clean_path("/rg//double/single/"), "/rg/double/single");
        assert_eq!(clean_path("./whatever/identity//"), "whatever/identity");
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("a/../.."), "..");
        assert_eq!(clean_path("/../a"), "/a");
        assert_eq!(clean_path("a/b/../c/."), "a/c");
    }

    #[test]
    fn v1beta1_defaults_fill_server_and_resource_id() {
        let b = v1(json!({"acrServer": "", "scope": ""}));
        let s = b.spec.unwrap();
        assert_eq!(&*s.server, "DefaultACRServer");
        assert_eq!(
            s.identity,
            Identity::ManagedResourceId("defaultResourceID".into())
        );
        assert_eq!(&*s.target_service_account, "default");
        assert_eq!(
            &*s.inputs_hash,
            "2wucoufm4eqegr6z5nmg00bvmwguubf86kfxk6yir9pw"
        );
        assert_eq!(s.arm_resource.as_deref(), Some(V1BETA1_ARM_RESOURCE));
    }

    #[test]
    fn v1beta1_scope_is_part_of_the_hash() {
        let s = v1(json!({"scope": "repository:testing:pull,push"}))
            .spec
            .unwrap();
        assert_eq!(
            &*s.inputs_hash,
            "22xcczzccamzxpnpzuzes776qx9hc0r97keomc9lwybt"
        );
    }

    #[test]
    fn v1beta1_resource_id_is_path_cleaned() {
        let s = v1(json!({"acrServer": "somewhere.else.biz",
                          "managedIdentityResourceID": "./whatever/identity//"}))
        .spec
        .unwrap();
        assert_eq!(
            s.identity,
            Identity::ManagedResourceId("whatever/identity".into())
        );
        assert_eq!(
            &*s.inputs_hash,
            "1heyo3x93ljuxr5x2cwq6i068hxgwnsiyzjfzpb3gai8"
        );
    }

    #[test]
    fn v1beta1_client_id_wins_and_keeps_resource_id_in_the_hash() {
        let s = v1(json!({"acrServer": "somewhere.else.biz",
                          "managedIdentityClientID": "Client-identity"}))
        .spec
        .unwrap();
        assert_eq!(
            s.identity,
            Identity::ManagedClientId("Client-identity".into())
        );
        assert_eq!(
            &*s.inputs_hash,
            "2e134ajxrn0xllpwotsvet3felcqjnipmkd29wx8gvu5"
        );
    }

    #[test]
    fn v1beta1_server_and_scope_vectors_match() {
        let s = v1(json!({"acrServer": "somewhere.else.biz"})).spec.unwrap();
        assert_eq!(
            &*s.inputs_hash,
            "1zgwms3qm24vy8nn9xaxnmio6ux9exubtj2uged0qbjp"
        );
        let s = v1(json!({"acrServer": "somewhere.else.biz", "scope": "repository:alice:pull"}))
            .spec
            .unwrap();
        assert_eq!(
            &*s.inputs_hash,
            "e7zbhluhoceu823bs5pmdzhukvcbtj6khxsglgos92r"
        );
    }

    #[test]
    fn v1beta1_without_any_identity_is_a_spec_error() {
        let obj = json!({"metadata": meta(), "spec": {"acrServer": "x"}});
        let b = Binding::decode(ApiVersion::V1beta1, &obj, &V1beta1Defaults::default()).unwrap();
        assert_eq!(b.spec, Err(SpecError::NoIdentity));
        assert_eq!(
            SpecError::NoIdentity.to_string(),
            "either a client ID or a resource ID is required"
        );
        assert_eq!(b.target_service_account.as_deref(), Some("default"));
    }

    #[test]
    fn v1beta2_managed_identity_hashes_match_upstream() {
        let s = v2(v2_spec(
            json!({"managedIdentity": {"resourceID": "resource"}}),
        ))
        .spec
        .unwrap();
        assert_eq!(
            &*s.inputs_hash,
            "2goxvjvcjze0v96ooojjo7okj10q3qo5rtq9tgckauh"
        );
        assert_eq!(
            s.arm_resource.as_deref(),
            Some("https://management.core.windows.net/")
        );
        let s = v2(v2_spec(
            json!({"managedIdentity": {"clientID": "client-id"}}),
        ))
        .spec
        .unwrap();
        assert_eq!(
            &*s.inputs_hash,
            "bznn8knczhrdktghbm88h4ock013v94i8e8cslwlrob"
        );
        assert_eq!(s.identity, Identity::ManagedClientId("client-id".into()));
    }

    #[test]
    fn v1beta2_workload_identity_hash_matches_upstream_without_literal_ids() {
        let s = v2(v2_spec(
            json!({"workloadIdentity": {"serviceAccountRef": "delegate"}}),
        ))
        .spec
        .unwrap();
        assert_eq!(
            &*s.inputs_hash,
            "zrlombgy4mz11lkl9yxxi5n5sibq3cknbiekmkf7aju"
        );
        assert_eq!(
            s.identity,
            Identity::Workload {
                service_account_ref: "delegate".into(),
                client_id: None,
                tenant_id: None
            }
        );
    }

    #[test]
    fn v1beta2_workload_literal_ids_change_the_hash() {
        let s = v2(v2_spec(
            json!({"workloadIdentity": {"serviceAccountRef": "delegate",
                                   "clientID": "c", "tenantID": "t"}}),
        ))
        .spec
        .unwrap();
        assert_ne!(
            &*s.inputs_hash,
            "zrlombgy4mz11lkl9yxxi5n5sibq3cknbiekmkf7aju"
        );
        let b = v2(v2_spec(
            json!({"workloadIdentity": {"serviceAccountRef": "d", "clientID": "c"}}),
        ));
        assert_eq!(b.spec, Err(SpecError::WorkloadIdsNotPaired));
    }

    #[test]
    fn v1beta2_present_but_empty_client_id_is_system_assigned() {
        let s = v2(v2_spec(json!({"managedIdentity": {"clientID": ""}})))
            .spec
            .unwrap();
        assert_eq!(s.identity, Identity::SystemAssigned);
    }

    #[test]
    fn v1beta2_auth_must_be_exactly_one_kind() {
        let b = v2(v2_spec(json!({"managedIdentity": {"clientID": "a"},
                                  "workloadIdentity": {"serviceAccountRef": "x"}})));
        assert_eq!(b.spec, Err(SpecError::AuthNotExactlyOne));
        let b = v2(v2_spec(json!({})));
        assert_eq!(b.spec, Err(SpecError::AuthNotExactlyOne));
    }

    #[test]
    fn airgapped_without_cloud_config_decodes_but_reports_a_problem() {
        let mut spec = v2_spec(json!({"managedIdentity": {"clientID": "a"}}));
        spec["acr"]["environment"] = json!("AirgappedCloud");
        let s = v2(spec).spec.unwrap();
        assert_eq!(s.problem(), Some(SpecError::AirgappedWithoutCloudConfig));
        assert_eq!(s.arm_resource, None);
    }

    #[test]
    fn airgapped_with_cloud_config_uses_its_audience() {
        let mut spec = v2_spec(json!({"managedIdentity": {"clientID": "a"}}));
        spec["acr"]["environment"] = json!("AirgappedCloud");
        spec["acr"]["cloudConfig"] = json!({"entraAuthorityHost": "https://login.air/", "resourceManagerAudience": "https://arm.air/"});
        let s = v2(spec).spec.unwrap();
        assert_eq!(s.problem(), None);
        assert_eq!(s.arm_resource.as_deref(), Some("https://arm.air/"));
        assert_eq!(s.environment.authority_host(), Some("https://login.air/"));
    }

    #[test]
    fn wrong_types_and_sizes_are_named_errors_not_panics() {
        let b = v2(json!({"acr": {"server": 5}}));
        assert_eq!(
            b.spec.unwrap_err().to_string(),
            "spec.acr.server must be a string"
        );
        let b = v1(json!({"acrServer": "x".repeat(MAX_FIELD_BYTES + 1)}));
        assert!(matches!(b.spec, Err(SpecError::TooLong { .. })));
        let b = v1(json!("nope"));
        assert_eq!(b.spec.unwrap_err().to_string(), "spec must be an object");
        let obj =
            json!({"metadata": {"name": "a", "namespace": "n", "uid": 3, "resourceVersion": "1"}});
        let err = Binding::decode(ApiVersion::V1beta1, &obj, &defaults()).unwrap_err();
        assert_eq!(err.to_string(), "metadata.uid must be a string");
        assert_eq!(
            Binding::decode(ApiVersion::V1beta1, &json!([]), &defaults()).unwrap_err(),
            DecodeError::NotAnObject
        );
    }

    #[test]
    fn the_wrong_api_version_is_refused() {
        let obj =
            json!({"apiVersion": "acrpull.microsoft.com/v1beta2", "metadata": meta(), "spec": {}});
        assert!(Binding::decode(ApiVersion::V1beta1, &obj, &defaults()).is_err());
    }

    #[test]
    fn metadata_and_status_are_decoded() {
        let obj = json!({"metadata": {"namespace": "ns", "name": "b", "uid": "u", "resourceVersion": "9",
                                      "generation": 3, "labels": {"a": "b", "n": 1},
                                      "deletionTimestamp": "2006-01-02T15:04:05Z"},
                         "status": {"lastTokenRefreshTime": "2006-01-02T15:04:05Z",
                                    "tokenExpirationTime": "garbage", "error": ""},
                         "spec": {"acrServer": "a.azurecr.io"}});
        let b = Binding::decode(ApiVersion::V1beta1, &obj, &defaults()).unwrap();
        assert!(b.meta.deleting);
        assert_eq!(b.meta.generation, 3);
        assert!(!b.has_finalizer());
        assert_eq!(
            b.status
                .last_token_refresh_time
                .map(rfc3339::format_seconds)
                .as_deref(),
            Some("2006-01-02T15:04:05Z")
        );
        assert_eq!(b.status.token_expiration_time, None);
        assert_eq!(b.status.error, None);
        assert_eq!(b.secret_name(), "b-msi-acrpull-secret");
    }

    fn v2_with(spec: Value, acr_audience: bool) -> Binding {
        let obj = json!({"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
                         "metadata": meta(), "spec": spec});
        let d = V1beta1Defaults {
            acr_audience,
            ..V1beta1Defaults::default()
        };
        Binding::decode(ApiVersion::V1beta2, &obj, &d).unwrap()
    }

    #[test]
    fn federated_application_wraps_the_node_identity_and_changes_the_hash() {
        let plain = v2(v2_spec(
            json!({"managedIdentity": {"clientID": "client-id"}}),
        ))
        .spec
        .unwrap();
        let fed = v2(v2_spec(json!({"managedIdentity": {"clientID": "client-id",
            "federatedApplication": {"tenantID": "t2", "clientID": "app"}}})))
        .spec
        .unwrap();
        assert_eq!(
            fed.identity,
            Identity::FederatedApplication {
                managed: ManagedIdentity::ClientId("client-id".into()),
                tenant_id: "t2".into(),
                client_id: "app".into(),
            }
        );
        assert_ne!(fed.inputs_hash, plain.inputs_hash);
        let other_app = v2(v2_spec(json!({"managedIdentity": {"clientID": "client-id",
            "federatedApplication": {"tenantID": "t2", "clientID": "app2"}}})))
        .spec
        .unwrap();
        assert_ne!(other_app.inputs_hash, fed.inputs_hash);
    }

    #[test]
    fn federated_application_needs_both_ids() {
        let b = v2(v2_spec(json!({"managedIdentity": {"resourceID": "r",
            "federatedApplication": {"tenantID": "t2"}}})));
        assert_eq!(
            b.spec,
            Err(SpecError::Missing {
                field: "spec.auth.managedIdentity.federatedApplication.clientID".into()
            })
        );
    }

    #[test]
    fn acr_audience_mode_changes_the_hash_of_both_versions_and_arm_mode_keeps_upstreams() {
        let spec = v2_spec(json!({"managedIdentity": {"clientID": "client-id"}}));
        let arm = v2_with(spec.clone(), false).spec.unwrap();
        assert_eq!(
            &*arm.inputs_hash,
            "bznn8knczhrdktghbm88h4ock013v94i8e8cslwlrob"
        );
        let acr = v2_with(spec, true).spec.unwrap();
        assert_ne!(acr.inputs_hash, arm.inputs_hash);

        let obj = json!({"apiVersion": "msi-acrpull.microsoft.com/v1beta1", "kind": "AcrPullBinding",
                         "metadata": meta(), "spec": {"acrServer": "", "scope": ""}});
        let d = V1beta1Defaults {
            acr_audience: true,
            ..defaults()
        };
        let v1_acr = Binding::decode(ApiVersion::V1beta1, &obj, &d)
            .unwrap()
            .spec
            .unwrap();
        assert_ne!(
            &*v1_acr.inputs_hash,
            "2wucoufm4eqegr6z5nmg00bvmwguubf86kfxk6yir9pw"
        );
    }

    #[test]
    fn cloud_config_changes_re_mint() {
        let air = |host: &str| {
            let mut spec = v2_spec(json!({"managedIdentity": {"clientID": "c"}}));
            spec["acr"]["environment"] = json!("AirgappedCloud");
            spec["acr"]["cloudConfig"] =
                json!({"entraAuthorityHost": host, "resourceManagerAudience": "https://arm.air"});
            v2(spec).spec.unwrap().inputs_hash
        };
        assert_ne!(air("https://login.a/"), air("https://login.b/"));
    }
}
