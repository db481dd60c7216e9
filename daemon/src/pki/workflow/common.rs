//! What both kinds of regenerate share (a managed CA's and an outside CA's, [`super::csr`]):
//! the request, report and error types, the new key of a workflow ([`step_key`]) and the
//! helpers that read an issued certificate and carry names over.

use std::fs;
use std::path::{Path, PathBuf};

use certctl_store::{
    AuditEvent, Certificate, ReloadHook, Store, StoreError, Workflow, WorkflowStep,
};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use rcgen::{DistinguishedName, DnType, SanType};
use serde::{Deserialize, Serialize};

use crate::inventory::query::QueryError;
use crate::pki::ca::{self, private_dir, write_atomic, CaError, FileMode, KeyKind, Secret};
use crate::pki::crl::CrlCheck;
use crate::pki::reload::ReloadOutcome;
use crate::pki::revoke::RevokeError;

/// Errors of the workflows and history queries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkflowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Revoke(#[from] RevokeError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(
        "`{0}` names several certificates; give a fingerprint prefix of the one to replace:\n{1}"
    )]
    SeveralMatches(String, String),
    #[error("certctl does not hold the key of the CA that issued {name} ({issuer}): regenerate needs a managed CA (`certctl ca list`); or give --csr OUT.csr to have that CA sign a new key, then `certctl workflows complete ID --cert FILE`")]
    NotManaged { name: String, issuer: String },
    #[error("workflow {id} is at step {step}: `workflows complete` takes the certificate of a workflow awaiting one (see `certctl workflows`)")]
    NotAwaiting { id: u64, step: WorkflowStep },
    #[error("{}: {cause}; workflow {id} is unchanged", path.display())]
    WrongCertificate {
        id: u64,
        path: PathBuf,
        cause: String,
    },
    #[error("workflow {id}: the workflow's key {} is encrypted: give its passphrase with --passphrase-file FILE or CERTCTL_CA_PASSPHRASE", path.display())]
    KeyPassphrase { id: u64, path: PathBuf },
    #[error("workflow {id}: reload hook for {target}: {detail}; fix it, then `certctl workflows resume {id}` runs the hook again (not the deploy)")]
    Reload {
        id: u64,
        target: String,
        detail: String,
    },
    #[error("{0} is a CA certificate: regenerate replaces leaf certificates only")]
    IsCa(String),
    #[error("no workflow has id {0} (see `certctl workflows`)")]
    NoSuchWorkflow(u64),
    #[error("workflow {id}, step {step}: {cause}")]
    Step {
        id: u64,
        step: WorkflowStep,
        cause: String,
    },
    #[error("{}: {cause}", path.display())]
    Deploy { path: PathBuf, cause: String },
    #[error("cannot use the policies: {0}")]
    Policy(String),
}

/// `certctl regenerate ID [--revoke-old] [--deploy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegenerateRequest {
    /// The certificate to replace: a fingerprint prefix or an exact name (`regenerate ID`).
    pub id: String,
    /// `--revoke-old`: revoke the old certificate (reason `superseded`, its CA's CRL
    /// published) once the new one is written.
    pub revoke_old: bool,
    /// `--deploy`: write the new certificate and key over the files where the old one was
    /// found (atomically, the old files kept as `FILE.bak`).
    pub deploy: bool,
    /// A key type for the new key (default: the same as the old one, or a stronger one if
    /// the certificate's policy demands it).
    pub key: Option<KeyKind>,
    /// Policies folder (absolute) whose key rules (`min_rsa_bits`, `allowed_curves`) the
    /// new key must meet.
    pub policies: Option<PathBuf>,
    /// The CA passphrase and PFX password this run may need (never stored in the workflow).
    pub secrets: WorkflowSecrets,
    /// `--csr OUT` (absolute): the certificate comes from a CA certctl does not hold; the
    /// CSR is written here and the workflow waits for `workflows complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<PathBuf>,
    /// Reload hooks of deploy targets (`[[workflows.targets]]`), kept in the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<ReloadHook>,
}

