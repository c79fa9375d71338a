//! A small Kubernetes REST client: connection config, typed requests, list and watch.

pub mod yaml;
