//! The `acrpull check` report: named steps with an outcome and details, rendered as text or JSON.
//!
//! Pure: no I/O, no clock. Nothing in a report may be a token; `redact` is the last guard that
//! removes any token the run held, should an error text ever echo one.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

/// The steps of a check, in the order they run.
pub const STEPS: [&str; 5] = [
    "binding",
    "allow-list",
    "entra token",
    "acr exchange",
    "acr token",
];

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Ok,
    /// It worked, but something deserves attention (e.g. narrower access than requested).
    Warning,
    /// It failed; the check exits 1.
    Failed,
    /// It did not run (an earlier step failed, or the binding does not need it).
    Skipped,
}

impl Outcome {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warning => "warning",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "[ok]     ",
            Outcome::Warning => "[WARNING]",
            Outcome::Failed => "[FAILED] ",
            Outcome::Skipped => "[skipped]",
        }
    }
}

/// One step of the flow and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// One of [`STEPS`].
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// What it found, in display order (`aud`, `expires`, `access`…). Never a token.
    pub details: Vec<(&'static str, String)>,
    /// Why it failed, warned or was skipped.
    pub reason: Option<String>,
    /// What an operator could do about it.
    pub hint: Option<String>,
}

impl Step {
    /// A step that worked, with no details yet.
    pub fn ok(name: &'static str) -> Step {
        Step {
            name,
            outcome: Outcome::Ok,
            details: Vec::new(),
            reason: None,
            hint: None,
        }
    }

    /// Adds a detail.
    pub fn detail(mut self, key: &'static str, value: impl Into<String>) -> Step {
        self.details.push((key, value.into()));
        self
    }

    /// Marks the step failed for `reason`.
    pub fn failed(mut self, reason: impl Into<String>) -> Step {
        self.outcome = Outcome::Failed;
        self.reason = Some(reason.into());
        self
    }

    /// Marks the step as worked-with-a-warning, unless it already failed.
    pub fn warning(mut self, reason: impl Into<String>) -> Step {
        if self.outcome != Outcome::Failed {
            self.outcome = Outcome::Warning;
            self.reason = Some(reason.into());
        }
        self
    }

    /// Marks the step skipped for `reason`.
    pub fn skipped(mut self, reason: impl Into<String>) -> Step {
        self.outcome = Outcome::Skipped;
        self.reason = Some(reason.into());
        self
    }

    /// Adds advice for the operator.
    pub fn hint(mut self, hint: impl Into<String>) -> Step {
        self.hint = Some(hint.into());
        self
    }
}

/// The whole check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was checked, e.g. `default/app (acrpull.microsoft.com/v1beta2)`.
    pub subject: String,
    /// The steps that were reached, in order.
    pub steps: Vec<Step>,
}

impl Report {
    /// An empty report about `subject`.
    pub fn new(subject: impl Into<String>) -> Report {
        Report {
            subject: subject.into(),
            steps: Vec::new(),
        }
    }

