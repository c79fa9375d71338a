//! The first end-to-end path: a v1beta2 binding gets its Secret, the ServiceAccount reference and status.

use std::time::Duration;

use acrpull_testkit::kube::BINDINGS_V1BETA2;
use acrpull_testkit::world::{
    binding_v1beta2, free_port, http_get, identity, AcrpullOptions, World, REGISTRY,
};

use crate::{acrpull, bin};

#[test]
fn v1beta2_binding_gets_secret_reference_and_status() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                "b",
                REGISTRY,
                "repository:app:pull",
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
    let secret = w.wait_for("the pull secret", Duration::from_secs(20), || {
        w.api.get("secrets", "default", "acr-pull-b")
    });
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let sa = w.wait_for("the SA reference", Duration::from_secs(20), || {
        let sa = w.api.get("serviceaccounts", "default", "default")?;
        (sa["imagePullSecrets"][0]["name"] == "acr-pull-b").then_some(sa)
    });
    assert_eq!(sa["imagePullSecrets"].as_array().unwrap().len(), 1);
    let b = w.wait_for("status", Duration::from_secs(20), || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", "b")?;
        b["status"]["tokenExpirationTime"].is_string().then_some(b)
    });
    assert!(
        b["status"]
            .get("error")
            .is_none_or(|e| e == "" || e.is_null()),
        "{b}"
    );
}

#[test]
fn metrics_and_probes_answer_after_work() {
    let mut w = World::start();
    let (m, h) = (free_port(), free_port());
    let opts = AcrpullOptions {
        args: vec![
            format!("--metrics-bind-address=127.0.0.1:{m}"),
            format!("--health-probe-bind-address=127.0.0.1:{h}"),
        ],
        ..AcrpullOptions::default()
    };
    let _p = w.start_acrpull(bin(), &opts);
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                "b",
                REGISTRY,
                "repository:app:pull",
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
    let get = |url: String| http_get(&url);
    w.wait_for("readyz", Duration::from_secs(20), || {
        get(format!("http://127.0.0.1:{h}/readyz")).filter(|(c, _)| *c == 200)
    });
    let text = w.wait_for(
        "a successful reconcile in metrics",
        Duration::from_secs(20),
        || {
            get(format!("http://127.0.0.1:{m}/metrics"))
                .map(|(_, t)| t)
                .filter(|t| t.contains("acrpull_secret_writes_total{op=\"create\"} 1"))
        },
    );
    assert!(
        text.contains("acrpull_token_requests_total{upstream=\"imds\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("acrpull_kube_requests_total"), "{text}");
    let (code, _) = get(format!("http://127.0.0.1:{h}/healthz")).unwrap();
    assert_eq!(code, 200);
}
