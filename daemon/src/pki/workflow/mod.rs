//! The regenerate workflow (`certctl regenerate`, `certctl workflows [resume ID]`,
//! `workflows complete`). Inside: [`common`] (types, the new key, shared helpers) ← [`csr`]
//! (a certificate from a CA certctl does not hold) ← this state machine.
//!
//! A regenerate is a state machine persisted in the store ([`Workflow`]), one step at a time:
//!
//! ```text
//! requested → key-generated → issued → deployed → reloaded → old-revoked → done
//!                        ↘ awaiting-certificate ↗        (`regenerate --csr`)
//! ```
//!
//! Each step is idempotent and its completion is flushed to disk before the next begins:
//! - **key-generated**: the new key is written (0600, atomically) to `STORE/workflows/ID/new.key`
//!   *before* anything is signed; an existing key file is reused.
//! - **issued**: if `new.pem` exists it is the certificate (nothing is signed again); else the
//!   managed CA signs one (same subject, SANs and role; the same key type) and it is written
//!   atomically, then recorded. A crash between signing and writing leaves no certificate
//!   anywhere, so a resume signs exactly one.
//! - **deployed** (`--deploy`): every file where the old certificate was found is rewritten in
//!   its own format (PEM, PEM with key, DER, PKCS#12) with temp file + fsync + rename, the
//!   original kept as `FILE.bak`; a key file next to a certificate file (`X.key`,
//!   `X-key.pem`, `X.key.pem`) holding the old key is replaced too. A file that already holds
//!   the new certificate (or key) is skipped.
//! - **awaiting-certificate** (`--csr OUT`, for a certificate whose CA certctl does not
//!   hold): the new key stays in the workflow (encrypted PKCS#8 like a managed CA's key when
//!   a passphrase is given), a CSR with the old subject and SANs is written to OUT, and the
//!   workflow waits. `certctl workflows complete ID --cert FILE` checks that FILE's key is
//!   the workflow's and that its names cover the old certificate's, writes it as `new.pem`
//!   (its other certificates as the chain) and continues: **issued** then only records it.
//! - **reloaded** (`--deploy`): the reload hooks of the targets whose files were replaced
//!   run ([`crate::pki::reload`]); a failure stops the workflow here, and a resume runs the hooks
//!   again, never the deploy. Then the endpoints that served the old certificate are
//!   probed ([`probe_endpoints`], without the store's writer lock) and the report says
//!   whether each serves the new one.
//! - **old-revoked** (`--revoke-old`): the old certificate is revoked as `superseded` and the
//!   CA's CRL republished, unless the CRL already lists it.
//!
//! - **done**: the unencrypted `new.key` is removed (before `done` is recorded) once the
//!   key is in a deployed file (a key file, a PEM file with the key, a PKCS#12 file). Without
//!   `--deploy` it is the only copy of the key and stays: take it from there and delete it.
//!
//! Test hook (tests only, never set it in production): `CERTCTL_TEST_ABORT_AFTER_STEP=N`
//! makes the process call `std::process::abort()` right after step N (0 = requested … 5 =
//! done) was persisted, to prove that every step survives a crash.

use std::fs;
use std::path::{Path, PathBuf};

use certctl_store::{
    AuditEvent, Certificate, RevocationReason, Source, SourceLocation, Store, UnixTime, Workflow,
    WorkflowStep,
};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::certs::x509::facts_from_der;
use crate::duration::DAY_SECS;
use crate::history::{actor, AuditAction};
use crate::pki::ca::{
    self, der_to_pem, write_atomic, CaError, FileMode, KeyKind, LeafSpec, Secret, Signer,
};
use crate::pki::reload::{self, ReloadOutcome};
use crate::pki::revoke::{self};
pub(crate) mod common;
pub(crate) mod csr;

use crate::inventory::query::{self, QueryError};
pub use common::*;
use csr::{step_csr, step_receive};

/// The environment variable of the crash test hook (tests only).
pub(crate) const ABORT_HOOK_VAR: &str = "CERTCTL_TEST_ABORT_AFTER_STEP";

