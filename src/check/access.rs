//! Compares the registry scope a binding asks for with the `access` claim the registry granted.
//!
//! ACR answers a scope it cannot fully grant with a token limited to what the identity holds
//! (possibly nothing) instead of an error, so a pull fails later with a bare 401. This is where
//! `acrpull check` makes that visible.

use serde_json::{Map, Value};

/// One entry of an ACR `access` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `type`, e.g. `repository`.
    pub kind: String,
    /// `name`, e.g. `app`.
    pub name: String,
    /// `actions`, e.g. `pull`.
    pub actions: Vec<String>,
}

/// How the granted access relates to the requested scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every requested action was granted.
    Full,
    /// Some were granted; these `type:name:action` were not.
    Narrower {
        /// The requested actions missing from the token.
        missing: Vec<String>,
    },
    /// None of the requested actions was granted: pulls with this token fail.
    Nothing,
}

/// The `access` claim of a registry token's payload; `None` when it has none.
pub fn granted(payload: &Map<String, Value>) -> Option<Vec<Grant>> {
    let list = payload.get("access")?.as_array()?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some(
        list.iter()
            .map(|entry| Grant {
                kind: text(entry, "type"),
                name: text(entry, "name"),
                actions: entry
                    .get("actions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
    )
}

/// Grants written back in scope syntax (`repository:app:pull,push`), space-separated; `none`
/// when empty.
pub fn format_grants(grants: &[Grant]) -> String {
    if grants.is_empty() {
        return "none".to_string();
    }
    grants
        .iter()
        .map(|g| format!("{}:{}:{}", g.kind, g.name, g.actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each requested `type:name:action`, from a space-separated scope string.
fn requested_actions(scope: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for item in scope.split_whitespace() {
        // Names may not hold `:`, but split from both ends so `registry:catalog:*` still reads.
        let parsed = item
            .split_once(':')
            .and_then(|(kind, rest)| rest.rsplit_once(':').map(|(name, acts)| (kind, name, acts)));
        match parsed {
            Some((kind, name, actions)) => {
                for action in actions.split(',').filter(|a| !a.is_empty()) {
                    out.push((kind.to_string(), name.to_string(), action.to_string()));
                }
            }
            // Not scope syntax: it can never be granted, so report it as missing whole.
            None => out.push((item.to_string(), String::new(), String::new())),
        }
    }
    out
}

/// Compares `scope` (as the binding requests it) with what the token grants.
pub fn compare(scope: &str, grants: &[Grant]) -> Verdict {
    let requested = requested_actions(scope);
    let is_granted = |(kind, name, action): &(String, String, String)| {
        grants.iter().any(|g| {
            g.kind == *kind && g.name == *name && g.actions.iter().any(|a| a == action || a == "*")
        })
    };
    let missing: Vec<String> = requested
        .iter()
        .filter(|r| !is_granted(r))
        .map(|(k, n, a)| {
            if n.is_empty() && a.is_empty() {
                k.clone()
            } else {
                format!("{k}:{n}:{a}")
            }
        })
        .collect();
    if missing.is_empty() {
        Verdict::Full
    } else if missing.len() == requested.len() {
        Verdict::Nothing
    } else {
        Verdict::Narrower { missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(kind: &str, name: &str, actions: &[&str]) -> Grant {
        Grant {
            kind: kind.into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn the_access_claim_is_read_in_order() {
        let payload = json!({"access": [
            {"type": "repository", "name": "app", "actions": ["pull", "push"]},
            {"type": "repository", "name": "lib", "actions": ["pull"]}
        ]});
        let g = granted(payload.as_object().unwrap()).unwrap();
        assert_eq!(
            g,
            vec![
                grant("repository", "app", &["pull", "push"]),
                grant("repository", "lib", &["pull"])
            ]
        );
        assert_eq!(
            format_grants(&g),
            "repository:app:pull,push repository:lib:pull"
        );
    }

    #[test]
    fn a_token_without_an_access_claim_has_no_grants_to_show() {
        assert_eq!(granted(json!({"exp": 1}).as_object().unwrap()), None);
        assert_eq!(format_grants(&[]), "none");
    }

    #[test]
    fn everything_requested_granted_is_full() {
        let g = [grant("repository", "app", &["pull"])];
        assert_eq!(compare("repository:app:pull", &g), Verdict::Full);
        let star = [grant("registry", "catalog", &["*"])];
        assert_eq!(compare("registry:catalog:*", &star), Verdict::Full);
    }

    #[test]
    fn a_partly_granted_scope_is_narrower_and_names_what_is_missing() {
        let g = [grant("repository", "app", &["pull"])];
        assert_eq!(
            compare("repository:app:pull,push repository:lib:pull", &g),
            Verdict::Narrower {
                missing: vec!["repository:app:push".into(), "repository:lib:pull".into()]
            }
        );
    }

    #[test]
    fn an_empty_grant_is_nothing() {
        assert_eq!(compare("repository:app:pull", &[]), Verdict::Nothing);
        let other = [grant("repository", "other", &["pull"])];
        assert_eq!(compare("repository:app:pull", &other), Verdict::Nothing);
    }

    #[test]
    fn text_that_is_not_a_scope_is_reported_missing_whole() {
        let g = [grant("repository", "app", &["pull"])];
        assert_eq!(
            compare("repository:app:pull garbage", &g),
            Verdict::Narrower {
                missing: vec!["garbage".into()]
            }
        );
    }
}
