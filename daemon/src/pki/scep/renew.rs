//! A SCEP renewal, as certd's renewal pass runs it ([`crate::pki::renewal`]): the
//! certificate's CSR workflow waits at `awaiting-certificate` with its new RSA key
//! (`new.key`); this enrolls that key at the policy's `[[scep]]` server with the old
//! certificate's subject and names (the CSR carries the challenge password, so it is made
//! here rather than taken from `new.csr`) and hands the issued certificate back, and the
//! renewal completes the workflow with it (checked, recorded, deployed, reloaded).
//!
//! RenewalReq where the server offers it: signed with the old certificate and its key, found
//! where the old certificate is deployed (in the same PEM file, or a sibling key file such
//! as `NAME.key`, read only when it is private, 0600). Without it, a PKCSReq.
//!
//! A PENDING answer leaves `scep-pending` in the workflow folder; the next attempt polls
//! (CertPoll) for the same transaction instead of asking again.

use std::path::{Path, PathBuf};

use certctl_store::{Certificate, SourceLocation};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::{Client, Enrollment, Outcome};
use certctl_store::Workflow;

use crate::config::Config;
use crate::pki::ca::CaError;
use crate::pki::workflow::{WorkflowError, WorkflowSecrets};

/// Why a SCEP renewal's enrollment did not return a certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnrollError {
    #[error("SCEP server `{server}`: {cause}")]
    Scep { server: String, cause: String },
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// What a SCEP enrollment gets: everything about the renewal, at the moment the CSR
/// workflow waits at `awaiting-certificate`.
pub(crate) struct ScepEnrollment<'a> {
    /// certd's configuration (its `[[scep]]` servers).
    pub config: &'a Config,
    /// The `[[scep]]` server, by name.
    pub server: &'a str,
    /// The workflow (its folder holds `new.key`, RSA, and `new.csr`).
    pub workflow: &'a Workflow,
    /// The certificate being renewed (its current files hold the key a RenewalReq is signed
    /// with).
    pub old: &'a Certificate,
    pub secrets: &'a WorkflowSecrets,
}

/// What the SCEP server answered.
#[derive(Debug, Clone)]
pub(crate) enum ScepOutcome {
    /// The certificate (DER), then its chain (DER), leaf first.
    Issued(Vec<Vec<u8>>),
    /// PENDING: polled again at the next pass (CertPoll); `detail` says what is awaited.
    Pending { detail: String },
}

/// The marker of a request answered PENDING (its content: the transaction ID).
pub(crate) const PENDING_MARKER: &str = "scep-pending";

/// Enrolls the workflow's key at its SCEP server.
pub(crate) fn enroll(e: &ScepEnrollment<'_>) -> Result<ScepOutcome, EnrollError> {
    let scep_err = |cause: String| EnrollError::Scep {
        server: e.server.to_string(),
        cause,
    };
    let server = e
        .config
        .scep
        .iter()
        .find(|s| s.name == e.server)
        .ok_or_else(|| scep_err("certd.toml has no [[scep]] block of that name".into()))?;
    let key = crate::pki::workflow::step_key(e.workflow, e.secrets)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = crate::pki::workflow::parse_rfc2253(&e.old.facts.subject);
    params.subject_alt_names = crate::pki::workflow::sans_of(e.old);
    let current = current_credentials(e.old);
    let dir = PathBuf::from(&e.workflow.dir);
    let marker = dir.join(PENDING_MARKER);
    let enrollment = Enrollment {
        key: &key,
        params,
        current: current.as_ref().map(|(c, k)| (c, k)),
        resume: marker.is_file(),
    };
    let outcome = Client::new(server).enroll(&enrollment);
    match outcome {
        Ok(Outcome::Issued(issued)) => {
            let _ = std::fs::remove_file(&marker);
            let mut ders = Vec::new();
            for cert in std::iter::once(&issued.cert).chain(issued.chain.iter()) {
                ders.push(cert.to_der().map_err(|err| scep_err(err.to_string()))?);
            }
            tracing::info!(
                workflow = e.workflow.id,
                server = e.server,
                request = if issued.renewal {
                    "RenewalReq"
                } else {
                    "PKCSReq"
                },
                "SCEP server issued the certificate"
            );
            Ok(ScepOutcome::Issued(ders))
        }
        Ok(Outcome::Pending {
            transaction_id,
            waited,
        }) => {
            crate::pki::ca::write_atomic(
                &marker,
                transaction_id.as_bytes(),
                crate::pki::ca::FileMode::Private,
            )?;
            Ok(ScepOutcome::Pending {
                detail: format!(
                    "transaction {transaction_id} still pending after {}s of polling (the CA's admin must approve it)",
                    waited.as_secs()
                ),
            })
        }
        Err(err) => {
            // A refusal ends the transaction: the next attempt asks again.
            if matches!(err.failure, super::ScepFailure::Refused { .. }) {
                let _ = std::fs::remove_file(&marker);
            }
            Err(scep_err(err.failure.to_string()))
        }
    }
}

/// The old certificate and its RSA key where it is deployed, for a RenewalReq.
fn current_credentials(old: &Certificate) -> Option<(X509, PKey<Private>)> {
    let fp = old.fingerprint();
    old.sources
        .iter()
        .filter(|s| s.gone_since.is_none())
        .find_map(|s| {
            let SourceLocation::File { path, index } = &s.location else {
                return None;
            };
            let path = Path::new(path);
            let der = crate::pki::ca::cert_der_at(path, *index, &fp, None)?;
            let cert = X509::from_der(&der).ok()?;
            let public = cert.public_key().ok()?;
            key_files(path).into_iter().find_map(|candidate| {
                let bytes = crate::files::read::read_private_file(&candidate).ok()?;
                let key = crate::pki::ca::load_private_key(&bytes, None).ok()?;
                (key.rsa().is_ok() && key.public_eq(&public)).then(|| (cert.clone(), key))
            })
        })
}

/// Where the key of a certificate file may be: the file itself (PEM with the key), or a
/// sibling named like the ones the regenerate workflow rewrites.
fn key_files(cert_path: &Path) -> Vec<PathBuf> {
    let mut out = vec![cert_path.to_path_buf()];
    if let (Some(dir), Some(stem)) = (
        cert_path.parent(),
        cert_path.file_stem().and_then(|s| s.to_str()),
    ) {
        let stem = stem.trim_end_matches(".chain").trim_end_matches(".cert");
        for name in [
            format!("{stem}.key"),
            format!("{stem}-key.pem"),
            format!("{stem}.key.pem"),
            format!("{stem}_key.pem"),
        ] {
            out.push(dir.join(name));
        }
    }
    out
}
