//! What the planner observes: the binding, its Secrets and the ServiceAccounts around it.

use std::collections::BTreeMap;

use crate::binding::Binding;

/// An ownerReference as observed on a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerRef {
    /// `apiVersion` of the owner.
    pub api_version: String,
    /// `kind` of the owner.
    pub kind: String,
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
    pub type_: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
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
