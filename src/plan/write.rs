//! The writes a plan is made of, each with its concurrency precondition.

use std::fmt;

use serde_json::{json, Value};

use crate::binding::FINALIZER;

/// One write, with its precondition. Binding writes get their resourceVersion from the executor,
/// which threads the version each binding write returns into the next.
#[derive(Clone, PartialEq)]
pub enum Write {
    /// Append our finalizer (JSON patch: test resourceVersion, then add).
    AddFinalizer,
    /// Drop our finalizer, keeping others: test that `/metadata/finalizers/<index>` is ours and
    /// remove it, or replace the list with `remaining` under a resourceVersion test.
    RemoveFinalizer {
        /// Index of our finalizer in the observed list.
        index: usize,
        /// The observed list without ours.
        remaining: Vec<String>,
    },
    /// POST a new Secret (fails with 409 if the name exists).
    CreateSecret {
        /// The whole Secret.
        body: Value,
    },
    /// PUT a Secret; `body.metadata.resourceVersion` is the precondition.
    ReplaceSecret {
        /// The Secret's name.
        name: String,
        /// The whole Secret.
        body: Value,
    },
    /// DELETE a Secret with preconditions {uid, resourceVersion}.
    DeleteSecret {
        /// The Secret's name.
        name: String,
        /// Precondition uid.
        uid: String,
        /// Precondition resourceVersion.
        resource_version: String,
    },
    /// JSON patch: test resourceVersion, replace `/imagePullSecrets` (nothing else is touched,
    /// which keeps the write inside what the VAP allows).
    PatchServiceAccount {
        /// The ServiceAccount's name.
        name: String,
        /// Precondition resourceVersion.
        resource_version: String,
        /// The new list of names.
        image_pull_secrets: Vec<String>,
    },
    /// Merge patch of `/status`; `status` is the `status` object to merge (`null` removes).
    UpdateStatus {
        /// The status object.
        status: Value,
    },
}

impl fmt::Debug for Write {
    /// Secret bodies hold a token, so only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Write::AddFinalizer => f.write_str("AddFinalizer"),
            Write::RemoveFinalizer { index, remaining } => f
                .debug_struct("RemoveFinalizer")
                .field("index", index)
                .field("remaining", remaining)
                .finish(),
            Write::CreateSecret { body } => f
                .debug_struct("CreateSecret")
                .field("name", &body["metadata"]["name"])
                .finish_non_exhaustive(),
            Write::ReplaceSecret { name, .. } => f
                .debug_struct("ReplaceSecret")
                .field("name", name)
                .finish_non_exhaustive(),
            Write::DeleteSecret {
                name,
                uid,
                resource_version,
            } => f
                .debug_struct("DeleteSecret")
                .field("name", name)
                .field("uid", uid)
                .field("resource_version", resource_version)
                .finish(),
            Write::PatchServiceAccount {
                name,
                resource_version,
                image_pull_secrets,
            } => f
                .debug_struct("PatchServiceAccount")
                .field("name", name)
                .field("resource_version", resource_version)
                .field("image_pull_secrets", image_pull_secrets)
                .finish(),
            Write::UpdateStatus { status } => f
                .debug_struct("UpdateStatus")
                .field("status", status)
                .finish(),
        }
    }
}

// Request bodies for the executor. JSON patches start with a `test` of the resourceVersion, so a
// concurrent edit fails with a conflict instead of being overwritten; `add` on an existing member
// replaces it, which also works when the list is absent.

fn test_resource_version(resource_version: &str) -> Value {
    json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
}

/// JSON patch for `AddFinalizer`: the observed finalizers plus ours, under a resourceVersion test.
pub fn add_finalizer_patch(resource_version: &str, observed: &[String]) -> Value {
    let mut list: Vec<&str> = observed.iter().map(String::as_str).collect();
    list.push(FINALIZER);
    json!([
        test_resource_version(resource_version),
        {"op": "add", "path": "/metadata/finalizers", "value": list},
    ])
}

/// JSON patch for `RemoveFinalizer`: the remaining finalizers, under a resourceVersion test.
pub fn remove_finalizer_patch(resource_version: &str, remaining: &[String]) -> Value {
    json!([
        test_resource_version(resource_version),
        {"op": "add", "path": "/metadata/finalizers", "value": remaining},
    ])
}

/// JSON patch for `PatchServiceAccount`: only `/imagePullSecrets` changes (VAP-safe).
pub fn service_account_patch(resource_version: &str, image_pull_secrets: &[String]) -> Value {
    let refs: Vec<Value> = image_pull_secrets
        .iter()
        .map(|n| json!({ "name": n }))
        .collect();
    json!([
        test_resource_version(resource_version),
        {"op": "add", "path": "/imagePullSecrets", "value": refs},
    ])
}

/// Merge patch for `UpdateStatus` on the `/status` subresource; a resourceVersion in the body
/// makes the API server refuse it on a stale object.
pub fn status_merge_patch(resource_version: Option<&str>, status: &Value) -> Value {
    match resource_version {
        Some(rv) => json!({"metadata": {"resourceVersion": rv}, "status": status}),
        None => json!({ "status": status }),
    }
}

#[cfg(test)]
/// `DeleteOptions` for `DeleteSecret`: only this very object, at this very version.
pub fn delete_options(uid: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": uid, "resourceVersion": resource_version},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_patches_test_the_version_and_keep_other_finalizers() {
        let p = add_finalizer_patch("5", &["x".to_string()]);
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x", FINALIZER]},
            ])
        );
        let p = remove_finalizer_patch("6", &["x".to_string()]);
        assert_eq!(p[1]["value"], json!(["x"]));
        assert_eq!(p[0]["value"], "6");
    }

    #[test]
    fn service_account_patch_touches_only_image_pull_secrets() {
        let p = service_account_patch("9", &["a".to_string(), "acr-pull-b".to_string()]);
        assert_eq!(p[0]["value"], "9");
        assert_eq!(p[1]["path"], "/imagePullSecrets");
        assert_eq!(
            p[1]["value"],
            json!([{"name": "a"}, {"name": "acr-pull-b"}])
        );
        assert_eq!(p.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn status_patch_and_delete_options_carry_preconditions() {
        let p = status_merge_patch(Some("3"), &json!({"error": null}));
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "3"}, "status": {"error": null}})
        );
        assert_eq!(
            delete_options("u", "r")["preconditions"],
            json!({"uid": "u", "resourceVersion": "r"})
        );
    }

    #[test]
    fn secret_writes_do_not_show_their_body_in_debug() {
        let w = Write::ReplaceSecret {
            name: "n".into(),
            body: json!({"data": {".dockerconfigjson": "SECRETBYTES"}}),
        };
        assert!(!format!("{w:?}").contains("SECRETBYTES"));
        let w = Write::CreateSecret {
            body: json!({"metadata": {"name": "n"}, "data": {".dockerconfigjson": "SECRETBYTES"}}),
        };
        assert!(!format!("{w:?}").contains("SECRETBYTES"));
    }
}
