//! Lease-based leader election (`--leader-elect`): one replica at a time holds a `coordination.k8s.io/v1` Lease.
//!
//! The semantics are client-go's `leaderelection`, written as a synchronous state machine:
//!
//! - **Acquire**: GET the Lease; 404 → CREATE it. A Lease held by another identity is left alone until
//!   `leaseDurationSeconds` has passed *on our monotonic clock since we last saw its record change*, never by
//!   comparing its remote timestamps, so clock skew between nodes cannot hand the Lease over early. An expired
//!   or released (empty holder) Lease is taken with a PUT carrying the observed resourceVersion; 409 means
//!   another replica won the race.
//! - **Renew**: every retry period, the same PUT. If no renew succeeds within the renew deadline, leadership
//!   is lost at once, before the lease duration could let another replica take over.
//! - **Stop writing in time**: [`ElectorHandle::is_leader`] is true only until `lease_valid_until` (the *send*
//!   time of the last successful renew plus the renew deadline). It turns false by the clock alone, even if
//!   the elector thread is stuck in a slow request, so a controller that checks it before every write never
//!   writes after another replica could have taken the Lease.
//! - **Lost leadership is final**: like controller-runtime, which exits the process, the elector thread
//!   ends and calls [`Hooks::on_lost`]; the caller is expected to exit (non-zero) from it. It never re-acquires.
//! - **Release** on SIGTERM ([`ElectorHandle::release_and_stop`]): if we lead, PUT an empty holder with a
//!   1 s duration, so the other replica takes over at its next retry instead of after the lease duration.

use crate::clock::{rfc3339, Clock, Rng, SystemClock};
use crate::kube::{Client, Config as KubeConfig, Error as KubeError, Resource};
use serde_json::{json, Map, Value};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

#[cfg(test)]
/// The Lease name upstream msi-acrpull uses; keeping it means old and new replicas never both lead during a swap.
pub const DEFAULT_LEASE_NAME: &str = "aks.azure.com";
/// controller-runtime's default: how long a Lease stays valid after its last renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// controller-runtime's default: a leader that has not renewed for this long steps down.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// controller-runtime's default: the wait between two acquire or renew attempts.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// client-go's `JitterFactor`: a follower waits up to 2.2 × the retry period, so replicas do not retry in step.
const FOLLOWER_JITTER: f64 = 1.2;
/// How often [`ElectorHandle::wait_until_leader`] looks at the caller's stop flag, which cannot notify.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Where the Lease lives, who we are, and the election timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// The Lease's namespace: `--leader-election-namespace`, else the controller's own namespace.
    pub namespace: String,
    /// The Lease's name. Defaults to [`DEFAULT_LEASE_NAME`] (`--leader-election-id`).
    pub name: String,
    /// This process's holder identity; unique per process (see [`identity_from_env`]).
    pub identity: String,
    /// Written as `leaseDurationSeconds` (whole seconds, at least 1). Defaults to 15 s.
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops leading. Defaults to 10 s.
    pub renew_deadline: Duration,
    /// Wait between attempts. Defaults to 2 s.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// A config for the Lease `namespace/name`, held as `identity`, with every timing at its default.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Checks the names are set and the timings leave room to renew (client-go's rules, on whole lease seconds).
    pub fn validate(&self) -> Result<(), Error> {
        for (field, value) in [
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("identity", &self.identity),
        ] {
            if value.is_empty() {
                return Err(Error::Empty { field });
            }
        }
        let lease = Duration::from_secs(self.lease_duration.as_secs());
        let retry_jittered = self.retry_period.mul_f64(FOLLOWER_JITTER);
        if self.retry_period.is_zero()
            || self.renew_deadline >= lease
            || retry_jittered >= self.renew_deadline
        {
            return Err(Error::Timing);
        }
        Ok(())
    }

    fn lease_duration_secs(&self) -> i64 {
        i64::try_from(self.lease_duration.as_secs()).unwrap_or(i64::MAX)
    }
}

/// Leader election could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The namespace, name or identity is empty.
    Empty {
        /// Which of the three.
        field: &'static str,
    },
    /// The timings leave no room: they must satisfy lease duration > renew deadline > 1.2 × retry period > 0.
    Timing,
    /// The elector thread could not be spawned.
    Spawn(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty { field } => write!(f, "leader election {field} is empty"),
            Error::Timing => write!(
                f,
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0"
            ),
            Error::Spawn(e) => write!(f, "cannot start the leader elector: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// The holder identity: `POD_NAME` (Downward API) when set, else `<hostname>_<8 random hex digits>`.
///
/// The suffix keeps two processes on one host (or two containers sharing a hostname) distinct.
pub fn identity_from_env(
    pod_name: Option<String>,
    hostname: Option<String>,
    rng: &mut Rng,
) -> String {
    if let Some(pod) = pod_name
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
    {
        return pod;
    }
    let host = hostname
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "acrpull".to_string());
    format!("{host}_{:08x}", rng.next_u64() >> 32)
}

/// This process's identity from the environment: `POD_NAME`, else the hostname plus a random suffix.
pub fn process_identity() -> String {
    identity_from_env(
        std::env::var("POD_NAME").ok(),
        read_hostname(),
        &mut Rng::from_entropy(),
    )
}

/// The config for the elector's own client: its own rate limiter (controller traffic cannot starve
/// renewals, as in client-go) and request timeouts of half the renew deadline, so a hung request still
/// leaves time for another attempt before leadership is lost.
pub fn client_config(base: &KubeConfig, cfg: &LeaderConfig) -> KubeConfig {
    let limit = cfg.renew_deadline / 2;
    let mut out = base.clone();
    out.request_timeout = out.request_timeout.min(limit);
    out.connect_timeout = out.connect_timeout.min(limit);
    out
}

/// The hostname from `/proc/sys/kernel/hostname`, else `/etc/hostname`; `None` if neither is readable.
pub fn read_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}

/// The Lease namespace: `--leader-election-namespace` if given, else the controller's own namespace.
pub fn lease_namespace(flag: Option<&str>, own_namespace: Option<&str>) -> Option<String> {
    flag.filter(|n| !n.is_empty())
        .or(own_namespace.filter(|n| !n.is_empty()))
        .map(str::to_string)
}

/// The election fields of a Lease's `spec` (client-go's `LeaderElectionRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    holder: String,
    lease_duration_secs: i64,
    acquire_time: Option<String>,
    renew_time: Option<String>,
    transitions: i64,
}

