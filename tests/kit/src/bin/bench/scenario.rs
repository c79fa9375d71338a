//! One benchmark scenario: fill an emulated cluster in-process, run acrpull, and measure it from
//! start to every binding Ready, through a steady-state window and (optionally) one refresh cycle.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use acrpull_testkit::azure::Audiences;
use acrpull_testkit::kube::{ApiError, ApiServer, Latency, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    binding_v1beta2, identity, Acrpull, AcrpullOptions, World, CONTROLLER_USER,
};

use crate::counts::{AzureCounts, KubeCounts};
use crate::procfs::{self, ProcError, Sample};

/// How often readiness is polled at least; each poll walks every binding under the emulator's
/// one lock, so runs with many pending bindings poll less often (see [`poll_interval`]).
const POLL: Duration = Duration::from_millis(500);
/// Poll spacing per binding: 50 000 bindings are read every 2.5 s, not every 0.5 s.
const POLL_PER_BINDING: Duration = Duration::from_micros(50);
/// How often progress is printed while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// The scope every binding asks for; one scope keeps "distinct inputs" = identities × registries.
const SCOPE: &str = "repository:app:pull";
/// How long acrpull gets to open its watches in an empty cluster.
const WATCH_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The shape of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A short label for the table heading.
    pub name: String,
    /// AcrPullBindings (v1beta2), each with its own ServiceAccount.
    pub bindings: usize,
    /// Namespaces they spread over.
    pub namespaces: usize,
    /// Managed identities they share (binding i uses identity i mod K).
    pub identities: usize,
    /// Registries they share (binding i uses registry (i / K) mod R).
    pub registries: usize,
    /// Unrelated Secrets, and as many unrelated ServiceAccounts.
    pub unrelated: usize,
    /// ACR token lifetime; `Some` makes this a refresh scenario.
    pub token_lifetime: Option<Duration>,
    /// acrpull's `--kube-api-qps`.
    pub qps: f64,
    /// acrpull's `--kube-api-burst`.
    pub burst: u32,
    /// Steady-state window length.
    pub steady: Duration,
    /// Extra flags for acrpull.
    pub extra_args: Vec<String>,
    /// Extra environment for acrpull.
    pub extra_env: Vec<(String, String)>,
    /// Where to write acrpull's log at the end (`<dir>/<name>.log`).
    pub log_dir: Option<PathBuf>,
    /// The emulated API server's latency while acrpull runs (the fill is direct, without it).
    pub latency: Latency,
    /// Bindings use their namespace's `default` ServiceAccount instead of one each.
    pub shared_sa: bool,
}

impl Scenario {
    /// Distinct (identity, registry) pairs the bindings use: the most token exchanges a cycle needs.
    pub fn distinct_inputs(&self) -> usize {
        self.bindings.min(self.identities * self.registries)
    }

    /// Distinct identities the bindings use: the most IMDS requests a token lifetime needs.
    pub fn distinct_identities(&self) -> usize {
        self.bindings.min(self.identities)
    }

    /// Seconds the client-side rate limit needs for 4 writes per binding (`None`: unlimited).
    pub fn rate_bound(&self) -> Option<f64> {
        (self.qps > 0.0).then(|| 4.0 * self.bindings as f64 / self.qps)
    }

    /// How long to wait for every binding to be Ready before giving up.
    fn ready_timeout(&self) -> Duration {
        let expected = self.rate_bound().unwrap_or(self.bindings as f64 / 200.0);
        Duration::from_secs_f64(120.0 + 3.0 * expected)
    }

    fn namespace_count(&self) -> usize {
        self.namespaces.min(self.bindings.max(1))
    }
}

/// A token lifetime long enough that the first refresh starts only after convergence and the
/// steady window, and the next one not before the refresh window (with acrpull's 60 s jitter) ends.
pub fn refresh_lifetime(bindings: usize, qps: f64, steady: Duration) -> Duration {
    let converge = if qps > 0.0 {
        4.0 * bindings as f64 / qps
    } else {
        bindings as f64 / 200.0
    };
    let half = (converge * 1.5 + steady.as_secs_f64() + 30.0).max(90.0);
    Duration::from_secs_f64(2.0 * half.ceil())
}

