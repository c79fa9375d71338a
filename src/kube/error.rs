//! The errors of the Kubernetes boundary: loading connection config, and making requests.

use super::yaml::YamlError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Longest `Status.message` kept in an error; the API server's messages are short, a hostile one is not.
const MAX_MESSAGE_LEN: usize = 512;

/// A request to the API server failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The API server answered with a failure `Status` (404, 403, 409, 410, 422, 5xx…).
    Status {
        /// HTTP status code (or the `Status.code` of an in-stream watch ERROR event).
        code: u16,
        /// `Status.reason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Expired`; empty if absent.
        reason: String,
        /// `Status.message`, truncated; empty if absent.
        message: String,
    },
    /// HTTP 429 from API Priority and Fairness; retry after `retry_after` (from `Retry-After`).
    TooManyRequests {
        /// The server's `Retry-After`, if it sent a number of seconds.
        retry_after: Option<Duration>,
    },
    /// HTTP 401 even after the credential was re-read once.
    Unauthorized,
    /// Connecting, TLS, a timeout, or reading the body failed.
    Transport(ureq::Error),
    /// A response body was not the JSON we expected.
    Decode(serde_json::Error),
    /// A credential could not be obtained (token file unreadable, exec plugin failed).
    Credentials(ConfigError),
}

