//! Kubernetes label selectors: parsing and matching.