/// Counters over one phase of a run.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// How long the phase lasted.
    pub duration: Duration,
    /// Kubernetes requests acrpull made.
    pub kube: KubeCounts,
    /// Azure requests acrpull made.
    pub azure: AzureCounts,
    /// acrpull's CPU time, ticks.
    pub cpu_ticks: u64,
}

/// Everything measured in one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was run.
    pub scenario: Scenario,
    /// Time to fill the emulator.
    pub setup: Duration,
    /// Bindings that became Ready.
    pub ready: usize,
    /// When the last one did (for 0 bindings: when acrpull's watches were open); `None` on timeout.
    pub ready_after: Option<Duration>,
    /// Ready bindings whose ServiceAccount does not list a pull secret at the end.
    pub missing_references: usize,
    /// A binding error seen while waiting, if any (status text; never secret).
    pub sample_error: Option<String>,
    /// From start to every binding Ready.
    pub creation: Phase,
    /// The window after that.
    pub steady: Phase,
    /// One refresh of every binding (refresh scenarios that converged).
    pub refresh: Option<Phase>,
    /// Seconds between the first and the last refresh observed.
    pub refresh_spread: Option<Duration>,
    /// acrpull at the end of the creation phase.
    pub at_ready: Sample,
    /// acrpull at the end of the run.
    pub at_end: Sample,
    /// The benchmark process (emulator and fakes) at the end.
    pub bench: Sample,
    /// The benchmark process's CPU time during the creation phase, ticks.
    pub bench_creation_ticks: u64,
    /// acrpull's binary size, bytes.
    pub binary_bytes: u64,
}

