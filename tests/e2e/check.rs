//! `acrpull check` end to end: the real binary against the kit's emulated cluster and fake Azure.
//!
//! Every test also scans the whole output for every token the fakes issued: a diagnose command
//! is exactly where a token would be tempting to print.

use std::process::{Command, Output, Stdio};

use acrpull_testkit::azure::Audiences;
use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    binding_v1beta1, binding_v1beta2, binding_v1beta2_workload, identity, World, REGISTRY,
    SA_TOKEN_AUDIENCE, TENANT,
};
use serde_json::{json, Value};

use crate::bin;

/// What one `acrpull check` run printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `acrpull check <world flags> <args>` as a cluster admin with only the world's CA trusted.
fn check(w: &World, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.arg("check")
        .args(w.base_args(w.api.kubeconfig_path()))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SSL_CERT_FILE", w.azure_ca_file())
        .stdin(Stdio::null());
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the acrpull binary runs");
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    // Shown only when a test fails (or with --nocapture).
    println!("$ acrpull check {}\n{}", args.join(" "), run.text());
    assert_no_token(w, &run);
    run
}

/// No token the fakes issued appears in the output, whole or as its payload, and nothing
/// JWT-like at all (ServiceAccount tokens come from the emulated API server, not the fakes).
fn assert_no_token(w: &World, run: &Run) {
    let out = run.text();
    assert!(
        !out.contains("eyJ"),
        "something JWT-like was printed:\n{out}"
    );
    for token in w.azure.issued_tokens() {
        assert!(!out.contains(&token), "a token leaked:\n{out}");
        if let Some(payload) = token.split('.').nth(1) {
            assert!(!out.contains(payload), "a token payload leaked:\n{out}");
        }
    }
}

fn create(w: &World, resource: &str, obj: Value) {
    w.api
        .create(resource, "default", obj)
        .expect("the binding can be created");
}

fn app_binding(w: &World, name: &str, client_id: &str) {
    create(
        w,
        BINDINGS_V1BETA2,
        binding_v1beta2(
            "default",
            name,
            REGISTRY,
            "repository:app:pull",
            client_id,
            "default",
        ),
    );
}

/// The line of a step's outcome, e.g. `[ok]      binding`.
fn step_line<'a>(run: &'a Run, step: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| {
            l.starts_with('[')
                && l.split_once(']')
                    .is_some_and(|(_, name)| name.trim() == step)
        })
        .unwrap_or_else(|| panic!("no line for step {step}:\n{}", run.stdout))
}

/// The value of the first detail row named `key`, e.g. `granted`.
fn detail<'a>(run: &'a Run, key: &str) -> Option<&'a str> {
    run.stdout.lines().find_map(|l| {
        let rest = l.strip_prefix("            ")?.strip_prefix(key)?;
        rest.starts_with("  ").then(|| rest.trim())
    })
}

fn assert_step(run: &Run, step: &str, outcome: &str) {
    let line = step_line(run, step);
    assert!(
        line.starts_with(&format!("[{outcome}]")),
        "step {step} should be {outcome}:\n{}",
        run.stdout
    );
}