impl Record {
    fn from_spec(spec: &Value) -> Record {
        let text = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
        let int = |k: &str| spec.get(k).and_then(Value::as_i64).unwrap_or(0);
        Record {
            holder: text("holderIdentity").unwrap_or_default(),
            lease_duration_secs: int("leaseDurationSeconds"),
            acquire_time: text("acquireTime"),
            renew_time: text("renewTime"),
            transitions: int("leaseTransitions"),
        }
    }

    /// Writes the record over `spec`, keeping any other fields (e.g. `strategy`) as they are.
    fn write_into(&self, spec: &mut Map<String, Value>) {
        spec.insert("holderIdentity".into(), self.holder.clone().into());
        spec.insert(
            "leaseDurationSeconds".into(),
            self.lease_duration_secs.into(),
        );
        for (key, value) in [
            ("acquireTime", &self.acquire_time),
            ("renewTime", &self.renew_time),
        ] {
            match value {
                Some(t) => spec.insert(key.into(), t.clone().into()),
                None => spec.remove(key),
            };
        }
        spec.insert("leaseTransitions".into(), self.transitions.into());
    }
}

/// A Lease as last read or written: its record, its resourceVersion, and the whole object for the next PUT.
#[derive(Debug, Clone, PartialEq)]
struct Lease {
    record: Record,
    resource_version: String,
    object: Value,
}

impl Lease {
    fn from_object(object: Value) -> Lease {
        Lease {
            record: Record::from_spec(&object["spec"]),
            resource_version: object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            object,
        }
    }
}

/// The three Lease calls the election makes; the real one talks to the API server, tests keep it in memory.
trait LeaseApi {
    /// The Lease, or `None` if it does not exist.
    fn get(&self) -> Result<Option<Lease>, KubeError>;
    /// Creates the Lease (409 AlreadyExists if another replica was first).
    fn create(&self, record: &Record) -> Result<Lease, KubeError>;
    /// Replaces `prev`'s record, conditional on `prev`'s resourceVersion (409 if it changed).
    fn update(&self, prev: &Lease, record: &Record) -> Result<Lease, KubeError>;
}

/// [`LeaseApi`] over the Kubernetes client.
struct KubeLeases {
    client: Client,
    namespace: String,
    name: String,
}

impl KubeLeases {
    fn path(&self, name: Option<&str>) -> String {
        Resource::LEASES.path(Some(&self.namespace), name, None)
    }
}

impl LeaseApi for KubeLeases {
    fn get(&self) -> Result<Option<Lease>, KubeError> {
        match self.client.get(&self.path(Some(&self.name))) {
            Ok(v) => Ok(Some(Lease::from_object(v))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self, record: &Record) -> Result<Lease, KubeError> {
        let mut spec = Map::new();
        record.write_into(&mut spec);
        let body = json!({
            "apiVersion": Resource::LEASES.api_version(),
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        });
        self.client
            .create(&self.path(None), &body)
            .map(Lease::from_object)
    }

    fn update(&self, prev: &Lease, record: &Record) -> Result<Lease, KubeError> {
        let mut body = prev.object.clone();
        if !body.is_object() {
            body = json!({});
        }
        body["apiVersion"] = Resource::LEASES.api_version().into();
        body["kind"] = "Lease".into();
        if !body["metadata"].is_object() {
            body["metadata"] = json!({"name": self.name, "namespace": self.namespace});
        }
        body["metadata"]["resourceVersion"] = prev.resource_version.clone().into();
        if !body["spec"].is_object() {
            body["spec"] = json!({});
        }
        if let Some(spec) = body["spec"].as_object_mut() {
            record.write_into(spec);
        }
        self.client
            .replace(&self.path(Some(&self.name)), &body)
            .map(Lease::from_object)
    }
}

/// The last Lease seen, and when (on our clock) its record last changed.
#[derive(Debug, Clone)]
struct Observed {
    lease: Lease,
    record_seen_at: Instant,
}

/// What one look at the Lease means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Another identity holds it and, by our clock, it has not expired.
    Follow { holder: String },
    /// It is released or expired: take it over.
    Take,
    /// It is ours: renew it.
    Renew,
}

/// The pure acquire rule: expiry is `record_seen_at + leaseDurationSeconds`, measured on our clock.
fn decide(observed: &Observed, me: &str, now: Instant) -> Decision {
    let record = &observed.lease.record;
    if record.holder == me {
        return Decision::Renew;
    }
    if record.holder.is_empty() {
        return Decision::Take;
    }
    let secs = u64::try_from(record.lease_duration_secs).unwrap_or(0);
    let expires = observed.record_seen_at + Duration::from_secs(secs);
    if now < expires {
        Decision::Follow {
            holder: record.holder.clone(),
        }
    } else {
        Decision::Take
    }
}

/// The record we write to take, renew or create the Lease at wall time `wall`.
fn next_record(prev: Option<&Record>, cfg: &LeaderConfig, wall: OffsetDateTime) -> Record {
    let now = Some(rfc3339::format_micros(wall));
    let mut record = Record {
        holder: cfg.identity.clone(),
        lease_duration_secs: cfg.lease_duration_secs(),
        acquire_time: now.clone(),
        renew_time: now,
        transitions: 0,
    };
    if let Some(prev) = prev {
        if prev.holder == cfg.identity {
            record.acquire_time = prev.acquire_time.clone().or(record.acquire_time);
            record.transitions = prev.transitions;
        } else {
            record.transitions = prev.transitions.saturating_add(1);
        }
    }
    record
}

/// The record that releases a Lease we hold: no holder, a 1 s duration, the transition count kept.
fn release_record(prev: &Record, wall: OffsetDateTime) -> Record {
    let now = Some(rfc3339::format_micros(wall));
    Record {
        holder: String::new(),
        lease_duration_secs: 1,
        acquire_time: now.clone(),
        renew_time: now,
        transitions: prev.transitions,
    }
}

/// Where one step left us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// We hold the Lease; we may write until `valid_until`.
    Leading { valid_until: Instant },
    /// Someone else holds it, or we could not take it.
    Following,
    /// We led and could not renew in time, or saw another holder. Final.
    Lost,
}

/// The result of one acquire-or-renew attempt.
enum Attempt {
    /// Our write succeeded.
    Held,
    /// The Lease is validly held by `holder`.
    HeldBy(String),
    /// The API server failed or we lost a race (409); the cause is already logged.
    Failed,
}

