//! The token service: caches and single-flights Entra and ACR tokens.
