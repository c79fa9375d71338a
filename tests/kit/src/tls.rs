//! The kit's certificate authority: one CA per test run, leaf certificates for the fakes, kubeconfigs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throw-away certificate authority that issues server certificates for the fakes.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    /// Generates a fresh CA (ECDSA P-256, valid for the life of any test run).
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("ring can always generate a P-256 key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "acrpull test kit CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .expect("fixed CA parameters always self-sign");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM-encoded (what a client trusts).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER-encoded.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A rustls server configuration presenting a new leaf for these DNS names and IP addresses
    /// (wildcards such as `*.azurecr.io` allowed), chained to this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.leaf(names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a freshly issued leaf matches its key");
        Arc::new(config)
    }

    /// Issues a leaf certificate chain and its private key for these names.
    pub fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("ring can always generate a P-256 key");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params =
            CertificateParams::new(sans).expect("the kit only asks for valid DNS names and IPs");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the kit CA can sign any leaf");
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.der.clone()], key_der)
    }

    /// Writes the CA certificate to `dir/ca.crt` and returns that path.
    pub fn write_pem(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = dir.join("ca.crt");
        std::fs::write(&path, &self.pem)?;
        Ok(path)
    }
}

impl Default for Ca {
    fn default() -> Ca {
        Ca::new()
    }
}

/// Writes a standard kubeconfig (one cluster, one token user, one current context) to `path`.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    token: &str,
) -> io::Result<()> {
    write_kubeconfig_for(
        path,
        server_url,
        ca_pem,
        serde_json::json!({"token": token}),
    )
}

/// Writes a kubeconfig whose user reads its bearer token from `token_file` (`tokenFile:`), as a
/// rotated, projected credential is configured; the client must re-read the file.
pub fn write_kubeconfig_token_file(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    token_file: &Path,
) -> io::Result<()> {
    let user = serde_json::json!({"tokenFile": token_file.display().to_string()});
    write_kubeconfig_for(path, server_url, ca_pem, user)
}

fn write_kubeconfig_for(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    user: serde_json::Value,
) -> io::Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kit", "cluster": {
            "server": server_url,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": "kit-admin", "user": user}],
        "contexts": [{"name": "kit", "context": {"cluster": "kit", "user": "kit-admin"}}],
        "current-context": "kit",
        "preferences": {},
    });
    let yaml = serde_yaml::to_string(&config).map_err(io::Error::other)?;
    // Written aside and renamed into place: a second replica's start rewrites the file while the
    // first may be reading it, and a half-written kubeconfig is an error, not a retry.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_pem_is_a_certificate() {
        let ca = Ca::new();
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn leaf_chain_ends_with_the_ca() {
        let ca = Ca::new();
        let (chain, _) = ca.leaf(&["localhost", "127.0.0.1", "*.azurecr.io"]);
        assert_eq!(chain.len(), 2);
        assert_eq!(&chain[1], ca.der());
    }

    #[test]
    fn kubeconfig_carries_server_ca_and_token() {
        let dir = std::env::temp_dir().join(format!("kit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        write_kubeconfig(&path, "https://127.0.0.1:1", "PEM", "tok").unwrap();
        let v: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["current-context"].as_str(), Some("kit"));
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:1")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some(STANDARD.encode("PEM").as_str())
        );
        assert_eq!(v["users"][0]["user"]["token"].as_str(), Some("tok"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_file_kubeconfig_names_the_file_and_no_token() {
        let dir = std::env::temp_dir().join(format!("kit-tls-tf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        let file = dir.join("token");
        write_kubeconfig_token_file(&path, "https://127.0.0.1:1", "PEM", &file).unwrap();
        let v: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let user = &v["users"][0]["user"];
        assert_eq!(
            user["tokenFile"].as_str(),
            Some(file.display().to_string().as_str())
        );
        assert!(user.get("token").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
