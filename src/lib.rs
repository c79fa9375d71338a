//! acrpull: keeps Azure Container Registry pull secrets fresh for `AcrPullBinding` objects.
//!
//! The modules read as a table of contents: Kubernetes and Azure I/O sit at the edges (`kube`,
//! `azure`, `tokens`, `workload`), the decisions in the middle are pure (`binding`, `plan`,
//! `names`, `hash`, `suffix`, `selector`), and `controller` wires them together with the
//! `schedule` queue.
#![deny(unsafe_code)]

pub mod app;
pub mod azure;
pub mod binding;
pub mod check;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod health;
pub mod http_buffers;
pub mod kube;
pub mod leader;
pub mod logging;
pub mod metered;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod resolve;
pub mod schedule;
pub mod selector;
pub mod serve;
pub mod signals;
pub mod store;
pub mod strmap;
pub mod suffix;
pub mod text;
pub mod tokens;
pub mod workload;
