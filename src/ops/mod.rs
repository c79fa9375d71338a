//! Running it: the metrics and probe listeners, health verdicts, logging and signals.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod serve;
pub mod signals;
