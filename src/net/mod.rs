//! HTTP plumbing shared by the Kubernetes and Azure clients: buffer sizes and cached name lookups.

pub mod buffers;
pub mod resolve;
