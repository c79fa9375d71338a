//! Authentication (bearer token → user) and authorization (allow rules, loadable from RBAC YAML).

use std::collections::HashMap;

use serde_json::Value;

/// One allow rule, RBAC-shaped: every listed dimension must match (`*` matches anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Verbs: get, list, watch, create, update, patch, delete, deletecollection.
    pub verbs: Vec<String>,
    /// API groups (`""` for core).
    pub groups: Vec<String>,
    /// Resources, `plural` or `plural/subresource`.
    pub resources: Vec<String>,
    /// Object names; empty means any (and is the only way to allow list, watch and create).
    pub names: Vec<String>,
    /// The namespace the rule applies in; `None` for cluster-wide.
    pub namespace: Option<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// A cluster-wide rule.
    pub fn cluster(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
        Rule {
            verbs: strings(verbs),
            groups: strings(groups),
            resources: strings(resources),
            names: Vec::new(),
            namespace: None,
        }
    }

    /// A rule limited to one namespace.
    pub fn namespaced(ns: &str, verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
        Rule {
            namespace: Some(ns.to_string()),
            ..Rule::cluster(verbs, groups, resources)
        }
    }

    /// Limits the rule to these object names (builder style).
    pub fn names(mut self, names: &[&str]) -> Rule {
        self.names = strings(names);
        self
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        let resource = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == resource
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        });
        any(&self.verbs, a.verb)
            && any(&self.groups, a.group)
            && resource_ok
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| !a.namespace.is_empty() && ns == a.namespace)
            && (self.names.is_empty()
                || (!a.name.is_empty() && self.names.iter().any(|n| n == a.name)))
    }
}

/// What a request asks to do, in authorizer terms.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The Kubernetes verb.
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource or `""`.
    pub subresource: &'a str,
    /// Namespace or `""`.
    pub namespace: &'a str,
    /// Object name or `""`.
    pub name: &'a str,
}

/// Why RBAC YAML could not be loaded.
#[derive(Debug)]
pub enum RbacError {
    /// A document is not valid YAML.
    Yaml(serde_yaml::Error),
    /// A document is not shaped like the RBAC object its `kind` says.
    Shape {
        /// The document's kind.
        kind: String,
        /// The document's name.
        name: String,
    },
}

impl std::fmt::Display for RbacError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RbacError::Yaml(e) => write!(f, "rbac yaml: {e}"),
            RbacError::Shape { kind, name } => write!(f, "malformed {kind} {name:?}"),
        }
    }
}

impl std::error::Error for RbacError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RbacError::Yaml(e) => Some(e),
            RbacError::Shape { .. } => None,
        }
    }
}

impl From<serde_yaml::Error> for RbacError {
    fn from(e: serde_yaml::Error) -> RbacError {
        RbacError::Yaml(e)
    }
}

/// Users and what they may do. `Debug` lists users, never their tokens.
#[derive(Default)]
pub struct Authz {
    tokens: HashMap<String, String>,
    admins: Vec<String>,
    rules: HashMap<String, Vec<Rule>>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&String> = self.tokens.values().collect();
        f.debug_struct("Authz")
            .field("users", &users)
            .field("admins", &self.admins)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Authz {
    /// Maps a bearer token to a user name.
    pub fn add_user(&mut self, token: &str, user: &str) {
        self.tokens.insert(token.to_string(), user.to_string());
    }

    /// Lets a user do anything.
    pub fn add_admin(&mut self, user: &str) {
        self.admins.push(user.to_string());
    }

    /// Adds an allow rule for a user.
    pub fn allow(&mut self, user: &str, rule: Rule) {
        self.rules.entry(user.to_string()).or_default().push(rule);
    }

    /// Removes every rule of a user (the token stays valid).
    pub fn revoke(&mut self, user: &str) {
        self.rules.remove(user);
    }

    /// The user behind a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<&str> {
        self.tokens.get(token).map(String::as_str)
    }

    /// Whether the user may do this.
    pub fn authorize(&self, user: &str, a: &Attributes) -> bool {
        self.admins.iter().any(|u| u == user)
            || self
                .rules
                .get(user)
                .is_some_and(|rs| rs.iter().any(|r| r.allows(a)))
    }

