//! A small Kubernetes REST client: connection config, typed requests, list and watch.

pub mod auth;
pub mod backoff;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod ratelimit;
pub mod watch;
pub mod yaml;

pub use error::{ConfigError, Error, ExecFailure};
