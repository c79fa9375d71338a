//! End to end: tokens only ever go where they are meant to. Redirects are not followed, only
//! HTTPS with verified certificates is spoken to registries and Entra, and no token reaches the
//! log (even at trace), Events, binding status or metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use acrpull_testkit::http::{serve_http, serve_https, Handler, Request, Response};
use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2, EVENTS};
use acrpull_testkit::tls::Ca;
use acrpull_testkit::world::{
    binding_v1beta1, binding_v1beta2, binding_v1beta2_workload, identity, Acrpull, AcrpullOptions,
    World, REGISTRY, TENANT,
};
use serde_json::{json, Value};

use crate::bin;

const WAIT: Duration = Duration::from_secs(30);
const SCOPE: &str = "repository:app:pull";
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";

/// Counts requests and answers them all the same way.
struct Recorder {
    hits: AtomicUsize,
    answer: fn(&Request) -> Response,
}

impl Handler for Recorder {
    fn handle(&self, req: Request) -> Response {
        self.hits.fetch_add(1, Ordering::SeqCst);
        (self.answer)(&req)
    }
}

fn recorder(answer: fn(&Request) -> Response) -> Arc<Recorder> {
    Arc::new(Recorder {
        hits: AtomicUsize::new(0),
        answer,
    })
}

/// Redirects to the catcher with the status its host names (`r307.redirect.example` → 307);
/// `login.redirect.example` (the Entra authority) gets 307.
fn redirect(req: &Request) -> Response {
    let host = req.header("host").unwrap_or_default().to_string();
    let status = host
        .strip_prefix('r')
        .and_then(|h| h.split('.').next())
        .and_then(|c| c.parse().ok())
        .unwrap_or(307);
    Response::json(status, &json!({}))
        .with_header("Location", &format!("https://catcher.example{}", req.path))
}

fn ok(_: &Request) -> Response {
    Response::json(200, &json!({"refresh_token": "x", "access_token": "x"}))
}

fn start(w: &mut World, args: &[String], env: &[(&str, &str)]) -> Acrpull {
    let opts = AcrpullOptions {
        args: args.to_vec(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..AcrpullOptions::default()
    };
    w.start_acrpull(bin(), &opts)
}

fn status_error(w: &World, res: &str, name: &str) -> String {
    w.wait_for(&format!("binding {name} status error"), WAIT, || {
        let b = w.api.get(res, "default", name)?;
        let e = b["status"]["error"].as_str()?.to_string();
        (!e.is_empty()).then_some(e)
    })
}

#[test]
fn redirects_from_registries_and_entra_are_never_followed() {
    let mut w = World::start();
    let catcher = recorder(ok);
    let catcher_server = serve_https(catcher.clone(), w.ca().server_config(&["catcher.example"]))
        .expect("catcher listens");
    let redirector = recorder(redirect);
    let redirect_server = serve_https(
        redirector.clone(),
        w.ca().server_config(&["*.redirect.example"]),
    )
    .expect("redirector listens");
    w.service_account(
        "default",
        "delegate",
        json!({"azure.workload.identity/client-id": APP, "azure.workload.identity/tenant-id": TENANT}),
    );
    let args = vec![
        "--allowed-acr-server-suffixes=azurecr.io,redirect.example".to_string(),
        format!("--connect-to=*.redirect.example={}", redirect_server.addr()),
        format!("--connect-to=catcher.example={}", catcher_server.addr()),
        "--authority-host=https://login.redirect.example/".to_string(),
    ];
    let _p = start(&mut w, &args, &[]);
    let codes = [301, 302, 303, 307, 308];
    for code in codes {
        let name = format!("acr-{code}");
        let server = format!("r{code}.redirect.example");
        w.api
            .create(
                BINDINGS_V1BETA2,
                "default",
                binding_v1beta2(
                    "default",
                    &name,
                    &server,
                    SCOPE,
                    &identity(1).client_id,
                    "default",
                ),
            )
            .expect("binding accepted");
    }
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2_workload("default", "wi", SCOPE, "delegate", None, "default"),
        )
        .expect("binding accepted");
    for code in codes {
        let e = status_error(&w, BINDINGS_V1BETA2, &format!("acr-{code}"));
        assert!(e.starts_with("failed to retrieve ACR token"), "{e}");
    }
    let e = status_error(&w, BINDINGS_V1BETA2, "wi");
    assert!(e.starts_with("failed to retrieve ARM token"), "{e}");
    assert!(
        redirector.hits.load(Ordering::SeqCst) > codes.len(),
        "every binding reached its own host"
    );
    assert_eq!(
        catcher.hits.load(Ordering::SeqCst),
        0,
        "a redirect target saw a request"
    );
    for code in codes {
        assert!(w
            .api
            .get("secrets", "default", &format!("acr-pull-acr-{code}"))
            .is_none());
    }
}

