//! The identity policy: which namespaces may use which identities with which registries.
//!
//! Upstream lets any namespace use any identity attached to the nodes (upstream issue #38). With
//! `--identity-policy <file>` an operator lists what is allowed; everything else is refused before
//! any token is requested. Without the flag nothing changes.
//!
//! The file is JSON (typically a mounted ConfigMap):
//!
//! ```json
//! {"rules": [
//!   {"namespaces": ["team-a", "team-b-*"],
//!    "identities": ["00000000-0000-0000-0000-000000000001"],
//!    "registries": ["teama.azurecr.io"]},
//!   {"namespaces": ["*"], "identities": ["system-assigned"], "registries": ["azurecr.io"]}
//! ]}
//! ```
//!
//! A binding may use identity `i` with registry host `r` from namespace `n` when one rule matches
//! all three. Namespaces and identities are globs where `*` stands for any run of characters
//! (identities compare case-insensitively, as Azure IDs do); a registry entry matches that host and
//! its subdomains, `*` any host. Identities are managed-identity client IDs, resource IDs,
//! `system-assigned`, and workload-identity / federated application client IDs (a cross-tenant
//! binding needs both its node identity and its application allowed). Unknown fields are errors so
//! a typo never widens the policy. The matcher is pure; [`PolicyHandle`] holds the current policy
//! and [`PolicyFile`] re-reads the file when its contents change.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::binding::Identity;
use crate::binding::ManagedIdentity;

/// The identity name of the node's system-assigned identity in a policy.
pub const SYSTEM_ASSIGNED: &str = "system-assigned";

/// A parsed, validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// One allow rule.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    namespaces: Vec<String>,
    identities: Vec<String>,
    registries: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    rules: Vec<Rule>,
}

/// Why a policy file cannot be used.
#[derive(Debug)]
pub enum PolicyError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a policy document (bad JSON, wrong shape, unknown field).
    Parse(serde_json::Error),
    /// A rule has an empty list or an empty entry; `rule` counts from 1.
    EmptyEntry {
        /// Which rule.
        rule: usize,
        /// Which list.
        field: &'static str,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Read { path, source } => {
                write!(f, "cannot read identity policy {}: {source}", path.display())
            }
            PolicyError::Parse(e) => write!(f, "invalid identity policy: {e}"),
            PolicyError::EmptyEntry { rule, field } => write!(
                f,
                "invalid identity policy: rule {rule}: {field} must list at least one non-empty entry"
            ),
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PolicyError::Read { source, .. } => Some(source),
            PolicyError::Parse(e) => Some(e),
            PolicyError::EmptyEntry { .. } => None,
        }
    }
}

/// A refusal; `Display` is the binding's status error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The binding's namespace.
    pub namespace: String,
    /// The identity that is not allowed.
    pub identity: String,
    /// The registry host.
    pub registry: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "identity policy: namespace {:?} may not use identity {:?} with registry {:?}",
            self.namespace, self.identity, self.registry
        )
    }
}

impl std::error::Error for Denied {}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let doc: PolicyDoc = serde_json::from_str(text).map_err(PolicyError::Parse)?;
        let mut rules = doc.rules;
        for (i, rule) in rules.iter_mut().enumerate() {
            for (field, list) in [
                ("namespaces", &mut rule.namespaces),
                ("identities", &mut rule.identities),
                ("registries", &mut rule.registries),
            ] {
                for entry in list.iter_mut() {
                    *entry = entry.trim().to_string();
                }
                if list.is_empty() || list.iter().any(String::is_empty) {
                    return Err(PolicyError::EmptyEntry { rule: i + 1, field });
                }
            }
            // Registries compare like the allow-list: lower case, no trailing or leading dot.
            for r in rule.registries.iter_mut() {
                *r = r.trim_matches('.').to_ascii_lowercase();
            }
        }
        Ok(Policy { rules })
    }

    /// Whether `namespace` may use `identity` with registry `host` (a lower-cased host name).
    pub fn check(&self, namespace: &str, identity: &str, host: &str) -> Result<(), Denied> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let identity_lower = identity.to_ascii_lowercase();
        let allowed = self.rules.iter().any(|r| {
            r.namespaces.iter().any(|p| glob(p, namespace))
                && r.identities
                    .iter()
                    .any(|p| glob(&p.to_ascii_lowercase(), &identity_lower))
                && r.registries.iter().any(|s| registry_matches(s, &host))
        });
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                namespace: namespace.to_string(),
                identity: identity.to_string(),
                registry: host,
            })
        }
    }
}