    /// Loads Role/ClusterRole and RoleBinding/ClusterRoleBinding documents (multi-document YAML).
    /// Subjects become users: a ServiceAccount is `system:serviceaccount:<ns>:<name>`, a User its
    /// name. Bindings to roles not in the YAML (built-in roles) grant nothing. Returns the
    /// subjects that received rules.
    pub fn load_rbac(&mut self, yaml: &str) -> Result<Vec<String>, RbacError> {
        let mut docs = Vec::new();
        for de in serde_yaml::Deserializer::from_str(yaml) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(de)?;
            let v: Value = serde_json::to_value(v).unwrap_or(Value::Null);
            if v.is_object() {
                docs.push(v);
            }
        }
        let mut roles: HashMap<(String, String), Vec<Value>> = HashMap::new();
        for d in &docs {
            let kind = d["kind"].as_str().unwrap_or("");
            if kind == "Role" || kind == "ClusterRole" {
                let ns = if kind == "Role" {
                    d["metadata"]["namespace"].as_str().unwrap_or("default")
                } else {
                    ""
                };
                let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
                let rules = match &d["rules"] {
                    Value::Null => Vec::new(),
                    Value::Array(a) => a.clone(),
                    _ => {
                        return Err(RbacError::Shape {
                            kind: kind.into(),
                            name,
                        })
                    }
                };
                roles.insert((ns.to_string(), name), rules);
            }
        }
        let mut granted = Vec::new();
        for d in &docs {
            let kind = d["kind"].as_str().unwrap_or("");
            if kind != "RoleBinding" && kind != "ClusterRoleBinding" {
                continue;
            }
            let binding_ns = (kind == "RoleBinding").then(|| {
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string()
            });
            let role_kind = d["roleRef"]["kind"].as_str().unwrap_or("");
            let role_name = d["roleRef"]["name"].as_str().unwrap_or("").to_string();
            let role_ns = if role_kind == "Role" {
                binding_ns.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let Some(rules) = roles.get(&(role_ns, role_name)) else {
                continue;
            };
            let subjects = d["subjects"].as_array().cloned().unwrap_or_default();
            for s in subjects {
                let user = match s["kind"].as_str() {
                    Some("ServiceAccount") => format!(
                        "system:serviceaccount:{}:{}",
                        s["namespace"]
                            .as_str()
                            .or(binding_ns.as_deref())
                            .unwrap_or("default"),
                        s["name"].as_str().unwrap_or("")
                    ),
                    Some("User") => s["name"].as_str().unwrap_or("").to_string(),
                    _ => continue,
                };
                for r in rules {
                    let list = |f: &str| -> Vec<String> {
                        r[f].as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    self.allow(
                        &user,
                        Rule {
                            verbs: list("verbs"),
                            groups: list("apiGroups"),
                            resources: list("resources"),
                            names: list("resourceNames"),
                            namespace: binding_ns.clone(),
                        },
                    );
                }
                if !granted.contains(&user) {
                    granted.push(user);
                }
            }
        }
        Ok(granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(
        verb: &'a str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: ns,
            name,
        }
    }

    #[test]
    fn namespaced_rule_does_not_allow_cluster_wide_requests() {
        let r = Rule::namespaced("ns", &["list"], &[""], &["secrets"]);
        assert!(r.allows(&attrs("list", "secrets", "", "ns", "")));
        assert!(!r.allows(&attrs("list", "secrets", "", "", "")));
        assert!(!r.allows(&attrs("list", "secrets", "", "other", "")));
    }

    #[test]
    fn subresources_need_their_own_rule() {
        let r = Rule::cluster(&["update"], &[""], &["serviceaccounts"]);
        assert!(!r.allows(&attrs("update", "serviceaccounts", "status", "ns", "x")));
        assert!(r.allows(&attrs("update", "serviceaccounts", "", "ns", "x")));
    }

    #[test]
    fn resource_names_do_not_allow_list() {
        let r = Rule::cluster(&["get", "list"], &[""], &["secrets"]).names(&["a"]);
        assert!(r.allows(&attrs("get", "secrets", "", "ns", "a")));
        assert!(!r.allows(&attrs("get", "secrets", "", "ns", "b")));
        assert!(!r.allows(&attrs("list", "secrets", "", "ns", "")));
    }

    #[test]
    fn debug_output_names_users_not_tokens() {
        let mut a = Authz::default();
        a.add_user("t0k3n", "alice");
        let d = format!("{a:?}");
        assert!(d.contains("alice") && !d.contains("t0k3n"), "{d}");
    }

    #[test]
    fn rbac_yaml_grants_service_account_subjects() {
        let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: c}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r, namespace: sys}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get]
---
kind: ClusterRoleBinding
metadata: {name: cb}
roleRef: {kind: ClusterRole, name: c}
subjects: [{kind: ServiceAccount, name: ctl, namespace: sys}]
---
kind: RoleBinding
metadata: {name: rb, namespace: sys}
roleRef: {kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: ctl, namespace: sys}]
"#;
        let mut a = Authz::default();
        let users = a.load_rbac(yaml).unwrap();
        assert_eq!(users, ["system:serviceaccount:sys:ctl"]);
        let u = "system:serviceaccount:sys:ctl";
        assert!(a.authorize(u, &attrs("list", "secrets", "", "", "")));
        let lease = |ns| Attributes {
            group: "coordination.k8s.io",
            ..attrs("get", "leases", "", ns, "l")
        };
        assert!(a.authorize(u, &lease("sys")));
        assert!(!a.authorize(u, &lease("other")));
        assert!(!a.authorize(u, &attrs("delete", "secrets", "", "ns", "x")));
    }
}