    /// Appends a step.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// The first failed step, if any.
    pub fn failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.outcome == Outcome::Failed)
    }

    /// Whether every step worked (warnings and skips included).
    pub fn passed(&self) -> bool {
        self.failure().is_none()
    }

    /// Lists the steps that were never reached as skipped, so the output always shows the whole flow.
    pub fn finish(&mut self) {
        let cause = self
            .failure()
            .map(|s| format!("not run: {} failed", s.name));
        for name in STEPS {
            if !self.steps.iter().any(|s| s.name == name) {
                let reason = cause.clone().unwrap_or_else(|| "not run".to_string());
                self.steps.push(Step::ok(name).skipped(reason));
            }
        }
    }

    /// Replaces every occurrence of a secret in details, reasons and hints with `[redacted]`.
    pub fn redact(&mut self, secrets: &[&str]) {
        let scrub = |text: &mut String| {
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                if text.contains(s) {
                    *text = text.replace(s, "[redacted]");
                }
            }
        };
        for step in &mut self.steps {
            for (_, v) in &mut step.details {
                scrub(v);
            }
            if let Some(r) = &mut step.reason {
                scrub(r);
            }
            if let Some(h) = &mut step.hint {
                scrub(h);
            }
        }
    }

    /// The human-readable report: one block per step, keys aligned, and a closing verdict.
    pub fn to_text(&self) -> String {
        let mut out = format!("acrpull check: {}\n\n", self.subject);
        for step in &self.steps {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{} {}", step.outcome.label(), step.name);
            let mut rows: Vec<(&str, &str)> =
                step.details.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Some(r) = &step.reason {
                rows.push(("reason", r));
            }
            if let Some(h) = &step.hint {
                rows.push(("hint", h));
            }
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in rows {
                let _ = writeln!(out, "            {k:<width$}  {v}");
            }
        }
        match self.failure() {
            None if self.steps.iter().any(|s| s.outcome == Outcome::Warning) => {
                out.push_str("\nresult: ok, with warnings\n")
            }
            None => out.push_str("\nresult: ok\n"),
            Some(s) => {
                let _ = writeln!(out, "\nresult: FAILED at step \"{}\"", s.name);
            }
        }
        out
    }

    /// The report as one JSON object: `subject`, `ok`, and `steps` with their details.
    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let details: Map<String, Value> = s
                    .details
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
                    .collect();
                json!({
                    "name": s.name,
                    "outcome": s.outcome.as_str(),
                    "details": details,
                    "reason": s.reason,
                    "hint": s.hint,
                })
            })
            .collect();
        json!({"subject": self.subject, "ok": self.passed(), "steps": steps})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("default/app (acrpull.microsoft.com/v1beta2)");
        r.push(
            Step::ok("binding")
                .detail("registry", "r.azurecr.io")
                .detail("scope", "repository:app:pull"),
        );
        r.push(Step::ok("allow-list").detail("allowed", "azurecr.io"));
        r.push(
            Step::ok("entra token")
                .failed("the requested identity isn't assigned to this resource")
                .hint("assign the identity to the node"),
        );
        r.finish();
        r
    }

    #[test]
    fn text_lists_every_step_with_aligned_details_and_the_verdict() {
        let text = sample().to_text();
        let expected = [
            "acrpull check: default/app (acrpull.microsoft.com/v1beta2)",
            "",
            "[ok]      binding",
            "            registry  r.azurecr.io",
            "            scope     repository:app:pull",
            "[ok]      allow-list",
            "            allowed  azurecr.io",
            "[FAILED]  entra token",
            "            reason  the requested identity isn't assigned to this resource",
            "            hint    assign the identity to the node",
            "[skipped] acr exchange",
            "            reason  not run: entra token failed",
            "[skipped] acr token",
            "            reason  not run: entra token failed",
            "",
            "result: FAILED at step \"entra token\"",
            "",
        ]
        .join("\n");
        assert_eq!(text, expected);
    }

    #[test]
    fn a_failed_step_fails_the_report_but_warnings_and_skips_do_not() {
        assert!(!sample().passed());
        let mut r = Report::new("x");
        r.push(Step::ok("binding"));
        r.push(Step::ok("acr token").warning("narrower than requested"));
        r.push(Step::ok("acr exchange").skipped("unscoped"));
        assert!(r.passed());
        assert!(r.to_text().ends_with("result: ok, with warnings\n"));
    }

    #[test]
    fn a_warning_never_hides_a_failure() {
        let s = Step::ok("acr token")
            .failed("no access")
            .warning("narrower");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(s.reason.as_deref(), Some("no access"));
    }

    #[test]
    fn json_carries_outcomes_details_and_the_verdict() {
        let v = sample().to_json();
        assert_eq!(v["ok"], false);
        assert_eq!(v["steps"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["steps"][0]["outcome"], "ok");
        assert_eq!(v["steps"][0]["details"]["registry"], "r.azurecr.io");
        assert_eq!(v["steps"][2]["outcome"], "failed");
        assert_eq!(v["steps"][2]["hint"], "assign the identity to the node");
        assert_eq!(v["steps"][4]["outcome"], "skipped");
        assert_eq!(v["steps"][0]["reason"], Value::Null);
    }

    #[test]
    fn finish_after_success_adds_nothing() {
        let mut r = Report::new("x");
        for name in STEPS {
            r.push(Step::ok(name));
        }
        r.finish();
        assert_eq!(r.steps.len(), STEPS.len());
        assert!(r.to_text().ends_with("result: ok\n"));
    }

    #[test]
    fn redact_removes_secrets_everywhere() {
        let mut r = Report::new("x");
        r.push(
            Step::ok("acr exchange")
                .detail("note", "echo eyJ.secret.sig")
                .failed("bad token eyJ.secret.sig")
                .hint("eyJ.secret.sig"),
        );
        r.redact(&["eyJ.secret.sig", ""]);
        let text = r.to_text();
        assert!(!text.contains("eyJ.secret.sig"), "{text}");
        assert_eq!(text.matches("[redacted]").count(), 3);
    }
}
