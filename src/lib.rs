//! acrpull: keeps Azure Container Registry pull secrets fresh for `AcrPullBinding` objects.
//!
//! The modules read as a table of contents: Kubernetes and Azure I/O sit at the edges (`kube`,
//! `azure`, `tokens`), the decisions in the middle are pure (`binding`, `plan`, `names`, `hash`,
//! `suffix`, `selector`), and `controller` wires them together with the `schedule` queue.
#![forbid(unsafe_code)]

pub mod azure;
pub mod binding;
pub mod cli;
pub mod controller;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod kube;
pub mod names;
pub mod plan;
pub mod schedule;
pub mod selector;
pub mod suffix;
pub mod tokens;
