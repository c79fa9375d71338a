//! The benchmark's command line, parsed (purely) into a validated plan of scenarios.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What to run and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The acrpull binary (release build).
    pub acrpull: PathBuf,
    /// Binding counts, one scenario each.
    pub sizes: Vec<usize>,
    /// Namespaces the bindings spread over (capped at the binding count).
    pub namespaces: usize,
    /// Distinct managed identities the bindings share.
    pub identities: usize,
    /// Distinct registries the bindings share.
    pub registries: usize,
    /// Unrelated Secrets and, as many again, unrelated ServiceAccounts; 0 skips that scenario.
    pub unrelated: usize,
    /// Binding count of the unrelated-objects scenario (compared with the plain run of that size).
    pub unrelated_size: usize,
    /// Whether to run the refresh scenario.
    pub refresh: bool,
    /// Whether the bindings share their namespace's `default` ServiceAccount (else one each).
    pub shared_sa: bool,
    /// Binding count of the refresh scenario.
    pub refresh_size: usize,
    /// ACR token lifetime in the refresh scenario; `None` derives one from the expected convergence.
    pub token_lifetime: Option<Duration>,
    /// `--kube-api-qps` given to acrpull (0: unlimited).
    pub qps: f64,
    /// `--kube-api-burst` given to acrpull.
    pub burst: u32,
    /// How long the steady-state window lasts after every binding is Ready.
    pub steady: Duration,
    /// Extra flags for acrpull (e.g. `--workers=8`).
    pub acrpull_args: Vec<String>,
    /// Extra environment for acrpull (e.g. `MALLOC_ARENA_MAX=2`, to tell allocator from data).
    pub acrpull_env: Vec<(String, String)>,
    /// Where to write acrpull's log of each scenario (`None`: not written).
    pub log_dir: Option<PathBuf>,
    /// The emulated API server's latency for reads (GET/LIST).
    pub read_latency: Duration,
    /// Its latency for writes (POST/PUT/PATCH/DELETE).
    pub write_latency: Duration,
    /// Its latency for watch-event delivery.
    pub watch_latency: Duration,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            acrpull: acrpull_testkit::world::repo_root().join("target/release/acrpull"),
            sizes: vec![0, 1_000, 10_000, 50_000],
            namespaces: 100,
            identities: 10,
            registries: 5,
            unrelated: 0,
            unrelated_size: 1_000,
            refresh: false,
            shared_sa: false,
            refresh_size: 1_000,
            token_lifetime: None,
            // acrpull's own defaults, so a run without flags measures what users get.
            qps: 50.0,
            burst: 100,
            steady: Duration::from_secs(15),
            acrpull_args: Vec::new(),
            acrpull_env: Vec::new(),
            log_dir: None,
            // An idle real kube-apiserver with etcd: writes take 2-5 ms (an etcd commit), reads
            // and watch events about 1 ms (served from the watch cache).
            read_latency: Duration::from_millis(1),
            write_latency: Duration::from_millis(3),
            watch_latency: Duration::from_millis(1),
        }
    }
}

/// A command line the benchmark cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// A flag the benchmark does not know.
    UnknownFlag(String),
    /// A flag that needs a value got none.
    MissingValue(&'static str),
    /// A value that does not parse or is out of range.
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
    },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::UnknownFlag(a) => write!(f, "unknown flag: {a}"),
            ArgError::MissingValue(n) => write!(f, "flag needs a value: --{n}"),
            ArgError::InvalidValue { flag, value } => {
                write!(f, "invalid value {value:?} for --{flag}")
            }
        }
    }
}

impl std::error::Error for ArgError {}

