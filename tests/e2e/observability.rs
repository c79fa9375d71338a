//! Probes and metrics end to end: readiness waits for the initial lists, and every metric family
//! carries values after real work.

use std::time::Duration;

use acrpull_testkit::kube::{Fault, Matcher, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    binding_v1beta2, free_port, http_get, identity, Acrpull, AcrpullOptions, World, REGISTRY,
};

use crate::{acrpull, bin};

fn start(w: &mut World) -> (Acrpull, u16, u16) {
    let (m, h) = (free_port(), free_port());
    let p = acrpull(
        w,
        &[
            &format!("--metrics-bind-address=127.0.0.1:{m}"),
            &format!("--health-probe-bind-address=127.0.0.1:{h}"),
        ],
    );
    (p, m, h)
}

#[test]
fn readiness_waits_for_the_initial_binding_lists() {
    let mut w = World::start();
    w.api
        .inject(Fault::fail(503, Matcher::verb("list", "acrpullbindings")).times(1_000));
    let (_p, _, h) = start(&mut w);
    let url = format!("http://127.0.0.1:{h}/readyz");
    let (code, body) = w.wait_for("the probe server", Duration::from_secs(20), || {
        http_get(&url)
    });
    assert_eq!(code, 500, "not ready while the binding lists fail: {body}");
    let (code, _) = http_get(&format!("http://127.0.0.1:{h}/healthz")).expect("healthz answers");
    assert_eq!(code, 200, "alive while waiting");
    w.api.clear_faults();
    w.wait_for("ready after the lists", Duration::from_secs(40), || {
        http_get(&url).filter(|(c, _)| *c == 200)
    });
}

/// The sample value of the first line starting with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn every_metric_family_has_values_after_real_work() {
    let mut w = World::start();
    let (_p, m, h) = start(&mut w);
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
    let url = format!("http://127.0.0.1:{m}/metrics");
    // The binding-state gauges are recomputed every few seconds.
    let text = w.wait_for(
        "gauges after the first token",
        Duration::from_secs(30),
        || {
            http_get(&url)
                .map(|(_, t)| t)
                .filter(|t| value(t, "acrpull_bindings{state=\"ready\"}") == Some(1.0))
        },
    );
    // One binding: exactly one Secret created from exactly one IMDS token.
    for series in [
        "acrpull_secret_writes_total{op=\"create\"}",
        "acrpull_token_requests_total{upstream=\"imds\",outcome=\"ok\"}",
    ] {
        assert_eq!(value(&text, series), Some(1.0), "{series}:\n{text}");
    }
    for probe in ["readyz", "healthz"] {
        let answer = http_get(&format!("http://127.0.0.1:{h}/{probe}"));
        assert_eq!(answer.map(|(code, _)| code), Some(200), "{probe}");
    }
    let at_least_one = [
        "acrpull_reconcile_total{result=\"success\"}",
        "acrpull_reconcile_duration_seconds_count",
        "acrpull_secret_writes_total{op=\"create\"}",
        "acrpull_serviceaccount_writes_total",
        "acrpull_status_writes_total",
        "acrpull_token_requests_total{upstream=\"imds\",outcome=\"ok\"}",
        "acrpull_token_requests_total{upstream=\"acr_exchange\",outcome=\"ok\"}",
        "acrpull_token_requests_total{upstream=\"acr_token\",outcome=\"ok\"}",
        "acrpull_token_request_duration_seconds_count{upstream=\"imds\"}",
        "acrpull_token_request_duration_seconds_count{upstream=\"acr_exchange\"}",
        "acrpull_kube_requests_total",
        "acrpull_token_earliest_expiry_timestamp_seconds",
        "acrpull_build_info",
    ];
    for series in at_least_one {
        let v = value(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
        assert!(v >= 1.0, "{series} = {v}");
    }
    for family in [
        "acrpull_azure_throttled_total",
        "acrpull_azure_server_errors_total",
        "acrpull_token_cache_hits_total",
        "acrpull_workqueue_depth",
        "acrpull_leader",
        "acrpull_watch_restarts_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family} missing:\n{text}"
        );
    }
    assert!(!text.contains("eyJ"), "no token in metrics");

    // A throttled registry shows up as such; a second binding with the same inputs is a cache hit.
    // Four 429s outlast the registry client's three retries, so the request fails as throttled.
    w.azure.acr.faults.fail_next(4, 429);
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                "c",
                REGISTRY,
                "repository:other:pull",
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                "d",
                REGISTRY,
                "repository:app:pull",
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
    w.wait_for(
        "429 counted and a cache hit",
        Duration::from_secs(30),
        || {
            http_get(&url).map(|(_, t)| t).filter(|t| {
                value(
                    t,
                    "acrpull_azure_throttled_total{upstream=\"acr_exchange\"}",
                )
                .unwrap_or(0.0)
                    >= 1.0
                    && value(t, "acrpull_token_cache_hits_total{cache=\"acr\"}").unwrap_or(0.0)
                        >= 1.0
            })
        },
    );
}

#[test]
fn json_logs_are_one_object_per_line_naming_the_binding() {
    let mut w = World::start();
    let opts = AcrpullOptions {
        args: vec!["--log-format=json".into()],
        env: vec![("RUST_LOG".into(), "info".into())],
        ..AcrpullOptions::default()
    };
    let p = w.start_acrpull(bin(), &opts);
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
    w.wait_for(
        "a log line about the secret",
        Duration::from_secs(20),
        || p.log.contains("created secret").then_some(()),
    );
    for line in p.log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["msg"].is_string() && v["ts"].is_string(),
            "{line}"
        );
    }
    assert!(p
        .log
        .lines()
        .iter()
        .any(|l| l.contains("default/b (v1beta2): created secret acr-pull-b")));
}
