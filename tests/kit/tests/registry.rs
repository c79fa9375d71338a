//! A real registry (distribution) trusts the fake ACR's tokens: skopeo pulls with a pull Secret in
//! acrpull's exact format, and only within that token's scope and lifetime.
//!
//! Skips (with a printed reason) when `docker-registry` or `skopeo` is not installed.

use std::sync::Arc;

use acrpull_testkit::azure::Acr;
use acrpull_testkit::http::serve_https;
use acrpull_testkit::registry::{
    access_token, refresh_token, tools_available, write_authfile, RealRegistry, Skopeo,
    SkopeoOutput, TempDir, TestImage, TokenTrust,
};
use acrpull_testkit::tls::Ca;

const TENANT: &str = "tenant-registry";
const PUSHER: &str = "pusher-object-id";
const PULLER: &str = "puller-object-id";

/// The fake ACR on HTTPS, the real registry trusting it, two pushed repositories.
struct Fixture {
    acr: Arc<Acr>,
    registry: RealRegistry,
    skopeo: Skopeo,
    // Dropped last: the registry's realm must outlive the registry.
    _acr_server: acrpull_testkit::http::Server,
}

impl Fixture {
    /// `None` (after printing why) when the tools are missing.
    fn start() -> Option<Fixture> {
        if let Err(e) = tools_available() {
            eprintln!("SKIPPED: {e} (apt-get install docker-registry skopeo)");
            return None;
        }
        let ca = Ca::new();
        let acr = Arc::new(Acr::new());
        let acr_server = serve_https(acr.clone(), ca.server_config(&["127.0.0.1"]))
            .expect("the fake ACR listens on loopback");
        let registry = RealRegistry::start(&ca, &acr, &acr_server.url())
            .unwrap_or_else(|e| panic!("registry starts: {e}"));
        let host = registry.host().to_string();
        acr.grant(PUSHER, &host, &[("*", &["pull", "push"])]);
        acr.grant(PULLER, &host, &[("*", &["pull"])]);
        let skopeo = Skopeo::new().expect("skopeo runner");
        let push = refresh_token(&acr, &host, TENANT, PUSHER).expect("pusher exchange");
        for repo in ["app-a", "app-b"] {
            let image = TestImage::new("v1", "hello.txt", repo.as_bytes()).expect("image");
            let out = skopeo
                .push(&image, &registry, repo, &push)
                .expect("skopeo runs");
            assert_ok(&out, &registry, "push");
        }
        Some(Fixture {
            acr,
            registry,
            skopeo,
            _acr_server: acr_server,
        })
    }

    /// An acrpull-format auth file holding an access token for `scope`, as acrpull mints it.
    fn authfile(&self, name: &str, scope: &str) -> std::path::PathBuf {
        let host = self.registry.host();
        let refresh = refresh_token(&self.acr, host, TENANT, PULLER).expect("puller exchange");
        let token = access_token(&self.acr, host, &refresh, scope).expect("access token");
        write_authfile(self.skopeo.scratch(), name, host, &token).expect("auth file")
    }

    fn inspect(&self, repo: &str, authfile: Option<&std::path::Path>) -> SkopeoOutput {
        self.skopeo
            .inspect(
                &self.registry.image_ref(repo, "v1"),
                &self.registry.cert_dir(),
                authfile,
            )
            .expect("skopeo runs")
    }
}

fn assert_ok(out: &SkopeoOutput, registry: &RealRegistry, what: &str) {
    assert!(
        out.success,
        "{what} failed: {}\nregistry log:\n{}",
        out.stderr,
        registry.log()
    );
}

fn assert_refused(out: &SkopeoOutput, what: &str) {
    assert!(!out.success, "{what} unexpectedly succeeded");
    let err = out.stderr.to_ascii_lowercase();
    assert!(
        err.contains("unauthorized")
            || err.contains("authentication required")
            || err.contains("denied"),
        "{what} failed for another reason: {}",
        out.stderr
    );
}

#[test]
fn an_acrpull_format_secret_pulls_its_repository() {
    let Some(fx) = Fixture::start() else { return };
    let authfile = fx.authfile("pull-a.json", "repository:app-a:pull");
    let out = fx.inspect("app-a", Some(&authfile));
    assert_ok(&out, &fx.registry, "inspect");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("inspect prints JSON");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1));
    assert!(v["Digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));

    let dest = TempDir::new("pulled").expect("temp dir");
    let out = fx
        .skopeo
        .copy_to_dir(
            &fx.registry.image_ref("app-a", "v1"),
            &fx.registry.cert_dir(),
            &authfile,
            dest.path(),
        )
        .expect("skopeo runs");
    assert_ok(&out, &fx.registry, "copy");
    assert!(dest.path().join("manifest.json").is_file());
    // skopeo got its registry tokens from the fake ACR's realm, as the puller, for that scope:
    // once when we minted the Secret's token, then at least once per skopeo run.
    let key = (
        fx.registry.host().to_string(),
        PULLER.to_string(),
        "repository:app-a:pull".to_string(),
    );
    assert!(fx.acr.counters().tokens.get(&key).copied().unwrap_or(0) >= 3);
}

#[test]
fn a_token_scoped_to_one_repository_cannot_pull_another() {
    let Some(fx) = Fixture::start() else { return };
    let authfile = fx.authfile("pull-a.json", "repository:app-a:pull");
    assert_refused(&fx.inspect("app-b", Some(&authfile)), "inspect of app-b");
    assert_ok(
        &fx.inspect("app-a", Some(&authfile)),
        &fx.registry,
        "inspect of app-a",
    );
}

#[test]
fn expired_or_absent_credentials_are_refused() {
    let Some(fx) = Fixture::start() else { return };
    assert_refused(&fx.inspect("app-a", None), "inspect without credentials");
    // Minted by a fake whose clock is 3 h behind, so the tokens (3 h refresh, 75 min access)
    // have already expired in real time.
    fx.acr.shared().clock.set_skew(-3 * 3600);
    let expired = fx.authfile("expired.json", "repository:app-a:pull");
    fx.acr.shared().clock.set_skew(0);
    let refused_before = fx.acr.counters().refused;
    assert_refused(
        &fx.inspect("app-a", Some(&expired)),
        "inspect with an expired token",
    );
    assert!(
        fx.acr.counters().refused > refused_before,
        "the realm refused it"
    );
}

#[test]
fn tokens_not_chained_to_the_registrys_root_are_refused() {
    let Some(fx) = Fixture::start() else { return };
    // Same key, certified by a CA the registry does not trust.
    let stranger = TokenTrust::new().expect("token trust");
    fx.acr.set_token_certificate_chain(stranger.chain());
    let authfile = fx.authfile("untrusted.json", "repository:app-a:pull");
    assert_refused(
        &fx.inspect("app-a", Some(&authfile)),
        "inspect with an untrusted chain",
    );
    // No chain at all: distribution cannot find the key.
    fx.acr.set_token_certificate_chain(&[]);
    let authfile = fx.authfile("unchained.json", "repository:app-a:pull");
    assert_refused(
        &fx.inspect("app-a", Some(&authfile)),
        "inspect without a chain",
    );
}