/// The `--help` text.
pub const USAGE: &str = "\
bench: acrpull's scale benchmark (run by scripts/bench.sh)

  --acrpull PATH        acrpull binary (default target/release/acrpull)
  --sizes LIST          binding counts, comma-separated (default 0,1000,10000,50000)
  --namespaces M        namespaces the bindings spread over (default 100)
  --identities K        distinct managed identities (default 10)
  --registries R        distinct registries (default 5)
  --unrelated U         also run a cluster with U unrelated Secrets and U ServiceAccounts (default 0: skip)
  --unrelated-size N    bindings in that scenario (default 1000)
  --refresh             also run a refresh cycle with short token lifetimes
  --shared-sa           bindings share their namespace's `default` ServiceAccount (N/M each,
                        so concurrent workers patch one object) instead of one ServiceAccount each
  --refresh-size N      bindings in the refresh scenario (default 1000)
  --token-lifetime S    ACR token lifetime in seconds for the refresh scenario (default: derived)
  --qps Q               acrpull --kube-api-qps (default 50; 0 = unlimited)
  --burst B             acrpull --kube-api-burst (default 100)
  --steady-secs S       steady-state window after convergence (default 15)
  --acrpull-arg FLAG    extra flag for acrpull, e.g. --acrpull-arg=--workers=8; repeatable
  --acrpull-env K=V     extra environment variable for acrpull; repeatable
  --log-dir DIR         write acrpull's log of each scenario to DIR/<scenario>.log
  --read-latency-ms MS  emulated API server latency of GET/LIST (default 1)
  --write-latency-ms MS emulated API server latency of POST/PUT/PATCH/DELETE (default 3, an
                        etcd commit on an idle real server; 0 for pure memory/CPU runs)
  --watch-latency-ms MS emulated API server delay of watch-event delivery (default 1)
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the benchmark.
    Run(Box<Args>),
    /// Print [`USAGE`].
    Help,
}

/// Flags that take no value.
const SWITCHES: [&str; 3] = ["refresh", "shared-sa", "help"];

/// Parses arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ArgError> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ArgError::UnknownFlag(arg));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        if SWITCHES.contains(&name.as_str()) {
            match name.as_str() {
                "help" => return Ok(Command::Help),
                "shared-sa" => out.shared_sa = true,
                _ => out.refresh = true,
            }
            continue;
        }
        let Some(key) = FLAGS.iter().copied().find(|f| *f == name) else {
            return Err(ArgError::UnknownFlag(arg));
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or(ArgError::MissingValue(key))?,
        };
        apply(&mut out, key, value)?;
    }
    Ok(Command::Run(Box::new(out)))
}

/// Flags that take a value.
const FLAGS: [&str; 18] = [
    "log-dir",
    "acrpull-arg",
    "acrpull-env",
    "acrpull",
    "sizes",
    "namespaces",
    "identities",
    "registries",
    "unrelated",
    "unrelated-size",
    "refresh-size",
    "token-lifetime",
    "qps",
    "burst",
    "steady-secs",
    "read-latency-ms",
    "write-latency-ms",
    "watch-latency-ms",
];