/// The election state machine; the elector thread calls [`Machine::step`] once per retry period.
struct Machine {
    cfg: LeaderConfig,
    observed: Option<Observed>,
    /// While leading: when the last successful acquire/renew request was *sent*. Others cannot have seen our
    /// write before then, so `renewed_at + renew_deadline` is before any replica may take the Lease.
    renewed_at: Option<Instant>,
}

impl Machine {
    fn new(cfg: LeaderConfig) -> Machine {
        Machine {
            cfg,
            observed: None,
            renewed_at: None,
        }
    }

    fn leading(&self) -> bool {
        self.renewed_at.is_some()
    }

    fn step(&mut self, api: &dyn LeaseApi, clock: &dyn Clock, wall: OffsetDateTime) -> Outcome {
        let started = clock.now();
        if let Some(at) = self.renewed_at {
            // Past the deadline another replica may be about to take over: do not even try.
            if started >= at + self.cfg.renew_deadline {
                return self.lose("no renewal succeeded within the renew deadline");
            }
        }
        match self.try_acquire_or_renew(api, started, wall) {
            Attempt::Held => {
                if !self.leading() {
                    log::info!(
                        "acquired lease {}/{} as {}",
                        self.cfg.namespace,
                        self.cfg.name,
                        self.cfg.identity
                    );
                }
                self.renewed_at = Some(started);
                Outcome::Leading {
                    valid_until: started + self.cfg.renew_deadline,
                }
            }
            Attempt::HeldBy(holder) if self.leading() => {
                log::error!("lease taken over by {holder}");
                self.lose("another replica holds the lease")
            }
            Attempt::HeldBy(_) | Attempt::Failed => match self.renewed_at {
                None => Outcome::Following,
                Some(at) if clock.now() >= at + self.cfg.renew_deadline => {
                    self.lose("no renewal succeeded within the renew deadline")
                }
                Some(at) => Outcome::Leading {
                    valid_until: at + self.cfg.renew_deadline,
                },
            },
        }
    }

    fn lose(&mut self, why: &str) -> Outcome {
        log::error!(
            "lost leadership of lease {}/{}: {why}",
            self.cfg.namespace,
            self.cfg.name
        );
        self.renewed_at = None;
        Outcome::Lost
    }

    /// client-go's `tryAcquireOrRenew`: read, decide, write with the observed resourceVersion.
    fn try_acquire_or_renew(
        &mut self,
        api: &dyn LeaseApi,
        now: Instant,
        wall: OffsetDateTime,
    ) -> Attempt {
        let current = match api.get() {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return match api.create(&next_record(None, &self.cfg, wall)) {
                    Ok(lease) => self.wrote(lease, now),
                    Err(e) => failed("create", &e),
                }
            }
            Err(e) => return failed("get", &e),
        };
        self.observe(current, now);
        let observed = self
            .observed
            .as_ref()
            .expect("observe just stored the lease");
        match decide(observed, &self.cfg.identity, now) {
            Decision::Follow { holder } => {
                log::debug!(
                    "lease {}/{} is held by {holder}",
                    self.cfg.namespace,
                    self.cfg.name
                );
                Attempt::HeldBy(holder)
            }
            Decision::Take | Decision::Renew => {
                let record = next_record(Some(&observed.lease.record), &self.cfg, wall);
                match api.update(&observed.lease, &record) {
                    Ok(lease) => self.wrote(lease, now),
                    Err(e) => failed("update", &e),
                }
            }
        }
    }

    /// Remembers the Lease; the expiry clock restarts only when its record differs from the last one seen.
    fn observe(&mut self, lease: Lease, now: Instant) {
        let holder = &lease.record.holder;
        let known = self.observed.as_ref().map(|o| &o.lease.record.holder);
        if known != Some(holder) && !holder.is_empty() && *holder != self.cfg.identity {
            log::info!(
                "lease {}/{} is held by {holder}; waiting",
                self.cfg.namespace,
                self.cfg.name
            );
        }
        let record_seen_at = match &self.observed {
            Some(o) if o.lease.record == lease.record => o.record_seen_at,
            _ => now,
        };
        self.observed = Some(Observed {
            lease,
            record_seen_at,
        });
    }

    fn wrote(&mut self, lease: Lease, now: Instant) -> Attempt {
        self.observed = Some(Observed {
            lease,
            record_seen_at: now,
        });
        Attempt::Held
    }

    /// Hands the Lease back if we lead; `Ok(false)` if there was nothing to release.
    fn release(&mut self, api: &dyn LeaseApi, wall: OffsetDateTime) -> Result<bool, KubeError> {
        let was_leading = self.renewed_at.take().is_some();
        let Some(observed) = self.observed.as_ref().filter(|_| was_leading) else {
            return Ok(false);
        };
        if observed.lease.record.holder != self.cfg.identity {
            return Ok(false);
        }
        let record = release_record(&observed.lease.record, wall);
        api.update(&observed.lease, &record)?;
        self.observed = None;
        Ok(true)
    }
}

fn failed(verb: &str, e: &KubeError) -> Attempt {
    if e.is_conflict() || e.is_already_exists() {
        log::debug!("lease {verb} lost a race: {e}");
    } else {
        log::warn!("lease {verb} failed: {e}");
    }
    Attempt::Failed
}

/// Callbacks from the elector thread.
#[derive(Default)]
pub struct Hooks {
    /// Called with `true` on becoming leader and `false` on ceasing to lead (e.g. `leader_election_master_status`).
    pub on_status: Option<Box<dyn Fn(bool) + Send>>,
    /// Called once when leadership is lost (not when released). The caller should exit the process, as
    /// controller-runtime does; the elector never tries to lead again.
    pub on_lost: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_status", &self.on_status.is_some())
            .field("on_lost", &self.on_lost.is_some())
            .finish()
    }
}

/// What the elector thread shares with its handle.
#[derive(Debug, Default)]
struct Status {
    /// While leading: until when writes are safe.
    valid_until: Option<Instant>,
    /// Leadership was lost (final).
    lost: bool,
    /// The handle asked the thread to release and stop.
    stopping: bool,
    /// The thread has ended.
    finished: bool,
}