/// The key type `kind`, or the weakest stronger one the policy's key rules accept:
/// RSA below `min_rsa_bits` grows to the next size that meets it; a curve outside
/// `allowed_curves` becomes the first allowed one certctl can generate.
pub(crate) fn stronger_if_required(kind: KeyKind, policy: &crate::policy::Policy) -> KeyKind {
    let mut kind = kind;
    if let Some(min) = policy.min_rsa_bits {
        let bits = match kind {
            KeyKind::Rsa2048 => Some(2048),
            KeyKind::Rsa3072 => Some(3072),
            KeyKind::Rsa4096 => Some(4096),
            _ => None,
        };
        if bits.is_some_and(|b| b < min) {
            kind = if min <= 3072 {
                KeyKind::Rsa3072
            } else {
                KeyKind::Rsa4096
            };
        }
    }
    if !policy.allowed_curves.is_empty() {
        let allowed = |name: &str| {
            policy
                .allowed_curves
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
        };
        let curve = match kind {
            KeyKind::EcP256 => Some("P-256"),
            KeyKind::EcP384 => Some("P-384"),
            KeyKind::Ed25519 => Some("Ed25519"),
            _ => None,
        };
        if curve.is_some_and(|c| !allowed(c)) {
            if let Some(k) = [
                (KeyKind::EcP384, "P-384"),
                (KeyKind::EcP256, "P-256"),
                (KeyKind::Ed25519, "Ed25519"),
            ]
            .into_iter()
            .find(|(_, name)| allowed(name))
            .map(|(k, _)| k)
            {
                kind = k;
            }
        }
    }
    kind
}

/// Calls `abort()` when the test hook asks for it after `step`.
fn maybe_abort(step: WorkflowStep) {
    if let Ok(v) = std::env::var(ABORT_HOOK_VAR) {
        if v.trim().parse::<u8>().ok() == Some(step.number()) {
            eprintln!("{ABORT_HOOK_VAR}={v}: aborting after step {step} (test hook)");
            std::process::abort();
        }
    }
}

