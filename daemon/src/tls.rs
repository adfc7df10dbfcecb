//! TLS for the daemons' HTTP clients (probes, pushes, etcd): the CAs a
//! server's certificate must chain to (besides the system's roots) and a
//! client certificate, read from PEM files; and errors with their causes.

use std::path::{Path, PathBuf};

/// PEM text and the file it came from (logs show the file, never the text).
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub file: PathBuf,
    pub text: Vec<u8>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pem").field(&self.file).finish()
    }
}

impl Pem {
    /// Reads `file`; the error names it.
    pub fn read(file: &Path) -> Result<Pem, String> {
        std::fs::read(file)
            .map(|text| Pem {
                file: file.to_owned(),
                text,
            })
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
    }
}

/// What an HTTP client trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates a server's certificate may chain to, besides the
    /// system's roots.
    pub ca: Option<Pem>,
    /// A client certificate followed by its private key, for servers that
    /// ask for one.
    pub identity: Option<Pem>,
}

impl ClientTls {
    /// Adds these settings to an HTTP client; the error says which file is
    /// not what it should be.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        if let Some(ca) = &self.ca {
            let certificates = reqwest::Certificate::from_pem_bundle(&ca.text).map_err(|e| {
                format!(
                    "{}: not PEM certificates: {}",
                    ca.file.display(),
                    cause_chain(&e)
                )
            })?;
            if certificates.is_empty() {
                return Err(format!("{}: holds no certificate", ca.file.display()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(identity) = &self.identity {
            let identity = reqwest::Identity::from_pem(&identity.text).map_err(|e| {
                format!(
                    "{}: not a PEM certificate and private key: {}",
                    identity.file.display(),
                    cause_chain(&e)
                )
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }

    /// Checks the files, as [`ClientTls::apply`] would use them.
    pub fn check(&self) -> Result<(), String> {
        self.apply(reqwest::Client::builder()).map(drop)
    }
}

/// An error with its causes, `a: b: c`. reqwest's own text stops at "error
/// sending request", which does not say that the connection was refused or
/// the certificate not trusted.
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = ClientTls {
            ca: Some(Pem::read(&junk).unwrap()),
            identity: None,
        };
        let error = tls.check().unwrap_err();
        assert!(error.contains("ca.pem"), "{error}");
        assert!(
            Pem::read(&dir.path().join("absent"))
                .unwrap_err()
                .contains("absent")
        );
    }
}