/// Why a run could not be completed.
#[derive(Debug)]
pub enum ScenarioError {
    /// The acrpull binary is not there.
    Binary(std::io::Error),
    /// Filling the emulator failed (names the object).
    Setup(String, ApiError),
    /// acrpull exited; its status and last log lines.
    Exited(String),
    /// acrpull's or the benchmark's `/proc` could not be read.
    Proc(ProcError),
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Binary(e) => write!(f, "cannot read the acrpull binary: {e}"),
            ScenarioError::Setup(what, e) => write!(f, "cannot create {what}: {e}"),
            ScenarioError::Exited(why) => write!(f, "acrpull exited: {why}"),
            ScenarioError::Proc(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl From<ProcError> for ScenarioError {
    fn from(e: ProcError) -> ScenarioError {
        ScenarioError::Proc(e)
    }
}

fn ns_name(j: usize) -> String {
    format!("bench-{j}")
}

fn registry_host(r: usize) -> String {
    format!("bench{r}.azurecr.io")
}

/// Binding `i`: its namespace, name and ServiceAccount.
fn binding_names(s: &Scenario, i: usize) -> (String, String, String) {
    (
        ns_name(i % s.namespace_count()),
        format!("b-{i}"),
        if s.shared_sa {
            "default".to_string()
        } else {
            format!("sa-{i}")
        },
    )
}

/// The index of the binding with this namespace and name, if the bench made it.
fn binding_index(s: &Scenario, ns: &str, name: &str) -> Option<usize> {
    let i: usize = name.strip_prefix("b-")?.parse().ok()?;
    let j: usize = ns.strip_prefix("bench-")?.parse().ok()?;
    (i < s.bindings && j == i % s.namespace_count()).then_some(i)
}

/// Registers identities and registries with the fakes and grants every identity pull everywhere.
fn set_up_azure(w: &World, s: &Scenario) {
    for n in 2..=s.identities {
        w.azure.add_managed_identity(identity(n as u32));
    }
    for r in 0..s.registries {
        let host = registry_host(r);
        w.add_registry(&host, Audiences::ArmAndAcr);
        for n in 1..=s.identities {
            w.grant(&identity(n as u32).object_id, &host, "*", &["pull"]);
        }
    }
    if let Some(l) = s.token_lifetime.or_else(|| creation_lifetime(s)) {
        w.azure.acr.set_refresh_token_lifetime(l);
        w.azure.acr.set_access_token_lifetime(l);
    }
}

/// ACR's own lifetimes (75 minutes for access tokens) put the first refresh before a long
/// creation ends: at 50 000 bindings and qps 50 (4000 s) the earliest bindings began refreshing in
/// the last seconds of creation and the steady window, so their refresh writes counted as
/// creation and steady-state writes. A scenario that measures creation gets tokens that outlive
/// it; `None` keeps ACR's lifetimes where they already do.
fn creation_lifetime(s: &Scenario) -> Option<Duration> {
    let needed = refresh_lifetime(s.bindings, s.qps, s.steady);
    (needed > acrpull_testkit::azure::DEFAULT_ACCESS_LIFETIME).then_some(needed)
}

fn create(api: &ApiServer, res: &str, ns: &str, obj: Value) -> Result<(), ScenarioError> {
    let what = format!("{res} {ns}/{}", obj["metadata"]["name"]);
    api.create(res, ns, obj)
        .map(drop)
        .map_err(|e| ScenarioError::Setup(what, e))
}

/// Creates namespaces, unrelated objects, ServiceAccounts and bindings directly in the store.
fn fill_cluster(api: &ApiServer, s: &Scenario) -> Result<(), ScenarioError> {
    let m = s.namespace_count();
    for j in 0..m {
        api.create_namespace(&ns_name(j))
            .map_err(|e| ScenarioError::Setup(ns_name(j), e))?;
    }
    for i in 0..s.unrelated {
        let ns = ns_name(i % m);
        create(
            api,
            "secrets",
            &ns,
            json!({"metadata": {"name": format!("unrelated-{i}"), "labels": {"app": "other"}},
                   "type": "Opaque", "data": {"config": "dW5yZWxhdGVkIGNvbmZpZ3VyYXRpb24gZGF0YQ=="}}),
        )?;
        create(
            api,
            "serviceaccounts",
            &ns,
            json!({"metadata": {"name": format!("unrelated-{i}"), "labels": {"app": "other"}}}),
        )?;
        progress_every(i + 1, s.unrelated, "unrelated Secret/ServiceAccount pairs");
    }
    for i in 0..s.bindings {
        let (ns, name, sa) = binding_names(s, i);
        // A shared `default` ServiceAccount is the one the namespace gets by itself.
        if !s.shared_sa {
            create(
                api,
                "serviceaccounts",
                &ns,
                json!({"metadata": {"name": sa}}),
            )?;
        }
        let client_id = identity((i % s.identities) as u32 + 1).client_id;
        let host = registry_host((i / s.identities) % s.registries);
        create(
            api,
            BINDINGS_V1BETA2,
            &ns,
            binding_v1beta2(&ns, &name, &host, SCOPE, &client_id, &sa),
        )?;
        progress_every(i + 1, s.bindings, "bindings with their ServiceAccounts");
    }
    Ok(())
}

fn progress_every(done: usize, of: usize, what: &str) {
    if done.is_multiple_of(10_000) || (done == of && of >= 10_000) {
        eprintln!("    created {done}/{of} {what}");
    }
}

/// The spacing of readiness polls for `bindings` bindings.
fn poll_interval(bindings: usize) -> Duration {
    POLL.max(POLL_PER_BINDING * bindings as u32)
}

/// A binding's status when it is Ready (a token written, no error): its last refresh time.
fn ready_refresh_time(b: &Value) -> Option<String> {
    let st = &b["status"];
    let error_free = st["error"].as_str().is_none_or(str::is_empty);
    (error_free && st["tokenExpirationTime"].is_string()).then(|| {
        st["lastTokenRefreshTime"]
            .as_str()
            .unwrap_or("")
            .to_string()
    })
}

/// The running measurement: the world, acrpull, and the counters at the start of a phase.
// Field order is drop order: acrpull is stopped before the world it talks to.
struct Run<'a> {
    s: &'a Scenario,
    p: Acrpull,
    w: World,
    pid: String,
    kube0: KubeCounts,
    azure0: AzureCounts,
    cpu0: u64,
    t0: Instant,
}

impl Run<'_> {
    fn sample(&self) -> Result<Sample, ScenarioError> {
        Ok(procfs::sample(&self.pid)?)
    }

    fn check_alive(&mut self) -> Result<(), ScenarioError> {
        match self.p.exited() {
            Some(status) => {
                let lines = self.p.log.lines();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                Err(ScenarioError::Exited(format!("{status}\n{tail}")))
            }
            None => Ok(()),
        }
    }