/// `*` matches any run of characters (also none); every other character matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `*`, the host itself, or a parent domain of it.
fn registry_matches(entry: &str, host: &str) -> bool {
    entry == "*"
        || host == entry
        || (host.len() > entry.len()
            && host.ends_with(entry)
            && host[..host.len() - entry.len()].ends_with('.'))
}

/// The policy names of the identities a binding's spec fixes. Workload identity is not among
/// them: its client ID may come from a ServiceAccount annotation and is checked once resolved.
pub fn spec_identities(identity: &Identity) -> Vec<String> {
    match identity {
        Identity::ManagedClientId(c) => vec![c.to_string()],
        Identity::ManagedResourceId(r) => vec![r.to_string()],
        Identity::SystemAssigned => vec![SYSTEM_ASSIGNED.to_string()],
        Identity::Workload { .. } => Vec::new(),
        Identity::FederatedApplication {
            managed, client_id, ..
        } => vec![managed_name(managed), client_id.clone()],
    }
}

fn managed_name(m: &ManagedIdentity) -> String {
    match m {
        ManagedIdentity::System => SYSTEM_ASSIGNED.to_string(),
        ManagedIdentity::ClientId(c) => c.clone(),
        ManagedIdentity::ResourceId(r) => r.clone(),
    }
}

/// The current policy, shared by the workers and swapped by the reloader. The default (no
/// `--identity-policy`) allows everything.
#[derive(Clone, Default)]
pub struct PolicyHandle {
    current: Option<Arc<RwLock<Arc<Policy>>>>,
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.current {
            None => f.write_str("PolicyHandle(none)"),
            Some(_) => f.write_str("PolicyHandle(file)"),
        }
    }
}

impl PolicyHandle {
    /// A handle enforcing `policy` until [`set`](Self::set) replaces it.
    pub fn enforcing(policy: Policy) -> PolicyHandle {
        PolicyHandle {
            current: Some(Arc::new(RwLock::new(Arc::new(policy)))),
        }
    }

    /// Replaces the policy (no effect on a handle without one: the flag decides, not the file).
    pub fn set(&self, policy: Policy) {
        if let Some(lock) = &self.current {
            *lock.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        }
    }

    #[cfg(test)]
    /// Whether a policy is enforced at all.
    pub fn is_enforcing(&self) -> bool {
        self.current.is_some()
    }

    /// [`Policy::check`] against the current policy; always allowed without one.
    pub fn check(&self, namespace: &str, identity: &str, host: &str) -> Result<(), Denied> {
        let Some(lock) = &self.current else {
            return Ok(());
        };
        // Clone the Arc out so a reload never waits for a check, nor a check for a reload.
        let policy = Arc::clone(&lock.read().unwrap_or_else(|p| p.into_inner()));
        policy.check(namespace, identity, host)
    }
}

/// The policy file, and the contents last seen in it, so a change is noticed by polling.
#[derive(Debug)]
pub struct PolicyFile {
    path: PathBuf,
    last: Option<Vec<u8>>,
}

/// What one poll of the policy file found.
#[derive(Debug)]
pub enum Poll {
    /// Same contents as last time.
    Unchanged,
    /// New contents that parse: the policy to enforce from now on.
    Changed(Policy),
    /// New contents (or a read failure) that cannot be used: the previous policy stays.
    Invalid(PolicyError),
}

impl PolicyFile {
    /// Reads and parses `path` for start-up; an unusable file is a start error, so a typo never
    /// runs the controller without its policy.
    pub fn load(path: &Path) -> Result<(PolicyFile, Policy), PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let policy = Policy::parse(&String::from_utf8_lossy(&bytes))?;
        let file = PolicyFile {
            path: path.to_path_buf(),
            last: Some(bytes),
        };
        Ok((file, policy))
    }

    /// Reads the file again and compares it with what was last seen. Contents, not mtimes:
    /// ConfigMap volumes swap a symlink, and a same-second edit keeps the mtime.
    pub fn poll(&mut self) -> Poll {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(source) => {
                // Remembered as "nothing", so the file coming back counts as a change and a
                // missing file is reported once, not every poll.
                let was_there = self.last.take().is_some();
                return if was_there {
                    Poll::Invalid(PolicyError::Read {
                        path: self.path.clone(),
                        source,
                    })
                } else {
                    Poll::Unchanged
                };
            }
        };
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return Poll::Unchanged;
        }
        self.last = Some(bytes);
        let text = String::from_utf8_lossy(self.last.as_deref().unwrap_or_default());
        match Policy::parse(&text) {
            Ok(p) => Poll::Changed(p),
            Err(e) => Poll::Invalid(e),
        }
    }
}

