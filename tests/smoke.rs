//! The first end-to-end path: a v1beta2 binding gets its Secret, the ServiceAccount reference and status.

use std::path::Path;
use std::time::Duration;

use acrpull_testkit::kube::BINDINGS_V1BETA2;
use acrpull_testkit::world::{binding_v1beta2, identity, AcrpullOptions, World, REGISTRY};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_acrpull"))
}

#[test]
fn v1beta2_binding_gets_secret_reference_and_status() {
    let mut w = World::start();
    let _p = w.start_acrpull(bin(), &AcrpullOptions::default());
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
