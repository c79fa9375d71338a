//! The "see it work" path: an emulated cluster and fake Azure on loopback, the shipped examples
//! applied, and the real acrpull running against them. Prints what acrpull did, then keeps
//! everything running (with acrpull's log) until Ctrl-C.
//!
//! Usage: sandbox <path to acrpull> [extra acrpull flags...]   (scripts/sandbox.sh builds both)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use acrpull_testkit::azure::{FederatedCredential, ManagedIdentity, Principal};
use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2, TOKEN_ISSUER};
use acrpull_testkit::world::{repo_root, AcrpullOptions, World, TENANT};
use base64::Engine as _;
use serde_json::{json, Value};

/// Example identities, matching manifests/examples/.
const EXAMPLE_CLIENT_ID: &str = "1b461305-28be-5271-beda-bd9fd2e24251";
const EXAMPLE_RESOURCE_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/puller";
const EXAMPLE_WI_CLIENT_ID: &str = "5e2b1c9a-7f3d-4c6e-9a1b-2d3c4e5f6a7b";
const EXAMPLE_REGISTRY: &str = "example.azurecr.io";

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(acrpull) = args.next().map(PathBuf::from) else {
        eprintln!("usage: sandbox <path to acrpull> [acrpull flags...]");
        std::process::exit(2);
    };
    let extra: Vec<String> = args.collect();

    println!("starting the emulated Kubernetes API server and fake Azure (IMDS, Entra, ACR) on 127.0.0.1 ...");
    let mut world = World::start();
    setup_azure(&world);
    apply_manifests(&world);

    let opts = AcrpullOptions {
        args: extra,
        env: vec![("RUST_LOG".into(), "info".into())],
        shipped_rbac: true,
    };
    println!(
        "starting {} under the shipped RBAC (manifests/11-rbac.yaml) ...\n",
        acrpull.display()
    );
    let mut proc = world.start_acrpull(&acrpull, &opts);

    let deadline = Instant::now() + Duration::from_secs(20);
    let names = ["example-managed-identity", "example-workload-identity"];
    loop {
        let done = names.iter().all(|n| settled(&world, BINDINGS_V1BETA2, n))
            && settled(&world, BINDINGS_V1BETA1, "example-legacy");
        if done || Instant::now() > deadline {
            break;
        }
        if let Some(status) = proc.exited() {
            eprintln!("acrpull exited early ({status}):\n{}", proc.log.text());
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    show(&world);
    println!("\nacrpull keeps running (log below); press Ctrl-C to stop everything.\n");
    let mut shown = 0;
    loop {
        let lines = proc.log.lines();
        for l in &lines[shown..] {
            println!("  | {l}");
        }
        shown = lines.len();
        if let Some(status) = proc.exited() {
            println!("acrpull exited ({status})");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A binding is settled when its status records a token or an error.
fn settled(w: &World, res: &str, name: &str) -> bool {
    w.api.get(res, "default", name).is_some_and(|b| {
        b["status"]["tokenExpirationTime"].is_string()
            || b["status"]["error"].as_str().is_some_and(|e| !e.is_empty())
    })
}

fn setup_azure(w: &World) {
    w.azure.add_managed_identity(ManagedIdentity {
        client_id: EXAMPLE_CLIENT_ID.into(),
        object_id: "6a1f0000-0000-0000-0000-00000000a001".into(),
        resource_id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other".into(),
        principal: Principal::UserAssigned,
    });
    w.azure.add_managed_identity(ManagedIdentity {
        client_id: "7b2f0000-0000-0000-0000-00000000b002".into(),
        object_id: "7b2f0000-0000-0000-0000-00000000b002".into(),
        resource_id: EXAMPLE_RESOURCE_ID.into(),
        principal: Principal::UserAssigned,
    });
    w.azure.entra.add_federated_credential(
        EXAMPLE_WI_CLIENT_ID,
        TENANT,
        FederatedCredential {
            issuer: TOKEN_ISSUER.into(),
            subject: "system:serviceaccount:default:ci-puller".into(),
            audience: "api://AzureCRTokenExchange".into(),
        },
    );
    w.add_registry(
        EXAMPLE_REGISTRY,
        acrpull_testkit::azure::Audiences::ArmAndAcr,
    );
    for principal in [
        "6a1f0000-0000-0000-0000-00000000a001",
        "7b2f0000-0000-0000-0000-00000000b002",
        EXAMPLE_WI_CLIENT_ID,
    ] {
        w.grant(principal, EXAMPLE_REGISTRY, "*", &["pull"]);
    }
    w.service_account(
        "default",
        "ci-puller",
        json!({"azure.workload.identity/client-id": EXAMPLE_WI_CLIENT_ID,
               "azure.workload.identity/tenant-id": TENANT}),
    );
}

/// Applies the CRDs' names check and every example, as `kubectl apply -f manifests/examples/` would.
fn apply_manifests(w: &World) {
    let root = repo_root();
    for crd in [
        "manifests/01-crd-acrpull.microsoft.com.yaml",
        "manifests/02-crd-msi-acrpull.microsoft.com.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(crd)).unwrap_or_default();
        let doc: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
        println!(
            "  crd {} (served by the emulator)",
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
    }
    let dir = root.join("manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let obj: Value = match serde_yaml::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("  cannot parse {}: {e}", f.display());
                continue;
            }
        };
        let res = match obj["apiVersion"].as_str() {
            Some("acrpull.microsoft.com/v1beta2") => BINDINGS_V1BETA2,
            Some("msi-acrpull.microsoft.com/v1beta1") => BINDINGS_V1BETA1,
            _ => continue,
        };
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        match w.api.create(res, &ns, obj.clone()) {
            Ok(_) => println!(
                "  acrpullbinding {}/{} created from {}",
                ns,
                obj["metadata"]["name"].as_str().unwrap_or("?"),
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Err(e) => eprintln!("  {} rejected: {e}", f.display()),
        }
    }
}

/// Prints the Secrets (token redacted), the ServiceAccount and the bindings' status.
fn show(w: &World) {
    println!("== pull Secrets in namespace default");
    for s in w.api.list("secrets", Some("default")) {
        let name = s["metadata"]["name"].as_str().unwrap_or("?");
        let cfg = s["data"][".dockerconfigjson"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        println!("  {name}  type={}", s["type"].as_str().unwrap_or("?"));
        for (k, v) in s["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            println!("    {k}: {}", v.as_str().unwrap_or("?"));
        }
        if let Some(auths) = cfg.as_ref().and_then(|c| c["auths"].as_object()) {
            for (server, a) in auths {
                let pw = a["password"].as_str().unwrap_or("");
                println!(
                    "    .dockerconfigjson: {server} username={} password=<redacted, {} chars>",
                    a["username"].as_str().unwrap_or("?"),
                    pw.len()
                );
            }
        }
    }
    if let Some(sa) = w.api.get("serviceaccounts", "default", "default") {
        let names: Vec<&str> = sa["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        println!("== serviceaccount default/default imagePullSecrets: {names:?}");
    }
    println!("== AcrPullBindings");
    for (res, v) in [(BINDINGS_V1BETA2, "v1beta2"), (BINDINGS_V1BETA1, "v1beta1")] {
        for b in w.api.list(res, Some("default")) {
            let st = &b["status"];
            println!(
                "  {v} {}: expires={} refreshed={} error={}",
                b["metadata"]["name"].as_str().unwrap_or("?"),
                st["tokenExpirationTime"].as_str().unwrap_or("-"),
                st["lastTokenRefreshTime"].as_str().unwrap_or("-"),
                st["error"]
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .unwrap_or("-"),
            );
        }
    }
}