#[test]
fn a_registry_or_entra_with_an_untrusted_certificate_gets_no_token() {
    let mut w = World::start();
    let stranger = Ca::new();
    let impostor = recorder(ok);
    let server = serve_https(
        impostor.clone(),
        stranger.server_config(&["acr.untrusted.example", "login.untrusted.example"]),
    )
    .expect("impostor listens");
    w.service_account(
        "default",
        "delegate",
        json!({"azure.workload.identity/client-id": APP, "azure.workload.identity/tenant-id": TENANT}),
    );
    let args = vec![
        "--allowed-acr-server-suffixes=azurecr.io,untrusted.example".to_string(),
        format!("--connect-to=acr.untrusted.example={}", server.addr()),
        format!("--connect-to=login.untrusted.example={}", server.addr()),
        "--authority-host=https://login.untrusted.example/".to_string(),
    ];
    let _p = start(&mut w, &args, &[]);
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                "b",
                "acr.untrusted.example",
                SCOPE,
                &identity(1).client_id,
                "default",
            ),
        )
        .expect("binding accepted");
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2_workload("default", "wi", SCOPE, "delegate", None, "default"),
        )
        .expect("binding accepted");
    let e = status_error(&w, BINDINGS_V1BETA2, "b");
    assert!(e.starts_with("failed to retrieve ACR token"), "{e}");
    let e = status_error(&w, BINDINGS_V1BETA2, "wi");
    assert!(e.starts_with("failed to retrieve ARM token"), "{e}");
    assert_eq!(
        impostor.hits.load(Ordering::SeqCst),
        0,
        "the handshake must fail before any request"
    );
    assert!(w.api.get("secrets", "default", "acr-pull-b").is_none());
    assert!(w.api.get("secrets", "default", "acr-pull-wi").is_none());
}

#[test]
fn plain_http_is_never_used_for_entra() {
    let mut w = World::start();
    // A cluster without the CRD schema, so only acrpull stands between the spec and the wire.
    w.api.set_crd_validation(false);
    let plain = recorder(ok);
    let server = serve_http(plain.clone()).expect("plain listener");
    w.service_account(
        "default",
        "delegate",
        json!({"azure.workload.identity/client-id": APP, "azure.workload.identity/tenant-id": TENANT}),
    );
    let args = vec![format!(
        "--connect-to=login.plain.example={}",
        server.addr()
    )];
    let _p = start(&mut w, &args, &[]);
    let mut b = binding_v1beta2_workload("default", "b", SCOPE, "delegate", None, "default");
    b["spec"]["acr"]["environment"] = json!("AirgappedCloud");
    b["spec"]["acr"]["cloudConfig"] = json!({
        "entraAuthorityHost": "http://login.plain.example/",
        "resourceManagerAudience": "https://management.core.windows.net/"
    });
    w.api
        .create(BINDINGS_V1BETA2, "default", b)
        .expect("binding accepted");
    let e = status_error(&w, BINDINGS_V1BETA2, "b");
    assert_eq!(
        e,
        "failed to retrieve ARM token: invalid entra authority host"
    );
    assert_eq!(plain.hits.load(Ordering::SeqCst), 0);
    assert!(w.api.get("secrets", "default", "acr-pull-b").is_none());

    // The flag form is refused at start-up, before anything is sent.
    let mut p = start(
        &mut w,
        &["--authority-host=http://login.plain.example/".to_string()],
        &[],
    );
    let status = p.wait_exit(WAIT).expect("acrpull exits");
    assert_eq!(status.code(), Some(2));
    assert_eq!(plain.hits.load(Ordering::SeqCst), 0);
}

fn metrics_text(port: u16) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()?;
    r.body_mut().read_to_string().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn secret_rv(w: &World, name: &str) -> Option<String> {
    w.api
        .get("secrets", "default", name)
        .and_then(|s| s["metadata"]["resourceVersion"].as_str().map(String::from))
}

fn fulfilled(w: &World, res: &str, name: &str) {
    w.wait_for(&format!("binding {name} fulfilled"), WAIT, || {
        let b = w.api.get(res, "default", name)?;
        let ok = b["status"]["tokenExpirationTime"].is_string()
            && b["status"]["error"].as_str().unwrap_or("").is_empty();
        ok.then_some(())
    });
}

