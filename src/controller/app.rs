//! Start-up and shutdown: turn a validated configuration into running parts, wait for a signal,
//! stop cleanly.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::binding::policy::{spawn_reloader, PolicyFile, PolicyHandle, RELOAD_PERIOD};
use crate::binding::selector::Selector;
use crate::binding::suffix::AllowList;
use crate::cli::Config;
use crate::clock::SystemClock;
use crate::controller::events::{EventRecorder, RecorderConfig};
use crate::controller::leader::{
    client_config, lease_namespace, process_identity, Elector, ElectorHandle, Hooks, LeaderConfig,
};
use crate::controller::reconcile::Reconciler;
use crate::controller::store::Store;
use crate::controller::{Controller, EventSink, Observability, Settings};
use crate::kube;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::ops::serve;
use crate::ops::signals::Signals;
use crate::plan::PlanConfig;
use crate::tokens::credential::Minter;
use crate::tokens::metered::{collect_token_counters, Metered};
use crate::tokens::{AzureUpstream, TokenService};
use std::time::Duration;

/// Why acrpull could not start; printed once by `main`, exit code 1.
#[derive(Debug)]
pub enum StartError {
    /// No usable Kubernetes connection.
    Kube(kube::ConfigError),
    /// `--label-selector` does not parse.
    LabelSelector(crate::binding::selector::SelectorError),
    /// The Azure HTTP clients could not be built (bad `SSL_CERT_FILE`, proxy, `--connect-to`).
    Azure(crate::azure::http::HttpSetupError),
    /// Threads or signal setup failed.
    Io(std::io::Error),
    /// `--leader-elect` outside a cluster without `--leader-election-namespace`.
    LeaseNamespace,
    /// Leader election could not start.
    Leader(crate::controller::leader::Error),
    /// `--identity-policy` names a file that cannot be read or is not a valid policy.
    Policy(crate::binding::policy::PolicyError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Kube(e) => write!(f, "kubernetes connection: {e}"),
            StartError::LabelSelector(e) => write!(f, "invalid --label-selector: {e}"),
            StartError::Azure(e) => write!(f, "azure clients: {e}"),
            StartError::Io(e) => write!(f, "start-up: {e}"),
            StartError::LeaseNamespace => f.write_str(
                "--leader-elect needs --leader-election-namespace when not running in a cluster",
            ),
            StartError::Leader(e) => write!(f, "leader election: {e}"),
            StartError::Policy(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Events get their own client-side rate limit, so a burst of them never delays real work.
const EVENT_QPS: f64 = 5.0;
/// Burst of the Events client.
const EVENT_BURST: u32 = 25;

/// Runs the controller until SIGTERM or SIGINT.
pub fn run(cfg: &Config) -> Result<(), StartError> {
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = Signals::block().map_err(StartError::Io)?;

    let selector = Selector::parse(&cfg.label_selector).map_err(StartError::LabelSelector)?;
    let mut kube_cfg = kube::Config::load(cfg.kubeconfig.as_deref()).map_err(StartError::Kube)?;
    kube_cfg.qps = cfg.kube_api_qps;
    kube_cfg.burst = cfg.kube_api_burst;
    let client = kube::Client::new(&kube_cfg).map_err(StartError::Kube)?;
    log::info!("kubernetes API server {}", kube_cfg.server);

    let http = crate::azure::clients(&cfg.connect_to).map_err(StartError::Azure)?;
    let metrics = Arc::new(Metrics::default());
    let upstream = Arc::new(Metered::new(
        Arc::new(AzureUpstream::new(http, &cfg.imds_endpoint)),
        Arc::clone(&metrics),
    ));
    let tokens = Arc::new(TokenService::new(upstream, Arc::new(SystemClock)));

    let allow = AllowList::from_flag(cfg.allowed_acr_server_suffixes.as_deref());
    match &allow {
        AllowList::Any => {
            log::warn!("--allowed-acr-server-suffixes=*: tokens may be sent to any host")
        }
        AllowList::Suffixes(s) => log::info!("registries allowed: {}", s.join(", ")),
    }
    let (policy, policy_file) = match &cfg.identity_policy {
        Some(path) => {
            let (file, p) = PolicyFile::load(path).map_err(StartError::Policy)?;
            log::info!("identity policy {} enforced", path.display());
            (PolicyHandle::enforcing(p), Some(file))
        }
        None => (PolicyHandle::default(), None),
    };
    let defaults = cfg.v1beta1_defaults();
    let health = Arc::new(Health::default());
    let store = Arc::new(Mutex::new(Store::new(defaults)));
    register_collectors(&metrics, &tokens, &client);
    let _metrics_server = match &cfg.metrics_bind_address {
        Some(addr) => Some(
            serve::serve(addr, serve::metrics_routes(Arc::clone(&metrics)))
                .map_err(StartError::Io)?,
        ),
        None => None,
    };
    let _probe_server = match &cfg.health_probe_bind_address {
        Some(addr) => Some(
            serve::serve(addr, serve::probe_routes(Arc::clone(&health))).map_err(StartError::Io)?,
        ),
        None => None,
    };
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "acrpull".into());
    let recorder = Arc::new(Mutex::new(EventRecorder::new(
        &instance,
        RecorderConfig::default(),
    )));
    let mut events_cfg = kube_cfg.clone();
    events_cfg.qps = EVENT_QPS;
    events_cfg.burst = EVENT_BURST;
    let events_client = kube::Client::new(&events_cfg).map_err(StartError::Kube)?;
    let event_sink =
        EventSink::start(events_client, Arc::clone(&recorder)).map_err(StartError::Io)?;
    let obs = Arc::new(Observability {
        metrics: Arc::clone(&metrics),
        health,
        events: recorder,
        event_sink,
    });
    let leader = if cfg.leader_elect {
        Some(Arc::new(start_election(cfg, &kube_cfg, &metrics)?))
    } else {
        None
    };
    let minter = Minter {
        client: client.clone(),
        tokens,
        config: cfg.flow_config(),
        policy: policy.clone(),
    };
    let may_write: Box<dyn Fn() -> bool + Send + Sync> = match &leader {
        Some(l) => {
            let l = Arc::clone(l);
            Box::new(move || l.is_leader())
        }
        None => Box::new(|| true),
    };
    let reconciler = Arc::new(Reconciler::new(
        Box::new(client.clone()),
        Box::new(minter),
        Arc::new(SystemClock),
        store,
        PlanConfig {
            ttl_rotation_fraction: cfg.ttl_rotation_fraction,
            allow,
        },
        metrics,
        may_write,
        selector.clone(),
    ));
    let reconciler_for_policy = Arc::clone(&reconciler);
    let settings = Settings {
        label_selector: selector.to_string(),
        workers: cfg.workers,
        leader: leader.clone(),
    };
    let controller =
        Controller::start(client, reconciler, obs, &settings).map_err(StartError::Io)?;
    if let Some(file) = policy_file {
        let (queue, store) = (controller.queue(), controller.store());
        let requeue_all = move || {
            let keys = store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .binding_keys();
            for k in keys {
                // A denial is remembered like a token failure; forget it so the new policy
                // is asked at once.
                reconciler_for_policy.forget_failures(&k);
                queue.add(k);
            }
        };
        spawn_reloader(file, policy, RELOAD_PERIOD, Box::new(requeue_all))
            .map_err(StartError::Io)?;
    }
    log::info!(
        "acrpull {} started with {} workers",
        env!("CARGO_PKG_VERSION"),
        cfg.workers
    );

    let sig = signals.wait().map_err(StartError::Io)?;
    log::info!("received {sig:?}; finishing in-flight work");
    controller.shutdown();
    // The workers have stopped, so nothing writes any more: hand the Lease over at once.
    if let Some(l) = &leader {
        if l.release_and_stop(Duration::from_secs(3)) {
            log::info!("released the leader lease");
        } else {
            log::warn!("the leader lease was not released in time; it will expire instead");
        }
    }
    log::info!("stopped");
    Ok(())
}

/// Starts leader election on the Lease of `--leader-election-id`; losing the lease ends the process
/// (exit 1), as controller-runtime does, so a restarted pod starts clean as a follower.
fn start_election(
    cfg: &Config,
    kube_cfg: &kube::Config,
    metrics: &Arc<Metrics>,
) -> Result<ElectorHandle, StartError> {
    let namespace = lease_namespace(
        cfg.leader_election_namespace.as_deref(),
        kube_cfg.namespace.as_deref(),
    )
    .ok_or(StartError::LeaseNamespace)?;
    let lcfg = LeaderConfig::new(&namespace, &cfg.leader_election_id, process_identity());
    let client = kube::Client::new(&client_config(kube_cfg, &lcfg)).map_err(StartError::Kube)?;
    log::info!(
        "leader election on lease {namespace}/{} as {}",
        cfg.leader_election_id,
        lcfg.identity
    );
    let m = Arc::clone(metrics);
    let hooks = Hooks {
        on_status: Some(Box::new(move |leading| {
            log::info!(
                "{}",
                if leading {
                    "became the leader"
                } else {
                    "no longer the leader"
                }
            );
            m.set_leader(leading);
        })),
        on_lost: Some(Box::new(|| {
            log::error!("lost the leader lease; exiting so that only one replica writes");
            std::process::exit(1);
        })),
    };
    Elector::start(client, lcfg, hooks).map_err(StartError::Leader)
}

/// Values owned elsewhere, read at scrape time.
fn register_collectors(metrics: &Metrics, tokens: &Arc<TokenService>, client: &kube::Client) {
    let t = Arc::clone(tokens);
    metrics.add_collector(Box::new(move |r| collect_token_counters(t.counters(), r)));
    let kube_metrics = client.metrics();
    metrics.add_collector(Box::new(move |r| {
        for ((verb, code), n) in kube_metrics.snapshot() {
            r.counter(
                "acrpull_kube_requests_total",
                "Kubernetes API requests by verb and HTTP code (0: no response).",
                &[("verb", &verb), ("code", &code.to_string())],
                n,
            );
        }
    }));
}