impl Error {
    /// The HTTP status code, if the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Status { code, .. } => Some(*code),
            Error::TooManyRequests { .. } => Some(429),
            Error::Unauthorized => Some(401),
            _ => None,
        }
    }

    /// 404: the object (or the resource type) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409 from a stale resourceVersion or a failed precondition (not AlreadyExists).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Status { code: 409, reason, .. } if reason != "AlreadyExists")
    }

    /// 410: the resourceVersion or continue token is too old; relist.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// 409 `AlreadyExists` from a create.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Status { code: 409, reason, .. } if reason == "AlreadyExists")
    }

    /// 403: RBAC denied the request.
    pub fn is_forbidden(&self) -> bool {
        self.code() == Some(403)
    }

    /// Builds a `Status` error from a decoded Kubernetes `Status` object, falling back to `code`.
    pub fn from_status(code: u16, status: &serde_json::Value) -> Error {
        let text = |k: &str| status.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let code = status
            .get("code")
            .and_then(|c| c.as_u64())
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 400)
            .unwrap_or(code);
        let mut message = text("message").to_string();
        if message.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Error::Status {
            code,
            reason: text("reason").to_string(),
            message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Status {
                code,
                reason,
                message,
            } => write!(f, "api server returned {code} {reason}: {message}"),
            Error::TooManyRequests {
                retry_after: Some(d),
            } => write!(
                f,
                "api server throttled the request; retry after {}s",
                d.as_secs()
            ),
            Error::TooManyRequests { retry_after: None } => {
                write!(f, "api server throttled the request")
            }
            Error::Unauthorized => write!(f, "api server rejected the credential"),
            Error::Transport(e) => write!(f, "api server transport error: {e}"),
            Error::Decode(e) => write!(f, "api server response not understood: {e}"),
            Error::Credentials(e) => write!(f, "no api server credential: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport(e) => Some(e),
            Error::Decode(e) => Some(e),
            Error::Credentials(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ureq::Error> for Error {
    fn from(e: ureq::Error) -> Self {
        Error::Transport(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Decode(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Credentials(e)
    }
}

/// The connection config (in-cluster files, kubeconfig, exec plugin) could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither a kubeconfig nor the in-cluster environment variables were found.
    NoConfig,
    /// A file named by the config could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The kubeconfig is not valid YAML (or JSON).
    Yaml {
        /// The kubeconfig file.
        path: PathBuf,
        /// Where and why.
        source: YamlError,
    },
    /// A required field is missing or has the wrong type.
    Missing {
        /// The field, e.g. `cluster.server`.
        field: &'static str,
    },
    /// The named context, cluster or user is not in the kubeconfig.
    NotFound {
        /// `context`, `cluster` or `user`.
        kind: &'static str,
        /// The name looked for.
        name: String,
    },
    /// The kubeconfig uses an authentication or TLS feature we do not support.
    Unsupported {
        /// The feature, e.g. `auth-provider` or `username/password`.
        feature: &'static str,
    },
    /// A `*-data` field is not valid base64.
    Base64 {
        /// The field.
        field: &'static str,
    },
    /// A certificate or key is not valid PEM, or holds nothing usable.
    Pem {
        /// Which material: `certificate-authority`, `client-certificate` or `client-key`.
        what: &'static str,
    },
    /// The server address is not an `http(s)://` URL.
    BadServer,
    /// The exec credential plugin failed.
    Exec {
        /// The plugin command.
        command: String,
        /// How it failed.
        kind: ExecFailure,
    },
}

/// How an exec credential plugin failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExecFailure {
    /// The command could not be started.
    Spawn(io::Error),
    /// The command exited unsuccessfully (exit code, if any).
    Exit(Option<i32>),
    /// Its output is not an `ExecCredential` JSON object.
    Output(serde_json::Error),
    /// The `ExecCredential` has no `status.token` (client certificates from exec are unsupported).
    NoToken,
    /// The plugin's `apiVersion` is not `client.authentication.k8s.io/v1` or `v1beta1`.
    ApiVersion,
    /// `status.expirationTimestamp` is not an RFC 3339 time.
    Expiry,
    /// The command did not finish in time and was killed.
    Timeout,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoConfig => write!(
                f,
                "no kubeconfig given and not running in a cluster (KUBERNETES_SERVICE_HOST unset)"
            ),
            ConfigError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ConfigError::Yaml { path, source } => {
                write!(f, "invalid kubeconfig {}: {source}", path.display())
            }
            ConfigError::Missing { field } => {
                write!(f, "kubeconfig field {field} missing or invalid")
            }
            ConfigError::NotFound { kind, name } => {
                write!(f, "kubeconfig has no {kind} named {name:?}")
            }
            ConfigError::Unsupported { feature } => {
                write!(f, "kubeconfig uses unsupported {feature}")
            }
            ConfigError::Base64 { field } => write!(f, "kubeconfig field {field} is not base64"),
            ConfigError::Pem { what } => write!(f, "{what} is not valid pem"),
            ConfigError::BadServer => write!(f, "api server address is not an http(s) url"),
            ConfigError::Exec { command, kind } => {
                write!(f, "exec credential plugin {command:?} failed: ")?;
                match kind {
                    ExecFailure::Spawn(e) => write!(f, "cannot start: {e}"),
                    ExecFailure::Exit(Some(c)) => write!(f, "exit code {c}"),
                    ExecFailure::Exit(None) => write!(f, "killed by a signal"),
                    ExecFailure::Output(e) => write!(f, "output is not an ExecCredential: {e}"),
                    ExecFailure::NoToken => write!(f, "no status.token in its output"),
                    ExecFailure::ApiVersion => write!(f, "unsupported apiVersion"),
                    ExecFailure::Expiry => write!(f, "bad status.expirationTimestamp"),
                    ExecFailure::Timeout => write!(f, "timed out"),
                }
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Yaml { source, .. } => Some(source),
            ConfigError::Exec {
                kind: ExecFailure::Spawn(e),
                ..
            } => Some(e),
            ConfigError::Exec {
                kind: ExecFailure::Output(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_body_decodes_into_code_reason_and_message() {
        let e = Error::from_status(
            500,
            &json!({"kind":"Status","code":409,"reason":"AlreadyExists","message":"secrets \"x\" already exists"}),
        );
        assert!(e.is_already_exists());
        assert!(!e.is_conflict());
        assert_eq!(e.code(), Some(409));
        assert_eq!(
            e.to_string(),
            "api server returned 409 AlreadyExists: secrets \"x\" already exists"
        );
    }

    #[test]
    fn stale_resource_version_is_a_conflict() {
        let e = Error::from_status(409, &json!({"reason":"Conflict"}));
        assert!(e.is_conflict());
        assert!(Error::from_status(410, &json!({})).is_gone());
        assert!(Error::from_status(404, &json!(null)).is_not_found());
    }

    #[test]
    fn long_status_messages_are_truncated_on_a_char_boundary() {
        let e = Error::from_status(422, &json!({"message": "é".repeat(1000)}));
        let Error::Status { message, .. } = e else {
            panic!("expected a Status error")
        };
        assert!(message.len() <= MAX_MESSAGE_LEN);
    }
}
