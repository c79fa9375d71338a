//! Status conditions (`Ready`, `TokenValid`) and `observedGeneration`, beside upstream's three
//! status fields.
//!
//! Pure: from the binding as observed, the outcome of the pass and `now`, compute the conditions a
//! user should see, and the status patch needed to get there (none when they are already there, so
//! the steady state stays free of writes). `lastTransitionTime` only moves when a condition's
//! status changes, as Kubernetes API conventions ask.

use std::borrow::Cow;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::binding::text::Text;
use crate::binding::{
    Binding, BindingError, Condition, NO_TOKEN_MESSAGE, PENDING_MESSAGE, READY, READY_MESSAGE,
    TOKEN_VALID,
};
use crate::clock::rfc3339;

fn condition(
    b: &Binding,
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
    message: Text,
    now: OffsetDateTime,
) -> Condition {
    let previous = match type_ {
        READY => b.status.ready.as_ref(),
        _ => b.status.token_valid.as_ref(),
    };
    let last_transition_time = match previous {
        Some(p) if p.status == status && !p.last_transition_time.is_empty() => {
            p.last_transition_time.clone()
        }
        _ => Cow::Owned(rfc3339::format_seconds(now)),
    };
    Condition {
        type_: Cow::Borrowed(type_),
        status: Cow::Borrowed(status),
        reason: Cow::Borrowed(reason),
        message,
        last_transition_time,
        observed_generation: Some(b.meta.generation),
    }
}

