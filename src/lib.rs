//! acrpull: keeps Azure Container Registry pull secrets fresh for `AcrPullBinding` objects.
//!
//! The folders read in the order of the flow:
//! watch → store → queue → reconcile → plan → tokens → writes.
//! A watch event enters the store (`controller::dispatch`, `controller::store`), which queues
//! the bindings it concerns (`controller::schedule`); a worker reconciles one at a time
//! (`controller::worker`, `controller::reconcile`), asking the pure planner (`plan`) what to
//! write, the token service (`tokens`) for a registry token when the plan needs one, and the
//! Kubernetes API (`kube`) to write. Below those sit the model (`binding`), the Azure endpoints
//! (`azure`), the HTTP plumbing both clients share (`net`) and time (`clock`); beside them, running it (`ops`),
//! the flags (`cli`) and `acrpull check` (`check`).
#![deny(unsafe_code)]

// Blank lines keep rustfmt from sorting this table of contents alphabetically.

/// Wiring: start-up, watch dispatch, the store, the work queue, workers and reconcile, leader
/// election, Events.
pub(crate) mod controller;

/// The pure planner: observed objects and now in, ordered writes, conditions and the next
/// deadline out.
pub(crate) mod plan;

/// The token flow: one credential resolver, and Entra, IMDS and ACR tokens, cached and
/// single-flighted.
pub(crate) mod tokens;

/// The binding model: both API versions decoded into one, its errors, names, hashes, policy,
/// and the shared strings that keep thousands of records small.
pub(crate) mod binding;

/// Kubernetes I/O: the REST client, list+watch, kubeconfig.
pub(crate) mod kube;

/// Azure I/O: IMDS, Entra and registry token endpoints over HTTP.
pub(crate) mod azure;

/// HTTP plumbing shared by both clients: buffer sizes, cached name lookups, percent-encoding.
pub(crate) mod net;

/// Time and chance: the one clock (monotonic, wall-clock, sleep), RFC 3339 timestamps, the one
/// random source.
pub(crate) mod clock;

/// Running it: metrics, probes, health, logging, signals.
pub(crate) mod ops;

/// Flags and environment, parsed into a validated configuration.
pub(crate) mod cli;

/// `acrpull check`: one binding's token flow, step by step.
pub(crate) mod check;

pub use check::{render as render_check, run as check};
pub use cli::{check_usage, parse, usage, Command, UsageError};
pub use controller::app::run;
pub use ops::logging::init as init_logging;

#[doc(hidden)]
pub mod fuzzing;

/// What the manifest tests hold the shipped CRDs against: the spec decoder, the status patch and
/// the planner. Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::binding::{
        ApiVersion, Binding, BindingError, SpecError, TokenStep, V1beta1Defaults,
    };
    pub use crate::cli::DEFAULT_TOKEN_AUDIENCE;
    pub use crate::plan::conditions::status_patch;
    pub use crate::plan::{
        plan, Minted, MintedToken, Observed, Outcome, Password, PlanConfig, SaObs, Write,
    };
}