/// Managed identity (v1beta2 and v1beta1), workload identity, a refresh, a failure and deletion
/// at `RUST_LOG=trace`; then every output is searched for every token any fake issued.
#[test]
fn no_token_appears_in_any_output_even_at_trace() {
    let mut w = World::start();
    w.service_account(
        "default",
        "delegate",
        json!({"azure.workload.identity/client-id": APP, "azure.workload.identity/tenant-id": TENANT}),
    );
    w.federate_service_account("default", "delegate", APP, TENANT);
    let port = free_port();
    let args = vec![format!("--metrics-bind-address=127.0.0.1:{port}")];
    // Asking the HTTP and TLS libraries for trace by name too: they print headers unredacted.
    let p = start(
        &mut w,
        &args,
        &[("RUST_LOG", "trace,ureq=trace,ureq_proto=trace,rustls=trace")],
    );
    let client = identity(1).client_id;
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2("default", "mi", REGISTRY, SCOPE, &client, "default"),
        )
        .expect("binding accepted");
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2_workload("default", "wi", SCOPE, "delegate", None, "default"),
        )
        .expect("binding accepted");
    w.api
        .create(
            BINDINGS_V1BETA1,
            "default",
            binding_v1beta1("default", "old", REGISTRY, SCOPE, &client, "default"),
        )
        .expect("binding accepted");
    fulfilled(&w, BINDINGS_V1BETA2, "mi");
    fulfilled(&w, BINDINGS_V1BETA2, "wi");
    fulfilled(&w, BINDINGS_V1BETA1, "old");

    // A refresh: new inputs need a new token in the same Secret.
    let before = secret_rv(&w, "acr-pull-wi");
    let mut b = w.api.get(BINDINGS_V1BETA2, "default", "wi").expect("wi");
    b["spec"]["acr"]["scope"] = json!("repository:app:pull repository:two:pull");
    w.api.put(BINDINGS_V1BETA2, "default", b).expect("update");
    w.wait_for("the wi Secret rewritten", WAIT, || {
        (secret_rv(&w, "acr-pull-wi") != before).then_some(())
    });
    fulfilled(&w, BINDINGS_V1BETA2, "wi");

    // A failure: the registry refuses, the error reaches status and an Event.
    w.azure.acr.faults.fail_next(1000, 401);
    let mut b = w.api.get(BINDINGS_V1BETA2, "default", "mi").expect("mi");
    b["spec"]["acr"]["scope"] = json!("repository:three:pull");
    w.api.put(BINDINGS_V1BETA2, "default", b).expect("update");
    status_error(&w, BINDINGS_V1BETA2, "mi");
    w.wait_for("a failure Event", WAIT, || {
        w.api
            .list(EVENTS, Some("default"))
            .into_iter()
            .find(|e| e["regarding"]["name"] == "mi" && e["type"] == "Warning")
    });
    let metrics = w.wait_for("metrics", WAIT, || metrics_text(port));
    let statuses: Vec<Value> = [BINDINGS_V1BETA2, BINDINGS_V1BETA1]
        .iter()
        .flat_map(|r| w.api.list(r, None))
        .map(|b| b["status"].clone())
        .collect();
    w.azure.acr.faults.clear();

    // Deletion.
    for (res, name, secret) in [
        (BINDINGS_V1BETA2, "mi", "acr-pull-mi"),
        (BINDINGS_V1BETA2, "wi", "acr-pull-wi"),
        (BINDINGS_V1BETA1, "old", "old-msi-acrpull-secret"),
    ] {
        w.api.delete(res, "default", name).expect("delete");
        w.wait_for(&format!("{secret} deleted"), WAIT, || {
            w.api
                .get("secrets", "default", secret)
                .is_none()
                .then_some(())
        });
    }
    let metrics_after = w.wait_for("metrics", WAIT, || metrics_text(port));

    let tokens = w.azure.issued_tokens();
    assert!(
        tokens.len() >= 4,
        "the fakes issued IMDS, Entra and ACR tokens: {}",
        tokens.len()
    );
    assert!(
        !w.api.token_requests().is_empty(),
        "ServiceAccount tokens were minted"
    );
    let events = serde_json::to_string(&w.api.list(EVENTS, None)).expect("events");
    let statuses = serde_json::to_string(&statuses).expect("statuses");
    let log = p.log.text();
    assert!(log.contains(" DEBUG "), "the verbose levels really are on");
    for (what, text) in [
        ("the log", &log),
        ("Events", &events),
        ("binding statuses", &statuses),
        ("metrics", &metrics),
        ("metrics after deletion", &metrics_after),
    ] {
        for t in &tokens {
            assert!(
                !text.contains(t.as_str()),
                "an issued token appears in {what}"
            );
        }
        // JWTs (every fake token and ServiceAccount token) and base64 `{"` (Secret data) start so.
        assert!(
            !text.contains("eyJ"),
            "something JWT-like appears in {what}"
        );
    }
}
