//! `certd scep enroll`: one enrollment (or renewal) by hand with a `[[scep]]` block of
//! certd.toml, for an admin who sets SCEP up (does the challenge work? is the pin right?)
//! and for certificates certctl does not track yet. The renewal pass uses the same
//! [`super::Client`] through the CSR workflow.
//!
//! The new key (RSA 2048) stays in memory until the server issued the certificate; then the
//! key (0600) and the certificate (with the chain the server sent) are written atomically.
//! A refusal writes nothing.

use std::path::{Path, PathBuf};

use openssl::x509::X509;
use serde::Serialize;

use super::{Client, Enrollment, Outcome, ScepConfig, ScepError};
use crate::pki::ca::{self, write_atomic, FileMode, KeyKind};

/// What `certd scep enroll` asks for.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The subject's common name.
    pub cn: String,
    /// DNS names for the subjectAltName.
    pub dns: Vec<String>,
    /// Where the new private key is written (`--key`): PKCS#8 PEM, 0600, atomically, only
    /// once the server issued the certificate.
    pub key_out: PathBuf,
    /// Where the issued certificate is written (`--cert`): PEM, then the chain the server
    /// sent, atomically, only once issued.
    pub cert_out: PathBuf,
    /// The current certificate and key, for a RenewalReq where the server offers it.
    pub renew: Option<(PathBuf, PathBuf)>,
}

/// What was issued (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct EnrollReport {
    /// The `[[scep]]` block's `name` (`--server`).
    pub server: String,
    /// `PKCSReq` or `RenewalReq`.
    pub request: &'static str,
    /// The SCEP transactionID of the request.
    pub transaction_id: String,
    /// The issued certificate's subject DN (RFC 2253).
    pub subject: String,
    /// Its serial number, lowercase hex without leading zeros.
    pub serial: String,
    /// When it expires, RFC 3339 UTC.
    pub not_after: String,
    /// Its SHA-256 fingerprint, 64 lowercase hex digits.
    pub sha256: String,
    /// Where the new key was written (`--key`).
    pub key: PathBuf,
    /// Where the certificate and chain were written (`--cert`).
    pub cert: PathBuf,
}

/// Why `certd scep enroll` failed: the files, or the SCEP exchange.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The SCEP exchange failed: the server refused, was unreachable or misbehaved (exit 1).
    #[error(transparent)]
    Scep(#[from] ScepError),
    /// Generating the new key, reading the renewal key file, or writing the key or
    /// certificate file failed (exit 2).
    #[error(transparent)]
    Files(#[from] ca::CaError),
    /// The server has not decided yet (it awaits its admin's approval): nothing was written
    /// (exit 1).
    #[error("SCEP server `{server}`: the request (transaction {transaction_id}) is still pending after {waited}s; nothing was written (the server's admin must approve it; certd's renewal pass polls by itself)")]
    Pending {
        /// The `[[scep]]` block's `name` in certd.toml (`--server`).
        server: String,
        /// The SCEP transactionID of the request, to find it on the server.
        transaction_id: String,
        /// How long certd polled before giving up (the `[[scep]] poll_timeout`), in seconds.
        waited: u64,
    },
    /// A file or argument could not be used: the current certificate or key of a renewal
    /// unreadable (or the key encrypted), a bad `--dns` name, the new key or certificate
    /// not encodable (exit 2).
    #[error("{}: {cause}", path.display())]
    Read {
        /// The file (or the option, e.g. `--dns`) at fault.
        path: PathBuf,
        /// What was wrong with it.
        cause: String,
    },
}

fn read_err(path: &Path) -> impl Fn(String) -> AdminError + '_ {
    move |cause| AdminError::Read {
        path: path.to_path_buf(),
        cause,
    }
}

/// Enrolls with `server` and writes the key and certificate.
pub fn enroll(server: &ScepConfig, req: &EnrollRequest) -> Result<EnrollReport, AdminError> {
    let current = match &req.renew {
        Some((cert_path, key_path)) => {
            let bytes = std::fs::read(cert_path).map_err(|e| read_err(cert_path)(e.to_string()))?;
            let cert = X509::from_pem(&bytes)
                .or_else(|_| X509::from_der(&bytes))
                .map_err(|e| read_err(cert_path)(format!("not a certificate: {e}")))?;
            let key_bytes = crate::files::read::read_private_file(key_path)
                .map_err(crate::pki::ca::CaError::from)?;
            let key = ca::load_private_key(&key_bytes, None).map_err(|e| {
                read_err(key_path)(match e {
                    ca::KeyLoadError::NeedsPassphrase => "the key is encrypted".into(),
                    ca::KeyLoadError::Unreadable(c) => c,
                })
            })?;
            Some((cert, key))
        }
        None => None,
    };
    let key = KeyKind::Rsa2048.generate()?;
    let mut params = rcgen::CertificateParams::new(req.dns.clone())
        .map_err(|e| read_err(Path::new("--dns"))(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, req.cn.clone());
    let enrollment = Enrollment {
        key: &key,
        params,
        current: current.as_ref().map(|(c, k)| (c, k)),
        resume: false,
    };
    let issued = match Client::new(server).enroll(&enrollment)? {
        Outcome::Issued(issued) => issued,
        Outcome::Pending {
            transaction_id,
            waited,
        } => {
            return Err(AdminError::Pending {
                server: server.name.clone(),
                transaction_id,
                waited: waited.as_secs(),
            })
        }
    };
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| read_err(&req.key_out)(e.to_string()))?;
    let mut cert_pem = Vec::new();
    for c in std::iter::once(&issued.cert).chain(issued.chain.iter()) {
        cert_pem.extend(
            c.to_pem()
                .map_err(|e| read_err(&req.cert_out)(e.to_string()))?,
        );
    }
    write_atomic(&req.key_out, &key_pem, FileMode::Private)?;
    write_atomic(&req.cert_out, &cert_pem, FileMode::Public)?;
    let der = issued.cert.to_der().unwrap_or_default();
    let facts = crate::certs::x509::facts_from_der(&der)
        .map_err(|e| read_err(&req.cert_out)(e.to_string()))?;
    Ok(EnrollReport {
        server: server.name.clone(),
        request: if issued.renewal {
            "RenewalReq"
        } else {
            "PKCSReq"
        },
        transaction_id: issued.transaction_id,
        subject: facts.subject.clone(),
        serial: facts.serial.clone(),
        not_after: certctl_store::rfc3339(facts.not_after),
        sha256: facts.fingerprint.to_string(),
        key: req.key_out.clone(),
        cert: req.cert_out.clone(),
    })
}