#[derive(Debug, Default)]
struct Shared {
    status: Mutex<Status>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// Starts leader election.
#[derive(Debug)]
pub struct Elector;

impl Elector {
    /// Validates `cfg` and starts the elector thread on the real clock.
    ///
    /// Give it a client whose request timeout is at most the renew deadline, so a hung request cannot
    /// delay noticing lost leadership (writes stop on time regardless: see [`ElectorHandle::is_leader`]).
    pub fn start(client: Client, cfg: LeaderConfig, hooks: Hooks) -> Result<ElectorHandle, Error> {
        Self::start_with_clock(client, cfg, hooks, Arc::new(SystemClock))
    }

    /// As [`Elector::start`], with an injected monotonic clock.
    pub fn start_with_clock(
        client: Client,
        cfg: LeaderConfig,
        hooks: Hooks,
        clock: Arc<dyn Clock>,
    ) -> Result<ElectorHandle, Error> {
        let api = KubeLeases {
            client,
            namespace: cfg.namespace.clone(),
            name: cfg.name.clone(),
        };
        start_with(Box::new(api), cfg, hooks, clock)
    }
}

fn start_with(
    api: Box<dyn LeaseApi + Send>,
    cfg: LeaderConfig,
    hooks: Hooks,
    clock: Arc<dyn Clock>,
) -> Result<ElectorHandle, Error> {
    cfg.validate()?;
    let shared = Arc::new(Shared::default());
    let identity = cfg.identity.clone();
    let thread_shared = Arc::clone(&shared);
    let thread_clock = Arc::clone(&clock);
    std::thread::Builder::new()
        .name("leader-elector".into())
        .spawn(move || {
            run(
                Machine::new(cfg),
                api,
                &thread_shared,
                &*thread_clock,
                hooks,
            )
        })
        .map_err(Error::Spawn)?;
    Ok(ElectorHandle {
        shared,
        clock,
        identity,
    })
}

/// The elector thread: step, publish, wait; on stop, release if leading.
fn run(
    mut machine: Machine,
    api: Box<dyn LeaseApi + Send>,
    shared: &Shared,
    clock: &dyn Clock,
    mut hooks: Hooks,
) {
    let mut rng = Rng::from_entropy();
    let mut was_leading = false;
    let on_lost = hooks.on_lost.take();
    let status = |leading: bool| {
        if let Some(f) = &hooks.on_status {
            f(leading);
        }
    };
    while !shared.lock().stopping {
        let outcome = machine.step(&*api, clock, clock.utc());
        let wait = match outcome {
            Outcome::Leading { valid_until } => {
                shared.update(|s| s.valid_until = Some(valid_until));
                if !was_leading {
                    was_leading = true;
                    status(true);
                }
                // Wake at the deadline at the latest, so loss is declared the moment it happens.
                machine
                    .cfg
                    .retry_period
                    .min(valid_until.saturating_duration_since(clock.now()))
            }
            Outcome::Following => machine
                .cfg
                .retry_period
                .mul_f64(1.0 + FOLLOWER_JITTER * rng.next_f64()),
            Outcome::Lost => {
                shared.update(|s| {
                    s.valid_until = None;
                    s.lost = true;
                    s.finished = true;
                });
                status(false);
                if let Some(f) = on_lost {
                    f();
                }
                return;
            }
        };
        let guard = shared.lock();
        if !guard.stopping {
            drop(
                shared
                    .changed
                    .wait_timeout_while(guard, wait, |s| !s.stopping)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
    }
    // Stop writing before the Lease can pass to anyone else.
    shared.update(|s| s.valid_until = None);
    if was_leading {
        status(false);
    }
    match machine.release(&*api, clock.utc()) {
        Ok(true) => log::info!(
            "released lease {}/{}",
            machine.cfg.namespace,
            machine.cfg.name
        ),
        Ok(false) => {}
        Err(e) => log::warn!("lease release failed (it will expire instead): {e}"),
    }
    shared.update(|s| s.finished = true);
}

/// The controller's view of the election. Dropping it stops the elector (releasing in the background).
pub struct ElectorHandle {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    identity: String,
}

impl fmt::Debug for ElectorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElectorHandle")
            .field("identity", &self.identity)
            .field("leading", &self.is_leader())
            .finish_non_exhaustive()
    }
}

impl ElectorHandle {
    /// Whether we lead *now*: check before every write. Turns false at [`Self::lease_valid_until`] by the
    /// clock alone, even if the elector thread is stuck, so no write happens after the Lease could pass on.
    pub fn is_leader(&self) -> bool {
        self.lease_valid_until()
            .is_some_and(|until| self.clock.now() < until)
    }

    /// While leading: the end of the window in which writes are safe (last renew sent + renew deadline).
    pub fn lease_valid_until(&self) -> Option<Instant> {
        self.shared.lock().valid_until
    }

    #[cfg(test)]
    /// Whether leadership was lost (final; the process should exit).
    pub fn has_lost(&self) -> bool {
        self.shared.lock().lost
    }

