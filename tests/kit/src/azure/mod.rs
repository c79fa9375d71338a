//! Fake Azure endpoints: IMDS, Entra and ACR, strict about their protocols.
