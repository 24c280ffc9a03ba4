//! The control plane's certificates: one CA that signs the API server's serving certificate and the
//! client certificates of each component, plus the service-account signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pair: Pair,
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Io { path: path.display().to_string(), source })
}

fn save(dir: &Path, name: &str, cert_pem: String, key_pem: String) -> Result<Pair, PkiError> {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    write(&cert, &cert_pem)?;
    write(&key, &key_pem)?;
    Ok(Pair { cert, key, cert_pem, key_pem })
}

impl Ca {
    pub fn new(dir: &Path, common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        let pair = save(dir, "ca", cert.pem(), key.serialize_pem())?;
        Ok(Ca { params, key, pair })
    }

    /// A certificate for `cn` in the organisations `orgs` (Kubernetes reads them as groups),
    /// valid for the given DNS names and IPs, for serving and/or client use.
    pub fn issue(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        server: bool,
    ) -> Result<Pair, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        for san in sans {
            params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into()?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        save(dir, name, cert.pem(), key.serialize_pem())
    }
}

/// The key pair the API server verifies and the controller manager signs service-account tokens
/// with: (private key file, public key file).
pub fn service_account_keys(dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
    let key = KeyPair::generate()?;
    let (private, public) = (dir.join("sa.key"), dir.join("sa.pub"));
    write(&private, &key.serialize_pem())?;
    write(&public, &key.public_key_pem())?;
    Ok((private, public))
}
