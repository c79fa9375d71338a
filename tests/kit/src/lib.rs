//! acrpull's test kit: an emulated Kubernetes API server and fake Azure endpoints on loopback.
//!
//! Dev-only: the integration tests, the local sandbox and the scale benchmark use it; the product
//! binary never links it.

pub mod azure;
pub mod http;
pub mod jwt;
pub mod kube;
pub mod registry;
pub mod tls;
pub mod world;