/// Starts a regenerate workflow and runs it to the end.
pub(crate) fn regenerate(
    store: &Store,
    req: &RegenerateRequest,
    now: UnixTime,
) -> Result<WorkflowReport, WorkflowError> {
    let found = query::find(store, &req.id)?;
    if found.len() > 1 {
        let list: Vec<String> = found
            .iter()
            .map(|c| {
                format!(
                    "  {}  {}  expires {}{}",
                    c.fingerprint(),
                    c.facts.display_name(),
                    certctl_store::rfc3339(c.facts.not_after),
                    if c.revocation.is_some() {
                        "  (revoked)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        return Err(WorkflowError::SeveralMatches(
            req.id.clone(),
            list.join("\n"),
        ));
    }
    let Some(old) = found.into_iter().next() else {
        return Err(WorkflowError::Query(QueryError::NotFound(req.id.clone())));
    };
    if old.facts.is_ca {
        return Err(WorkflowError::IsCa(old.facts.display_name().to_string()));
    }
    let ca_name = match (&req.csr, ca::managed_issuer(store, &old)?) {
        (Some(_), _) => String::new(),
        (None, Some((managed, _))) => {
            // Fail on a wrong passphrase before anything is recorded.
            Signer::load(store, &managed.name, req.secrets.passphrase.as_ref())?;
            managed.name
        }
        (None, None) => {
            return Err(WorkflowError::NotManaged {
                name: old.facts.display_name().to_string(),
                issuer: old.facts.issuer.clone(),
            })
        }
    };
    let key_kind = match req.key {
        Some(k) => k,
        None => {
            let same = KeyKind::like(&old.facts.key);
            match &req.policies {
                Some(dir) => {
                    let set = crate::policy::load_dir(dir)
                        .map_err(|e| WorkflowError::Policy(e.to_string()))?;
                    match set.select(&old) {
                        Some(policy) => stronger_if_required(same, policy),
                        None => same,
                    }
                }
                None => same,
            }
        }
    };
    let id = store.new_workflow_id()?;
    let dir = store.path().join("workflows").join(id.to_string());
    let wf = Workflow {
        id,
        old: old.fingerprint(),
        ca: ca_name.clone(),
        revoke_old: req.revoke_old,
        deploy: req.deploy,
        key_kind: key_kind.as_str().to_string(),
        dir: dir.to_string_lossy().into_owned(),
        step: WorkflowStep::Requested,
        new: None,
        deployed: Vec::new(),
        not_deployed: Vec::new(),
        created: now,
        updated: now,
        actor: actor(),
        last_error: None,
        csr: req.csr.as_ref().map(|p| p.to_string_lossy().into_owned()),
        key_encrypted: req.csr.is_some() && req.secrets.passphrase.is_some(),
        reload: req.reload.clone(),
    };
    store.put_workflow(&wf)?;
    store.record_audit(&AuditEvent {
        at: now,
        fingerprint: Some(old.fingerprint()),
        actor: wf.actor.clone(),
        action: AuditAction::RegenerateRequested.into(),
        detail: format!(
            "workflow {id} ({}{}{})",
            match &wf.csr {
                Some(csr) => format!("CSR {csr} for the CA `{}`", old.facts.issuer),
                None => format!("CA `{ca_name}`"),
            },
            if req.deploy { ", deploy" } else { "" },
            if req.revoke_old { ", revoke old" } else { "" }
        ),
    })?;
    maybe_abort(WorkflowStep::Requested);
    run(store, wf, &req.secrets, now)
}

/// `certctl workflows resume ID`: continues a workflow from its last completed step.
pub(crate) fn resume(
    store: &Store,
    id: u64,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<WorkflowReport, WorkflowError> {
    let wf = store
        .workflow(id)?
        .ok_or(WorkflowError::NoSuchWorkflow(id))?;
    run(store, wf, secrets, now)
}

/// A workflow id and how resuming it went.
pub(crate) type Resumed = (u64, Result<WorkflowReport, WorkflowError>);

/// Resumes every unfinished workflow, with the secrets each workflow needs (what certd does at start-up:
/// the passphrase of the workflow's CA, from its configuration).
pub(crate) fn resume_all_with(
    store: &Store,
    secrets_for: impl Fn(&Workflow) -> WorkflowSecrets,
    now: UnixTime,
) -> Result<Vec<Resumed>, WorkflowError> {
    let mut out = Vec::new();
    for wf in store.workflows()? {
        if wf.step == WorkflowStep::AwaitingCertificate {
            // Waits for `workflows complete`: nothing to resume.
            continue;
        }
        if wf.step == WorkflowStep::Done {
            // Finished by an older certctl, which left the key behind.
            if let Err(e) = remove_deployed_key(&wf, &secrets_for(&wf)) {
                tracing::warn!(workflow = wf.id, error = %e, "cannot remove the workflow's key");
            }
        } else {
            let id = wf.id;
            let secrets = secrets_for(&wf);
            out.push((id, run(store, wf, &secrets, now)));
        }
    }
    Ok(out)
}

/// Every workflow, oldest first, with its old and new certificates.
pub(crate) fn listing(store: &Store) -> Result<Vec<WorkflowReport>, WorkflowError> {
    let mut out = Vec::new();
    for wf in store.workflows()? {
        let dir = PathBuf::from(&wf.dir);
        out.push(WorkflowReport {
            old: store.get(&wf.old)?,
            new: match &wf.new {
                Some(fp) => store.get(fp)?,
                None => None,
            },
            files: workflow_files(&dir),
            crl_checks: Vec::new(),
            reloads: Vec::new(),
            endpoints: Vec::new(),
            probe_due: false,
            renewal_reason: store
                .renewal(&wf.old)?
                .filter(|r| r.workflow == Some(wf.id))
                .map(|r| r.reason),
            workflow: wf,
        });
    }
    Ok(out)
}

fn run(
    store: &Store,
    mut wf: Workflow,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<WorkflowReport, WorkflowError> {
    let mut crl_checks = Vec::new();
    let mut reloads = Vec::new();
    let mut probe_due = false;
    while wf.step != WorkflowStep::Done {
        let next = wf.next_step();
        if next == WorkflowStep::Issued
            && wf.external()
            && !PathBuf::from(&wf.dir).join("new.pem").exists()
        {
            // Waits for `workflows complete ID --cert FILE`.
            break;
        }
        let result = match next {
            WorkflowStep::KeyGenerated => step_key(&wf, secrets).map(|_| ()),
            WorkflowStep::AwaitingCertificate => step_csr(store, &wf, secrets),
            WorkflowStep::Issued if wf.external() => step_receive(store, &mut wf, secrets, now),
            WorkflowStep::Issued => step_issue(store, &mut wf, secrets, now),
            WorkflowStep::Deployed if wf.deploy => step_deploy(store, &mut wf, secrets, now),
            WorkflowStep::Reloaded if wf.deploy => {
                probe_due = true;
                step_reload(store, &wf, &mut reloads, now)
            }
            WorkflowStep::OldRevoked if wf.revoke_old => revoke::revoke_one(
                store,
                &wf.old,
                RevocationReason::Superseded,
                secrets.passphrase.as_ref(),
                now,
            )
            .map(|checks| crl_checks = checks)
            .map_err(WorkflowError::from),
            _ => Ok(()),
        };
        if let Err(e) = result {
            wf.last_error = Some(e.to_string());
            wf.updated = now;
            store.put_workflow(&wf)?;
            return Err(e);
        }
        if next == WorkflowStep::Done {
            // Before `done` is recorded: a crash in between finds nothing left to remove.
            remove_deployed_key(&wf, secrets)?;
        }
        wf.step = next;
        wf.updated = now;
        wf.last_error = None;
        store.put_workflow(&wf)?;
        maybe_abort(next);
    }
    let dir = PathBuf::from(&wf.dir);
    Ok(WorkflowReport {
        old: store.get(&wf.old)?,
        new: match &wf.new {
            Some(fp) => store.get(fp)?,
            None => None,
        },
        files: workflow_files(&dir),
        crl_checks,
        reloads,
        endpoints: Vec::new(),
        probe_due,
        renewal_reason: None,
        workflow: wf,
    })
}

/// The workflow's own files that exist (`new.key` is gone once the key was deployed).
fn workflow_files(dir: &Path) -> Vec<PathBuf> {
    ["new.key", "new.csr", "new.pem", "new.chain.pem"]
        .into_iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Removes the unencrypted `new.key` of a finished workflow (and any temporary file of it)
/// once the key is in a file the workflow deployed (a key file, a PEM file with the key, a
/// PKCS#12 file). Without such a file (no `--deploy`, or nowhere to put the key) `new.key`
/// is the only copy and stays for the admin to take.
fn remove_deployed_key(wf: &Workflow, secrets: &WorkflowSecrets) -> Result<(), WorkflowError> {
    let dir = PathBuf::from(&wf.dir);
    let Ok(bytes) = fs::read(dir.join("new.key")) else {
        return Ok(());
    };
    let Ok(key) = ca::load_private_key(&bytes, secrets.passphrase.as_ref()) else {
        return Ok(());
    };
    if !key_deployed(wf, &key) {
        return Ok(());
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| {
            WorkflowError::Ca(CaError::Io {
                path,
                cause: crate::files::io_cause(&e),
            })
        }
    };
    for entry in fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "new.key" || name.starts_with(".new.key") {
            fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))
}

/// Whether a file the workflow deployed holds `key`.
fn key_deployed(wf: &Workflow, key: &PKey<Private>) -> bool {
    wf.deployed.iter().map(Path::new).any(|path| {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("pfx") | Some("p12")) {
            // Rewritten with the new certificate and key (see `Deployment::rewrite`).
            return path.is_file();
        }
        let Ok(bytes) = fs::read(path) else {
            return false;
        };
        pem_blocks(&String::from_utf8_lossy(&bytes))
            .iter()
            .any(|(label, block)| {
                label.as_deref().is_some_and(|l| l.ends_with("PRIVATE KEY")) && same_key(block, key)
            })
    })
}

// ---- steps ---------------------------------------------------------------------------------

fn step_issue(
    store: &Store,
    wf: &mut Workflow,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<(), WorkflowError> {
    let (key, dir, old) = issued_step_start(store, wf, secrets)?;
    let cert_path = dir.join("new.pem");
    let signer = Signer::load(store, &wf.ca, secrets.passphrase.as_ref())?;
    let der = match read_issued(&cert_path, &key) {
        Some(der) => der,
        None => {
            let spec = LeafSpec {
                subject: parse_rfc2253(&old.facts.subject),
                sans: sans_of(&old),
                role: old.role,
                validity_secs: old.facts.validity_secs().max(DAY_SECS),
                rsa: key.rsa().is_ok(),
            };
            let der = ca::sign_leaf(&signer, &spec, &key, now)?;
            write_atomic(&cert_path, der_to_pem(&der)?.as_bytes(), FileMode::Private)?;
            der
        }
    };
    let mut chain = der_to_pem(&der)?;
    for c in &signer.chain {
        chain.push_str(&der_to_pem(c)?);
    }
    write_atomic(
        &dir.join("new.chain.pem"),
        chain.as_bytes(),
        FileMode::Private,
    )?;
    let facts = facts_from_der(&der).map_err(|source| CaError::Parse {
        path: cert_path.clone(),
        source,
    })?;
    let fp = facts.fingerprint;
    ca::record_files(store, &facts, old.role, &signer, &[cert_path], now)?;
    let who = actor();
    audit_once(
        store,
        &AuditEvent {
            at: now,
            fingerprint: Some(fp),
            actor: who.clone(),
            action: AuditAction::Issued.into(),
            detail: format!(
                "by managed CA `{}`, serial {}, role {} (workflow {})",
                signer.ca.name, facts.serial, old.role, wf.id
            ),
        },
    )?;
    audit_once(
        store,
        &AuditEvent {
            at: now,
            fingerprint: Some(fp),
            actor: who.clone(),
            action: AuditAction::Supersedes.into(),
            detail: old.fingerprint().to_hex(),
        },
    )?;
    audit_once(
        store,
        &AuditEvent {
            at: now,
            fingerprint: Some(old.fingerprint()),
            actor: who,
            action: AuditAction::SupersededBy.into(),
            detail: fp.to_hex(),
        },
    )?;
    wf.new = Some(fp);
    Ok(())
}

// ---- deploy --------------------------------------------------------------------------------

/// How a deployed file is written.
enum FileFormat {
    Pem,
    Der,
    Pkcs12,
}

fn detect_format(path: &Path, bytes: &[u8]) -> FileFormat {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("pfx") | Some("p12")) {
        FileFormat::Pkcs12
    } else if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        FileFormat::Pem
    } else if X509::from_der(bytes).is_ok() {
        FileFormat::Der
    } else {
        FileFormat::Pkcs12
    }
}

/// Splits PEM text into (label, whole block text) pieces and the text between them.
fn pem_blocks(text: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        if start > 0 {
            out.push((None, rest[..start].to_string()));
        }
        let after = &rest[start + 11..];
        let label_end = after.find("-----").unwrap_or(after.len());
        let label = after[..label_end].to_string();
        let end_marker = format!("-----END {label}-----");
        match rest[start..].find(&end_marker) {
            Some(e) => {
                let end = start + e + end_marker.len();
                out.push((Some(label), rest[start..end].to_string()));
                rest = &rest[end..];
            }
            None => {
                out.push((None, rest[start..].to_string()));
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        out.push((None, rest.to_string()));
    }
    out
}

fn same_key(pem_block: &str, other: &PKey<Private>) -> bool {
    PKey::private_key_from_pem(pem_block.as_bytes())
        .map(|k| k.public_eq(other))
        .unwrap_or(false)
}

fn key_matches_cert(key_pem: &[u8], cert_der: &[u8]) -> bool {
    match (
        PKey::private_key_from_pem(key_pem),
        X509::from_der(cert_der).and_then(|c| c.public_key()),
    ) {
        (Ok(k), Ok(pk)) => k.public_eq(&pk),
        _ => false,
    }
}

/// Context for deploying one workflow's new certificate.
struct Deployment<'a> {
    old: &'a Certificate,
    old_der: Option<Vec<u8>>,
    new_der: Vec<u8>,
    new_key: PKey<Private>,
    chain: Vec<Vec<u8>>,
    pfx_password: Option<&'a Secret>,
}

impl Deployment<'_> {
    /// New content for a certificate file, or `None` when it already holds the new one.
    fn rewrite(&self, path: &Path, index: u32) -> Result<Option<Vec<u8>>, WorkflowError> {
        let bad = |cause: String| WorkflowError::Deploy {
            path: path.to_path_buf(),
            cause,
        };
        // Regular files only, size-capped, never blocking on a FIFO: as a scan reads them.
        let (bytes, _) = crate::inventory::scan::read_file_bytes(path).map_err(bad)?;
        match detect_format(path, &bytes) {
            FileFormat::Der => {
                if bytes == self.new_der {
                    return Ok(None);
                }
                Ok(Some(self.new_der.clone()))
            }
            FileFormat::Pem => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let new_pem = der_to_pem(&self.new_der)?;
                let new_key_pem = self
                    .new_key
                    .private_key_to_pem_pkcs8()
                    .map_err(|e| bad(e.to_string()))?;
                let new_key_pem = String::from_utf8_lossy(&new_key_pem).into_owned();
                let old_key_pub = self
                    .old_der
                    .as_ref()
                    .and_then(|d| X509::from_der(d).ok())
                    .and_then(|c| c.public_key().ok());
                let mut out = String::with_capacity(text.len() + 512);
                let mut cert_index = 0u32;
                let mut changed = false;
                let mut already_new = false;
                for (label, block) in pem_blocks(&text) {
                    let piece = match label.as_deref() {
                        Some("CERTIFICATE")
                        | Some("X509 CERTIFICATE")
                        | Some("TRUSTED CERTIFICATE") => {
                            let this = cert_index;
                            cert_index += 1;
                            if this == index {
                                if block.trim() == new_pem.trim() {
                                    already_new = true;
                                    block
                                } else {
                                    changed = true;
                                    new_pem.trim_end().to_string()
                                }
                            } else {
                                block
                            }
                        }
                        Some(l) if l.ends_with("PRIVATE KEY") => {
                            let is_old = match &old_key_pub {
                                Some(pk) => PKey::private_key_from_pem(block.as_bytes())
                                    .map(|k| k.public_eq(pk))
                                    .unwrap_or(false),
                                None => false,
                            };
                            if is_old {
                                changed = true;
                                new_key_pem.trim_end().to_string()
                            } else {
                                block
                            }
                        }
                        _ => block,
                    };
                    out.push_str(&piece);
                }
                if already_new && !changed {
                    return Ok(None);
                }
                if !changed {
                    return Err(bad(format!(
                        "the old certificate is no longer at position {index} of this file"
                    )));
                }
                Ok(Some(out.into_bytes()))
            }
            FileFormat::Pkcs12 => {
                let Some(password) = self.pfx_password else {
                    return Err(bad(
                        "a PKCS#12 file: give its password with --pfx-password-file (or CERTCTL_PFX_PASSWORD) to deploy to it".into(),
                    ));
                };
                crate::certs::formats::check_pkcs12_work(&bytes).map_err(|e| bad(e.to_string()))?;
                crate::certs::openssl_setup::ensure_legacy_provider();
                let parsed = openssl::pkcs12::Pkcs12::from_der(&bytes)
                    .and_then(|p| p.parse2(password.expose()))
                    .map_err(|_| {
                        bad("cannot open this PKCS#12 file with the given password".into())
                    })?;
                if let Some(cert) = parsed.cert {
                    if cert.to_der().map(|d| d == self.new_der).unwrap_or(false) {
                        return Ok(None);
                    }
                }
                let name = self.old.facts.display_name().to_string();
                let pfx =
                    ca::build_pfx(&name, &self.new_key, &self.new_der, &self.chain, password)?;
                Ok(Some(pfx))
            }
        }
    }

    /// Key files next to a certificate file that hold the old key: (path, already new).
    fn sibling_keys(&self, cert_path: &Path) -> Vec<(PathBuf, bool)> {
        let Some(dir) = cert_path.parent() else {
            return Vec::new();
        };
        let Some(stem) = cert_path.file_stem().and_then(|s| s.to_str()) else {
            return Vec::new();
        };
        let stem = stem.trim_end_matches(".chain").trim_end_matches(".cert");
        let mut out = Vec::new();
        for name in [
            format!("{stem}.key"),
            format!("{stem}-key.pem"),
            format!("{stem}.key.pem"),
            format!("{stem}_key.pem"),
        ] {
            let p = dir.join(name);
            if p == cert_path {
                continue;
            }
            let Ok(bytes) = fs::read(&p) else { continue };
            if same_key(&String::from_utf8_lossy(&bytes), &self.new_key) {
                out.push((p, true));
            } else if self
                .old_der
                .as_ref()
                .is_some_and(|d| key_matches_cert(&bytes, d))
            {
                out.push((p, false));
            }
        }
        out
    }
}

