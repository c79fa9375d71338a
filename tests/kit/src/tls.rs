//! The kit CA and server certificates, and kubeconfig files.
