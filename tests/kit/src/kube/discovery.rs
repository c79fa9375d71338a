//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{g}[/{v}]`) and the service-account
//! issuer's OIDC documents, built from the served resource table.

use serde_json::{json, Value};

use super::resources::{ResourceType, ALL, SERVICE_ACCOUNTS};
use super::token::ISSUER;

/// Every served resource supports the full verb set.
fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ])
}

fn served<'a>(
    installed: &'a dyn Fn(&ResourceType) -> bool,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    ALL.iter().copied().filter(move |rt| installed(rt))
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// The discovery document for `path`, or `None` when the path is not a discovery path (or
/// names a group or version that is not served).
pub fn document(path: &str, installed: &dyn Fn(&ResourceType) -> bool) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
        ["apis"] => {
            let mut groups: Vec<Value> = Vec::new();
            let mut seen: Vec<&str> = Vec::new();
            for rt in served(installed).filter(|rt| !rt.group.is_empty()) {
                if !seen.contains(&rt.group) {
                    seen.push(rt.group);
                    groups.push(group_doc(rt.group, rt.version));
                }
            }
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] => served(installed).find(|rt| rt.group == *g).map(|rt| {
            let mut d = group_doc(rt.group, rt.version);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        }),
        ["api", "v1"] => Some(resource_list("", "v1", installed)),
        ["apis", g, v] => {
            let list = resource_list(g, v, installed);
            (!list["resources"].as_array().is_some_and(|a| a.is_empty())).then_some(list)
        }
        _ => None,
    }
}

fn resource_list(group: &str, version: &str, installed: &dyn Fn(&ResourceType) -> bool) -> Value {
    let mut resources = Vec::new();
    for rt in served(installed).filter(|rt| rt.group == group && rt.version == version) {
        resources.push(
            json!({"name": rt.plural, "singularName": "", "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": verbs()}),
        );
        if rt.custom {
            resources.push(
                json!({"name": format!("{}/status", rt.plural), "singularName": "",
                "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if std::ptr::eq(rt, &SERVICE_ACCOUNTS) {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// `/.well-known/openid-configuration` for the ServiceAccount token issuer.
pub fn openid_configuration(base_url: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{base_url}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_list_drops_uninstalled_crds() {
        let all = |_: &ResourceType| true;
        let d = document("/apis", &all).unwrap();
        let names: Vec<&str> = d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"acrpull.microsoft.com"));
        let no_b2 = |rt: &ResourceType| rt.group != "acrpull.microsoft.com";
        let d = document("/apis", &no_b2).unwrap();
        assert!(!d.to_string().contains("\"acrpull.microsoft.com\""));
        assert!(document("/apis/acrpull.microsoft.com/v1beta2", &no_b2).is_none());
    }

    #[test]
    fn core_resource_list_names_the_token_subresource() {
        let d = document("/api/v1", &|_: &ResourceType| true).unwrap();
        assert!(d["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "serviceaccounts/token"));
    }
}
