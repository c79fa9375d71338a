//! acrpull's scale benchmark: runs the release binary against the emulated cluster and fake Azure at
//! several sizes and prints one markdown table per scenario, then a PASS/FAIL line per target.
//!
//! A program, not a timed test: its figures depend on the machine, so it reports, it does not assert.
//! Run it through `scripts/bench.sh`, which builds both binaries in release mode first.

mod args;
mod counts;
mod procfs;
mod report;
mod scenario;

use std::io::Write as _;
use std::process::ExitCode;

use acrpull_testkit::kube::Latency;
use args::{Args, Command};
use scenario::{Outcome, Scenario};

/// Which kind of run a scenario is; sorts the extra runs right after the plain run of their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Plain,
    Unrelated,
    Refresh,
}

/// The scenarios the arguments ask for, smallest first.
fn plan(a: &Args) -> Vec<(Kind, Scenario)> {
    let base = |bindings: usize| Scenario {
        name: format!("N={bindings}"),
        bindings,
        namespaces: a.namespaces,
        identities: a.identities,
        registries: a.registries,
        unrelated: 0,
        token_lifetime: None,
        qps: a.qps,
        burst: a.burst,
        steady: a.steady,
        extra_args: a.acrpull_args.clone(),
        extra_env: a.acrpull_env.clone(),
        log_dir: a.log_dir.clone(),
        shared_sa: a.shared_sa,
        latency: Latency {
            read: a.read_latency,
            write: a.write_latency,
            watch: a.watch_latency,
        },
    };
    let mut out: Vec<(Kind, Scenario)> = a.sizes.iter().map(|&n| (Kind::Plain, base(n))).collect();
    if a.unrelated > 0 {
        let n = a.unrelated_size;
        out.push((
            Kind::Unrelated,
            Scenario {
                name: format!("N={n} + {} unrelated", a.unrelated),
                unrelated: a.unrelated,
                ..base(n)
            },
        ));
    }
    if a.refresh {
        let n = a.refresh_size;
        let lifetime = a
            .token_lifetime
            .unwrap_or_else(|| scenario::refresh_lifetime(n, a.qps, a.steady));
        out.push((
            Kind::Refresh,
            Scenario {
                name: format!("refresh N={n}"),
                token_lifetime: Some(lifetime),
                ..base(n)
            },
        ));
    }
    out.sort_by_key(|(kind, s)| (s.bindings, *kind));
    out
}

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(a)) => *a,
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let hz = procfs::ticks_per_second();
    let mut outcomes: Vec<(Kind, Outcome)> = Vec::new();
    let mut verdicts = Vec::new();
    let mut failed_runs = 0;
    println!("## acrpull scale benchmark\n");
    println!("binary: {}\n", args.acrpull.display());
    for (kind, s) in plan(&args) {
        eprintln!("==> {} ({} bindings)", s.name, s.bindings);
        match scenario::run(&s, &args.acrpull) {
            Ok(o) => {
                println!("{}", report::table(&o, hz));
                let mut v = report::verdicts(&o, hz);
                if kind == Kind::Unrelated {
                    let plain = outcomes
                        .iter()
                        .find(|(k, p)| *k == Kind::Plain && p.scenario.bindings == s.bindings);
                    if let Some((_, p)) = plain {
                        v.push(report::unrelated_verdict(&o, p));
                    }
                }
                for line in &v {
                    println!("{line}");
                }
                println!();
                verdicts.extend(v);
                outcomes.push((kind, o));
            }
            Err(e) => {
                failed_runs += 1;
                println!("### {}\n\nrun failed: {e}\n", s.name);
            }
        }
        let _ = std::io::stdout().flush();
    }
    println!("## Summary\n");
    for v in &verdicts {
        println!("{v}");
    }
    let fails = verdicts.iter().filter(|v| !v.pass).count();
    println!(
        "\n{} targets met, {fails} missed, {failed_runs} runs failed",
        verdicts.len() - fails
    );
    if failed_runs > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_scenarios_run_right_after_the_plain_run_of_their_size() {
        let a = Args {
            sizes: vec![10_000, 0, 1_000],
            unrelated: 50_000,
            refresh: true,
            ..Args::default()
        };
        let names: Vec<String> = plan(&a).into_iter().map(|(_, s)| s.name).collect();
        assert_eq!(
            names,
            [
                "N=0",
                "N=1000",
                "N=1000 + 50000 unrelated",
                "refresh N=1000",
                "N=10000"
            ]
        );
    }

    #[test]
    fn the_refresh_scenario_gets_a_derived_token_lifetime_unless_one_is_given() {
        let mut a = Args {
            sizes: vec![],
            refresh: true,
            ..Args::default()
        };
        assert_eq!(
            plan(&a)[0].1.token_lifetime,
            Some(std::time::Duration::from_secs(330))
        );
        a.token_lifetime = Some(std::time::Duration::from_secs(200));
        assert_eq!(
            plan(&a)[0].1.token_lifetime,
            Some(std::time::Duration::from_secs(200))
        );
    }
}
