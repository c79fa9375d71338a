//! HTTP plumbing shared by the Kubernetes and Azure clients: buffer sizes, percent-encoding and
//! cached name lookups.

pub mod buffers;
pub mod percent;
pub mod resolve;
