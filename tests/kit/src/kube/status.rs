//! Kubernetes `Status` errors with the real kube-apiserver's codes, reasons and message formats.

use serde_json::{json, Value};

use super::resources::ResourceType;

/// One failed API call, as the emulator answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`, formatted as the real server formats it.
    pub message: String,
    /// `Status.details`, when the real server sends them.
    pub details: Option<Value>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({"kind": rt.plural});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details,
            retry_after: None,
        }
    }

    /// The `Status` object the server sends.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // Storage-layer errors reach the client as bare 500s without a reason.
            s.as_object_mut()
                .expect("a Status is an object")
                .remove("reason");
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        if let Some(r) = self.retry_after {
            let d = s
                .as_object_mut()
                .expect("a Status is an object")
                .entry("details")
                .or_insert_with(|| json!({}));
            d["retryAfterSeconds"] = json!(r);
        }
        s
    }

    /// `secrets "x" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
            Some(details(rt, name)),
        )
    }

    /// A path the server does not serve (also: a CRD that is not installed).
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            Some(json!({})),
        )
    }

    /// `secrets "x" already exists`.
    pub fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
            Some(details(rt, name)),
        )
    }

    /// The optimistic-concurrency conflict.
    pub fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::conflict_because(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Operation cannot be fulfilled on <res> "<name>": <why>`.
    pub fn conflict_because(rt: &ResourceType, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified()
            ),
            Some(details(rt, name)),
        )
    }

    /// 422 Invalid with one field cause: `Secret "x" is invalid: <field>: <detail>`.
    pub fn invalid(
        rt: &ResourceType,
        name: &str,
        field: &str,
        cause_reason: &str,
        detail: &str,
    ) -> ApiError {
        let mut d = json!({"kind": rt.kind, "name": name, "causes": [{
            "reason": cause_reason, "message": detail, "field": field,
        }]});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                rt.qualified_kind()
            ),
            Some(d),
        )
    }

    /// 422 Invalid for a field value (`Invalid value: "v": why`).
    pub fn invalid_value(
        rt: &ResourceType,
        name: &str,
        field: &str,
        value: &str,
        why: &str,
    ) -> ApiError {
        ApiError::invalid(
            rt,
            name,
            field,
            "FieldValueInvalid",
            &format!("Invalid value: \"{value}\": {why}"),
        )
    }

    /// 422 Invalid for a missing field.
    pub fn required(rt: &ResourceType, name: &str, field: &str) -> ApiError {
        ApiError::invalid(rt, name, field, "FieldValueRequired", "Required value")
    }

    /// 403 Forbidden with the authorizer's wording.
    pub fn forbidden(
        rt_plural: &str,
        group: &str,
        subresource: &str,
        name: &str,
        user: &str,
        verb: &str,
        namespace: &str,
    ) -> ApiError {
        let qualified = if group.is_empty() {
            rt_plural.to_string()
        } else {
            format!("{rt_plural}.{group}")
        };
        let subject = if name.is_empty() {
            qualified
        } else {
            format!("{qualified} \"{name}\"")
        };
        let resource = if subresource.is_empty() {
            rt_plural.to_string()
        } else {
            format!("{rt_plural}/{subresource}")
        };
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        let mut d = json!({"kind": rt_plural});
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
            ),
            Some(d),
        )
    }

    /// The etcd3 store's refusal of a create that carries a resourceVersion: a bare 500.
    pub fn rv_on_create() -> ApiError {
        ApiError::new(
            500,
            "",
            "resourceVersion should not be set on objects to be created".into(),
            None,
        )
    }

    /// 401 for a missing or unknown bearer token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// 400 Bad Request.
    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(400, "BadRequest", message, None)
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            None,
        )
    }

    /// 415 for a patch type the resource does not accept.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"),
            None,
        )
    }

    /// 410 for a watch or continue token older than the retained history.
    pub fn expired(message: String) -> ApiError {
        ApiError::new(410, "Expired", message, None)
    }

    /// 410 for a watch resume point older than the history, as the watch cache words it.
    pub fn too_old(requested: u64, oldest: u64) -> ApiError {
        ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    /// 422 for a JSON patch that cannot be applied (a failed `test` included).
    ///
    /// kube-apiserver's patch handler wraps any jsonpatch `Apply` error in
    /// `NewGenericServerResponse(422, ...)`: reason `Invalid`, the generic message below, and the
    /// library's own text as the single cause.
    pub fn patch_failed(cause: &str) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
            Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]})),
        )
    }

    /// An injected fault with an arbitrary code.
    pub fn injected(code: u16, message: &str, retry_after: Option<u64>) -> ApiError {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        ApiError {
            retry_after,
            ..ApiError::new(code, reason, message.to_string(), Some(json!({})))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources;

    #[test]
    fn not_found_names_the_qualified_resource() {
        let rt = resources::lookup("acrpullbindings.acrpull.microsoft.com").unwrap();
        let s = ApiError::not_found(rt, "b").to_status();
        assert_eq!(
            s["message"],
            "acrpullbindings.acrpull.microsoft.com \"b\" not found"
        );
        assert_eq!(s["details"]["group"], "acrpull.microsoft.com");
        assert_eq!(s["code"], 404);
    }

    #[test]
    fn forbidden_message_matches_the_authorizer() {
        let e = ApiError::forbidden("secrets", "", "", "x", "u", "get", "ns");
        assert_eq!(
            e.message,
            "secrets \"x\" is forbidden: User \"u\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ns\""
        );
        let e = ApiError::forbidden("secrets", "", "", "", "u", "list", "");
        assert!(e.message.ends_with("at the cluster scope"), "{}", e.message);
    }

    #[test]
    fn retry_after_lands_in_details() {
        let s = ApiError::injected(429, "slow down", Some(1)).to_status();
        assert_eq!(s["details"]["retryAfterSeconds"], 1);
        assert_eq!(s["reason"], "TooManyRequests");
    }
}
