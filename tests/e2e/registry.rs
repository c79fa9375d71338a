//! End to end with a real registry: acrpull mints pull Secrets for bindings whose server is a real
//! `docker-registry` trusting the fake ACR's tokens, and `skopeo` pulls with exactly those Secrets.
//!
//! Skips (with a printed reason) when `docker-registry` or `skopeo` is not installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use acrpull_testkit::registry::{
    refresh_token, tools_available, RealRegistry, Skopeo, SkopeoOutput, TestImage, NULL_GUID,
};
use acrpull_testkit::world::{
    binding_v1beta1, binding_v1beta2, identity, Acrpull, AcrpullOptions, World, TENANT,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use crate::bin;

const WAIT: Duration = Duration::from_secs(30);
const PUSHER: &str = "pusher-object-id";

/// A world, a real registry holding `app-a:v1` and `app-b:v1`, and acrpull pointed at both.
struct Fixture {
    // Field order is drop order: acrpull, then the registry, then the world (the realm).
    acrpull: Acrpull,
    skopeo: Skopeo,
    registry: RealRegistry,
    w: World,
}

impl Fixture {
    fn start() -> Option<Fixture> {
        if let Err(e) = tools_available() {
            eprintln!("SKIPPED: {e} (apt-get install docker-registry skopeo)");
            return None;
        }
        let mut w = World::start();
        // The v1beta2 CRD's CEL rule wants a server without a port (`getHostname() == self`),
        // and a test registry cannot listen on 443: let the binding through as written.
        w.api.set_crd_validation(false);
        let realm = format!("https://{}", w.azure_addr());
        let registry = RealRegistry::start(w.ca(), &w.azure.acr, &realm)
            .unwrap_or_else(|e| panic!("the registry starts: {e}"));
        let host = registry.host().to_string();
        w.grant(PUSHER, &host, "*", &["pull", "push"]);
        w.grant(&identity(1).object_id, &host, "*", &["pull"]);
        let skopeo = Skopeo::new().expect("skopeo runner");
        let push = refresh_token(&w.azure.acr, &host, TENANT, PUSHER).expect("pusher exchange");
        for repo in ["app-a", "app-b"] {
            let image = TestImage::new("v1", "hello.txt", repo.as_bytes()).expect("image");
            let out = skopeo
                .push(&image, &registry, repo, &push)
                .expect("skopeo runs");
            assert!(out.success, "push of {repo}: {}", out.stderr);
        }
        let opts = AcrpullOptions {
            args: vec![
                // The registry is an IP with a port: its host must be on the allow-list.
                "--allowed-acr-server-suffixes=azurecr.io,127.0.0.1".into(),
                format!("--connect-to={}", registry.connect_to_rule(w.azure_addr())),
                // That rule catches every 127.0.0.1 URL, the fake IMDS's too: name it otherwise.
                w.imds_url().replace("127.0.0.1", "localhost").replacen(
                    "http",
                    "--imds-endpoint=http",
                    1,
                ),
            ],
            ..AcrpullOptions::default()
        };
        let acrpull = w.start_acrpull(bin(), &opts);
        Some(Fixture {
            acrpull,
            skopeo,
            registry,
            w,
        })
    }

    /// Waits for the Secret `name` to carry a token and writes its `.dockerconfigjson` to an
    /// authfile, checking it names the registry.
    fn authfile_from_secret(&self, name: &str) -> PathBuf {
        let secret = self.w.wait_for(&format!("secret {name}"), WAIT, || {
            self.w.api.get("secrets", "default", name)
        });
        let b64 = secret["data"][".dockerconfigjson"]
            .as_str()
            .expect("the Secret has .dockerconfigjson");
        let bytes = STANDARD.decode(b64).expect(".dockerconfigjson is base64");
        let config: Value = serde_json::from_slice(&bytes).expect(".dockerconfigjson is JSON");
        let entry = &config["auths"][self.registry.host()];
        assert_eq!(entry["username"], NULL_GUID, "entry for the registry host");
        let path = self.skopeo.scratch().join(format!("{name}.json"));
        std::fs::write(&path, bytes).expect("authfile written");
        path
    }

    fn inspect(&self, repo: &str, authfile: &Path) -> SkopeoOutput {
        self.skopeo
            .inspect(
                &self.registry.image_ref(repo, "v1"),
                &self.registry.cert_dir(),
                Some(authfile),
            )
            .expect("skopeo runs")
    }

    fn assert_pulls(&self, repo: &str, authfile: &Path) {
        let out = self.inspect(repo, authfile);
        assert!(
            out.success,
            "inspect of {repo} failed: {}\nregistry log:\n{}\nacrpull log:\n{}",
            out.stderr,
            self.registry.log(),
            self.acrpull.log.text()
        );
        let v: Value = serde_json::from_str(&out.stdout).expect("inspect prints JSON");
        assert!(v["Digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")));
    }

    fn assert_refused(&self, repo: &str, authfile: &Path) {
        let out = self.inspect(repo, authfile);
        assert!(!out.success, "inspect of {repo} unexpectedly succeeded");
        let err = out.stderr.to_ascii_lowercase();
        assert!(
            err.contains("unauthorized")
                || err.contains("authentication required")
                || err.contains("denied"),
            "inspect of {repo} failed for another reason: {}",
            out.stderr
        );
    }
}

