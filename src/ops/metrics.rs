//! A tiny Prometheus registry: acrpull's counters, gauges and histograms, rendered as text format 0.0.4.
//!
//! Label sets are small and fixed by typed arguments (never a namespace, a name or a token), so each
//! family is a `Mutex`'d `BTreeMap` from label values to a value. Values owned by other modules (the
//! token service's counters, queue depth, kube client counts) are read at scrape time through
//! collectors added with [`Metrics::add_collector`], so nothing is counted twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;

/// Upper bounds of the latency histograms, in seconds: 5 ms (a cache-warm exchange) to 30 s (a timeout).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A value read at scrape time by [`Metrics::render`].
pub type Collector = Box<dyn Fn(&mut Render) + Send + Sync>;

/// How one reconcile ended (`reconcile_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Done; the next run is the refresh deadline or a watch event.
    Success,
    /// Failed; retried with backoff.
    Error,
}

impl ReconcileResult {
    fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
        }
    }
}

/// A write to a pull Secret (`secret_writes_total{op}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOp {
    /// POST of a new Secret.
    Create,
    /// PUT of an existing Secret.
    Replace,
    /// DELETE of an old Secret.
    Delete,
}

impl SecretOp {
    fn as_str(self) -> &'static str {
        match self {
            SecretOp::Create => "create",
            SecretOp::Replace => "replace",
            SecretOp::Delete => "delete",
        }
    }
}

/// How many bindings are in each state (`bindings{state}`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BindingCounts {
    /// Secret written and attached, no error in status.
    pub ready: u64,
    /// `status.error` set.
    pub error: u64,
    /// Not reconciled yet.
    pub pending: u64,
}

/// The kind of a metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family being rendered: its header and its sample lines, which must stay contiguous.
#[derive(Debug)]
struct FamilyText {
    name: String,
    help: String,
    kind: Kind,
    lines: String,
}

/// The text being built during one scrape. Samples of the same family are grouped whatever their
/// order of arrival; the first `help`/kind given for a name wins.
#[derive(Debug, Default)]
pub struct Render {
    families: Vec<FamilyText>,
}

impl Render {
    /// Adds a counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        let lines = self.family(name, help, Kind::Counter);
        sample_line(lines, name, "", labels, None, &value.to_string());
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let lines = self.family(name, help, Kind::Gauge);
        sample_line(lines, name, "", labels, None, &format_value(value));
    }

    /// Adds one histogram series: per-bucket (non-cumulative) counts for [`LATENCY_BUCKETS`], sum, count.
    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        let lines = self.family(name, help, Kind::Histogram);
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets.iter()) {
            cumulative += n;
            let le = format_value(*bound);
            sample_line(
                lines,
                name,
                "_bucket",
                labels,
                Some(&le),
                &cumulative.to_string(),
            );
        }
        sample_line(
            lines,
            name,
            "_bucket",
            labels,
            Some("+Inf"),
            &h.count.to_string(),
        );
        sample_line(lines, name, "_sum", labels, None, &format_value(h.sum));
        sample_line(lines, name, "_count", labels, None, &h.count.to_string());
    }

    /// The lines of family `name`, created if new.
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut String {
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(FamilyText {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    lines: String::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[at].lines
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            out.push_str(&f.lines);
        }
        out
    }
}

