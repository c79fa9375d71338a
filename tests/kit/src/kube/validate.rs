//! Object validation the real server performs on write: names, labels, Secrets, Events, Leases.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::resources::{self, ResourceType};
use super::status::ApiError;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_chars(s)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, any length.
fn is_dns1123_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Dot-separated DNS-1123 labels, at most 253 characters in all. Like apimachinery's
/// `IsDNS1123Subdomain`, only the total length is limited: a 100-character name without dots is
/// a valid object name.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label_chars)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The problem with a label key, if any (`[prefix/]name`, name ≤ 63, prefix a DNS subdomain).
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if !is_dns1123_subdomain(p) {
            return Some(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_qualified_part(name) {
        return Some(QUALIFIED_NAME_MSG.into());
    }
    None
}

/// The problem with a label value, if any (empty, or ≤ 63 of the qualified-name pattern).
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !is_qualified_part(value) {
        return Some(LABEL_VALUE_MSG.into());
    }
    None
}

/// Validates the parts every object shares: its name and its labels.
pub fn metadata(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::required(rt, name, "metadata.name"));
    }
    let (ok, msg) = if std::ptr::eq(rt, &resources::NAMESPACES) {
        (is_dns1123_label(name), DNS1123_LABEL_MSG)
    } else {
        (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG)
    };
    if !ok {
        return Err(ApiError::invalid_value(
            rt,
            name,
            "metadata.name",
            name,
            msg,
        ));
    }
    if let Some(labels) = obj["metadata"].get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(p) = label_key_problem(k) {
                return Err(ApiError::invalid_value(rt, name, "metadata.labels", k, &p));
            }
            let v = v.as_str().unwrap_or("");
            if let Some(p) = label_value_problem(v) {
                return Err(ApiError::invalid_value(rt, name, "metadata.labels", v, &p));
            }
        }
    }
    Ok(())
}

/// Secret rules: base64 data (a decode failure is a 400, as the JSON decoder fails first),
/// `stringData` folded into `data`, `Opaque` by default, and a valid `.dockerconfigjson` for that type.
pub fn secret(obj: &mut Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for v in data.values() {
            let s = v.as_str().unwrap_or("");
            if STANDARD.decode(s).is_err() {
                return Err(ApiError::bad_request(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0".into(),
                ));
            }
        }
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        let data = obj
            .as_object_mut()
            .expect("a Secret is an object")
            .entry("data")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                d.insert(k, Value::String(STANDARD.encode(v.as_str().unwrap_or(""))));
            }
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        obj["type"] = Value::String("Opaque".into());
    }
    if obj["type"] == "kubernetes.io/dockerconfigjson" {
        let rt = &resources::SECRETS;
        let field = "data[.dockerconfigjson]";
        let Some(enc) = obj["data"][".dockerconfigjson"].as_str() else {
            return Err(ApiError::required(rt, &name, field));
        };
        let raw = STANDARD.decode(enc).unwrap_or_default();
        if serde_json::from_slice::<Value>(&raw).is_err() {
            return Err(ApiError::invalid_value(
                rt,
                &name,
                field,
                "<secret contents redacted>",
                "invalid JSON",
            ));
        }
    }
    Ok(())
}

/// `events.k8s.io/v1` required fields.
pub fn event(obj: &Value) -> Result<(), ApiError> {
    let rt = &resources::EVENTS;
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if obj.get(field).is_none_or(|v| v.is_null() || v == "") {
            return Err(ApiError::required(rt, name, field));
        }
    }
    for field in ["reportingInstance", "action", "reason"] {
        if obj[field].as_str().unwrap_or("").len() > 128 {
            return Err(ApiError::invalid(
                rt,
                name,
                field,
                "FieldValueTooLong",
                "Too long: may not be more than 128 bytes",
            ));
        }
    }
    match obj["type"].as_str() {
        Some("Normal") | Some("Warning") => {}
        other => {
            return Err(ApiError::invalid_value(
                rt,
                name,
                "type",
                other.unwrap_or(""),
                "has invalid value: must be Normal or Warning",
            ))
        }
    }
    if obj["note"].as_str().unwrap_or("").len() > 1024 {
        return Err(ApiError::invalid(
            rt,
            name,
            "note",
            "FieldValueTooLong",
            "Too long: may not be more than 1024 bytes",
        ));
    }
    Ok(())
}

