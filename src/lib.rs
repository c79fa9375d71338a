//! acrpull: keeps Azure Container Registry pull secrets fresh for `AcrPullBinding` objects.
//!
//! The folders follow the flow, top to bottom:
//! watch → store → queue → reconcile → plan → tokens → writes.
#![deny(unsafe_code)]

// The folders in flow order, low-level ones last; the blank lines keep rustfmt from sorting them.

/// Wiring: start-up, watch dispatch, the store, the work queue, workers and reconcile, leader
/// election, Events.
pub(crate) mod controller;

/// The pure planner: observed objects and now in, ordered writes and the next deadline out.
pub(crate) mod plan;

/// The binding model: both API versions decoded into one, conditions, names, hashes, policy.
pub(crate) mod binding;

/// The token service: Entra, IMDS and ACR tokens, cached and single-flighted.
pub(crate) mod tokens;

/// Kubernetes I/O: the REST client, list+watch, kubeconfig, label selectors.
pub(crate) mod kube;

/// Azure I/O: IMDS, Entra and registry token endpoints over HTTP.
pub(crate) mod azure;

/// HTTP plumbing shared by both clients.
pub(crate) mod net;

/// Compact records that keep the store small.
pub(crate) mod compact;

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