fn apply(out: &mut Args, flag: &'static str, value: String) -> Result<(), ArgError> {
    let bad = |value: &str| ArgError::InvalidValue {
        flag,
        value: value.to_string(),
    };
    let count = |value: &str| value.trim().replace('_', "").parse::<usize>();
    match flag {
        "acrpull" => out.acrpull = PathBuf::from(value),
        "log-dir" => out.log_dir = Some(PathBuf::from(value)),
        "sizes" => {
            out.sizes = value
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(count)
                .collect::<Result<_, _>>()
                .map_err(|_| bad(&value))?;
        }
        "qps" => {
            out.qps = value
                .parse::<f64>()
                .ok()
                .filter(|q| q.is_finite() && *q >= 0.0)
                .ok_or_else(|| bad(&value))?;
        }
        "burst" => out.burst = value.parse().map_err(|_| bad(&value))?,
        "acrpull-arg" => out.acrpull_args.push(value),
        "acrpull-env" => {
            let (k, v) = value
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| bad(&value))?;
            out.acrpull_env.push((k.to_string(), v.to_string()));
        }
        _ => {
            let n = count(&value).map_err(|_| bad(&value))?;
            let positive = |n: usize| if n == 0 { Err(bad(&value)) } else { Ok(n) };
            match flag {
                "namespaces" => out.namespaces = positive(n)?,
                "identities" => out.identities = positive(n)?,
                "registries" => out.registries = positive(n)?,
                "unrelated" => out.unrelated = n,
                "read-latency-ms" => out.read_latency = Duration::from_millis(n as u64),
                "write-latency-ms" => out.write_latency = Duration::from_millis(n as u64),
                "watch-latency-ms" => out.watch_latency = Duration::from_millis(n as u64),
                "unrelated-size" => out.unrelated_size = n,
                "refresh-size" => out.refresh_size = positive(n)?,
                "token-lifetime" => {
                    out.token_lifetime = Some(Duration::from_secs(positive(n)? as u64))
                }
                _ => out.steady = Duration::from_secs(positive(n)? as u64),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, ArgError> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run(a) => Ok(*a),
            Command::Help => panic!("asked for help"),
        }
    }

    #[test]
    fn no_flags_measure_acrpulls_defaults_at_every_size() {
        let a = run(&[]).unwrap();
        assert_eq!(a.sizes, vec![0, 1_000, 10_000, 50_000]);
        assert_eq!((a.qps, a.burst), (50.0, 100));
        assert!(!a.refresh);
        assert_eq!(a.unrelated, 0);
        assert_eq!(
            (a.read_latency, a.write_latency, a.watch_latency),
            (
                Duration::from_millis(1),
                Duration::from_millis(3),
                Duration::from_millis(1)
            )
        );
    }

    #[test]
    fn latencies_may_be_zero() {
        let a = run(&[
            "--write-latency-ms=0",
            "--read-latency-ms",
            "0",
            "--watch-latency-ms=7",
        ])
        .unwrap();
        assert_eq!(
            (a.read_latency, a.write_latency, a.watch_latency),
            (Duration::ZERO, Duration::ZERO, Duration::from_millis(7))
        );
    }

    #[test]
    fn flags_take_values_separately_or_after_an_equals_sign() {
        let a = run(&[
            "--sizes=0,1_000",
            "--namespaces",
            "7",
            "--qps=0",
            "--refresh",
            "--shared-sa",
            "--unrelated",
            "50000",
            "--token-lifetime=240",
            "--acrpull-arg=--workers=8",
            "--acrpull-env",
            "MALLOC_ARENA_MAX=2",
        ])
        .unwrap();
        assert_eq!(a.sizes, vec![0, 1000]);
        assert_eq!(a.namespaces, 7);
        assert_eq!(a.qps, 0.0);
        assert!(a.refresh);
        assert!(a.shared_sa);
        assert_eq!(a.unrelated, 50_000);
        assert_eq!(a.token_lifetime, Some(Duration::from_secs(240)));
        assert_eq!(a.acrpull_args, vec!["--workers=8".to_string()]);
        assert_eq!(
            a.acrpull_env,
            vec![("MALLOC_ARENA_MAX".to_string(), "2".to_string())]
        );
    }

    #[test]
    fn zero_identities_is_refused_by_name() {
        assert_eq!(
            run(&["--identities", "0"]),
            Err(ArgError::InvalidValue {
                flag: "identities",
                value: "0".into()
            })
        );
    }

    #[test]
    fn unknown_and_valueless_flags_are_errors() {
        assert_eq!(
            run(&["--frobnicate"]),
            Err(ArgError::UnknownFlag("--frobnicate".into()))
        );
        assert_eq!(run(&["--qps"]), Err(ArgError::MissingValue("qps")));
        assert!(run(&["--sizes", "1,x"]).is_err());
        assert!(run(&["--qps", "-1"]).is_err());
        assert!(run(&["--acrpull-env", "NOEQUALS"]).is_err());
    }

    #[test]
    fn help_wins_over_everything_after_it() {
        assert_eq!(
            parse(["--help".to_string(), "--bogus".to_string()]),
            Ok(Command::Help)
        );
    }
}
