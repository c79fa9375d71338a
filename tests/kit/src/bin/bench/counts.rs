//! Snapshots of the emulator's request counters and the Azure fakes' counters, and their differences.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use acrpull_testkit::azure::Azure;
use acrpull_testkit::kube::ApiServer;

/// Kubernetes verbs that only read.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];
/// Kubernetes verbs that write.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
/// Plural resources acrpull may touch (`""`: discovery and other non-resource paths).
const RESOURCES: [&str; 7] = [
    "acrpullbindings",
    "secrets",
    "serviceaccounts",
    "events",
    "leases",
    "namespaces",
    "",
];

/// The emulator's request counts at one moment (exact, however long the run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeCounts {
    by_verb: BTreeMap<(&'static str, &'static str), usize>,
    total: usize,
}

impl KubeCounts {
    /// Reads the counters; `user` is the identity acrpull authenticates as.
    pub fn take(api: &ApiServer, user: &str) -> KubeCounts {
        let mut by_verb = BTreeMap::new();
        for verb in READ_VERBS.iter().chain(WRITE_VERBS.iter()) {
            for res in RESOURCES {
                let n = api.count(verb, res);
                if n > 0 {
                    by_verb.insert((*verb, res), n);
                }
            }
        }
        KubeCounts {
            by_verb,
            total: api.count_by_user(user),
        }
    }

