//! API-server credentials: a bearer token that is static, re-read from a file, or fetched from an exec plugin.

use super::error::{ConfigError, ExecFailure};
use crate::clock::rfc3339;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A projected ServiceAccount token rotates; re-reading it every minute picks up rotation long before expiry.
pub const TOKEN_FILE_REREAD: Duration = Duration::from_secs(60);
/// Refresh an exec token this long before it expires, so a request never carries an expired token.
const EXEC_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// An exec plugin that has not answered within this long is killed (a login prompt waiting on no terminal).
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// An exec plugin's stdout beyond this is not an ExecCredential.
const EXEC_MAX_OUTPUT: u64 = 1 << 20;

/// A bearer token; its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        BearerToken(value.into())
    }

    /// The token value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// How requests authenticate (besides a TLS client certificate).
#[derive(Debug, Clone)]
pub enum Auth {
    /// No bearer token.
    None,
    /// A fixed token from the kubeconfig.
    Token(BearerToken),
    /// A token file re-read every [`TOKEN_FILE_REREAD`] and after a 401 (in-cluster, `tokenFile`).
    TokenFile(PathBuf),
    /// A `client.authentication.k8s.io` exec plugin.
    Exec(ExecConfig),
}

/// An exec credential plugin as configured in a kubeconfig `users[].user.exec`.
#[derive(Clone)]
pub struct ExecConfig {
    /// The program; a relative path containing `/` is relative to `dir`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// `client.authentication.k8s.io/v1` or `…/v1beta1`.
    pub api_version: String,
    /// The kubeconfig's directory.
    pub dir: PathBuf,
}

impl fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Plugin env values and args can carry secrets (client secrets, passwords); show names only.
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecConfig")
            .field("command", &self.command)
            .field("args", &format_args!("<{} redacted>", self.args.len()))
            .field("env", &env)
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// The current credential and when it was obtained; shared by all clones of a client.
pub(crate) struct Credentials {
    auth: Auth,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    token: BearerToken,
    read_at: Instant,
    expires: Option<SystemTime>,
}

impl Credentials {
    pub(crate) fn new(auth: Auth) -> Self {
        Credentials {
            auth,
            cache: Mutex::new(None),
        }
    }

    /// The token to send, re-read when stale or when `refresh` (after a 401); `None` if no token auth.
    ///
    /// The lock is held while reading or running the plugin so concurrent callers share one refresh.
    pub(crate) fn bearer(&self, refresh: bool) -> Result<Option<BearerToken>, ConfigError> {
        match &self.auth {
            Auth::None => return Ok(None),
            Auth::Token(t) => return Ok(Some(t.clone())),
            Auth::TokenFile(_) | Auth::Exec(_) => {}
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| !refresh && self.fresh(c)) {
            return Ok(Some(c.token.clone()));
        }
        let (token, expires) = fetch(&self.auth)?;
        *cache = Some(Cached {
            token: token.clone(),
            read_at: Instant::now(),
            expires,
        });
        Ok(Some(token))
    }

    fn fresh(&self, c: &Cached) -> bool {
        match &self.auth {
            Auth::TokenFile(_) => c.read_at.elapsed() < TOKEN_FILE_REREAD,
            _ => c
                .expires
                .is_none_or(|exp| SystemTime::now() + EXEC_EXPIRY_MARGIN < exp),
        }
    }
}

fn fetch(auth: &Auth) -> Result<(BearerToken, Option<SystemTime>), ConfigError> {
    match auth {
        Auth::TokenFile(path) => Ok((read_token_file(path)?, None)),
        Auth::Exec(e) => run_exec(e),
        Auth::None | Auth::Token(_) => Err(ConfigError::Missing {
            field: "user.token",
        }),
    }
}

/// Reads and trims a token file.
pub(crate) fn read_token_file(path: &Path) -> Result<BearerToken, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BearerToken::new(text.trim()))
}

/// Runs the plugin and returns `status.token` and `status.expirationTimestamp`.
pub(crate) fn run_exec(e: &ExecConfig) -> Result<(BearerToken, Option<SystemTime>), ConfigError> {
    let fail = |kind| ConfigError::Exec {
        command: e.command.clone(),
        kind,
    };
    let program = if e.command.contains('/') && Path::new(&e.command).is_relative() {
        e.dir.join(&e.command)
    } else {
        PathBuf::from(&e.command)
    };
    let exec_info = serde_json::json!({
        "apiVersion": e.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": false},
    });
    let mut child = Command::new(program)
        .args(&e.args)
        .envs(e.env.iter().map(|(k, v)| (k, v)))
        .env("KUBERNETES_EXEC_INFO", exec_info.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| fail(ExecFailure::Spawn(err)))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(EXEC_MAX_OUTPUT).read_to_end(&mut out);
        }
        out
    });
    let deadline = Instant::now() + EXEC_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(ExecFailure::Timeout));
            }
            Err(err) => return Err(fail(ExecFailure::Spawn(err))),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(ExecFailure::Exit(status.code())));
    }
    parse_exec_credential(&out).map_err(fail)
}