fn step_deploy(
    store: &Store,
    wf: &mut Workflow,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<(), WorkflowError> {
    let old = store.get(&wf.old)?.ok_or_else(|| {
        step_err(wf, WorkflowStep::Deployed)("the old certificate left the store".into())
    })?;
    let Some(new_fp) = wf.new else {
        return Err(step_err(wf, WorkflowStep::Deployed)(
            "the new certificate is not recorded".into(),
        ));
    };
    let dir = PathBuf::from(&wf.dir);
    let new_key = step_key(wf, secrets)?;
    let new_der = read_issued(&dir.join("new.pem"), &new_key).ok_or_else(|| {
        step_err(wf, WorkflowStep::Deployed)(format!(
            "{} does not hold the issued certificate",
            dir.join("new.pem").display()
        ))
    })?;
    let chain = if wf.external() {
        csr::received_chain(&dir)
    } else {
        Signer::load(store, &wf.ca, secrets.passphrase.as_ref())?.chain
    };
    let sources: Vec<Source> = old
        .sources
        .iter()
        .filter(|s| s.gone_since.is_none())
        .cloned()
        .collect();
    let old_der = sources.iter().find_map(|s| match &s.location {
        SourceLocation::File { path, index } => ca::cert_der_at(
            Path::new(path),
            *index,
            &old.fingerprint(),
            secrets.pfx_password.as_ref(),
        ),
        SourceLocation::Endpoint { .. } => None,
    });
    let deployment = Deployment {
        old: &old,
        old_der,
        new_der,
        new_key,
        chain,
        pfx_password: secrets.pfx_password.as_ref(),
    };
    let (moved, not_deployed) = deploy_to_sources(store, wf, &deployment, &sources)?;
    wf.not_deployed = not_deployed;
    // The inventory: the new certificate is now where the old one was.
    move_in_inventory(store, wf, &old, &deployment.new_der, &dir, &moved, now)?;
    store.flush()?;
    audit_once(
        store,
        &AuditEvent {
            at: now,
            fingerprint: Some(new_fp),
            actor: actor(),
            action: AuditAction::Deployed.into(),
            detail: format!("workflow {}: {}", wf.id, wf.deployed.join(", ")),
        },
    )?;
    Ok(())
}

/// A file source of a certificate: its path and its index in the file.
type FileSource = (String, u32);

/// Writes the new certificate over each file source of the old one (not those in the
/// workflow's own folder), and its key next to it where the old key was; records each
/// write in the workflow as it goes. Returns the file sources written (path, index) and
/// what certctl cannot deploy (endpoints).
fn deploy_to_sources(
    store: &Store,
    wf: &mut Workflow,
    deployment: &Deployment<'_>,
    sources: &[Source],
) -> Result<(Vec<FileSource>, Vec<String>), WorkflowError> {
    let mut moved: Vec<FileSource> = Vec::new();
    let mut not_deployed = Vec::new();
    let workflow_dir = wf.dir.clone();
    for source in sources {
        let (path, index) = match &source.location {
            SourceLocation::File { path, index } => (path.clone(), *index),
            SourceLocation::Endpoint { address, .. } => {
                not_deployed.push(format!(
                    "tls://{address}: install the new certificate on that endpoint (certctl cannot deploy to it)"
                ));
                continue;
            }
        };
        if path.starts_with(&workflow_dir) {
            continue;
        }
        let p = PathBuf::from(&path);
        if !wf.deployed.contains(&path) {
            if let Some(bytes) = deployment.rewrite(&p, index)? {
                deploy(&p, &bytes, DEPLOYED_FILE)?;
            }
            wf.deployed.push(path.clone());
            store.put_workflow(wf)?;
        }
        moved.push((path.clone(), index));
        deploy_sibling_keys(store, wf, deployment, &p)?;
    }
    Ok((moved, not_deployed))
}

/// Writes the new key over the key files beside a deployed certificate file, once.
fn deploy_sibling_keys(
    store: &Store,
    wf: &mut Workflow,
    deployment: &Deployment<'_>,
    cert_path: &Path,
) -> Result<(), WorkflowError> {
    for (key_path, already) in deployment.sibling_keys(cert_path) {
        let key_str = key_path.to_string_lossy().into_owned();
        if !already {
            let pem = deployment.new_key.private_key_to_pem_pkcs8().map_err(|e| {
                WorkflowError::Deploy {
                    path: key_path.clone(),
                    cause: e.to_string(),
                }
            })?;
            deploy(&key_path, &pem, DEPLOYED_KEY)?;
        }
        if !wf.deployed.contains(&key_str) {
            wf.deployed.push(key_str);
            store.put_workflow(wf)?;
        }
    }
    Ok(())
}

/// The inventory: the new certificate is observed at each moved source, the old one marked
/// gone there.
fn move_in_inventory(
    store: &Store,
    wf: &Workflow,
    old: &Certificate,
    new_der: &[u8],
    dir: &Path,
    moved: &[FileSource],
    now: UnixTime,
) -> Result<(), WorkflowError> {
    let new_facts = facts_from_der(new_der).map_err(|source| CaError::Parse {
        path: dir.join("new.pem"),
        source,
    })?;
    let mut ingest = store.ingest();
    for (path, index) in moved {
        let location = SourceLocation::File {
            path: path.clone(),
            index: *index,
        };
        ingest.observe(new_facts.clone(), Some(old.role), location.clone(), now)?;
        ingest.mark_gone(&wf.old, &location, now)?;
    }
    ingest.commit()?;
    Ok(())
}

/// A deployed certificate file keeps the mode of the file it replaces (0600 when there was
/// no regular file).
const DEPLOYED_FILE: FileMode = FileMode::Replaced {
    fallback: 0o600,
    limit: 0o777,
};
/// A deployed key keeps the owner bits of the key it replaces, never more: its `.bak` too.
const DEPLOYED_KEY: FileMode = FileMode::Replaced {
    fallback: 0o600,
    limit: 0o700,
};

/// Replaces a deployed file (owner and mode of the regular file replaced kept; a symlink
/// there is replaced, never followed), keeping the old one as `FILE.bak`.
fn deploy(path: &Path, bytes: &[u8], mode: FileMode) -> Result<(), WorkflowError> {
    let options = crate::files::atomic::Options::new(mode).backup();
    options.write(path, bytes).map_err(CaError::from)?;
    Ok(())
}

// ---- reload and probe ----------------------------------------------------------------------

/// Runs the reload hook of every target whose files the deploy step replaced (each command
/// once). Stops at the first failure, which leaves the workflow at `deployed`.
fn step_reload(
    store: &Store,
    wf: &Workflow,
    outcomes: &mut Vec<ReloadOutcome>,
    now: UnixTime,
) -> Result<(), WorkflowError> {
    let mut ran: Vec<&Vec<String>> = Vec::new();
    for hook in &wf.reload {
        if ran.contains(&&hook.argv) {
            continue;
        }
        if !wf.deployed.iter().any(|p| reload::applies_to(hook, p)) {
            continue;
        }
        ran.push(&hook.argv);
        let outcome = reload::run(hook);
        store.record_audit(&AuditEvent {
            at: now,
            fingerprint: wf.new,
            actor: actor(),
            action: if outcome.ok {
                "reloaded".into()
            } else {
                "reload-failed".into()
            },
            detail: format!("workflow {}: {}: {}", wf.id, hook.target, outcome.detail),
        })?;
        let failed = (!outcome.ok).then(|| outcome.detail.clone());
        outcomes.push(outcome);
        if let Some(detail) = failed {
            return Err(WorkflowError::Reload {
                id: wf.id,
                target: hook.target.clone(),
                detail,
            });
        }
    }
    Ok(())
}

/// After a run that passed the reload step: probes each endpoint that served the old
/// certificate and says whether it now serves the new one. The handshakes run without
/// `lock` (the store's writer lock); each outcome is recorded under it.
pub(crate) fn probe_endpoints<G>(
    store: &Store,
    report: &mut WorkflowReport,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<(), WorkflowError> {
    if !report.probe_due {
        return Ok(());
    }
    let (Some(old), Some(new)) = (&report.old, report.workflow.new) else {
        return Ok(());
    };
    let addresses: std::collections::BTreeSet<String> = old
        .current_sources()
        .filter_map(|s| match &s.location {
            SourceLocation::Endpoint { address, .. } => Some(address.clone()),
            SourceLocation::File { .. } => None,
        })
        .collect();
    let old_fp = old.fingerprint();
    for address in addresses {
        let endpoint = {
            let _writer = lock();
            store.endpoint(&address)?
        };
        let Some(endpoint) = endpoint else { continue };
        let outcome = crate::probe::reprobe(store, &endpoint, now, lock);
        let (state, detail) = match (&outcome.error, outcome.chain.first()) {
            (Some(e), _) => ("unreachable", e.clone()),
            (None, Some(leaf)) if leaf.fingerprint == new => (
                "serves-new",
                format!("now serves the new certificate ({new})"),
            ),
            (None, Some(leaf)) if leaf.fingerprint == old_fp => (
                "serves-old",
                "still serves the old certificate: reload or restart it (or give its target a reload hook)".to_string(),
            ),
            (None, Some(leaf)) => (
                "serves-other",
                format!("serves {} ({})", leaf.display_name(), leaf.fingerprint),
            ),
            (None, None) => ("unreachable", "served no certificate".to_string()),
        };
        report.endpoints.push(EndpointServes {
            endpoint: address,
            state: state.into(),
            detail,
        });
    }
    Ok(())
}

/// `certctl workflows complete ID --cert FILE`: checks FILE against the workflow's key and
/// the old certificate's names ([`csr::receive`]), then continues the workflow. A
/// certificate that does not fit changes nothing.
pub(crate) fn complete(
    store: &Store,
    id: u64,
    cert_file: &Path,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<WorkflowReport, WorkflowError> {
    csr::receive(store, id, cert_file, secrets, now)?;
    resume(store, id, secrets, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::DnType;

    #[test]
    fn rfc2253_round_trips_common_names() {
        let dn = parse_rfc2253("CN=gw.example.com,OU=Ops\\, Gateways,O=Contoso,C=US");
        let items: Vec<_> = dn.iter().collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].0, &DnType::CountryName);
        assert_eq!(items[3].0, &DnType::CommonName);
        assert_eq!(items[1].1, &rcgen::DnValue::Utf8String("Contoso".into()));
        assert_eq!(
            items[2].1,
            &rcgen::DnValue::Utf8String("Ops, Gateways".into())
        );
    }

    #[test]
    fn pem_blocks_keep_everything() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\nmid\n-----BEGIN PRIVATE KEY-----\nBB\n-----END PRIVATE KEY-----\n";
        let blocks = pem_blocks(text);
        let joined: String = blocks.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(joined, text);
        assert_eq!(blocks[1].0.as_deref(), Some("CERTIFICATE"));
        assert_eq!(blocks[3].0.as_deref(), Some("PRIVATE KEY"));
    }
}
