//! Azure endpoints: IMDS, Entra, and the registry token exchange.
//!
//! `http` is the only file that touches the network; the clients build requests and parse
//! responses, and take the sender as a trait object so tests can swap it.

pub mod acr;
pub mod entra;
pub mod error;
pub mod http;
pub mod imds;
pub mod jwt;
pub mod limiter;
pub mod retry;
pub mod scope;
pub mod secret;

pub use error::HttpError;
pub use http::{HttpClients, HttpConfig};
pub use secret::{AccessToken, SecretString};