#[test]
fn a_working_cluster_binding_passes_every_step_and_shows_claims() {
    let w = World::start();
    app_binding(&w, "app", &identity(1).client_id);
    let run = check(&w, &["--name=app"]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(
        w.azure.issued_tokens().len() >= 3,
        "the leak scan had tokens to look for"
    );
    for step in [
        "binding",
        "allow-list",
        "entra token",
        "acr exchange",
        "acr token",
    ] {
        assert_step(&run, step, "ok");
    }
    let out = &run.stdout;
    assert!(
        out.contains("default/app (acrpull.microsoft.com/v1beta2)"),
        "{out}"
    );
    assert!(out.contains(&identity(1).client_id), "{out}");
    assert!(
        out.contains(&identity(1).object_id),
        "the oid is shown: {out}"
    );
    assert!(
        out.contains("https://management.core.windows.net/"),
        "{out}"
    );
    assert_eq!(
        detail(&run, "granted"),
        Some("repository:app:pull"),
        "{out}"
    );
    assert_eq!(detail(&run, "pull secret"), Some("acr-pull-app"), "{out}");
    assert!(out.trim_end().ends_with("result: ok"), "{out}");
}

#[test]
fn a_working_binding_given_by_flags_passes_in_json() {
    let w = World::start();
    let client_id = identity(1).client_id;
    let run = check(
        &w,
        &[
            &format!("--registry={REGISTRY}"),
            "--scope=repository:app:pull repository:lib:pull",
            &format!("--client-id={client_id}"),
            "--output=json",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.text());
    let report: Value = serde_json::from_str(&run.stdout).expect("the output is one JSON object");
    assert_eq!(report["ok"], true);
    let steps = report["steps"].as_array().expect("steps is a list");
    assert_eq!(steps.len(), 5);
    assert!(steps.iter().all(|s| s["outcome"] == "ok"), "{report:#}");
    assert_eq!(steps[0]["details"]["source"], "flags");
    assert_eq!(steps[2]["details"]["oid"], identity(1).object_id.as_str());
    assert_eq!(
        steps[4]["details"]["granted"],
        "repository:app:pull repository:lib:pull"
    );
}

#[test]
fn an_unscoped_v1beta1_binding_needs_no_access_token() {
    let w = World::start();
    create(
        &w,
        BINDINGS_V1BETA1,
        binding_v1beta1(
            "default",
            "legacy",
            REGISTRY,
            "",
            &identity(1).client_id,
            "",
        ),
    );
    let run = check(&w, &["--name=legacy", "--kind=v1beta1"]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert_step(&run, "acr exchange", "ok");
    assert_step(&run, "acr token", "skipped");
    assert!(
        run.stdout.contains("https://management.azure.com/"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_identity_without_a_grant_on_the_registry_fails_at_the_access_token() {
    let w = World::start();
    w.azure.add_managed_identity(identity(2));
    app_binding(&w, "ungranted", &identity(2).client_id);
    let run = check(&w, &["--name=ungranted"]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_step(&run, "acr exchange", "ok");
    assert_step(&run, "acr token", "FAILED");
    assert!(
        run.stdout
            .contains("the registry granted none of the requested access"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&identity(2).object_id),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("result: FAILED at step \"acr token\""));
}

#[test]
fn an_identity_unknown_to_imds_fails_at_the_entra_token() {
    let w = World::start();
    app_binding(&w, "unknown", &identity(9).client_id);
    let run = check(&w, &["--name=unknown"]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_step(&run, "entra token", "FAILED");
    assert!(
        run.stdout
            .contains("the requested identity isn't assigned to this resource"),
        "{}",
        run.stdout
    );
    assert_step(&run, "acr exchange", "skipped");
    assert_step(&run, "acr token", "skipped");
}

#[test]
fn a_disallowed_registry_fails_before_azure_is_asked() {
    let w = World::start();
    let run = check(
        &w,
        &[
            "--registry=myregistry.azurecr.io.attacker.example",
            "--scope=repository:app:pull",
            &format!("--client-id={}", identity(1).client_id),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_step(&run, "allow-list", "FAILED");
    assert!(
        run.stdout.contains(
            "is not in the allowed ACR server suffixes: azurecr.io, azurecr.us, azurecr.cn"
        ),
        "{}",
        run.stdout
    );
    assert!(
        w.azure.shared.requests().is_empty(),
        "no request reached the fakes"
    );
}

#[test]
fn a_missing_binding_fails_the_first_step_with_a_hint() {
    let w = World::start();
    let run = check(&w, &["--name=nope", "--namespace=default"]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_step(&run, "binding", "FAILED");
    assert!(run.stdout.contains("not found"), "{}", run.stdout);
    assert!(run.stdout.contains("--kind v1beta1"), "{}", run.stdout);
}

#[test]
fn flags_naming_no_binding_are_a_usage_error() {
    let w = World::start();
    let run = check(&w, &[]);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stderr.contains("acrpull check --help"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_registry_refusing_arm_tokens_points_at_the_acr_audience() {
    let w = World::start();
    let strict = "strict.azurecr.io";
    w.add_registry(strict, Audiences::AcrOnly);
    w.grant(&identity(1).object_id, strict, "*", &["pull"]);
    let client = format!("--client-id={}", identity(1).client_id);
    let registry = format!("--registry={strict}");
    let flags = [registry.as_str(), "--scope=repository:app:pull", &client];

    let run = check(&w, &flags);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_step(&run, "acr exchange", "FAILED");
    assert!(
        run.stdout
            .contains("failed to exchange AAD access token for ACR refresh token"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("--entra-audience acr"),
        "{}",
        run.stdout
    );

    let mut with_acr = flags.to_vec();
    with_acr.push("--entra-audience=acr");
    let run = check(&w, &with_acr);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert_eq!(
        detail(&run, "aud"),
        Some("https://containerregistry.azure.net")
    );
}

/// The federated application workload-identity bindings authenticate as.
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";

fn workload_binding(w: &World, name: &str, sa_ref: &str) {
    w.service_account(
        "default",
        sa_ref,
        json!({
            "azure.workload.identity/client-id": APP,
            "azure.workload.identity/tenant-id": TENANT
        }),
    );
    create(
        w,
        BINDINGS_V1BETA2,
        binding_v1beta2_workload(
            "default",
            name,
            "repository:app:pull",
            sa_ref,
            None,
            "default",
        ),
    );
}

#[test]
fn a_workload_identity_binding_shows_its_assertion_and_application() {
    let w = World::start();
    workload_binding(&w, "wi", "delegate");
    w.federate_service_account("default", "delegate", APP, TENANT);
    let run = check(&w, &["--name=wi"]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert_step(&run, "entra token", "ok");
    assert_step(&run, "acr token", "ok");
    assert_eq!(detail(&run, "client id"), Some(APP));
    assert_eq!(detail(&run, "tenant"), Some(TENANT));
    assert_eq!(
        detail(&run, "assertion sub"),
        Some("system:serviceaccount:default:delegate")
    );
    assert_eq!(detail(&run, "assertion audience"), Some(SA_TOKEN_AUDIENCE));
}

#[test]
fn a_federated_credential_for_another_service_account_fails_at_entra() {
    let w = World::start();
    workload_binding(&w, "wi", "delegate");
    w.federate_service_account("default", "someone-else", APP, TENANT);
    let run = check(&w, &["--name=wi"]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_step(&run, "entra token", "FAILED");
    assert!(
        run.stdout.contains("federated identity credential"),
        "{}",
        run.stdout
    );
    assert_step(&run, "acr exchange", "skipped");
}
