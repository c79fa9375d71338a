//! The emulated Kubernetes API server.