/// The conditions after a pass that ended with `error` and leaves a token expiring at `expires`.
pub fn desired(
    b: &Binding,
    error: Option<&BindingError>,
    expires: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Vec<Condition> {
    let ready = match (error, expires) {
        (Some(e), _) => condition(b, READY, "False", e.reason(), e.to_string().into(), now),
        (None, Some(_)) => condition(
            b,
            READY,
            "True",
            "PullSecretReady",
            READY_MESSAGE.into(),
            now,
        ),
        (None, None) => condition(b, READY, "Unknown", "Pending", PENDING_MESSAGE.into(), now),
    };
    let token = match expires {
        Some(t) if t > now => condition(
            b,
            TOKEN_VALID,
            "True",
            "TokenValid",
            format!(
                "the registry token expires at {}",
                rfc3339::format_seconds(t)
            )
            .into(),
            now,
        ),
        Some(t) => condition(
            b,
            TOKEN_VALID,
            "False",
            "TokenExpired",
            format!(
                "the registry token expired at {}",
                rfc3339::format_seconds(t)
            )
            .into(),
            now,
        ),
        None => condition(
            b,
            TOKEN_VALID,
            "False",
            "NoToken",
            NO_TOKEN_MESSAGE.into(),
            now,
        ),
    };
    vec![ready, token]
}

fn to_json(c: &Condition) -> Value {
    json!({
        "type": c.type_,
        "status": c.status,
        "reason": c.reason,
        "message": c.message,
        "lastTransitionTime": c.last_transition_time,
        "observedGeneration": c.observed_generation,
    })
}

/// The `status` fields to merge so the binding shows `desired(..)`; `None` when it already does.
pub fn status_patch(
    b: &Binding,
    error: Option<&BindingError>,
    expires: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<Value> {
    let want = desired(b, error, expires, now);
    let observed = |c: &Condition| match &*c.type_ {
        READY => b.status.ready.as_ref(),
        _ => b.status.token_valid.as_ref(),
    };
    let same = !b.status.own_duplicated
        && want
            .iter()
            .all(|w| observed(w).is_some_and(|o| o.digest == w.digest()))
        && b.status.observed_generation == Some(b.meta.generation);
    if same {
        return None;
    }
    // Conditions other tools set on the binding are kept; ours replace their previous selves.
    let mut list: Vec<Value> = b.status.foreign.iter().map(to_json).collect();
    list.extend(want.iter().map(to_json));
    Some(json!({"conditions": list, "observedGeneration": b.meta.generation}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{ApiVersion, V1beta1Defaults};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-02 15:04:05 UTC);

    fn binding(generation: i64, status: Value) -> Binding {
        let obj = json!({
            "apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
            "metadata": {"namespace": "ns", "name": "b", "uid": "u", "resourceVersion": "1",
                         "generation": generation},
            "spec": {"acr": {"server": "r.azurecr.io", "scope": "repository:a:pull",
                             "environment": "PublicCloud"},
                     "auth": {"managedIdentity": {"clientID": "c"}}, "serviceAccountName": "default"},
            "status": status,
        });
        Binding::decode(ApiVersion::V1beta2, &obj, &V1beta1Defaults::default()).unwrap()
    }

    fn apply(b: &mut Binding, patch: &Value) {
        let mut status = json!({});
        status["conditions"] = patch["conditions"].clone();
        status["observedGeneration"] = patch["observedGeneration"].clone();
        *b = binding(b.meta.generation, status);
    }

    #[test]
    fn success_is_ready_with_a_valid_token() {
        let b = binding(3, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let c = desired(&b, None, Some(exp), NOW);
        assert_eq!((&*c[0].status, &*c[0].reason), ("True", "PullSecretReady"));
        assert_eq!((&*c[1].status, &*c[1].reason), ("True", "TokenValid"));
        assert_eq!(c[0].observed_generation, Some(3));
        assert_eq!(c[0].last_transition_time, "2026-01-02T15:04:05Z");
    }

    #[test]
    fn failure_keeps_the_token_valid_while_it_lasts() {
        let b = binding(1, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let missing = BindingError::ServiceAccountNotFound { name: "x".into() };
        let c = desired(&b, Some(&missing), Some(exp), NOW);
        assert_eq!(
            (&*c[0].status, &*c[0].reason),
            ("False", "ServiceAccountNotFound")
        );
        assert_eq!(c[1].status, "True");
    }

    #[test]
    fn expired_and_missing_tokens_are_not_valid() {
        let b = binding(1, json!({}));
        let failed = BindingError::TokenRequest {
            step: crate::binding::TokenStep::ArmToken,
            detail: "x".into(),
        };
        let c = desired(&b, Some(&failed), Some(NOW), NOW);
        assert_eq!((&*c[1].status, &*c[1].reason), ("False", "TokenExpired"));
        assert_eq!(c[0].reason, "TokenRequestFailed");
        let c = desired(&b, None, None, NOW);
        assert_eq!((&*c[0].status, &*c[1].reason), ("Unknown", "NoToken"));
    }

    #[test]
    fn steady_state_needs_no_write() {
        let mut b = binding(2, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let p = status_patch(&b, None, Some(exp), NOW).expect("first pass writes");
        apply(&mut b, &p);
        assert_eq!(
            status_patch(&b, None, Some(exp), NOW + time::Duration::minutes(5)),
            None
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut b = binding(1, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let first = status_patch(&b, None, Some(exp), NOW).unwrap();
        apply(&mut b, &first);
        let later = NOW + time::Duration::minutes(10);
        let p = status_patch(
            &b,
            Some(&BindingError::TokenRequest {
                step: crate::binding::TokenStep::AcrToken,
                detail: "boom".into(),
            }),
            Some(exp),
            later,
        )
        .unwrap();
        let ready = &p["conditions"][0];
        let token = &p["conditions"][1];
        assert_eq!(ready["lastTransitionTime"], "2026-01-02T15:14:05Z");
        assert_eq!(
            token["lastTransitionTime"], "2026-01-02T15:04:05Z",
            "TokenValid stayed True"
        );
    }

    #[test]
    fn a_spec_change_updates_observed_generation() {
        let mut b = binding(1, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let first = status_patch(&b, None, Some(exp), NOW).unwrap();
        apply(&mut b, &first);
        b.meta.generation = 2;
        let p = status_patch(&b, None, Some(exp), NOW).unwrap();
        assert_eq!(p["observedGeneration"], 2);
    }

    #[test]
    fn foreign_conditions_are_kept() {
        let b = binding(
            1,
            json!({"conditions": [{"type": "Audited", "status": "True", "reason": "Ok",
                                   "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        );
        let p = status_patch(&b, None, None, NOW).unwrap();
        assert_eq!(p["conditions"][0]["type"], "Audited");
        assert_eq!(p["conditions"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn an_edited_message_is_written_back() {
        let mut b = binding(1, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let mut first = status_patch(&b, None, Some(exp), NOW).unwrap();
        first["conditions"][0]["message"] = json!("edited by hand");
        apply(&mut b, &first);
        let again = status_patch(&b, None, Some(exp), NOW).expect("the edit is undone");
        assert_eq!(again["conditions"][0]["message"], READY_MESSAGE);
    }

    #[test]
    fn a_duplicated_condition_is_written_back_once() {
        let mut b = binding(1, json!({}));
        let exp = NOW + time::Duration::hours(1);
        let mut first = status_patch(&b, None, Some(exp), NOW).unwrap();
        let ready = first["conditions"][0].clone();
        first["conditions"].as_array_mut().unwrap().push(ready);
        apply(&mut b, &first);
        assert!(b.status.own_duplicated);
        let again = status_patch(&b, None, Some(exp), NOW).expect("duplicates are rewritten");
        assert_eq!(again["conditions"].as_array().unwrap().len(), 2);
        apply(&mut b, &again);
        assert!(status_patch(&b, None, Some(exp), NOW).is_none());
    }
}