/// What a workflow may need but never stores: given again on resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkflowSecrets {
    /// Passphrase of the CA key.
    pub passphrase: Option<Secret>,
    /// Password of the PKCS#12 files deployed to (the new file gets the same one).
    pub pfx_password: Option<Secret>,
}

/// What a workflow run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowReport {
    /// The workflow record as it stands after this run (id, step, paths, `last_error`,
    /// ...): the top-level fields of the workflow JSON.
    pub workflow: Workflow,
    /// The certificate being replaced (`old` in the workflow JSON); `None` if the store no
    /// longer holds it.
    pub old: Option<Certificate>,
    /// The replacement (`new` in the workflow JSON); `None` until it is issued (or received
    /// with `workflows complete`).
    pub new: Option<Certificate>,
    /// The workflow's own files (`new.key`, `new.pem`, `new.chain.pem`).
    pub files: Vec<PathBuf>,
    /// The CRL files read back after this run revoked the old certificate (`--revoke-old`),
    /// `crl_checks` in the workflow JSON; empty when this run did not revoke it.
    pub crl_checks: Vec<CrlCheck>,
    /// The reload hooks this run ran.
    #[serde(default)]
    pub reloads: Vec<ReloadOutcome>,
    /// What the endpoints that served the old certificate serve after the reload.
    #[serde(default)]
    pub endpoints: Vec<EndpointServes>,
    /// Whether this run passed the reload step (its endpoints are then probed).
    #[serde(skip)]
    pub probe_due: bool,
    /// Why certd's automatic renewal started it (`auto-renewal: expires D, renew_before
    /// X`); `None` for a workflow a person started (`workflows` listing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_reason: Option<String>,
}

/// What an endpoint that served the old certificate serves after the deploy and reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointServes {
    /// `host:port`.
    pub endpoint: String,
    /// `serves-new`, `serves-old`, `serves-other` or `unreachable`.
    pub state: String,
    /// A sentence: what it serves now (and what to do if still the old one), or the probe's
    /// error.
    pub detail: String,
}

pub(crate) fn step_err(wf: &Workflow, step: WorkflowStep) -> impl FnOnce(String) -> WorkflowError {
    let id = wf.id;
    move |cause| WorkflowError::Step { id, step, cause }
}

/// What the `issued` step starts from, for a managed CA's workflow and a `--csr` one alike:
/// the workflow's key ([`step_key`]), its folder (the certificate goes to `new.pem` there)
/// and the certificate it replaces, which must still be in the store.
pub(crate) fn issued_step_start(
    store: &Store,
    wf: &Workflow,
    secrets: &WorkflowSecrets,
) -> Result<(PKey<Private>, PathBuf, Certificate), WorkflowError> {
    let key = step_key(wf, secrets)?;
    let old = store.get(&wf.old)?.ok_or_else(|| {
        step_err(wf, WorkflowStep::Issued)("the old certificate left the store".into())
    })?;
    Ok((key, PathBuf::from(&wf.dir), old))
}

/// The new key: read back if it was already written, else generated and persisted (0600;
/// encrypted PKCS#8 with the passphrase, as a managed CA's key, when `key_encrypted`).
pub(crate) fn step_key(
    wf: &Workflow,
    secrets: &WorkflowSecrets,
) -> Result<PKey<Private>, WorkflowError> {
    let dir = PathBuf::from(&wf.dir);
    let path = dir.join("new.key");
    let passphrase = if wf.key_encrypted {
        Some(
            secrets
                .passphrase
                .as_ref()
                .ok_or_else(|| WorkflowError::KeyPassphrase {
                    id: wf.id,
                    path: path.clone(),
                })?,
        )
    } else {
        None
    };
    if let Ok(bytes) = fs::read(&path) {
        match ca::load_private_key(&bytes, passphrase) {
            Ok(k) => return Ok(k),
            Err(ca::KeyLoadError::NeedsPassphrase) => {
                return Err(WorkflowError::KeyPassphrase { id: wf.id, path })
            }
            Err(ca::KeyLoadError::Unreadable(cause)) if wf.key_encrypted => {
                return Err(step_err(wf, WorkflowStep::KeyGenerated)(format!(
                    "{}: {cause}",
                    path.display()
                )))
            }
            // A torn file from a crash before the key was persisted: a new key.
            Err(ca::KeyLoadError::Unreadable(_)) => {}
        }
    }
    let kind: KeyKind = wf.key_kind.parse()?;
    let key = kind.generate()?;
    private_dir(&dir)?;
    let pem = match passphrase {
        Some(p) => ca::encrypted_pkcs8_pem(&key, p)?,
        None => key
            .private_key_to_pem_pkcs8()
            .map_err(|e| step_err(wf, WorkflowStep::KeyGenerated)(e.to_string()))?,
    };
    write_atomic(&path, &pem, FileMode::Private)?;
    Ok(key)
}
/// The certificate already issued by an interrupted run, if `new.pem` holds one for `key`.
pub(crate) fn read_issued(path: &Path, key: &PKey<Private>) -> Option<Vec<u8>> {
    let bytes = fs::read(path).ok()?;
    let cert = X509::from_pem(&bytes).ok()?;
    let matches = cert.public_key().ok()?.public_eq(key);
    if matches {
        cert.to_der().ok()
    } else {
        None
    }
}

