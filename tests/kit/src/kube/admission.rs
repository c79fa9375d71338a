//! The ValidatingAdmissionPolicies upstream's Helm chart ships, hand-translated from CEL: they
//! bind only the controller's own identity (opt-in; see `ApiServer::enable_admission_policies`).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::resources::{ResourceType, SECRETS, SERVICE_ACCOUNTS};
use super::status::ApiError;

/// The chart's parameters: whose requests the policies judge and the allowed token audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    /// `system:serviceaccount:<controllerNamespace>:<controllerServiceAccountName>`.
    pub controller_user: String,
    /// `tokenAudience` (upstream: `api://AzureCRTokenExchange`).
    pub token_audience: String,
}

fn denied(rt: &ResourceType, name: &str, policy: &str, message: &str) -> ApiError {
    let subject = if name.is_empty() {
        rt.qualified()
    } else {
        format!("{} \"{name}\"", rt.qualified())
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{subject} is forbidden: ValidatingAdmissionPolicy '{policy}' with binding '{policy}-binding' denied request: {message}"
        ),
        details: Some(json!({"name": name, "kind": rt.plural})),
        retry_after: None,
    }
}

fn labels(o: &Value) -> &Value {
    &o["metadata"]["labels"]
}

fn pull_secret_names(o: &Value) -> BTreeSet<String> {
    o["imagePullSecrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn ours(name: &str) -> bool {
    name.starts_with("acr-pull-") || name.ends_with("-msi-acrpull-secret")
}

impl Policies {
    /// `controller-token-request-policy`: one audience, the configured one.
    pub fn token_request(
        &self,
        user: &str,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        if user != self.controller_user {
            return Ok(());
        }
        let auds = body["spec"]["audiences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if auds.len() == 1 && auds[0] == self.token_audience.as_str() {
            return Ok(());
        }
        Err(denied(
            &SERVICE_ACCOUNTS,
            name,
            "controller-token-request-policy",
            &format!("{user} has failed to CREATE {name} token in the {ns} namespace. Check the configuration."),
        ))
    }

    /// `controller-secret-mutation-policy` and `controller-service-account-mutation-policy`
    /// for a create (`old` is `None`) or an update.
    pub fn write(
        &self,
        user: &str,
        rt: &ResourceType,
        old: Option<&Value>,
        new: &Value,
    ) -> Result<(), ApiError> {
        if user != self.controller_user {
            return Ok(());
        }
        let name = new["metadata"]["name"].as_str().unwrap_or("");
        if std::ptr::eq(rt, &SECRETS) {
            let owners = new["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let owner_ok = owners.len() == 1
                && owners[0]["kind"] == "AcrPullBinding"
                && owners[0]["apiVersion"].as_str().is_some_and(|v| {
                    v.starts_with("msi-acrpull.microsoft.com/")
                        || v.starts_with("acrpull.microsoft.com/")
                });
            let owners_kept = old.is_none_or(|o| {
                o["metadata"]["ownerReferences"] == new["metadata"]["ownerReferences"]
            });
            let type_ok = new["type"] == "kubernetes.io/dockerconfigjson"
                && old.is_none_or(|o| o["type"] == new["type"]);
            let legacy = name.ends_with("-msi-acrpull-secret");
            let label_ok = legacy || !labels(new)["acr.microsoft.com/binding"].is_null();
            let labels_kept = legacy || old.is_none_or(|o| labels(o) == labels(new));
            if owner_ok && owners_kept && type_ok && label_ok && labels_kept {
                return Ok(());
            }
            return Err(denied(
                rt,
                name,
                "controller-secret-mutation-policy",
                "The controller can only create or update secrets that it owns, with the correct type and having the correct label.",
            ));
        }
        if std::ptr::eq(rt, &SERVICE_ACCOUNTS) {
            let Some(old) = old else { return Ok(()) };
            let before = pull_secret_names(old);
            let after = pull_secret_names(new);
            let changed_ok = before.symmetric_difference(&after).all(|n| ours(n));
            if old["secrets"] == new["secrets"]
                && old["automountServiceAccountToken"] == new["automountServiceAccountToken"]
                && changed_ok
            {
                return Ok(());
            }
            return Err(denied(
                rt,
                name,
                "controller-service-account-mutation-policy",
                "The controller may only update service accounts to add or remove pull secrets that the controller manages.",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Policies {
        Policies {
            controller_user: "system:serviceaccount:acrpull:acrpull".into(),
            token_audience: "api://AzureCRTokenExchange".into(),
        }
    }

    fn owned_secret() -> Value {
        json!({"metadata": {"name": "acr-pull-b", "labels": {"acr.microsoft.com/binding": "b"},
            "ownerReferences": [{"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding", "name": "b", "uid": "u"}]},
            "type": "kubernetes.io/dockerconfigjson"})
    }

    #[test]
    fn only_the_controller_is_judged() {
        let bad = json!({"metadata": {"name": "x"}, "type": "Opaque"});
        assert!(p().write("someone-else", &SECRETS, None, &bad).is_ok());
        assert_eq!(
            p().write(&p().controller_user, &SECRETS, None, &bad)
                .unwrap_err()
                .code,
            403
        );
    }

    #[test]
    fn owned_labelled_dockerconfig_secrets_pass() {
        let u = p().controller_user;
        p().write(&u, &SECRETS, None, &owned_secret()).unwrap();
        let mut relabelled = owned_secret();
        relabelled["metadata"]["labels"]["extra"] = json!("x");
        assert!(p()
            .write(&u, &SECRETS, Some(&owned_secret()), &relabelled)
            .is_err());
    }

    #[test]
    fn service_account_edits_touch_only_our_pull_secrets() {
        let u = p().controller_user;
        let old =
            json!({"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "theirs"}]});
        let mut add = old.clone();
        add["imagePullSecrets"] = json!([{"name": "theirs"}, {"name": "acr-pull-b"}]);
        p().write(&u, &SERVICE_ACCOUNTS, Some(&old), &add).unwrap();
        let mut drop_theirs = old.clone();
        drop_theirs["imagePullSecrets"] = json!([]);
        assert!(p()
            .write(&u, &SERVICE_ACCOUNTS, Some(&old), &drop_theirs)
            .is_err());
    }

    #[test]
    fn token_requests_need_the_one_configured_audience() {
        let u = p().controller_user;
        let ok = json!({"spec": {"audiences": ["api://AzureCRTokenExchange"]}});
        p().token_request(&u, "ns", "sa", &ok).unwrap();
        let two = json!({"spec": {"audiences": ["api://AzureCRTokenExchange", "x"]}});
        let e = p().token_request(&u, "ns", "sa", &two).unwrap_err();
        assert!(
            e.message
                .contains("has failed to CREATE sa token in the ns namespace"),
            "{}",
            e.message
        );
    }
}