    /// Counts given directly, for tests of what reads them.
    #[cfg(test)]
    pub fn of(pairs: &[((&'static str, &'static str), usize)]) -> KubeCounts {
        KubeCounts {
            by_verb: pairs.iter().copied().collect(),
            total: pairs.iter().map(|(_, n)| n).sum(),
        }
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &KubeCounts) -> KubeCounts {
        let by_verb = self
            .by_verb
            .iter()
            .map(|(k, n)| (*k, n - earlier.by_verb.get(k).copied().unwrap_or(0).min(*n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        KubeCounts {
            by_verb,
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Requests that read (gets, lists and watches), Events excluded.
    pub fn reads(&self) -> usize {
        self.sum(|verb, res| READ_VERBS.contains(&verb) && res != "events")
    }

    /// Single-object GETs: reads beyond the watches' lists.
    pub fn gets(&self) -> usize {
        self.sum(|verb, _| verb == "get")
    }

    /// Requests that write anything but Events.
    pub fn writes(&self) -> usize {
        self.sum(|verb, res| WRITE_VERBS.contains(&verb) && res != "events")
    }

    /// Writes of Events (either API group).
    pub fn event_writes(&self) -> usize {
        self.sum(|verb, res| WRITE_VERBS.contains(&verb) && res == "events")
    }

    /// Every request acrpull made.
    pub fn total(&self) -> usize {
        self.total
    }

    /// `verb resource=n` for each non-zero count, e.g. `patch acrpullbindings=10`.
    pub fn breakdown(&self, write: bool) -> String {
        let verbs: &[&str] = if write { &WRITE_VERBS } else { &READ_VERBS };
        let parts: Vec<String> = self
            .by_verb
            .iter()
            .filter(|((verb, _), _)| verbs.contains(verb))
            .map(|((verb, res), n)| {
                let res = if res.is_empty() {
                    "(non-resource)"
                } else {
                    res
                };
                format!("{verb} {res}={n}")
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn sum(&self, f: impl Fn(&str, &str) -> bool) -> usize {
        self.by_verb
            .iter()
            .filter(|((verb, res), _)| f(verb, res))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Requests to one fake, grouped by the input that made them distinct.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerInput {
    /// Requests in all.
    pub total: u64,
    /// Distinct inputs requested.
    pub distinct: usize,
    /// The most requests for any one input.
    pub max: u64,
}

impl PerInput {
    fn of<K>(map: &HashMap<K, u64>) -> PerInput {
        PerInput {
            total: map.values().sum(),
            distinct: map.values().filter(|n| **n > 0).count(),
            max: map.values().copied().max().unwrap_or(0),
        }
    }
}

/// The Azure fakes' counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureCounts {
    /// Every IMDS token request, refused ones included.
    pub imds_requests: u64,
    imds: HashMap<(String, String), u64>,
    entra: HashMap<(String, String), u64>,
    exchanges: HashMap<(String, String), u64>,
    tokens: HashMap<(String, String, String), u64>,
}

impl AzureCounts {
    /// Reads the fakes' counters.
    pub fn take(azure: &Azure) -> AzureCounts {
        let imds = azure.imds.counters();
        let entra = azure.entra.counters();
        let acr = azure.acr.counters();
        AzureCounts {
            imds_requests: imds.requests,
            imds: imds.issued,
            entra: entra.issued,
            exchanges: acr.exchanges,
            tokens: acr.tokens,
        }
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &AzureCounts) -> AzureCounts {
        AzureCounts {
            imds_requests: self.imds_requests.saturating_sub(earlier.imds_requests),
            imds: diff(&self.imds, &earlier.imds),
            entra: diff(&self.entra, &earlier.entra),
            exchanges: diff(&self.exchanges, &earlier.exchanges),
            tokens: diff(&self.tokens, &earlier.tokens),
        }
    }

    /// IMDS tokens issued per (identity, resource).
    pub fn imds(&self) -> PerInput {
        PerInput::of(&self.imds)
    }

    /// Entra tokens issued per (tenant, client).
    pub fn entra(&self) -> PerInput {
        PerInput::of(&self.entra)
    }

    /// ACR `/oauth2/exchange` calls per (registry, identity).
    pub fn exchanges(&self) -> PerInput {
        PerInput::of(&self.exchanges)
    }

    /// ACR `/oauth2/token` calls per (registry, identity, scope).
    pub fn acr_tokens(&self) -> PerInput {
        PerInput::of(&self.tokens)
    }
}

fn diff<K: Clone + Eq + Hash>(now: &HashMap<K, u64>, before: &HashMap<K, u64>) -> HashMap<K, u64> {
    now.iter()
        .map(|(k, n)| {
            (
                k.clone(),
                n.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[((&'static str, &'static str), usize)]) -> KubeCounts {
        KubeCounts {
            by_verb: pairs.iter().copied().collect(),
            total: pairs.iter().map(|(_, n)| n).sum(),
        }
    }

    #[test]
    fn reads_writes_and_events_are_counted_apart() {
        let c = counts(&[
            (("watch", "secrets"), 2),
            (("get", "serviceaccounts"), 3),
            (("patch", "acrpullbindings"), 5),
            (("update", "serviceaccounts"), 7),
            (("create", "events"), 11),
            (("patch", "events"), 13),
        ]);
        assert_eq!(c.reads(), 5);
        assert_eq!(c.gets(), 3);
        assert_eq!(c.writes(), 12);
        assert_eq!(c.event_writes(), 24);
        assert_eq!(c.total(), 41);
    }

    #[test]
    fn a_difference_keeps_only_what_grew() {
        let before = counts(&[(("watch", "secrets"), 2), (("create", "secrets"), 4)]);
        let after = counts(&[(("watch", "secrets"), 2), (("create", "secrets"), 9)]);
        let d = after.since(&before);
        assert_eq!(d.writes(), 5);
        assert_eq!(d.reads(), 0);
        assert_eq!(d.breakdown(true), "create secrets=5");
        assert_eq!(d.breakdown(false), "none");
    }

    #[test]
    fn per_input_figures_name_the_worst_input() {
        let mut now = HashMap::new();
        now.insert(("r1".to_string(), "id1".to_string()), 3);
        now.insert(("r2".to_string(), "id1".to_string()), 1);
        let mut before = HashMap::new();
        before.insert(("r1".to_string(), "id1".to_string()), 1);
        let p = PerInput::of(&diff(&now, &before));
        assert_eq!(
            p,
            PerInput {
                total: 3,
                distinct: 2,
                max: 2
            }
        );
    }
}
