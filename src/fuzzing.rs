//! Fuzz target bodies, shared by `fuzz/fuzz_targets/*` (nightly, libFuzzer) and the stable corpus
//! replay test, so every seed and every past crash is replayed by a plain `cargo test`.
//!
//! Each function takes arbitrary bytes, must never panic on any input, and asserts the properties
//! the parser promises (round-trips, normalisation, bounds). A failed assertion is a finding.
//! Not part of the product API.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::azure::jwt;
use crate::binding::selector::Selector;
use crate::binding::suffix::{self, AllowList};
use crate::binding::{ApiVersion, Binding, V1beta1Defaults};
use crate::kube::client::decode_watch_line;
use crate::kube::{yaml, Config, Error};
use crate::plan::{self, Minted, MintedToken, Observed, Outcome, Password, PlanConfig, SaObs};

/// One fuzz target body: any bytes in, a panic only on a finding.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their `fuzz_targets/<name>.rs` and `corpus/<name>/`.
pub const TARGETS: [(&str, Target); 6] = [
    ("watch_event", watch_event),
    ("label_selector", label_selector),
    ("jwt_exp", jwt_exp),
    ("kubeconfig", kubeconfig),
    ("server_suffix", server_suffix),
    ("binding_decode", binding_decode),
];

/// A directory that does not exist, so relative kubeconfig paths never reach a real file.
const NO_DIR: &str = "/nonexistent/acrpull-fuzz";

/// A fixed "now" (2027-01-15) so planning is deterministic.
const NOW_UNIX: i64 = 1_800_000_000;

/// Watch stream bytes: each line is decoded as the client decodes it, and an `ERROR` event is
/// turned into the typed error the watcher acts on.
pub fn watch_event(data: &[u8]) {
    for line in data.split_inclusive(|b| *b == b'\n') {
        let Ok(Some(event)) = decode_watch_line(line) else {
            continue;
        };
        if event.kind == "ERROR" {
            let e = Error::from_status(500, &event.object);
            let code = e.code().unwrap_or_default();
            assert!(code >= 400, "an in-stream error must carry a failure code");
            assert_eq!(e.is_gone(), code == 410);
            let _ = e.to_string();
        }
        let _ = event.object["metadata"]["resourceVersion"].as_str();
    }
}

/// First line: a selector; later lines: `key=value` labels to match against.
/// A parsed selector's canonical form parses back to the same selector and matches alike.
pub fn label_selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Ok(selector) = Selector::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    let labels: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let canonical = selector.to_string();
    let reparsed = Selector::parse(&canonical);
    assert_eq!(
        reparsed.as_ref(),
        Ok(&selector),
        "canonical form {canonical:?} must parse back to the same selector"
    );
    assert_eq!(selector.is_empty(), canonical.is_empty());
    let matched = selector.matches(&labels);
    if let Ok(r) = reparsed {
        assert_eq!(r.matches(&labels), matched);
    }
}

/// The bytes as a token, and as the payload of a token; `expiry` agrees with `read_claims`.
pub fn jwt_exp(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_token(text);
    }
    check_token(&format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(data)));
}

fn check_token(token: &str) {
    let claims = jwt::read_claims(token);
    assert_eq!(
        jwt::expiry(token).ok(),
        claims.as_ref().ok().map(|c| c.expires)
    );
}

/// A kubeconfig document: parsed by our YAML reader, then turned into a client config and its
/// TLS settings. Documents naming absolute paths are only parsed: they could name `/dev/zero`.
pub fn kubeconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = yaml::parse(text) else {
        return;
    };
    if names_absolute_path(&doc) {
        return;
    }
    let dir = Path::new(NO_DIR);
    let contexts: Vec<Option<String>> = std::iter::once(None)
        .chain(
            doc.get("contexts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(|n| Some(n.to_string())),
        )
        .take(4)
        .collect();
    for context in contexts {
        if let Ok(config) = Config::from_kubeconfig_value(&doc, dir, context.as_deref()) {
            assert!(config.server.starts_with("http"), "server must be a url");
            let _ = config.tls_config();
        }
    }
}