#[test]
fn minted_secrets_pull_within_their_scope_and_vanish_with_their_binding() {
    let Some(fx) = Fixture::start() else { return };
    let host = fx.registry.host().to_string();
    let client = identity(1).client_id;
    let both = "repository:app-a:pull repository:app-b:pull";
    for (name, scope) in [("both", both), ("only-a", "repository:app-a:pull")] {
        fx.w.api
            .create(
                BINDINGS_V1BETA2,
                "default",
                binding_v1beta2("default", name, &host, scope, &client, "default"),
            )
            .expect("binding accepted");
    }

    let both_auth = fx.authfile_from_secret("acr-pull-both");
    fx.assert_pulls("app-a", &both_auth);
    fx.assert_pulls("app-b", &both_auth);

    let only_a = fx.authfile_from_secret("acr-pull-only-a");
    fx.assert_pulls("app-a", &only_a);
    fx.assert_refused("app-b", &only_a);

    fx.w.wait_for("both Secrets on the ServiceAccount", WAIT, || {
        let refs = fx.w.pull_secrets("default", "default");
        (refs.contains(&"acr-pull-both".to_string())
            && refs.contains(&"acr-pull-only-a".to_string()))
        .then_some(())
    });

    fx.w.api
        .delete(BINDINGS_V1BETA2, "default", "only-a")
        .expect("binding deleted");
    fx.w.wait_for("the scoped Secret deleted", WAIT, || {
        fx.w.api
            .get("secrets", "default", "acr-pull-only-a")
            .is_none()
            .then_some(())
    });
    fx.w.wait_for("the binding gone", WAIT, || {
        fx.w.api
            .get(BINDINGS_V1BETA2, "default", "only-a")
            .is_none()
            .then_some(())
    });
    assert_eq!(fx.w.pull_secrets("default", "default"), ["acr-pull-both"]);
    // The other binding's credential is untouched and still pulls.
    let again = fx.authfile_from_secret("acr-pull-both");
    fx.assert_pulls("app-b", &again);
}

#[test]
fn an_unscoped_v1beta1_secret_pulls_every_granted_repository() {
    let Some(fx) = Fixture::start() else { return };
    let host = fx.registry.host().to_string();
    fx.w.api
        .create(
            BINDINGS_V1BETA1,
            "default",
            binding_v1beta1(
                "default",
                "legacy",
                &host,
                "",
                &identity(1).client_id,
                "default",
            ),
        )
        .expect("binding accepted");
    // v1beta1 without a scope puts the registry refresh token in the Secret (spec §2.5): the
    // client trades it at the realm for whatever repository it pulls.
    let auth = fx.authfile_from_secret("legacy-msi-acrpull-secret");
    fx.assert_pulls("app-a", &auth);
    fx.assert_pulls("app-b", &auth);
    fx.w.api
        .delete(BINDINGS_V1BETA1, "default", "legacy")
        .expect("binding deleted");
    fx.w.wait_for("the Secret deleted", WAIT, || {
        fx.w.api
            .get("secrets", "default", "legacy-msi-acrpull-secret")
            .is_none()
            .then_some(())
    });
}
