//! A small Kubernetes REST client: connection config, typed requests, list and watch.
//!
//! [`Config::load`] finds the API server (`--kubeconfig`, `KUBECONFIG`, or in-cluster); [`Client`]
//! sends rate-limited, metered JSON requests and maps failures to [`Error`]; [`watch::spawn`] runs a
//! list+watch loop that sends [`WatchEvent`]s to the caller, who keeps the objects.

pub mod auth;
pub mod backoff;
pub mod client;
pub mod config;
pub mod error;
pub mod ratelimit;
pub mod watch;
pub mod yaml;

pub use client::{Client, ListParams, Preconditions, Resource};
pub use config::Config;
pub use error::{ConfigError, Error};
pub use watch::{WatchEvent, WatchHandle};
