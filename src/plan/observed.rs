//! What the planner observes: the binding, its Secrets and the ServiceAccounts around it.

use serde_json::Value;

use crate::binding::text::{intern, Text};
use crate::binding::{ApiVersion, Binding, KIND};
use crate::plan::secret::DOCKERCONFIG_TYPE;
use crate::plan::strmap::StrMap;

/// Owner `apiVersion`s and `kind`s, and Secret types, that pull Secrets carry.
const KNOWN_VALUES: &[&str] = &[
    ApiVersion::V1beta2.api_version(),
    ApiVersion::V1beta1.api_version(),
    KIND,
    DOCKERCONFIG_TYPE,
];

/// An ownerReference as observed on a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerRef {
    /// `apiVersion` of the owner.
    pub api_version: Text,
    /// `kind` of the owner.
    pub kind: Text,
    /// `name` of the owner.
    pub name: String,
    /// `uid` of the owner.
    pub uid: String,
    /// Whether `controller: true`.
    pub controller: bool,
}

/// A Secret as observed (never its data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretObs {
    /// Name.
    pub name: String,
    /// resourceVersion.
    pub resource_version: String,
    /// UID.
    pub uid: String,
    /// `type`.
    pub type_: Text,
    /// Labels.
    pub labels: StrMap,
    /// Annotations.
    pub annotations: StrMap,
    /// ownerReferences.
    pub owner_refs: Vec<OwnerRef>,
}

/// A ServiceAccount as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaObs {
    /// Name.
    pub name: String,
    /// resourceVersion.
    pub resource_version: String,
    /// `imagePullSecrets[].name`, in order.
    pub image_pull_secrets: Vec<String>,
}

/// Everything the planner looks at for one binding.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The binding.
    pub binding: Binding,
    /// Every Secret in the namespace labelled for this binding's label value, plus the Secret
    /// named exactly like the expected name if it exists (possibly foreign).
    pub secrets: Vec<SecretObs>,
    /// The target ServiceAccount; `None` = not found.
    pub target_sa: Option<SaObs>,
    /// Other ServiceAccounts in the namespace that reference any name in `secrets` or the
    /// expected name.
    pub other_sas: Vec<SaObs>,
}

fn string_map(v: Option<&Value>) -> StrMap {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}

fn known_text(v: Option<&Value>) -> Text {
    intern(v.and_then(Value::as_str).unwrap_or_default(), KNOWN_VALUES)
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

impl SecretObs {
    /// Reads a Secret as the API server returns it, ignoring its data; `None` without a name.
    /// Malformed fields read as empty, which never makes a Secret look like ours.
    pub fn from_object(obj: &Value) -> Option<SecretObs> {
        let meta = obj.get("metadata")?;
        let name = meta.get("name")?.as_str()?.to_string();
        let owner_refs = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .map(|r| OwnerRef {
                        api_version: known_text(r.get("apiVersion")),
                        kind: known_text(r.get("kind")),
                        name: text(r.get("name")),
                        uid: text(r.get("uid")),
                        controller: r.get("controller").and_then(Value::as_bool) == Some(true),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(SecretObs {
            name,
            resource_version: text(meta.get("resourceVersion")),
            uid: text(meta.get("uid")),
            type_: known_text(obj.get("type")),
            labels: string_map(meta.get("labels")),
            annotations: string_map(meta.get("annotations")),
            owner_refs,
        })
    }
}

impl SaObs {
    /// Reads a ServiceAccount as the API server returns it; `None` without a name.
    pub fn from_object(obj: &Value) -> Option<SaObs> {
        let meta = obj.get("metadata")?;
        let name = meta.get("name")?.as_str()?.to_string();
        let image_pull_secrets = obj
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .map(|refs| refs.iter().map(|r| text(r.get("name"))).collect())
            .unwrap_or_default();
        Some(SaObs {
            name,
            resource_version: text(meta.get("resourceVersion")),
            image_pull_secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_read_without_their_data() {
        let obj = json!({"metadata": {"name": "s", "uid": "u", "resourceVersion": "4",
                                      "labels": {"l": "v"}, "annotations": {"a": "b", "n": 3},
                                      "ownerReferences": [{"apiVersion": "acrpull.microsoft.com/v1beta2",
                                          "kind": "AcrPullBinding", "name": "b", "uid": "bu", "controller": true}]},
                         "type": "kubernetes.io/dockerconfigjson", "data": {"x": "SECRET"}});
        let s = SecretObs::from_object(&obj).unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.type_, "kubernetes.io/dockerconfigjson");
        assert_eq!(s.annotations.len(), 1);
        assert!(s.owner_refs[0].controller);
        assert!(!format!("{s:?}").contains("SECRET"));
        assert_eq!(SecretObs::from_object(&json!({"metadata": {}})), None);
    }

    #[test]
    fn service_accounts_keep_pull_secret_order_and_duplicates() {
        let obj = json!({"metadata": {"name": "sa", "resourceVersion": "2"},
                         "imagePullSecrets": [{"name": "b"}, {"name": "a"}, {"name": "b"}]});
        let sa = SaObs::from_object(&obj).unwrap();
        assert_eq!(sa.image_pull_secrets, ["b", "a", "b"]);
        assert_eq!(sa.resource_version, "2");
        assert_eq!(SaObs::from_object(&json!(1)), None);
    }
}