/// How often the reloader reads the policy file.
pub const RELOAD_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls `file` every `period` on a thread of its own, swaps new policies into `handle` and then
/// calls `changed` (which requeues every binding). A file that becomes unusable keeps the previous
/// policy in force: a broken ConfigMap must not open everything up.
pub fn spawn_reloader(
    mut file: PolicyFile,
    handle: PolicyHandle,
    period: std::time::Duration,
    changed: Box<dyn Fn() + Send>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("identity policy".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match file.poll() {
                Poll::Unchanged => {}
                Poll::Changed(p) => {
                    log::info!("identity policy reloaded: {} rules", p.rules.len());
                    handle.set(p);
                    changed();
                }
                Poll::Invalid(e) => log::error!("{e}; keeping the previous identity policy"),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID1: &str = "00000000-0000-0000-0000-000000000001";
    const RES: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";

    fn policy() -> Policy {
        Policy::parse(&format!(
            r#"{{"rules": [
                {{"namespaces": ["team-a", "team-b-*"], "identities": ["{ID1}", "{RES}"],
                  "registries": ["TeamA.azurecr.io."]}},
                {{"namespaces": ["*"], "identities": ["system-assigned"], "registries": ["azurecr.io"]}}
            ]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_listed_namespace_identity_and_registry_is_allowed() {
        let p = policy();
        assert_eq!(p.check("team-a", ID1, "teama.azurecr.io"), Ok(()));
        assert_eq!(p.check("team-b-dev", RES, "teama.azurecr.io"), Ok(()));
        assert_eq!(
            p.check("anything", "system-assigned", "x.azurecr.io"),
            Ok(())
        );
    }

    #[test]
    fn identities_compare_case_insensitively() {
        let upper = RES.to_ascii_uppercase();
        assert_eq!(policy().check("team-a", &upper, "teama.azurecr.io"), Ok(()));
    }

    #[test]
    fn each_of_namespace_identity_and_registry_can_deny() {
        let p = policy();
        assert!(p.check("team-c", ID1, "teama.azurecr.io").is_err());
        assert!(p
            .check(
                "team-a",
                "00000000-0000-0000-0000-000000000002",
                "teama.azurecr.io"
            )
            .is_err());
        assert!(p.check("team-a", ID1, "teamb.azurecr.io").is_err());
        // The glob is anchored at both ends.
        assert!(p.check("xteam-b-dev", ID1, "teama.azurecr.io").is_err());
    }

    #[test]
    fn registry_entries_match_the_host_and_its_subdomains_only() {
        assert!(registry_matches("azurecr.io", "azurecr.io"));
        assert!(registry_matches("azurecr.io", "a.azurecr.io"));
        assert!(!registry_matches("azurecr.io", "evilazurecr.io"));
        assert!(!registry_matches("azurecr.io", "azurecr.io.evil.com"));
        assert!(registry_matches("*", "anything.example"));
        let p = policy();
        assert!(p
            .check("team-a", "system-assigned", "azurecr.io.evil.com")
            .is_err());
    }

    #[test]
    fn a_denial_names_namespace_identity_and_registry() {
        let e = policy()
            .check("team-c", ID1, "TeamA.azurecr.io")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "identity policy: namespace \"team-c\" may not use identity \"{ID1}\" with registry \"teama.azurecr.io\""
            )
        );
    }

    #[test]
    fn glob_stars_match_any_run_including_none() {
        assert!(glob("team-*", "team-"));
        assert!(glob("team-*", "team-abc"));
        assert!(glob("*-prod", "a-b-prod"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("*", ""));
        assert!(!glob("team", "team-a"));
        assert!(glob("**", "x"));
    }

    #[test]
    fn an_empty_rule_list_denies_everything() {
        let p = Policy::parse(r#"{"rules": []}"#).unwrap();
        assert!(p.check("a", ID1, "r.azurecr.io").is_err());
    }

    #[test]
    fn unknown_fields_empty_lists_and_bad_json_are_refused() {
        assert!(matches!(
            Policy::parse(r#"{"rules": [], "rulez": []}"#),
            Err(PolicyError::Parse(_))
        ));
        assert!(matches!(
            Policy::parse(
                r#"{"rules": [{"namespaces": ["a"], "identity": ["b"], "registries": ["c"]}]}"#
            ),
            Err(PolicyError::Parse(_))
        ));
        assert!(matches!(
            Policy::parse(
                r#"{"rules": [{"namespaces": [], "identities": ["b"], "registries": ["c"]}]}"#
            ),
            Err(PolicyError::EmptyEntry {
                rule: 1,
                field: "namespaces"
            })
        ));
        assert!(matches!(
            Policy::parse(
                r#"{"rules": [{"namespaces": ["a"], "identities": [" "], "registries": ["c"]}]}"#
            ),
            Err(PolicyError::EmptyEntry {
                rule: 1,
                field: "identities"
            })
        ));
        assert!(matches!(
            Policy::parse("not json"),
            Err(PolicyError::Parse(_))
        ));
        assert!(matches!(Policy::parse("{}"), Err(PolicyError::Parse(_))));
    }

    #[test]
    fn spec_identities_name_every_fixed_identity() {
        assert_eq!(
            spec_identities(&Identity::ManagedClientId(ID1.into())),
            vec![ID1]
        );
        assert_eq!(
            spec_identities(&Identity::SystemAssigned),
            vec![SYSTEM_ASSIGNED]
        );
        assert!(spec_identities(&Identity::Workload {
            service_account_ref: "sa".into(),
            client_id: Some(ID1.into()),
            tenant_id: None,
        })
        .is_empty());
        assert_eq!(
            spec_identities(&Identity::FederatedApplication {
                managed: ManagedIdentity::ResourceId(RES.into()),
                tenant_id: "t".into(),
                client_id: "app".into(),
            }),
            vec![RES, "app"]
        );
    }

    #[test]
    fn a_handle_without_a_policy_allows_everything_and_ignores_set() {
        let h = PolicyHandle::default();
        assert!(!h.is_enforcing());
        h.set(Policy::parse(r#"{"rules": []}"#).unwrap());
        assert_eq!(h.check("a", "b", "c"), Ok(()));
    }

    #[test]
    fn a_handle_enforces_the_latest_policy() {
        let h = PolicyHandle::enforcing(Policy::parse(r#"{"rules": []}"#).unwrap());
        assert!(h.check("team-a", ID1, "teama.azurecr.io").is_err());
        h.clone().set(policy());
        assert_eq!(h.check("team-a", ID1, "teama.azurecr.io"), Ok(()));
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("acrpull-policy-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("policy.json")
    }

    #[test]
    fn a_file_is_reloaded_only_when_its_contents_change() {
        let path = temp_file("reload");
        std::fs::write(&path, r#"{"rules": []}"#).unwrap();
        let (mut f, p) = PolicyFile::load(&path).unwrap();
        assert!(p.rules.is_empty());
        assert!(matches!(f.poll(), Poll::Unchanged));
        std::fs::write(
            &path,
            r#"{"rules": [{"namespaces": ["a"], "identities": ["b"], "registries": ["c"]}]}"#,
        )
        .unwrap();
        assert!(matches!(f.poll(), Poll::Changed(p) if p.rules.len() == 1));
        assert!(matches!(f.poll(), Poll::Unchanged));
        std::fs::write(&path, "{broken").unwrap();
        assert!(matches!(f.poll(), Poll::Invalid(PolicyError::Parse(_))));
        assert!(
            matches!(f.poll(), Poll::Unchanged),
            "one report per bad version"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(f.poll(), Poll::Invalid(PolicyError::Read { .. })));
        assert!(
            matches!(f.poll(), Poll::Unchanged),
            "one report while missing"
        );
        std::fs::write(&path, r#"{"rules": []}"#).unwrap();
        assert!(matches!(f.poll(), Poll::Changed(_)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn an_unusable_file_at_start_up_is_an_error() {
        let path = temp_file("startup");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            PolicyFile::load(&path),
            Err(PolicyError::Read { .. })
        ));
        std::fs::write(&path, "[]").unwrap();
        assert!(matches!(
            PolicyFile::load(&path),
            Err(PolicyError::Parse(_))
        ));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