/// Appends `name{labels,le="…"} value\n`.
fn sample_line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    let extra = le.map(|v| ("le", v));
    let mut all = labels.iter().copied().chain(extra).peekable();
    if all.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Prometheus spells infinities `+Inf`/`-Inf` and not-a-number `NaN`.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Observations of one histogram series.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket of [`LATENCY_BUCKETS`] (not cumulative); larger ones only reach `count`.
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Static description of a family.
#[derive(Debug)]
struct Desc {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

/// A family of series keyed by label values (in the order of `desc.labels`).
#[derive(Debug)]
struct Family<V> {
    desc: Desc,
    series: Mutex<BTreeMap<Vec<String>, V>>,
}

impl<V: Default> Family<V> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Family {
            desc: Desc { name, help, labels },
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Pre-creates series so rates start from zero instead of appearing on first use.
    fn seeded(self, values: &[&[&str]]) -> Self {
        for v in values {
            self.with(v, |_| {});
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<String>, V>> {
        // A panic while holding this lock cannot leave a counter half-written; keep serving.
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, values: &[&str], f: impl FnOnce(&mut V)) {
        debug_assert_eq!(values.len(), self.desc.labels.len(), "{}", self.desc.name);
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        f(self.lock().entry(key).or_default());
    }

    fn remove(&self, values: &[&str]) {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.lock().remove(&key);
    }

    /// Calls `f` with each series' label pairs and value.
    fn each(&self, mut f: impl FnMut(&[(&str, &str)], &V)) {
        for (values, v) in self.lock().iter() {
            let pairs: Vec<(&str, &str)> = self
                .desc
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            f(&pairs, v);
        }
    }
}

impl Family<u64> {
    fn inc(&self, values: &[&str]) {
        self.with(values, |v| *v += 1);
    }

    fn render(&self, r: &mut Render) {
        self.each(|l, v| r.counter(self.desc.name, self.desc.help, l, *v));
    }
}

impl Family<f64> {
    fn set(&self, values: &[&str], value: f64) {
        self.with(values, |v| *v = value);
    }

    fn render(&self, r: &mut Render) {
        self.each(|l, v| r.gauge(self.desc.name, self.desc.help, l, *v));
    }
}

impl Family<Histogram> {
    fn observe(&self, values: &[&str], d: Duration) {
        self.with(values, |h| h.observe(d.as_secs_f64()));
    }

    fn render(&self, r: &mut Render) {
        self.each(|l, h| r.histogram(self.desc.name, self.desc.help, l, h));
    }
}

const UPSTREAMS: [&[&str]; 4] = [&["imds"], &["entra"], &["acr_exchange"], &["acr_token"]];

/// Every acrpull metric. Share it behind an `Arc`; all methods take `&self`.
pub struct Metrics {
    reconcile_total: Family<u64>,
    reconcile_duration: Family<Histogram>,
    secret_writes: Family<u64>,
    serviceaccount_writes: Family<u64>,
    status_writes: Family<u64>,
    token_request_duration: Family<Histogram>,
    azure_throttled: Family<u64>,
    azure_server_errors: Family<u64>,
    workqueue_depth: Family<f64>,
    bindings: Family<f64>,
    token_earliest_expiry: Family<f64>,
    leader: Family<f64>,
    watch_restarts: Family<u64>,
    build_info: Family<f64>,
    collectors: Mutex<Vec<Collector>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    /// Build info from the crate version and the git revision recorded by `build.rs`.
    fn default() -> Self {
        Metrics::new(
            env!("CARGO_PKG_VERSION"),
            option_env!("ACRPULL_GIT_REV").unwrap_or("unknown"),
        )
    }
}

impl Metrics {
    /// A registry whose `acrpull_build_info` carries `version` and `revision`.
    pub fn new(version: &str, revision: &str) -> Metrics {
        let m = Metrics {
            reconcile_total: Family::new(
                "acrpull_reconcile_total",
                "Reconciles of AcrPullBindings by result.",
                &["result"],
            )
            .seeded(&[&["success"], &["error"], &["requeue"]]),
            reconcile_duration: Family::new(
                "acrpull_reconcile_duration_seconds",
                "Time spent in one reconcile.",
                &[],
            )
            .seeded(&[&[]]),
            secret_writes: Family::new(
                "acrpull_secret_writes_total",
                "Writes to pull Secrets by operation.",
                &["op"],
            )
            .seeded(&[&["create"], &["replace"], &["delete"]]),
            serviceaccount_writes: Family::new(
                "acrpull_serviceaccount_writes_total",
                "Writes to ServiceAccount imagePullSecrets.",
                &[],
            )
            .seeded(&[&[]]),
            status_writes: Family::new(
                "acrpull_status_writes_total",
                "Writes to AcrPullBinding status.",
                &[],
            )
            .seeded(&[&[]]),
            token_request_duration: Family::new(
                "acrpull_token_request_duration_seconds",
                "Latency of token requests to Azure by upstream.",
                &["upstream"],
            ),
            azure_throttled: Family::new(
                "acrpull_azure_throttled_total",
                "Azure answers with HTTP 429 by upstream.",
                &["upstream"],
            )
            .seeded(&UPSTREAMS),
            azure_server_errors: Family::new(
                "acrpull_azure_server_errors_total",
                "Azure answers with HTTP 5xx by upstream.",
                &["upstream"],
            )
            .seeded(&UPSTREAMS),
            workqueue_depth: Family::new(
                "acrpull_workqueue_depth",
                "Bindings waiting for a worker.",
                &[],
            ),
            bindings: Family::new("acrpull_bindings", "AcrPullBindings by state.", &["state"]),
            token_earliest_expiry: Family::new(
                "acrpull_token_earliest_expiry_timestamp_seconds",
                "Unix time at which the first pull token written by acrpull expires.",
                &[],
            ),
            leader: Family::new(
                "acrpull_leader",
                "1 when this replica holds the leader Lease.",
                &[],
            ),
            watch_restarts: Family::new(
                "acrpull_watch_restarts_total",
                "Watch streams restarted by resource.",
                &["resource"],
            )
            .seeded(&[
                &["v1beta2"],
                &["v1beta1"],
                &["secrets"],
                &["serviceaccounts"],
            ]),
            build_info: Family::new(
                "acrpull_build_info",
                "Always 1; labels carry the build.",
                &["version", "revision"],
            ),
            collectors: Mutex::new(Vec::new()),
        };
        m.build_info.set(&[version, revision], 1.0);
        m.leader.set(&[], 0.0);
        m.set_workqueue_depth(0);
        m.set_bindings(BindingCounts::default());
        m
    }

    /// Counts a finished reconcile and its duration.
    pub fn reconcile(&self, result: ReconcileResult, took: Duration) {
        self.reconcile_total.inc(&[result.as_str()]);
        self.reconcile_duration.observe(&[], took);
    }

    /// Counts a successful write to a pull Secret.
    pub fn secret_write(&self, op: SecretOp) {
        self.secret_writes.inc(&[op.as_str()]);
    }

    /// Counts a successful write to a ServiceAccount.
    pub fn serviceaccount_write(&self) {
        self.serviceaccount_writes.inc(&[]);
    }

    /// Counts a successful status write.
    pub fn status_write(&self) {
        self.status_writes.inc(&[]);
    }

    /// Records the latency of one request to Azure. The request *counts*
    /// (`acrpull_token_requests_total`) come from the token service's collector (`tokens::metered::collect_token_counters`).
    pub fn token_request_duration(&self, upstream: &'static str, took: Duration) {
        self.token_request_duration.observe(&[upstream], took);
    }

    /// Counts an HTTP 429 from Azure.
    pub fn azure_throttled(&self, upstream: &'static str) {
        self.azure_throttled.inc(&[upstream]);
    }

    /// Counts an HTTP 5xx from Azure.
    pub fn azure_server_error(&self, upstream: &'static str) {
        self.azure_server_errors.inc(&[upstream]);
    }

    /// Sets the number of keys waiting in the work queue (or add a collector that reads it).
    pub fn set_workqueue_depth(&self, depth: usize) {
        self.workqueue_depth.set(&[], depth as f64);
    }

    /// Sets the number of bindings per state.
    pub fn set_bindings(&self, counts: BindingCounts) {
        self.bindings.set(&["ready"], counts.ready as f64);
        self.bindings.set(&["error"], counts.error as f64);
        self.bindings.set(&["pending"], counts.pending as f64);
    }

    /// Sets when the first pull token expires; `None` removes the series (no tokens).
    pub fn set_token_earliest_expiry(&self, at: Option<OffsetDateTime>) {
        match at {
            Some(t) => self
                .token_earliest_expiry
                .set(&[], t.unix_timestamp() as f64),
            None => self.token_earliest_expiry.remove(&[]),
        }
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(&[], if leading { 1.0 } else { 0.0 });
    }

    /// Counts a restarted watch; `resource` is a fixed word such as `secrets` or `acrpullbindings.v1beta2`.
    pub fn watch_restart(&self, resource: &'static str) {
        self.watch_restarts.inc(&[resource]);
    }

    /// Adds a function called on every scrape to add samples owned elsewhere.
    pub fn add_collector(&self, collector: Collector) {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(collector);
    }

    /// Every family in text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut r = Render::default();
        self.reconcile_total.render(&mut r);
        self.reconcile_duration.render(&mut r);
        self.secret_writes.render(&mut r);
        self.serviceaccount_writes.render(&mut r);
        self.status_writes.render(&mut r);
        self.token_request_duration.render(&mut r);
        self.azure_throttled.render(&mut r);
        self.azure_server_errors.render(&mut r);
        self.workqueue_depth.render(&mut r);
        self.bindings.render(&mut r);
        self.token_earliest_expiry.render(&mut r);
        self.leader.render(&mut r);
        self.watch_restarts.render(&mut r);
        self.build_info.render(&mut r);
        for c in self
            .collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            c(&mut r);
        }
        r.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn counters_render_with_help_type_and_seeded_zeroes() {
        let m = Metrics::new("1.2.3", "abc");
        m.reconcile(ReconcileResult::Success, Duration::from_millis(3));
        m.reconcile(ReconcileResult::Success, Duration::from_millis(3));
        let text = m.render();
        assert!(text
            .contains("# HELP acrpull_reconcile_total Reconciles of AcrPullBindings by result.\n"));
        assert!(text.contains("# TYPE acrpull_reconcile_total counter\n"));
        assert!(text.contains("acrpull_reconcile_total{result=\"success\"} 2\n"));
        assert!(text.contains("acrpull_reconcile_total{result=\"error\"} 0\n"));
        assert!(text.contains("acrpull_reconcile_total{result=\"requeue\"} 0\n"));
        assert!(text.contains("acrpull_build_info{version=\"1.2.3\",revision=\"abc\"} 1\n"));
        assert!(text.contains("acrpull_leader 0\n"));
        assert!(text.contains("acrpull_workqueue_depth 0\n"));
        assert!(text.contains("acrpull_bindings{state=\"error\"} 0\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let m = Metrics::default();
        m.reconcile(ReconcileResult::Error, Duration::from_millis(4));
        m.reconcile(ReconcileResult::Error, Duration::from_millis(700));
        m.reconcile(ReconcileResult::Error, Duration::from_secs(60));
        let text = m.render();
        let b = lines_of(&text, "acrpull_reconcile_duration_seconds_bucket");
        assert_eq!(b.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(
            b[0],
            "acrpull_reconcile_duration_seconds_bucket{le=\"0.005\"} 1"
        );
        assert_eq!(
            b[6],
            "acrpull_reconcile_duration_seconds_bucket{le=\"0.5\"} 1"
        );
        assert_eq!(
            b[7],
            "acrpull_reconcile_duration_seconds_bucket{le=\"1\"} 2"
        );
        assert_eq!(
            b[11],
            "acrpull_reconcile_duration_seconds_bucket{le=\"30\"} 2"
        );
        assert_eq!(
            b[12],
            "acrpull_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3"
        );
        assert!(text.contains("acrpull_reconcile_duration_seconds_count 3\n"));
        assert!(text.contains("acrpull_reconcile_duration_seconds_sum 60.704\n"));
        assert!(text.contains("# TYPE acrpull_reconcile_duration_seconds histogram\n"));
    }

    #[test]
    fn labelled_histogram_puts_le_last() {
        let m = Metrics::default();
        m.token_request_duration("acr_exchange", Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains(
            "acrpull_token_request_duration_seconds_bucket{upstream=\"acr_exchange\",le=\"0.025\"} 1\n"
        ));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut r = Render::default();
        r.gauge("x", "a \\ b\nc", &[("l", "q\"\\\n")], 1.5);
        let text = r.finish();
        assert_eq!(
            text,
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{l=\"q\\\"\\\\\\n\"} 1.5\n"
        );
    }

    #[test]
    fn collectors_join_their_family_and_are_read_at_scrape_time() {
        let m = Metrics::default();
        m.add_collector(Box::new(|r| {
            r.counter(
                "acrpull_token_requests_total",
                "help",
                &[("upstream", "imds"), ("outcome", "ok")],
                0,
            )
        }));
        m.add_collector(Box::new(|r| {
            r.counter(
                "acrpull_watch_restarts_total",
                "ignored",
                &[("resource", "extra")],
                7,
            )
        }));
        m.watch_restart("secrets");
        let text = m.render();
        assert!(text.contains("acrpull_token_requests_total{upstream=\"imds\",outcome=\"ok\"} 0\n"));
        // One header per family even when a collector adds to a family the registry owns.
        assert_eq!(
            text.matches("# TYPE acrpull_watch_restarts_total").count(),
            1
        );
        let w = lines_of(&text, "acrpull_watch_restarts_total");
        assert_eq!(
            w,
            [
                "acrpull_watch_restarts_total{resource=\"secrets\"} 1",
                "acrpull_watch_restarts_total{resource=\"serviceaccounts\"} 0",
                "acrpull_watch_restarts_total{resource=\"v1beta1\"} 0",
                "acrpull_watch_restarts_total{resource=\"v1beta2\"} 0",
                "acrpull_watch_restarts_total{resource=\"extra\"} 7"
            ]
        );
    }

    #[test]
    fn gauges_set_replace_and_remove() {
        let m = Metrics::default();
        m.set_bindings(BindingCounts {
            ready: 3,
            error: 1,
            pending: 0,
        });
        m.set_bindings(BindingCounts {
            ready: 4,
            error: 0,
            pending: 2,
        });
        m.set_leader(true);
        m.set_workqueue_depth(9);
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid constant");
        m.set_token_earliest_expiry(Some(t));
        let text = m.render();
        assert!(text.contains("acrpull_bindings{state=\"ready\"} 4\n"));
        assert!(text.contains("acrpull_bindings{state=\"pending\"} 2\n"));
        assert!(text.contains("acrpull_leader 1\n"));
        assert!(text.contains("acrpull_workqueue_depth 9\n"));
        assert!(text.contains("acrpull_token_earliest_expiry_timestamp_seconds 1700000000\n"));
        m.set_token_earliest_expiry(None);
        assert!(!m
            .render()
            .contains("acrpull_token_earliest_expiry_timestamp_seconds 1"));
    }

    #[test]
    fn every_family_is_prefixed_and_typed_once() {
        let m = Metrics::default();
        m.azure_throttled("imds");
        m.azure_server_error("entra");
        m.secret_write(SecretOp::Replace);
        m.serviceaccount_write();
        m.status_write();
        let text = m.render();
        for line in text.lines() {
            let name = line
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ");
            assert!(name.starts_with("acrpull_"), "{line}");
        }
        let types = lines_of(&text, "# TYPE");
        let mut names: Vec<&str> = types
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap_or(""))
            .collect();
        let before = names.len();
        names.sort();
        names.dedup();
        assert_eq!(before, names.len());
        assert!(text.contains("acrpull_azure_throttled_total{upstream=\"imds\"} 1\n"));
        assert!(text.contains("acrpull_azure_server_errors_total{upstream=\"entra\"} 1\n"));
        assert!(text.contains("acrpull_secret_writes_total{op=\"replace\"} 1\n"));
        assert!(text.contains("acrpull_serviceaccount_writes_total 1\n"));
        assert!(text.contains("acrpull_status_writes_total 1\n"));
    }

    #[test]
    fn special_float_values_use_prometheus_spelling() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(0.25), "0.25");
    }
}