    #[cfg(test)]
    /// This process's holder identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Blocks until we lead (`true`), or until `stop` is set or the elector ends (`false`).
    pub fn wait_until_leader(&self, stop: &AtomicBool) -> bool {
        let mut status = self.shared.lock();
        loop {
            if status.valid_until.is_some_and(|u| self.clock.now() < u) {
                return true;
            }
            if stop.load(Ordering::Relaxed) || status.finished || status.lost {
                return false;
            }
            status = self
                .shared
                .changed
                .wait_timeout(status, STOP_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops leading at once and releases the Lease if we hold it, waiting at most `timeout` for the
    /// release request; returns whether the elector finished in time. Call after the workers have stopped.
    pub fn release_and_stop(&self, timeout: Duration) -> bool {
        self.shared.update(|s| s.stopping = true);
        let status = self.shared.lock();
        let (status, _) = self
            .shared
            .changed
            .wait_timeout_while(status, timeout, |s| !s.finished)
            .unwrap_or_else(|p| p.into_inner());
        status.finished
    }
}

impl Drop for ElectorHandle {
    fn drop(&mut self) {
        self.shared.update(|s| s.stopping = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::kube::auth::Auth;
    use crate::kube::client::tests::{client, serve, Canned};
    use acrpull_testkit::kube::{ApiServer, Fault, Matcher, Rule, LEASES};
    use std::sync::mpsc;
    use time::macros::datetime;

    const WALL: OffsetDateTime = datetime!(2026-01-02 03:04:05.123456 UTC);

    /// An in-memory Lease with resourceVersion checks, a failure switch and a one-shot lost race.
    #[derive(Default)]
    struct MemLeases {
        state: Mutex<MemState>,
    }

    #[derive(Default)]
    struct MemState {
        lease: Option<Lease>,
        next_rv: u64,
        down: bool,
        race_next_update: bool,
        calls: usize,
    }

    fn status(code: u16, reason: &str) -> KubeError {
        KubeError::from_status(code, &json!({"reason": reason}))
    }

    impl MemLeases {
        fn lock(&self) -> MutexGuard<'_, MemState> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Stores `record` as a fresh version, as any writer would.
        fn put(&self, record: &Record) -> Lease {
            let mut s = self.lock();
            s.next_rv += 1;
            let mut spec = Map::new();
            record.write_into(&mut spec);
            let lease = Lease::from_object(json!({
                "metadata": {"name": "aks.azure.com", "resourceVersion": s.next_rv.to_string()},
                "spec": spec,
            }));
            s.lease = Some(lease.clone());
            lease
        }

        fn held_by(&self, holder: &str) -> Lease {
            self.put(&Record {
                holder: holder.into(),
                lease_duration_secs: 15,
                renew_time: Some("2000-01-01T00:00:00.000000Z".into()),
                ..Record::default()
            })
        }

        fn record(&self) -> Record {
            self.lock().lease.as_ref().expect("a lease").record.clone()
        }

        fn set_down(&self, down: bool) {
            self.lock().down = down;
        }

        fn calls(&self) -> usize {
            self.lock().calls
        }

        fn check(&self) -> Result<(), KubeError> {
            let mut s = self.lock();
            s.calls += 1;
            if s.down {
                return Err(status(503, "ServiceUnavailable"));
            }
            Ok(())
        }
    }

    impl LeaseApi for MemLeases {
        fn get(&self) -> Result<Option<Lease>, KubeError> {
            self.check()?;
            Ok(self.lock().lease.clone())
        }

        fn create(&self, record: &Record) -> Result<Lease, KubeError> {
            self.check()?;
            if self.lock().lease.is_some() {
                return Err(status(409, "AlreadyExists"));
            }
            Ok(self.put(record))
        }

        fn update(&self, prev: &Lease, record: &Record) -> Result<Lease, KubeError> {
            self.check()?;
            {
                let mut s = self.lock();
                let current = s.lease.as_ref().map(|l| l.resource_version.clone());
                if std::mem::take(&mut s.race_next_update)
                    || current.as_deref() != Some(&prev.resource_version)
                {
                    return Err(status(409, "Conflict"));
                }
            }
            Ok(self.put(record))
        }
    }

    fn cfg(identity: &str) -> LeaderConfig {
        LeaderConfig::new("kube-system", DEFAULT_LEASE_NAME, identity)
    }

    fn leading_until(o: Outcome) -> Instant {
        match o {
            Outcome::Leading { valid_until } => valid_until,
            other => panic!("expected to lead, got {other:?}"),
        }
    }

    #[test]
    fn an_absent_lease_is_created_and_held() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        let mut m = Machine::new(cfg("me"));
        let t0 = clock.now();
        let until = leading_until(m.step(&api, &clock, WALL));
        assert_eq!(until, t0 + DEFAULT_RENEW_DEADLINE);
        let r = api.record();
        assert_eq!(r.holder, "me");
        assert_eq!(r.lease_duration_secs, 15);
        assert_eq!(
            r.acquire_time.as_deref(),
            Some("2026-01-02T03:04:05.123456Z")
        );
        assert_eq!(r.renew_time, r.acquire_time);
        assert_eq!(r.transitions, 0);
    }

    #[test]
    fn a_fresh_lease_held_by_another_is_followed_until_it_expires_on_our_clock() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        api.held_by("other");
        let mut m = Machine::new(cfg("me"));
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Following);
        clock.advance(Duration::from_secs(14));
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Following);
        assert_eq!(api.record().holder, "other");
        clock.advance(Duration::from_secs(1));
        leading_until(m.step(&api, &clock, WALL));
        let r = api.record();
        assert_eq!((r.holder.as_str(), r.transitions), ("me", 1));
    }

    #[test]
    fn expiry_ignores_remote_timestamps_and_restarts_when_the_record_changes() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        // Its renewTime is decades old, yet we have only just seen it: it is fresh to us.
        api.held_by("other");
        let mut m = Machine::new(cfg("me"));
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Following);
        clock.advance(Duration::from_secs(10));
        api.put(&Record {
            renew_time: Some("2000-01-01T00:00:10.000000Z".into()),
            ..api.record()
        });
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Following);
        clock.advance(Duration::from_secs(10));
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Following);
        clock.advance(Duration::from_secs(5));
        leading_until(m.step(&api, &clock, WALL));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        api.put(&Record {
            holder: String::new(),
            lease_duration_secs: 1,
            transitions: 4,
            ..Record::default()
        });
        let mut m = Machine::new(cfg("me"));
        leading_until(m.step(&api, &clock, WALL));
        assert_eq!(api.record().transitions, 5);
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        let mut m = Machine::new(cfg("me"));
        let first = leading_until(m.step(&api, &clock, WALL));
        clock.advance(DEFAULT_RETRY_PERIOD);
        let later = WALL + Duration::from_secs(2);
        let second = leading_until(m.step(&api, &clock, later));
        assert_eq!(second, first + DEFAULT_RETRY_PERIOD);
        let r = api.record();
        assert_eq!(
            r.acquire_time.as_deref(),
            Some("2026-01-02T03:04:05.123456Z")
        );
        assert_eq!(r.renew_time.as_deref(), Some("2026-01-02T03:04:07.123456Z"));
        assert_eq!(r.transitions, 0);
    }

    #[test]
    fn leadership_is_lost_when_no_renew_succeeds_within_the_deadline() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        let mut m = Machine::new(cfg("me"));
        let until = leading_until(m.step(&api, &clock, WALL));
        api.set_down(true);
        clock.advance(Duration::from_secs(2));
        assert_eq!(leading_until(m.step(&api, &clock, WALL)), until);
        clock.advance(Duration::from_millis(7_999));
        assert_eq!(leading_until(m.step(&api, &clock, WALL)), until);
        api.set_down(false);
        let calls = api.calls();
        clock.advance(Duration::from_millis(1));
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Lost);
        assert_eq!(
            api.calls(),
            calls,
            "no request once the deadline has passed"
        );
        assert!(!m.leading());
    }

    #[test]
    fn a_late_failure_is_judged_by_the_time_it_returns() {
        /// Fails every call, and each call takes 11 s of the fake clock.
        struct Slow<'a>(&'a FakeClock);
        impl LeaseApi for Slow<'_> {
            fn get(&self) -> Result<Option<Lease>, KubeError> {
                self.0.advance(Duration::from_secs(11));
                Err(status(504, "Timeout"))
            }
            fn create(&self, _: &Record) -> Result<Lease, KubeError> {
                unreachable!("get never succeeds")
            }
            fn update(&self, _: &Lease, _: &Record) -> Result<Lease, KubeError> {
                unreachable!("get never succeeds")
            }
        }
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        let mut m = Machine::new(cfg("me"));
        leading_until(m.step(&api, &clock, WALL));
        assert_eq!(m.step(&Slow(&clock), &clock, WALL), Outcome::Lost);
    }

    #[test]
    fn leadership_is_lost_at_once_when_another_holder_appears() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        let mut m = Machine::new(cfg("me"));
        leading_until(m.step(&api, &clock, WALL));
        api.held_by("usurper");
        clock.advance(DEFAULT_RETRY_PERIOD);
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Lost);
    }

    #[test]
    fn losing_the_race_to_take_an_expired_lease_means_following() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        api.put(&Record::default());
        api.lock().race_next_update = true;
        let mut m = Machine::new(cfg("me"));
        assert_eq!(m.step(&api, &clock, WALL), Outcome::Following);
        assert_eq!(api.record().holder, "");
        leading_until(m.step(&api, &clock, WALL));
    }

    #[test]
    fn losing_the_race_to_create_means_following() {
        struct Racy(MemLeases);
        impl LeaseApi for Racy {
            fn get(&self) -> Result<Option<Lease>, KubeError> {
                Ok(None)
            }
            fn create(&self, r: &Record) -> Result<Lease, KubeError> {
                self.0.held_by("winner");
                self.0.create(r)
            }
            fn update(&self, p: &Lease, r: &Record) -> Result<Lease, KubeError> {
                self.0.update(p, r)
            }
        }
        let api = Racy(MemLeases::default());
        let mut m = Machine::new(cfg("me"));
        assert_eq!(m.step(&api, &FakeClock::new(), WALL), Outcome::Following);
        assert_eq!(api.0.record().holder, "winner");
    }

    #[test]
    fn release_empties_the_holder_only_when_we_lead() {
        let (api, clock) = (MemLeases::default(), FakeClock::new());
        api.held_by("other");
        let mut follower = Machine::new(cfg("me"));
        assert_eq!(follower.step(&api, &clock, WALL), Outcome::Following);
        assert!(!follower.release(&api, WALL).expect("no request needed"));
        assert_eq!(api.record().holder, "other");

        let api = MemLeases::default();
        api.put(&Record {
            transitions: 3,
            ..Record::default()
        });
        let mut leader = Machine::new(cfg("me"));
        leading_until(leader.step(&api, &clock, WALL));
        assert_eq!(api.record().transitions, 4);
        let later = WALL + Duration::from_secs(1);
        assert!(leader.release(&api, later).expect("release succeeds"));
        let r = api.record();
        assert_eq!(r.holder, "");
        assert_eq!(r.lease_duration_secs, 1);
        assert_eq!(r.transitions, 4);
        assert_eq!(r.renew_time.as_deref(), Some("2026-01-02T03:04:06.123456Z"));
        assert!(!leader
            .release(&api, later)
            .expect("nothing left to release"));
    }

    #[test]
    fn decide_follows_a_fresh_holder_and_takes_an_empty_or_expired_one() {
        let t0 = Instant::now();
        let seen = |holder: &str| Observed {
            lease: Lease::from_object(
                json!({"spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}),
            ),
            record_seen_at: t0,
        };
        assert_eq!(
            decide(&seen("a"), "me", t0 + Duration::from_secs(14)),
            Decision::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(&seen("a"), "me", t0 + Duration::from_secs(15)),
            Decision::Take
        );
        assert_eq!(decide(&seen(""), "me", t0), Decision::Take);
        assert_eq!(decide(&seen("me"), "me", t0), Decision::Renew);
    }

    #[test]
    fn a_lease_with_missing_fields_decodes_to_an_empty_record() {
        let lease = Lease::from_object(json!({"metadata": {"name": "x"}}));
        assert_eq!(lease.record, Record::default());
        assert_eq!(lease.resource_version, "");
        let lease = Lease::from_object(
            json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": "15"}}),
        );
        assert_eq!(lease.record, Record::default());
    }

    #[test]
    fn identity_prefers_pod_name_else_hostname_with_a_random_suffix() {
        let mut rng = Rng::with_seed(7);
        assert_eq!(
            identity_from_env(Some("acrpull-7d9-x".into()), Some("node".into()), &mut rng),
            "acrpull-7d9-x"
        );
        let a = identity_from_env(Some(" ".into()), Some("host\n".into()), &mut rng);
        let b = identity_from_env(None, Some("host".into()), &mut rng);
        for id in [&a, &b] {
            let suffix = id.strip_prefix("host_").expect("hostname prefix");
            assert_eq!(suffix.len(), 8, "{id}");
            assert!(suffix.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(a, b, "two processes on one host differ");
        assert!(identity_from_env(None, None, &mut rng).starts_with("acrpull_"));
    }

    #[test]
    fn the_namespace_flag_wins_over_the_own_namespace() {
        assert_eq!(
            lease_namespace(Some("ops"), Some("acrpull")).as_deref(),
            Some("ops")
        );
        assert_eq!(
            lease_namespace(Some(""), Some("acrpull")).as_deref(),
            Some("acrpull")
        );
        assert_eq!(lease_namespace(None, None), None);
    }

    #[test]
    fn the_elector_client_times_out_within_half_the_renew_deadline() {
        let base = KubeConfig::new("https://api:6443");
        let c = client_config(&base, &cfg("me"));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.server, base.server);
        let mut quick = base.clone();
        quick.request_timeout = Duration::from_secs(1);
        assert_eq!(
            client_config(&quick, &cfg("me")).request_timeout,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn timings_must_leave_room_to_renew() {
        assert!(cfg("me").validate().is_ok());
        let mut c = cfg("me");
        c.renew_deadline = c.lease_duration;
        assert!(matches!(c.validate(), Err(Error::Timing)));
        let mut c = cfg("me");
        c.lease_duration = Duration::from_millis(10_900);
        assert!(
            matches!(c.validate(), Err(Error::Timing)),
            "the Lease only carries whole seconds"
        );
        let mut c = cfg("me");
        c.retry_period = Duration::from_secs(9);
        assert!(matches!(c.validate(), Err(Error::Timing)));
        assert!(matches!(
            cfg("").validate(),
            Err(Error::Empty { field: "identity" })
        ));
        assert_eq!(
            Error::Timing.to_string().to_lowercase(),
            Error::Timing.to_string()
        );
    }

    #[test]
    fn updates_put_the_whole_lease_with_its_resource_version() {
        let (base, seen) = serve(vec![Canned::json(
            200,
            r#"{"metadata":{"name":"aks.azure.com","resourceVersion":"8"},"spec":{"holderIdentity":"me"}}"#,
        )]);
        let api = KubeLeases {
            client: client(&base, Auth::None),
            namespace: "kube-system".into(),
            name: DEFAULT_LEASE_NAME.into(),
        };
        let prev = Lease::from_object(json!({
            "metadata": {"name": "aks.azure.com", "resourceVersion": "7", "labels": {"keep": "me"}},
            "spec": {"holderIdentity": "other", "strategy": "OldestEmulationVersion"},
        }));
        let record = next_record(Some(&prev.record), &cfg("me"), WALL);
        let lease = api.update(&prev, &record).expect("update succeeds");
        assert_eq!(lease.resource_version, "8");
        let req = seen.recv().expect("one request");
        assert_eq!(
            req.request_line,
            "PUT /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/aks.azure.com HTTP/1.1"
        );
        let body: Value = serde_json::from_str(&req.body).expect("json body");
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["metadata"]["labels"]["keep"], "me");
        assert_eq!(body["kind"], "Lease");
        assert_eq!(
            body["spec"],
            json!({
                "holderIdentity": "me",
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-01-02T03:04:05.123456Z",
                "renewTime": "2026-01-02T03:04:05.123456Z",
                "leaseTransitions": 1,
                "strategy": "OldestEmulationVersion",
            })
        );
    }

    #[test]
    fn a_missing_lease_is_created_in_the_collection() {
        let (base, seen) = serve(vec![
            Canned::json(404, r#"{"kind":"Status","code":404,"reason":"NotFound"}"#),
            Canned::json(
                201,
                r#"{"metadata":{"name":"aks.azure.com","resourceVersion":"1"},"spec":{"holderIdentity":"me"}}"#,
            ),
        ]);
        let api = KubeLeases {
            client: client(&base, Auth::None),
            namespace: "ns".into(),
            name: DEFAULT_LEASE_NAME.into(),
        };
        let mut m = Machine::new(cfg("me"));
        leading_until(m.step(&api, &FakeClock::new(), WALL));
        assert_eq!(
            seen.recv().expect("get").request_line,
            "GET /apis/coordination.k8s.io/v1/namespaces/ns/leases/aks.azure.com HTTP/1.1"
        );
        let create = seen.recv().expect("create");
        assert_eq!(
            create.request_line,
            "POST /apis/coordination.k8s.io/v1/namespaces/ns/leases HTTP/1.1"
        );
        let body: Value = serde_json::from_str(&create.body).expect("json body");
        assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(body["metadata"]["name"], "aks.azure.com");
        assert_eq!(body["spec"]["holderIdentity"], "me");
    }

    /// Fast timings for real-time tests: a 3 s Lease, a 1 s renew deadline, 100 ms retries.
    fn fast(identity: &str) -> LeaderConfig {
        LeaderConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(100),
            ..cfg(identity)
        }
    }

    /// Polls `cond` every 10 ms until it holds or `limit` passes; returns how long it took.
    fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// What a Lease holder needs, in namespace `acrpull`.
    fn lease_rule() -> Rule {
        Rule::namespaced(
            "acrpull",
            &["get", "create", "update"],
            &["coordination.k8s.io"],
            &["leases"],
        )
    }

    /// The test kit's API server with namespace `acrpull`, where user `user-<id>` (bearer token
    /// `token-<id>`) may hold the Lease, for each of `ids`.
    fn lease_api(ids: &[&str]) -> ApiServer {
        let api = ApiServer::start();
        api.create_namespace("acrpull").expect("namespace");
        for id in ids {
            api.add_user(&format!("token-{id}"), &format!("user-{id}"));
            api.allow(&format!("user-{id}"), lease_rule());
        }
        api
    }

    /// The Lease's holder as stored (`""` once released), `None` while there is no Lease.
    fn holder(api: &ApiServer) -> Option<String> {
        api.get(LEASES, "acrpull", DEFAULT_LEASE_NAME)
            .map(|lease| Record::from_spec(&lease["spec"]).holder)
    }

    /// Every version of the Lease the server stored after resourceVersion `since`, oldest first.
    fn lease_history(api: &ApiServer, since: u64) -> Vec<Record> {
        let mut records = Vec::new();
        api.inspect_changes(LEASES, since, |_, _, lease| {
            records.push(Record::from_spec(&lease["spec"]));
        })
        .expect("the server keeps every Lease version");
        records
    }

    fn micro_time(t: Option<&str>) -> OffsetDateTime {
        let t = t.expect("the record carries the time");
        rfc3339::parse(t).unwrap_or_else(|| panic!("{t}: not RFC 3339"))
    }

    /// An elector talking to the test kit's emulated API server as the holder of `token`.
    fn kit_elector(api: &ApiServer, token: &str, identity: &str, hooks: Hooks) -> ElectorHandle {
        let mut config =
            KubeConfig::load(Some(api.kubeconfig_path())).expect("the kit writes a kubeconfig");
        config.auth = Auth::Token(crate::kube::auth::BearerToken::new(token));
        let client = Client::new(&config).expect("client config is valid");
        let cfg = LeaderConfig {
            namespace: "acrpull".into(),
            ..fast(identity)
        };
        Elector::start(client, cfg, hooks).expect("elector starts")
    }

    #[test]
    fn two_electors_never_both_lead_and_a_release_hands_over_at_once() {
        let api = lease_api(&["a", "b"]);
        let a = kit_elector(&api, "token-a", "a", Hooks::default());
        let b = kit_elector(&api, "token-b", "b", Hooks::default());
        within(Duration::from_secs(5), || a.is_leader() || b.is_leader()).expect("someone leads");
        let sample_until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < sample_until {
            assert!(
                a.is_leader() != b.is_leader(),
                "exactly one leads at any time"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
        let leader_id = leader.identity().to_string();
        assert_eq!(holder(&api).as_deref(), Some(leader_id.as_str()));
        assert!(leader.release_and_stop(Duration::from_secs(5)));
        let took = within(Duration::from_secs(5), || follower.is_leader()).expect("handover");
        assert!(
            took < Duration::from_millis(1500),
            "handover took {took:?}, as if waiting for the 3 s lease to expire"
        );
        assert_eq!(holder(&api).as_deref(), Some(follower.identity()));
        assert!(follower.release_and_stop(Duration::from_secs(5)));
        assert_eq!(holder(&api).as_deref(), Some(""));
    }

    #[test]
    fn a_leader_cut_off_from_the_api_server_stops_before_the_lease_passes() {
        let api = lease_api(&["a", "b"]);
        let before_any_lease = api.resource_version();
        let (lost_tx, lost_rx) = mpsc::channel();
        let (status_tx, status_rx) = mpsc::channel();
        let hooks = Hooks {
            on_status: Some(Box::new(move |leading| {
                let _ = status_tx.send(leading);
            })),
            on_lost: Some(Box::new(move || {
                let _ = lost_tx.send((Instant::now(), OffsetDateTime::now_utc()));
            })),
        };
        let a = kit_elector(&api, "token-a", "a", hooks);
        within(Duration::from_secs(5), || a.is_leader()).expect("a leads");
        let b = kit_elector(&api, "token-b", "b", Hooks::default());
        assert!(
            within(Duration::from_millis(500), || b.is_leader()).is_none(),
            "b follows a fresh lease"
        );

        // Every request of a's fails from now on, b's are served.
        api.inject(Fault::fail(503, Matcher::any().user("user-a")));
        let cut = Instant::now();
        let (lost_at, lost_wall) = lost_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a reports the loss");
        assert!(!a.is_leader() && a.has_lost());
        assert!(
            lost_at - cut <= Duration::from_millis(1500),
            "{:?}",
            lost_at - cut
        );
        within(Duration::from_secs(8), || b.is_leader()).expect("b takes over");
        // Each stored version carries its writer's clock (this process's): when a last renewed,
        // and when b took over.
        let history = lease_history(&api, before_any_lease);
        let a_last = history
            .iter()
            .rev()
            .find(|r| r.holder == "a")
            .expect("a wrote");
        let b_first = history.iter().find(|r| r.holder == "b").expect("b wrote");
        let (a_last, b_first) = (
            micro_time(a_last.renew_time.as_deref()),
            micro_time(b_first.acquire_time.as_deref()),
        );
        assert!(b_first > lost_wall, "a stopped leading before b took over");
        assert!(
            b_first - a_last >= Duration::from_millis(2500),
            "b waited for the 3 s lease to expire, not {:?}",
            b_first - a_last
        );
        assert_eq!(holder(&api).as_deref(), Some("b"));
        assert_eq!(status_rx.try_iter().collect::<Vec<_>>(), vec![true, false]);
        assert!(!a.wait_until_leader(&AtomicBool::new(false)));
        assert!(b.release_and_stop(Duration::from_secs(5)));
        assert!(a.release_and_stop(Duration::from_secs(1)));
    }

    #[test]
    fn waiting_for_leadership_ends_when_asked_to_stop() {
        let api = lease_api(&["me"]);
        api.create(
            LEASES,
            "acrpull",
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": DEFAULT_LEASE_NAME},
                "spec": {"holderIdentity": "other", "leaseDurationSeconds": 3},
            }),
        )
        .expect("the Lease is created");
        let e = kit_elector(&api, "token-me", "me", Hooks::default());
        let stop = Arc::new(AtomicBool::new(false));
        let setter = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            setter.store(true, Ordering::Relaxed);
        });
        assert!(!e.wait_until_leader(&stop));
        assert!(!e.is_leader());
        assert!(e.release_and_stop(Duration::from_secs(5)));
    }

    #[test]
    fn against_the_emulated_api_server_the_chart_role_suffices_and_leadership_passes_on() {
        let api = lease_api(&["a", "c"]);
        let rbac = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/11-rbac.yaml"
        ))
        .expect("chart rbac");
        let users = api.load_rbac(&rbac).expect("rbac loads");
        let sa = "system:serviceaccount:acrpull:acrpull";
        assert!(users.iter().any(|u| u == sa), "{users:?}");
        api.add_user("token-b", sa);

        let a = kit_elector(&api, "token-a", "a", Hooks::default());
        within(Duration::from_secs(5), || a.is_leader()).expect("a leads");
        let b = kit_elector(&api, "token-b", "b", Hooks::default());
        assert!(
            within(Duration::from_millis(500), || b.is_leader()).is_none(),
            "b follows while a renews"
        );
        let lease = api
            .get(LEASES, "acrpull", DEFAULT_LEASE_NAME)
            .expect("the lease");
        assert_eq!(lease["spec"]["holderIdentity"], "a");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);
        let renew = lease["spec"]["renewTime"].as_str().expect("renewTime");
        assert_eq!(renew.len(), "2006-01-02T15:04:05.000000Z".len(), "{renew}");
        assert!(renew.ends_with('Z'), "{renew}");

        // a can no longer renew: it stops leading, and b waits out the lease before taking over.
        api.revoke("user-a");
        let cut = Instant::now();
        within(Duration::from_secs(3), || a.has_lost()).expect("a steps down");
        assert!(!a.is_leader());
        within(Duration::from_secs(8), || b.is_leader()).expect("b, using the chart's Role, leads");
        assert!(
            cut.elapsed() >= Duration::from_secs(2),
            "{:?}",
            cut.elapsed()
        );
        let lease = api
            .get(LEASES, "acrpull", DEFAULT_LEASE_NAME)
            .expect("the lease");
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);

        // b releases on shutdown: c takes over well before the 3 s lease would expire.
        let c = kit_elector(&api, "token-c", "c", Hooks::default());
        assert!(
            within(Duration::from_millis(300), || c.is_leader()).is_none(),
            "c follows while b renews"
        );
        assert!(b.release_and_stop(Duration::from_secs(5)));
        let took = within(Duration::from_secs(5), || c.is_leader()).expect("c leads");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(c.release_and_stop(Duration::from_secs(5)));
        let lease = api
            .get(LEASES, "acrpull", DEFAULT_LEASE_NAME)
            .expect("the lease");
        assert_eq!(lease["spec"]["holderIdentity"], "");
        assert_eq!(lease["spec"]["leaseTransitions"], 2);
    }
}