/// Records an audit event unless the same one (action and detail) is already there: a
/// resumed step does not log twice.
pub(crate) fn audit_once(store: &Store, event: &AuditEvent) -> Result<(), StoreError> {
    if let Some(fp) = &event.fingerprint {
        if store
            .history(fp)?
            .iter()
            .any(|e| e.action == event.action && e.detail == event.detail)
        {
            return Ok(());
        }
    }
    store.record_audit(event)
}

pub(crate) fn sans_of(cert: &Certificate) -> Vec<SanType> {
    let s = &cert.facts.sans;
    let mut out = Vec::new();
    for d in &s.dns {
        if let Ok(v) = d.as_str().try_into() {
            out.push(SanType::DnsName(v));
        }
    }
    for ip in &s.ip {
        if let Ok(v) = ip.parse() {
            out.push(SanType::IpAddress(v));
        }
    }
    for e in &s.email {
        if let Ok(v) = e.as_str().try_into() {
            out.push(SanType::Rfc822Name(v));
        }
    }
    for u in &s.uri {
        if let Ok(v) = u.as_str().try_into() {
            out.push(SanType::URI(v));
        }
    }
    out
}

/// Rebuilds a name from its RFC 2253 string (as certctl stores subjects): RDNs are split on
/// unescaped `,`, reversed into encoding order, and mapped to attribute types.
pub(crate) fn parse_rfc2253(s: &str) -> DistinguishedName {
    let mut rdns: Vec<(String, String)> = Vec::new();
    let mut key = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else { break };
                if n.is_ascii_hexdigit() && chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) {
                    let d = chars.next().unwrap_or('0');
                    let byte = u8::from_str_radix(&format!("{n}{d}"), 16).unwrap_or(b'?');
                    value.push(char::from(byte));
                } else {
                    value.push(n);
                }
            }
            '=' if !in_value => in_value = true,
            ',' | '+' => {
                rdns.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                in_value = false;
            }
            c if in_value => value.push(c),
            c => key.push(c),
        }
    }
    if !key.is_empty() {
        rdns.push((key, value));
    }
    let mut dn = DistinguishedName::new();
    for (k, v) in rdns.into_iter().rev() {
        let ty = match k.trim() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "DC" => DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25]),
            "UID" => DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 1]),
            "emailAddress" => DnType::CustomDnType(vec![1, 2, 840, 113_549, 1, 9, 1]),
            "serialNumber" => DnType::CustomDnType(vec![2, 5, 4, 5]),
            "STREET" => DnType::CustomDnType(vec![2, 5, 4, 9]),
            "title" => DnType::CustomDnType(vec![2, 5, 4, 12]),
            "postalCode" => DnType::CustomDnType(vec![2, 5, 4, 17]),
            other => {
                let arcs: Option<Vec<u64>> = other.split('.').map(|a| a.parse().ok()).collect();
                match arcs {
                    Some(a) if a.len() >= 2 => DnType::CustomDnType(a),
                    _ => continue,
                }
            }
        };
        dn.push(ty, v);
    }
    dn
}
