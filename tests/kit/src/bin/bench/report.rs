//! Turns measured outcomes into one markdown table per scenario and PASS/FAIL lines per target.

use std::fmt::Write as _;

use crate::counts::{KubeCounts, PerInput};
use crate::scenario::{Outcome, Phase};

/// Idle RSS target, KiB.
const IDLE_RSS_KIB: u64 = 6 * 1024;
/// RSS target at 10 000 bindings, KiB.
const RSS_10K_KIB: u64 = 32 * 1024;
/// The size the 32 MiB and idle-CPU targets are stated for.
const TARGET_SIZE: usize = 10_000;
/// "Nothing measurable": RSS differences below this are noise (allocator and page granularity).
const UNMEASURABLE_KIB: u64 = 1024;
/// Convergence may exceed the rate-limit bound by this factor.
const CONVERGENCE_SLACK: f64 = 1.1;
/// Idle CPU target, percent of one core.
const IDLE_CPU_PERCENT: f64 = 1.0;

/// One target's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether the measurement meets the bound.
    pub pass: bool,
    /// What the target is about, with the scenario's name.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// The bound.
    pub bound: String,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = if self.pass { "PASS" } else { "FAIL" };
        write!(
            f,
            "{word} {}: {} vs {}",
            self.target, self.measured, self.bound
        )
    }
}