/// Extracts the token and expiry from an `ExecCredential` document.
fn parse_exec_credential(out: &[u8]) -> Result<(BearerToken, Option<SystemTime>), ExecFailure> {
    let v: serde_json::Value = serde_json::from_slice(out).map_err(ExecFailure::Output)?;
    let api = v.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("");
    if !API_VERSIONS.contains(&api) {
        return Err(ExecFailure::ApiVersion);
    }
    let status = &v["status"];
    let token = status
        .get("token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or(ExecFailure::NoToken)?;
    let expires = match status.get("expirationTimestamp").and_then(|t| t.as_str()) {
        None => None,
        Some(ts) => {
            let t = rfc3339::parse(ts).ok_or(ExecFailure::Expiry)?;
            Some(SystemTime::from(t))
        }
    };
    Ok((BearerToken::new(token), expires))
}

/// The exec plugin API versions we speak.
pub const API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "acrpull-kube-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    /// Writes an exec plugin that counts its runs in `runs` and prints a token expiring at `expiry`.
    fn plugin(dir: &Path, expiry: &str) -> ExecConfig {
        let script = dir.join("plugin.sh");
        let body = format!(
            "#!/bin/sh\necho x >> \"$RUNS_FILE\"\nn=$(wc -l < \"$RUNS_FILE\")\n\
             echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
             \"status\":{{\"token\":\"tok-'$n'\",\"expirationTimestamp\":\"{expiry}\"}}}}'\n"
        );
        std::fs::write(&script, body).expect("write plugin");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        ExecConfig {
            command: "./plugin.sh".into(),
            args: vec![],
            env: vec![("RUNS_FILE".into(), dir.join("runs").display().to_string())],
            api_version: API_VERSIONS[0].into(),
            dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn exec_token_is_cached_until_expiry_and_rerun_on_refresh() {
        let dir = temp_dir("exec-cache");
        let creds = Credentials::new(Auth::Exec(plugin(&dir, "2099-01-01T00:00:00Z")));
        assert_eq!(creds.bearer(false).unwrap().unwrap().expose(), "tok-1");
        assert_eq!(creds.bearer(false).unwrap().unwrap().expose(), "tok-1");
        assert_eq!(creds.bearer(true).unwrap().unwrap().expose(), "tok-2");
    }

    #[test]
    fn expired_exec_token_is_fetched_again() {
        let dir = temp_dir("exec-expired");
        let creds = Credentials::new(Auth::Exec(plugin(&dir, "2000-01-01T00:00:00Z")));
        assert_eq!(creds.bearer(false).unwrap().unwrap().expose(), "tok-1");
        assert_eq!(creds.bearer(false).unwrap().unwrap().expose(), "tok-2");
    }

    #[test]
    fn failing_plugin_is_a_typed_error_without_output() {
        let dir = temp_dir("exec-fail");
        let script = dir.join("fail.sh");
        std::fs::write(&script, "#!/bin/sh\necho secret-ish >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ExecConfig {
            command: script.display().to_string(),
            args: vec![],
            env: vec![],
            api_version: API_VERSIONS[1].into(),
            dir,
        };
        let err = run_exec(&e).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Exec {
                kind: ExecFailure::Exit(Some(3)),
                ..
            }
        ));
        assert!(!err.to_string().contains("secret-ish"));
        let missing = ExecConfig {
            command: "/nonexistent/plugin".into(),
            ..e
        };
        assert!(matches!(
            run_exec(&missing),
            Err(ConfigError::Exec {
                kind: ExecFailure::Spawn(_),
                ..
            })
        ));
    }

    #[test]
    fn exec_credential_without_token_or_with_bad_version_is_rejected() {
        let no_token = br#"{"apiVersion":"client.authentication.k8s.io/v1","status":{"clientCertificateData":"x"}}"#;
        assert!(matches!(
            parse_exec_credential(no_token),
            Err(ExecFailure::NoToken)
        ));
        let bad =
            br#"{"apiVersion":"client.authentication.k8s.io/v1alpha1","status":{"token":"t"}}"#;
        assert!(matches!(
            parse_exec_credential(bad),
            Err(ExecFailure::ApiVersion)
        ));
        let bad_time = br#"{"apiVersion":"client.authentication.k8s.io/v1","status":{"token":"t","expirationTimestamp":"soon"}}"#;
        assert!(matches!(
            parse_exec_credential(bad_time),
            Err(ExecFailure::Expiry)
        ));
    }

    #[test]
    fn token_file_is_reread_after_a_refresh_request() {
        let dir = temp_dir("token-file");
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let creds = Credentials::new(Auth::TokenFile(path.clone()));
        assert_eq!(creds.bearer(false).unwrap().unwrap().expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(creds.bearer(false).unwrap().unwrap().expose(), "first");
        assert_eq!(creds.bearer(true).unwrap().unwrap().expose(), "second");
    }

    #[test]
    fn debug_output_never_shows_token_values() {
        let t = BearerToken::new("s3cr3t");
        assert!(!format!("{t:?}").contains("s3cr3t"));
        let auth = Auth::Token(t);
        assert!(!format!("{auth:?}").contains("s3cr3t"));
    }
}