/// The namespace rule every Event write passes (apiserver's `legacyValidateEvent`, run for
/// core/v1 and `events.k8s.io/v1` alike): the involved object's namespace (`involvedObject` in
/// core/v1, `regarding` in `events.k8s.io/v1`) must agree with the Event's. The server validates
/// its internal type, so the error names `involvedObject.namespace` for both versions (observed
/// on a real 1.36 server for an `events.k8s.io/v1` Event). Without `eventTime`
/// an empty one is allowed only in the namespaces `""` and `default`, and a set one must equal
/// the Event's; with `eventTime` an empty one is allowed only in `default` and `kube-system`.
pub fn event_namespace(rt: &ResourceType, ns: &str, obj: &Value) -> Result<(), ApiError> {
    let field = if std::ptr::eq(rt, &resources::CORE_EVENTS) {
        "involvedObject"
    } else {
        "regarding"
    };
    let involved = obj[field]["namespace"].as_str().unwrap_or("");
    let has_time = obj
        .get("eventTime")
        .is_some_and(|t| !t.is_null() && t != "");
    let ok = match (has_time, involved.is_empty()) {
        (false, true) => ns.is_empty() || ns == "default",
        (false, false) => involved == ns,
        (true, true) => ns == "default" || ns == "kube-system",
        (true, false) => true,
    };
    if ok {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::invalid_value(
        rt,
        name,
        "involvedObject.namespace",
        involved,
        "does not match event.namespace",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_events_involved_namespace_must_match_its_own() {
        let core = &resources::CORE_EVENTS;
        let ev = |f: &str, ns: &str, time: bool| {
            let mut e = json!({"metadata": {"name": "e"}, f: {"kind": "Pod", "name": "p"}});
            if !ns.is_empty() {
                e[f]["namespace"] = json!(ns);
            }
            if time {
                e["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
            }
            e
        };
        assert!(event_namespace(core, "ns", &ev("involvedObject", "ns", false)).is_ok());
        let e = event_namespace(core, "ns", &ev("involvedObject", "other", false)).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.to_status()["message"].as_str().unwrap().contains(
            "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
        ));
        assert!(event_namespace(core, "ns", &ev("involvedObject", "", false)).is_err());
        assert!(event_namespace(core, "default", &ev("involvedObject", "", false)).is_ok());
        let v1 = &resources::EVENTS;
        let e = event_namespace(v1, "ns", &ev("regarding", "", true)).unwrap_err();
        assert!(e.to_status()["message"].as_str().unwrap().contains(
            "involvedObject.namespace: Invalid value: \"\": does not match event.namespace"
        ));
        assert!(event_namespace(v1, "ns", &ev("regarding", "ns", true)).is_ok());
        assert!(event_namespace(v1, "kube-system", &ev("regarding", "", true)).is_ok());
    }

    #[test]
    fn dns_names_follow_rfc1123() {
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        // Only the total is limited, as in apimachinery: one 253-character label is a valid name.
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(is_dns1123_subdomain(&"a".repeat(100)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn label_values_over_63_characters_are_refused() {
        assert!(label_value_problem(&"a".repeat(63)).is_none());
        assert!(label_value_problem(&"a".repeat(64)).is_some());
        assert!(label_value_problem("").is_none());
        assert!(label_value_problem("-a").is_some());
        assert!(label_key_problem("acrpull.microsoft.com/binding").is_none());
        assert!(label_key_problem("/x").is_some());
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        secret(&mut s).unwrap();
        assert_eq!(s["data"]["k"], "dg==");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn secret_data_must_be_base64() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"k": "!!"}});
        assert_eq!(secret(&mut s).unwrap_err().code, 400);
    }

    #[test]
    fn dockerconfigjson_secret_needs_its_key() {
        let mut s = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/dockerconfigjson"});
        assert_eq!(secret(&mut s).unwrap_err().code, 422);
    }
}
