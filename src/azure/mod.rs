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

/// The Azure HTTP clients: `SSL_CERT_FILE` and proxy settings from the environment, and the
/// `--connect-to` overrides. The controller and `acrpull check` both build theirs here, so check
/// talks to Azure exactly as the controller does.
pub fn clients(
    connect_to: &[(String, String)],
) -> Result<std::sync::Arc<HttpClients>, http::HttpSetupError> {
    let mut config = HttpConfig::from_env()?;
    for (host, addr) in connect_to {
        config
            .connect_to
            .push(http::ConnectTo::parse(&format!("{host}={addr}"))?);
    }
    Ok(std::sync::Arc::new(HttpClients::new(&config)?))
}
