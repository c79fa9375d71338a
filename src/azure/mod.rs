//! Azure endpoints: IMDS, Entra, and the registry token exchange.
