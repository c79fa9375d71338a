//! Command-line flags and environment, parsed into a validated configuration.
