//! The writes a plan is made of, each with its concurrency precondition.

use std::fmt;

use serde_json::Value;

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
