//! The HTTPS certificate: the operator's files, or a self-signed one generated once and kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A loaded certificate chain and key, with what the operator needs to know about them.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate, `AB:CD:…`, to compare with what a browser shows.
    pub fingerprint: String,
    /// Where the certificate was read from (or generated to).
    pub cert_path: PathBuf,
}

impl Identity {
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Read { path, source }
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(read_err(cert))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err(cert))?;
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(cert.to_owned()))?;
        let fingerprint = fingerprint(leaf);
        let key = PrivateKeyDer::from_pem_file(key).map_err(read_err(key))?;
        Ok(Self {
            chain,
            key,
            fingerprint,
            cert_path: cert.to_owned(),
        })
    }

    /// Loads `cert.pem`/`key.pem` from `dir`, generating them on first run. The certificate names
    /// `localhost`, the loopback addresses, this host's name and its current addresses, and
    /// `public_host` (`--public-host`): one kept from a run without that name is made again.
    pub fn self_signed(dir: &Path, public_host: Option<&str>) -> Result<Self, TlsError> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            let kept = Self::from_files(&cert, &key)?;
            match public_host {
                Some(name) if !kept.names(name) => {
                    tracing::info!(name, "the kept certificate does not name --public-host");
                }
                _ => return Ok(kept),
            }
        }
        let mut names = subject_alt_names();
        names.extend(public_host.map(str::to_owned));
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Write { path, source }
        };
        fs::create_dir_all(dir).map_err(write_err(dir))?;
        let generated = rcgen::generate_simple_self_signed(names)?;
        fs::write(&cert, generated.cert.pem()).map_err(write_err(&cert))?;
        write_private(&key, generated.signing_key.serialize_pem().as_bytes())
            .map_err(write_err(&key))?;
        tracing::info!(path = %cert.display(), "generated a self-signed certificate");
        Self::from_files(&cert, &key)
    }

    /// Whether the leaf certificate carries `name` (a DNS name is its ASCII bytes in the DER).
    fn names(&self, name: &str) -> bool {
        self.chain.first().is_some_and(|leaf| {
            leaf.as_ref()
                .windows(name.len())
                .any(|w| w.eq_ignore_ascii_case(name.as_bytes()))
        })
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn subject_alt_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    for iface in if_addrs::get_if_addrs().unwrap_or_default() {
        if !iface.is_loopback() {
            names.push(iface.ip().to_string());
        }
    }
    names.dedup();
    names
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = std::env::temp_dir().join(format!("huddle-tls-{}", std::process::id()));
        let first = Identity::self_signed(&dir, None).unwrap();
        let second = Identity::self_signed(&dir, None).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        // A server name it does not cover makes a new one that does, kept from then on.
        let named = Identity::self_signed(&dir, Some("meet.example.org")).unwrap();
        assert_ne!(named.fingerprint, first.fingerprint);
        assert!(named.names("meet.example.org") && !first.names("meet.example.org"));
        let again = Identity::self_signed(&dir, Some("meet.example.org")).unwrap();
        assert_eq!(again.fingerprint, named.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        assert!(first.server_config(&[b"http/1.1"]).is_ok());
        let mode = fs::metadata(dir.join("key.pem")).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_files_are_named() {
        let err = Identity::from_files(Path::new("/nonexistent/c.pem"), Path::new("/x")).err();
        assert!(err.unwrap().to_string().contains("/nonexistent/c.pem"));
    }
}