fn names_absolute_path(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with('/'),
        Value::Array(a) => a.iter().any(names_absolute_path),
        Value::Object(m) => m.values().any(names_absolute_path),
        _ => false,
    }
}

/// First line: a server as a binding names it; later lines: `--allowed-suffixes` values.
/// A validated host is clean, and the allow-list only admits hosts on an allowed suffix.
pub fn server_suffix(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let server = lines.next().unwrap_or_default();
    let flag: Vec<String> = lines.map(str::to_string).collect();
    let parsed = suffix::parse_server(server);
    if let Ok(addr) = &parsed {
        let host = &addr.host;
        assert!(!host.is_empty());
        assert!(host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
        assert_eq!(suffix::server_host(server).as_ref(), Ok(host));
    }
    assert_eq!(AllowList::Any.check(server).ok(), parsed.clone().ok());
    for allow in [AllowList::default(), AllowList::from_flag(Some(&flag))] {
        let Ok(addr) = allow.check(server) else {
            continue;
        };
        assert_eq!(Some(&addr), parsed.as_ref().ok());
        if let AllowList::Suffixes(list) = &allow {
            let on_list = list
                .iter()
                .any(|s| addr.host == *s || addr.host.ends_with(&format!(".{s}")));
            assert!(on_list, "{:?} admitted off the list", addr.host);
        }
    }
}

/// A JSON object decoded as both binding versions, then planned with nothing observed, with its
/// ServiceAccount, and with a minted token or a token failure. Planning must never panic and
/// never schedule a refresh at or before now.
pub fn binding_decode(data: &[u8]) {
    let Ok(obj) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // The last byte picks the ACR-audience flag, so both inputs hashes get exercised.
    let defaults = V1beta1Defaults {
        acr_server: "fuzz.azurecr.io".into(),
        client_id: "00000000-0000-0000-0000-000000000001".into(),
        acr_audience: data.last().is_some_and(|b| b % 2 == 0),
        ..V1beta1Defaults::default()
    };
    for version in [ApiVersion::V1beta1, ApiVersion::V1beta2] {
        let Ok(binding) = Binding::decode(version, &obj, &defaults) else {
            continue;
        };
        let _ = (binding.secret_name(), binding.label_value());
        let target = binding.target_service_account.clone().map(|name| SaObs {
            name: name.to_string(),
            ..SaObs::default()
        });
        for target_sa in [None, target] {
            let obs = Observed {
                binding: binding.clone(),
                secrets: Vec::new(),
                target_sa,
                other_sas: Vec::new(),
            };
            plan_all_ways(&obs);
        }
    }
}

fn plan_all_ways(obs: &Observed) {
    let now = OffsetDateTime::from_unix_timestamp(NOW_UNIX).expect("a fixed in-range time");
    let cfg = PlanConfig::default();
    let token = Minted::Ok(MintedToken {
        password: Password::new("fuzz-token"),
        expires: now + Duration::hours(3),
        issued: now,
    });
    let failure = Minted::Err(crate::binding::BindingError::TokenRequest {
        step: crate::binding::TokenStep::AcrAccessToken,
        detail: "fuzz".into(),
    });
    for minted in [None, Some(&token), Some(&failure)] {
        if let Outcome::Done(p) = plan::plan(obs, &cfg, now, minted) {
            if let Some(at) = p.refresh_at {
                assert!(at > now, "refresh scheduled at or before now");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_distinct_name() {
        let mut names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len());
    }

    #[test]
    fn absolute_paths_anywhere_in_a_kubeconfig_are_noticed() {
        let doc = serde_json::json!({"users": [{"user": {"client-key": "/dev/zero"}}]});
        assert!(names_absolute_path(&doc));
        assert!(!names_absolute_path(
            &serde_json::json!({"server": "https://x"})
        ));
    }

    #[test]
    fn a_selector_that_does_not_round_trip_would_be_caught() {
        // The property the target checks, shown on a real selector.
        let s = Selector::parse("b in (y,x),a==1,!c").expect("valid selector");
        assert_eq!(Selector::parse(&s.to_string()), Ok(s));
    }

    #[test]
    fn every_target_survives_empty_and_junk_input() {
        for (_, target) in TARGETS {
            target(b"");
            target(b"\n\n\xff{[\"");
        }
    }
}