    /// Closes the current phase and starts the next one.
    fn phase(&mut self) -> Result<Phase, ScenarioError> {
        let kube = KubeCounts::take(&self.w.api, CONTROLLER_USER);
        let azure = AzureCounts::take(&self.w.azure);
        let cpu = self.sample()?.cpu_ticks;
        let now = Instant::now();
        let phase = Phase {
            duration: now - self.t0,
            kube: kube.since(&self.kube0),
            azure: azure.since(&self.azure0),
            cpu_ticks: cpu.saturating_sub(self.cpu0),
        };
        (self.kube0, self.azure0, self.cpu0, self.t0) = (kube, azure, cpu, now);
        Ok(phase)
    }

    /// Waits until acrpull watches bindings, Secrets and ServiceAccounts (the empty-cluster case).
    fn wait_for_watches(&mut self) -> Result<bool, ScenarioError> {
        let deadline = Instant::now() + WATCH_START_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive()?;
            let api = &self.w.api;
            if api.count("watch", "acrpullbindings") >= 2
                && api.count("watch", "secrets") >= 1
                && api.count("watch", "serviceaccounts") >= 1
            {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(false)
    }

    /// Polls bindings until `done` holds for each (given its index and object) or `timeout`
    /// passes; returns how many did, the time of the first and the last, and an error text seen.
    fn wait_bindings(
        &mut self,
        what: &str,
        timeout: Duration,
        done: &mut dyn FnMut(usize, &Value) -> bool,
    ) -> Result<Waited, ScenarioError> {
        let start = Instant::now();
        let n = self.s.bindings;
        let mut pending = vec![true; n];
        let mut left = n;
        let mut out = Waited::default();
        let mut next_progress = start + PROGRESS_EVERY;
        let mut seen_rv: Option<u64> = None;
        loop {
            self.check_alive()?;
            let s = self.s;
            let before = left;
            let mut visit = |ns: &str, name: &str, b: &Value| {
                let Some(i) = binding_index(s, ns, name).filter(|&i| pending[i]) else {
                    return;
                };
                if done(i, b) {
                    pending[i] = false;
                    left -= 1;
                } else if let Some(e) = b["status"]["error"].as_str().filter(|e| !e.is_empty()) {
                    out.error.get_or_insert_with(|| format!("{ns}/{name}: {e}"));
                }
            };
            // Only the bindings written since the last poll, from the emulator's history; one
            // ordered walk of them all at first. Looking every pending binding up (and copying
            // it) each poll cost the bench process more CPU than the emulator's serving did.
            let api = &self.w.api;
            seen_rv = Some(
                match seen_rv.and_then(|rv| api.inspect_changes(BINDINGS_V1BETA2, rv, &mut visit)) {
                    Some(rv) => rv,
                    None => api.inspect_all(BINDINGS_V1BETA2, &mut visit),
                },
            );
            let now = Instant::now();
            if left < before {
                out.first.get_or_insert(now - start);
                out.last = Some(now - start);
            }
            out.count = n - left;
            if left == 0 || now - start > timeout {
                return Ok(out);
            }
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                let rss = self.sample().map(|x| x.rss_kib / 1024).unwrap_or(0);
                eprintln!(
                    "    {what}: {}/{} after {:.0} s (acrpull RSS {rss} MiB, {} API requests)",
                    out.count,
                    self.s.bindings,
                    (now - start).as_secs_f64(),
                    self.w.api.count_by_user(CONTROLLER_USER)
                );
            }
            std::thread::sleep(poll_interval(left));
        }
    }

    /// Ready bindings whose ServiceAccount lists no pull secret.
    fn missing_references(&self) -> usize {
        (0..self.s.bindings)
            .filter(|&i| {
                let (ns, _, sa) = binding_names(self.s, i);
                self.w
                    .api
                    .inspect("serviceaccounts", &ns, &sa, |o| {
                        o["imagePullSecrets"].as_array().is_none_or(Vec::is_empty)
                    })
                    .unwrap_or(true)
            })
            .count()
    }
}

#[derive(Debug, Default)]
struct Waited {
    count: usize,
    first: Option<Duration>,
    last: Option<Duration>,
    error: Option<String>,
}