fn verdict(pass: bool, name: &str, target: &str, measured: String, bound: String) -> Verdict {
    Verdict {
        pass,
        target: format!("[{name}] {target}"),
        measured,
        bound,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn per(n: usize, bindings: usize) -> String {
    if bindings == 0 {
        "—".into()
    } else {
        format!("{:.2}", n as f64 / bindings as f64)
    }
}

fn secs(ticks: u64, hz: u64) -> f64 {
    ticks as f64 / hz as f64
}

/// Percent of one core used over a phase.
fn cpu_percent(p: &Phase, hz: u64) -> f64 {
    let wall = p.duration.as_secs_f64();
    if wall <= 0.0 {
        0.0
    } else {
        100.0 * secs(p.cpu_ticks, hz) / wall
    }
}

fn inputs(p: PerInput, what: &str) -> String {
    format!("{} distinct {what}, at most {} each", p.distinct, p.max)
}

/// The markdown table of one outcome (`hz`: clock ticks per second).
pub fn table(o: &Outcome, hz: u64) -> String {
    let s = &o.scenario;
    let n = s.bindings;
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |a: &str, b: String, c: String, d: String| rows.push([a.into(), b, c, d]);
    let ready = match o.ready_after {
        Some(d) => format!("{:.2}", d.as_secs_f64()),
        None => "timed out".into(),
    };
    let bound = match s.rate_bound() {
        Some(b) if n > 0 => format!("bound 4N/qps = {b:.1} s"),
        _ if n == 0 => "acrpull watching (no bindings)".into(),
        _ => "no client rate limit".into(),
    };
    row(
        "time until every binding is Ready (s)",
        ready,
        format!("{}/{n} ready", o.ready),
        bound,
    );
    let phases: Vec<(&str, &Phase)> = [
        Some(("at creation", &o.creation)),
        Some(("steady state", &o.steady)),
        o.refresh.as_ref().map(|p| ("per refresh", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (label, p) in &phases {
        let k = &p.kube;
        let window = format!(" ({:.0} s)", p.duration.as_secs_f64());
        row(
            &format!("Kubernetes reads {label}{window}"),
            k.reads().to_string(),
            per(k.reads(), n),
            k.breakdown(false),
        );
        row(
            &format!("Kubernetes writes {label}"),
            k.writes().to_string(),
            per(k.writes(), n),
            k.breakdown(true)
                .split(", ")
                .filter(|x| !x.contains(" events="))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            &format!("Event writes {label}"),
            k.event_writes().to_string(),
            per(k.event_writes(), n),
            format!("all requests: {}", k.total()),
        );
    }
    for (label, p) in &phases {
        let a = &p.azure;
        row(
            &format!("IMDS requests {label}"),
            a.imds_requests.to_string(),
            per(a.imds_requests as usize, n),
            inputs(a.imds(), "(identity, resource)"),
        );
        row(
            &format!("Entra token requests {label}"),
            a.entra().total.to_string(),
            per(a.entra().total as usize, n),
            inputs(a.entra(), "(tenant, client)"),
        );
        row(
            &format!("ACR exchanges {label}"),
            a.exchanges().total.to_string(),
            per(a.exchanges().total as usize, n),
            inputs(a.exchanges(), "(registry, identity)"),
        );
        row(
            &format!("ACR token requests {label}"),
            a.acr_tokens().total.to_string(),
            per(a.acr_tokens().total as usize, n),
            inputs(a.acr_tokens(), "(registry, identity, scope)"),
        );
    }
    if let Some(spread) = o.refresh_spread {
        row(
            "refresh spread, first to last (s)",
            format!("{:.1}", spread.as_secs_f64()),
            String::new(),
            "acrpull jitters refreshes by up to 60 s".into(),
        );
    }
    row(
        "acrpull peak RSS (VmHWM)",
        mib(o.at_end.hwm_kib),
        String::new(),
        format!("{} when all Ready", mib(o.at_ready.hwm_kib)),
    );
    row(
        "acrpull steady RSS (VmRSS)",
        mib(o.at_end.rss_kib),
        String::new(),
        format!("{} when all Ready", mib(o.at_ready.rss_kib)),
    );
    row(
        "acrpull CPU until Ready (s)",
        format!("{:.2}", secs(o.creation.cpu_ticks, hz)),
        String::new(),
        format!("{:.0} % of a core", cpu_percent(&o.creation, hz)),
    );
    row(
        "acrpull idle CPU, steady window (% of a core)",
        format!("{:.2}", cpu_percent(&o.steady, hz)),
        String::new(),
        format!(
            "{:.2} s over {:.0} s",
            secs(o.steady.cpu_ticks, hz),
            o.steady.duration.as_secs_f64()
        ),
    );
    row(
        "bench process (emulator + fakes): CPU until Ready, peak RSS",
        format!("{:.2} s", secs(o.bench_creation_ticks, hz)),
        String::new(),
        format!(
            "{} peak over the whole bench run so far; fill took {:.1} s",
            mib(o.bench.hwm_kib),
            o.setup.as_secs_f64()
        ),
    );
    row(
        "acrpull binary size",
        format!("{:.2} MiB", o.binary_bytes as f64 / (1024.0 * 1024.0)),
        String::new(),
        format!("{} bytes", o.binary_bytes),
    );
    if o.missing_references > 0 {
        row(
            "Ready bindings whose ServiceAccount lists no pull secret",
            o.missing_references.to_string(),
            String::new(),
            String::new(),
        );
    }
    if let Some(e) = &o.sample_error {
        row(
            "a binding error seen",
            String::new(),
            String::new(),
            e.replace('|', "/"),
        );
    }

    let mut out = format!(
        "### {}: {n} bindings, {} namespaces, {} identities, {} registries, {} unrelated Secrets + ServiceAccounts; qps {}, burst {}; API latency read/write/watch {}/{}/{} ms{}\n\n",
        s.name,
        s.namespaces.min(n.max(1)),
        s.identities,
        s.registries,
        s.unrelated,
        s.qps,
        s.burst,
        s.latency.read.as_millis(),
        s.latency.write.as_millis(),
        s.latency.watch.as_millis(),
        if s.shared_sa {
            "; bindings share their namespace's default ServiceAccount"
        } else {
            ""
        }
    );
    if !s.extra_args.is_empty() || !s.extra_env.is_empty() {
        let env: Vec<String> = s
            .extra_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "acrpull also ran with: {} {}\n",
            env.join(" "),
            s.extra_args.join(" ")
        );
    }
    out.push_str("| figure | total | per binding | notes |\n|---|---:|---:|---|\n");
    for [a, b, c, d] in rows {
        let _ = writeln!(out, "| {a} | {b} | {c} | {d} |");
    }
    out
}

/// The verdicts one outcome can give on its own.
pub fn verdicts(o: &Outcome, hz: u64) -> Vec<Verdict> {
    let s = &o.scenario;
    let n = s.bindings;
    let name = s.name.as_str();
    let plain = s.unrelated == 0 && s.token_lifetime.is_none();
    let mut v = Vec::new();
    if n == 0 && plain {
        v.push(verdict(
            o.at_end.rss_kib <= IDLE_RSS_KIB,
            name,
            "idle RSS",
            format!(
                "{} VmRSS ({} VmHWM)",
                mib(o.at_end.rss_kib),
                mib(o.at_end.hwm_kib)
            ),
            format!("≤ {}", mib(IDLE_RSS_KIB)),
        ));
    }
    if n == 0 {
        return v;
    }
    v.push(verdict(
        o.ready == n && o.missing_references == 0,
        name,
        "every binding Ready with its ServiceAccount reference",
        format!(
            "{} Ready, {} without reference",
            o.ready, o.missing_references
        ),
        format!("{n}"),
    ));
    if n == TARGET_SIZE && plain {
        v.push(verdict(
            o.at_end.hwm_kib <= RSS_10K_KIB,
            name,
            "RSS at 10 000 bindings",
            format!(
                "{} VmHWM ({} VmRSS)",
                mib(o.at_end.hwm_kib),
                mib(o.at_end.rss_kib)
            ),
            format!("≤ {}", mib(RSS_10K_KIB)),
        ));
        let pct = cpu_percent(&o.steady, hz);
        v.push(verdict(
            pct < IDLE_CPU_PERCENT,
            name,
            "idle CPU between refreshes",
            format!("{pct:.2} % of a core"),
            format!("< {IDLE_CPU_PERCENT} %"),
        ));
    }
    let c = &o.creation.kube;
    v.push(writes_verdict(
        c,
        n,
        4,
        name,
        "object writes per new binding",
    ));
    let gets: usize = phases_after_start(o).map(|p| p.kube.gets()).sum();
    v.push(verdict(
        gets == 0,
        name,
        "no reads beyond the watches",
        format!("{gets} GETs ({} per binding)", per(gets, n)),
        "0".into(),
    ));
    let st = &o.steady.kube;
    v.push(verdict(
        st.writes() == 0,
        name,
        "object writes in steady state",
        format!(
            "{} writes, {} Event writes in {:.0} s",
            st.writes(),
            st.event_writes(),
            o.steady.duration.as_secs_f64()
        ),
        "0".into(),
    ));
    let imds = o.creation.azure.imds();
    let later_imds =
        o.steady.azure.imds().total + o.refresh.as_ref().map_or(0, |r| r.azure.imds().total);
    v.push(verdict(
        imds.max <= 1 && imds.distinct <= s.distinct_identities() && later_imds == 0,
        name,
        "one IMDS request per distinct (identity, audience) per token lifetime",
        format!(
            "{} for {} distinct, at most {} each; {later_imds} more after Ready",
            imds.total, imds.distinct, imds.max
        ),
        format!("≤ 1 each, {} distinct identities", s.distinct_identities()),
    ));
    let ex = o.creation.azure.exchanges();
    v.push(verdict(
        ex.max <= 1 && o.creation.azure.acr_tokens().max <= 1,
        name,
        "one ACR exchange per distinct (identity, registry, scope) at creation",
        format!(
            "{} exchanges for {} distinct, at most {} each; token requests at most {} each",
            ex.total,
            ex.distinct,
            ex.max,
            o.creation.azure.acr_tokens().max
        ),
        format!("≤ 1 each, {} distinct inputs", s.distinct_inputs()),
    ));
    if let Some(bound) = s.rate_bound() {
        let limit = bound * CONVERGENCE_SLACK;
        v.push(match o.ready_after {
            Some(d) => verdict(
                d.as_secs_f64() <= limit,
                name,
                "convergence vs client rate limit",
                format!(
                    "{:.1} s ({:.2} × bound; {:.1} object requests/s)",
                    d.as_secs_f64(),
                    d.as_secs_f64() / bound,
                    (o.creation.kube.total() - o.creation.kube.event_writes()) as f64
                        / d.as_secs_f64().max(0.001)
                ),
                format!("≤ {limit:.1} s (4N/qps = {bound:.1} s, +10 %)"),
            ),
            None => verdict(
                false,
                name,
                "convergence vs client rate limit",
                "timed out".into(),
                format!("≤ {limit:.1} s"),
            ),
        });
    }
    match &o.refresh {
        Some(r) => {
            v.push(writes_verdict(
                &r.kube,
                n,
                2,
                name,
                "object writes per refresh",
            ));
            let ex = r.azure.exchanges();
            v.push(verdict(
                ex.max <= 1 && ex.distinct == s.distinct_inputs(),
                name,
                "one ACR exchange per distinct (identity, registry, scope) per refresh",
                format!(
                    "{} exchanges for {} distinct, at most {} each",
                    ex.total, ex.distinct, ex.max
                ),
                format!("exactly 1 each for {} distinct inputs", s.distinct_inputs()),
            ));
        }
        None if s.token_lifetime.is_some() => v.push(verdict(
            false,
            name,
            "refresh cycle",
            "not measured (bindings did not converge)".into(),
            "every binding refreshed".into(),
        )),
        None => {}
    }
    v
}

/// Object writes per binding against a budget. Events are shown beside them but not counted: acrpull
/// sends them from their own thread through their own rate limit, as best-effort notes that never
/// delay an object write.
fn writes_verdict(k: &KubeCounts, n: usize, budget: usize, name: &str, target: &str) -> Verdict {
    verdict(
        k.writes() <= budget * n,
        name,
        target,
        format!(
            "{} object writes (+ {} Event writes, own limiter)",
            per(k.writes(), n),
            per(k.event_writes(), n)
        ),
        format!("≤ {budget}"),
    )
}

/// The phases after acrpull started, for figures that count from the first request on.
fn phases_after_start(o: &Outcome) -> impl Iterator<Item = &Phase> {
    [Some(&o.creation), Some(&o.steady), o.refresh.as_ref()]
        .into_iter()
        .flatten()
}

/// Whether unrelated objects changed acrpull's memory: compares a run with them against the plain
/// run of the same size, when both are present.
pub fn unrelated_verdict(with: &Outcome, without: &Outcome) -> Verdict {
    let peak = with.at_end.hwm_kib as i64 - without.at_end.hwm_kib as i64;
    let steady = with.at_end.rss_kib as i64 - without.at_end.rss_kib as i64;
    let tol = UNMEASURABLE_KIB as i64;
    verdict(
        peak <= tol && steady <= tol,
        &with.scenario.name,
        "unrelated Secrets and ServiceAccounts add nothing measurable",
        format!(
            "{:+.1} MiB peak, {:+.1} MiB steady vs {}",
            peak as f64 / 1024.0,
            steady as f64 / 1024.0,
            without.scenario.name
        ),
        format!("≤ +{}", mib(UNMEASURABLE_KIB)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_reads_pass_or_fail_with_measurement_and_bound() {
        let v = verdict(
            true,
            "N=0",
            "idle RSS",
            "4.0 MiB".into(),
            "≤ 6.0 MiB".into(),
        );
        assert_eq!(v.to_string(), "PASS [N=0] idle RSS: 4.0 MiB vs ≤ 6.0 MiB");
        let f = verdict(false, "N=1", "x", "a".into(), "b".into());
        assert!(f.to_string().starts_with("FAIL "));
    }

    #[test]
    fn event_writes_are_shown_but_not_counted_against_the_write_budget() {
        let objects_only = KubeCounts::of(&[
            (("create", "secrets"), 40),
            (("patch", "serviceaccounts"), 40),
        ]);
        assert!(writes_verdict(&objects_only, 20, 4, "N=20", "w").pass);
        let with_events =
            KubeCounts::of(&[(("create", "secrets"), 80), (("create", "events"), 20)]);
        let v = writes_verdict(&with_events, 20, 4, "N=20", "w");
        assert!(v.pass);
        assert_eq!(
            v.measured,
            "4.00 object writes (+ 1.00 Event writes, own limiter)"
        );
        let over = KubeCounts::of(&[(("create", "secrets"), 81)]);
        assert!(!writes_verdict(&over, 20, 4, "N=20", "w").pass);
    }

    #[test]
    fn per_binding_figures_have_two_decimals_and_none_for_zero_bindings() {
        assert_eq!(per(4000, 1000), "4.00");
        assert_eq!(per(5, 0), "—");
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let p = Phase {
            duration: std::time::Duration::from_secs(10),
            cpu_ticks: 5,
            ..Phase::default()
        };
        assert!((cpu_percent(&p, 100) - 0.5).abs() < 1e-9);
        assert_eq!(cpu_percent(&Phase::default(), 100), 0.0);
    }
}
