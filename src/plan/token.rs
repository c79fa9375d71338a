//! The planner's side of the token service: what it asks for and what it gets back.

use time::OffsetDateTime;

use crate::binding::suffix::ServerAddr;
use crate::binding::{ApiVersion, BindingError, Environment, Identity};

/// A registry token; formatting never shows it (the one secret-holding type of the crate).
pub use crate::azure::SecretString as Password;

/// A registry token as the token service hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintedToken {
    /// The token placed in the Secret.
    pub password: Password,
    /// Its expiry (JWT `exp`).
    pub expires: OffsetDateTime,
    /// When the token service obtained it (a cache hit may be older than now).
    pub issued: OffsetDateTime,
}

/// The token service's answer to a `TokenNeed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Minted {
    /// A token.
    Ok(MintedToken),
    /// Why not; already redacted. It goes to `status.error`.
    Err(BindingError),
}

/// What the token service needs to mint a token for one binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenNeed {
    /// The binding's API version (decides the error prefixes and v1beta1 unscoped mode).
    pub version: ApiVersion,
    /// The binding's namespace (TokenRequest for workload identity).
    pub namespace: String,
    /// The binding's name (for logs).
    pub binding_name: String,
    /// Who obtains the Entra token.
    pub identity: Identity,
    /// The server exactly as written (the ACR `service` for `/oauth2/token`).
    pub server: String,
    /// The validated registry address: the only host a token may be sent to.
    pub registry: ServerAddr,
    /// Registry scope; empty = unscoped (refresh token as password).
    pub scope: String,
    /// The cloud.
    pub environment: Environment,
    /// The IMDS resource / Entra audience.
    pub arm_resource: String,
    /// The ServiceAccount that receives the Secret (upstream reads WI annotations from it).
    pub target_service_account: String,
    /// The inputs hash (a natural cache key).
    pub inputs_hash: String,
    /// The refresh time of the Secret being replaced: a cached token issued at or before it
    /// is the one being replaced and must not be handed back.
    pub not_issued_before: Option<OffsetDateTime>,
}