/// Runs one scenario against `acrpull`.
pub fn run(s: &Scenario, acrpull: &Path) -> Result<Outcome, ScenarioError> {
    let binary_bytes = std::fs::metadata(acrpull)
        .map_err(ScenarioError::Binary)?
        .len();
    let t_setup = Instant::now();
    let mut w = World::start();
    // A watch cache deep enough for the whole fill plus acrpull's writes, as a real API server's
    // would be for a client that keeps up; the bench measures acrpull, not relists.
    w.api
        .set_history_limit(10_000 + 2 * (s.unrelated + s.bindings));
    set_up_azure(&w, s);
    fill_cluster(&w.api, s)?;
    w.api.set_latency(s.latency);
    let setup = t_setup.elapsed();
    eprintln!("    cluster filled in {:.1} s", setup.as_secs_f64());

    let bench0 = procfs::sample("self")?;
    let mut args = vec![
        format!("--kube-api-qps={}", s.qps),
        format!("--kube-api-burst={}", s.burst),
    ];
    args.extend(s.extra_args.iter().cloned());
    // Production's level: debug logging would cost acrpull CPU the product does not spend.
    let mut env = vec![("RUST_LOG".to_string(), "info".to_string())];
    env.extend(s.extra_env.iter().cloned());
    let opts = AcrpullOptions {
        args,
        env,
        ..AcrpullOptions::default()
    };
    let kube0 = KubeCounts::take(&w.api, CONTROLLER_USER);
    let azure0 = AzureCounts::take(&w.azure);
    let t0 = Instant::now();
    let p = w.start_acrpull(acrpull, &opts);
    let pid = p.pid().to_string();
    let mut run = Run {
        s,
        w,
        p,
        pid,
        kube0,
        azure0,
        cpu0: 0,
        t0,
    };

    let mut refreshed_at: Vec<String> = vec![String::new(); s.bindings];
    let (ready, ready_after, sample_error) = if s.bindings == 0 {
        let ok = run.wait_for_watches()?;
        (0, ok.then(|| t0.elapsed()), None)
    } else {
        let waited =
            run.wait_bindings(
                "ready",
                s.ready_timeout(),
                &mut |i, b| match ready_refresh_time(b) {
                    Some(t) => {
                        refreshed_at[i] = t;
                        true
                    }
                    None => false,
                },
            )?;
        let all = waited.count == s.bindings;
        (
            waited.count,
            all.then_some(waited.last).flatten(),
            waited.error,
        )
    };
    let creation = run.phase()?;
    let at_ready = run.sample()?;
    let bench_creation_ticks = procfs::sample("self")?
        .cpu_ticks
        .saturating_sub(bench0.cpu_ticks);
    eprintln!(
        "    {ready}/{} ready after {:.1} s; steady window {} s",
        s.bindings,
        creation.duration.as_secs_f64(),
        s.steady.as_secs()
    );

    std::thread::sleep(s.steady);
    run.check_alive()?;
    let steady = run.phase()?;

    let (refresh, refresh_spread) = match s.token_lifetime {
        Some(lifetime) if ready == s.bindings && s.bindings > 0 => {
            eprintln!(
                "    waiting for every binding to refresh (token lifetime {} s)",
                lifetime.as_secs()
            );
            let waited = run.wait_bindings("refreshed", lifetime, &mut |i, b| {
                ready_refresh_time(b).is_some_and(|t| t != refreshed_at[i])
            })?;
            let phase = run.phase()?;
            let spread = match (waited.first, waited.last) {
                (Some(a), Some(b)) if waited.count == s.bindings => Some(b - a),
                _ => None,
            };
            (Some(phase), spread)
        }
        _ => (None, None),
    };
    if let Some(dir) = &s.log_dir {
        let file = dir.join(format!("{}.log", s.name.replace([' ', '/', '+'], "_")));
        let written =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, run.p.log.text()));
        if let Err(e) = written {
            eprintln!("    cannot write {}: {e}", file.display());
        }
    }
    let sa = |f: &dyn Fn(&str, u16) -> bool| {
        run.w.api.count_matching(|r| {
            r.user == CONTROLLER_USER && r.resource == "serviceaccounts" && f(&r.verb, r.code)
        })
    };
    eprintln!(
        "    ServiceAccount writes {} (422: {}, 409: {}), gets {}",
        sa(&|v, _| matches!(v, "patch" | "update")),
        sa(&|v, c| matches!(v, "patch" | "update") && c == 422),
        sa(&|v, c| matches!(v, "patch" | "update") && c == 409),
        sa(&|v, _| v == "get"),
    );
    let missing_references = run.missing_references();
    let at_end = run.sample()?;
    let bench = procfs::sample("self")?;
    Ok(Outcome {
        scenario: s.clone(),
        setup,
        ready,
        ready_after,
        missing_references: missing_references.min(ready),
        sample_error,
        creation,
        steady,
        refresh,
        refresh_spread,
        at_ready,
        at_end,
        bench,
        bench_creation_ticks,
        binary_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(bindings: usize) -> Scenario {
        Scenario {
            name: "t".into(),
            bindings,
            namespaces: 100,
            identities: 10,
            registries: 5,
            unrelated: 0,
            token_lifetime: None,
            qps: 50.0,
            burst: 100,
            steady: Duration::from_secs(15),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            log_dir: None,
            latency: Latency::default(),
            shared_sa: false,
        }
    }

    #[test]
    fn bindings_spread_over_namespaces_identities_and_registries() {
        let s = scenario(1000);
        assert_eq!(binding_names(&s, 0).0, "bench-0");
        assert_eq!(binding_names(&s, 101).0, "bench-1");
        assert_eq!(s.distinct_inputs(), 50);
        assert_eq!(s.distinct_identities(), 10);
        assert_eq!(scenario(3).distinct_inputs(), 3);
        assert_eq!(scenario(0).namespace_count(), 1);
    }

    #[test]
    fn a_binding_is_found_by_its_namespace_and_name() {
        let s = scenario(1000);
        for i in [0, 101, 999] {
            let (ns, name, _) = binding_names(&s, i);
            assert_eq!(binding_index(&s, &ns, &name), Some(i));
        }
        assert_eq!(binding_index(&s, "bench-2", "b-101"), None);
        assert_eq!(binding_index(&s, "bench-0", "b-1000"), None);
        assert_eq!(binding_index(&s, "bench-0", "sa-0"), None);
    }

    #[test]
    fn the_rate_bound_is_four_writes_per_binding_at_the_client_qps() {
        assert_eq!(scenario(1000).rate_bound(), Some(80.0));
        let unlimited = Scenario {
            qps: 0.0,
            ..scenario(1000)
        };
        assert_eq!(unlimited.rate_bound(), None);
    }

    #[test]
    fn refresh_lifetime_leaves_room_for_convergence_and_the_steady_window() {
        let l = refresh_lifetime(1000, 50.0, Duration::from_secs(15));
        // 80 s to converge, ×1.5, + 15 s steady + 30 s margin = 165 s to the first refresh.
        assert_eq!(l, Duration::from_secs(330));
        assert_eq!(
            refresh_lifetime(0, 50.0, Duration::from_secs(15)),
            Duration::from_secs(180)
        );
    }

    #[test]
    fn tokens_outlive_a_long_creation_and_keep_acrs_lifetimes_otherwise() {
        assert_eq!(
            creation_lifetime(&scenario(10_000)),
            None,
            "800 s fits in 75 min"
        );
        let long = creation_lifetime(&scenario(50_000)).expect("4000 s does not");
        // First refresh at half the lifetime: after creation (4000 s) and the steady window.
        assert!(long / 2 > Duration::from_secs(4000 + 15), "{long:?}");
    }

    #[test]
    fn large_runs_poll_less_often() {
        assert_eq!(poll_interval(1000), POLL);
        assert_eq!(poll_interval(50_000), Duration::from_millis(2500));
    }

    #[test]
    fn a_binding_is_ready_with_an_expiry_and_no_error() {
        let ok = json!({"status": {"tokenExpirationTime": "2026-01-01T00:00:00Z",
                                   "lastTokenRefreshTime": "2025-12-31T00:00:00Z"}});
        assert_eq!(
            ready_refresh_time(&ok).as_deref(),
            Some("2025-12-31T00:00:00Z")
        );
        let failed = json!({"status": {"tokenExpirationTime": "2026-01-01T00:00:00Z",
                                       "error": "service account \"x\" not found"}});
        assert_eq!(ready_refresh_time(&failed), None);
        assert_eq!(ready_refresh_time(&json!({"spec": {}})), None);
    }
}
