//! Regenerating a certificate whose CA certctl does not hold (a public CA, AD CS):
//! `certctl regenerate ID --csr OUT.csr`, then `certctl workflows complete ID --cert FILE`.
//!
//! The workflow ([`crate::pki::workflow`]) makes the new key as for a managed CA (in
//! `STORE/workflows/ID/new.key`, 0600; encrypted PKCS#8 with PBKDF2-HMAC-SHA256 and AES-256,
//! exactly as `ca init` encrypts a CA key, when a passphrase is given), writes a CSR with the
//! old certificate's subject and SANs to OUT (and a copy, `new.csr`, in the workflow folder)
//! and waits at `awaiting-certificate`. [`receive`] takes the certificate the CA returned:
//! it must hold the workflow's public key, name every name of the old certificate (its SANs,
//! or its CN when it has none) and be valid now; otherwise nothing changes. The certificate
//! is written to `new.pem` (its other certificates, the chain, to `new.chain.pem`) and the
//! workflow continues with the same steps as a managed-CA regenerate (record, deploy,
//! reload, revoke-old), resumable after a crash at any point.

use std::fs;
use std::path::{Path, PathBuf};

use certctl_store::{AuditEvent, SourceLocation, Store, UnixTime, Workflow, WorkflowStep};
use openssl::x509::X509;

use crate::certs::x509::facts_from_der;
use crate::history::{actor, AuditAction};
use crate::pki::ca::{self, der_to_pem, write_atomic, CaError, FileMode};
use crate::pki::workflow::common::{
    audit_once, issued_step_start, parse_rfc2253, read_issued, sans_of, step_err, step_key,
    WorkflowError, WorkflowSecrets,
};

/// The `awaiting-certificate` step: the CSR for the workflow's key, written to the path
/// given at `regenerate --csr` and to `new.csr` in the workflow folder.
pub(crate) fn step_csr(
    store: &Store,
    wf: &Workflow,
    secrets: &WorkflowSecrets,
) -> Result<(), WorkflowError> {
    let key = step_key(wf, secrets)?;
    let old = store.get(&wf.old)?.ok_or_else(|| {
        step_err(wf, WorkflowStep::AwaitingCertificate)("the old certificate left the store".into())
    })?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = parse_rfc2253(&old.facts.subject);
    params.subject_alt_names = sans_of(&old);
    let key_pair = ca::rcgen_key(&key)?;
    let fail = |e: rcgen::Error| CaError::Crypto {
        what: "make the certificate signing request".into(),
        cause: e.to_string(),
    };
    let pem = params
        .serialize_request(&key_pair)
        .map_err(fail)?
        .pem()
        .map_err(fail)?;
    let dir = PathBuf::from(&wf.dir);
    write_atomic(&dir.join("new.csr"), pem.as_bytes(), FileMode::Private)?;
    if let Some(out) = &wf.csr {
        write_atomic(Path::new(out), pem.as_bytes(), FileMode::Public)?;
    }
    Ok(())
}

/// The chain that came with the received certificate (`new.chain.pem` after its first
/// certificate), as DER; empty when there is none.
pub(crate) fn received_chain(dir: &Path) -> Vec<Vec<u8>> {
    let path = dir.join("new.chain.pem");
    let Ok(bytes) = fs::read(&path) else {
        return Vec::new();
    };
    ca::pem_certificates(&path, &bytes)
        .map(|mut certs| {
            if !certs.is_empty() {
                certs.remove(0);
            }
            certs
        })
        .unwrap_or_default()
}

/// The `issued` step of a `--csr` workflow: records the received certificate (`new.pem`).
pub(crate) fn step_receive(
    store: &Store,
    wf: &mut Workflow,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<(), WorkflowError> {
    let (key, dir, old) = issued_step_start(store, wf, secrets)?;
    let cert_path = dir.join("new.pem");
    let der = read_issued(&cert_path, &key).ok_or_else(|| {
        step_err(wf, WorkflowStep::Issued)(format!(
            "{} does not hold a certificate for the workflow's key",
            cert_path.display()
        ))
    })?;
    let facts = facts_from_der(&der).map_err(|source| CaError::Parse {
        path: cert_path.clone(),
        source,
    })?;
    let fp = facts.fingerprint;
    let mut ingest = store.ingest();
    ingest.observe(
        facts.clone(),
        Some(old.role),
        SourceLocation::File {
            path: cert_path.to_string_lossy().into_owned(),
            index: 0,
        },
        now,
    )?;
    ingest.commit()?;
    store.flush()?;
    let who = actor();
    for (fingerprint, action, detail) in [
        (
            fp,
            AuditAction::Received,
            format!(
                "from the CA `{}`, serial {}, role {} (workflow {})",
                facts.issuer, facts.serial, old.role, wf.id
            ),
        ),
        (fp, AuditAction::Supersedes, old.fingerprint().to_hex()),
        (old.fingerprint(), AuditAction::SupersededBy, fp.to_hex()),
    ] {
        audit_once(
            store,
            &AuditEvent {
                at: now,
                fingerprint: Some(fingerprint),
                actor: who.clone(),
                action: action.into(),
                detail,
            },
        )?;
    }
    wf.new = Some(fp);
    Ok(())
}

/// The names a certificate answers to: its SANs (DNS names lowercased), else its CN.
fn names(facts: &certctl_store::CertificateFacts) -> Vec<String> {
    let s = &facts.sans;
    let mut out: Vec<String> = s
        .dns
        .iter()
        .map(|d| format!("DNS:{}", d.to_ascii_lowercase()))
        .chain(s.ip.iter().map(|i| format!("IP:{i}")))
        .chain(s.email.iter().map(|e| format!("email:{e}")))
        .chain(s.uri.iter().map(|u| format!("URI:{u}")))
        .collect();
    if out.is_empty() {
        if let Some(cn) = &facts.subject_cn {
            out.push(format!("CN:{}", cn.to_ascii_lowercase()));
        }
    }
    out
}

/// Whether `new` answers to `name` (a CN of the old certificate may be a DNS name or the
/// CN of the new one).
fn covers(new: &certctl_store::CertificateFacts, new_names: &[String], name: &str) -> bool {
    if new_names.iter().any(|n| n == name) {
        return true;
    }
    match name.strip_prefix("CN:") {
        Some(cn) => {
            new_names.iter().any(|n| n == &format!("DNS:{cn}"))
                || new
                    .subject_cn
                    .as_ref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(cn))
        }
        None => false,
    }
}

/// The certificate of `certctl workflows complete ID --cert FILE`, checked against the
/// workflow's key and the old certificate's names and written to the workflow's folder; a
/// certificate that does not fit changes nothing. [`super::complete`] then continues the
/// workflow.
pub(crate) fn receive(
    store: &Store,
    id: u64,
    cert_file: &Path,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<(), WorkflowError> {
    let wf = store
        .workflow(id)?
        .ok_or(WorkflowError::NoSuchWorkflow(id))?;
    if wf.step != WorkflowStep::AwaitingCertificate || !wf.external() {
        return Err(WorkflowError::NotAwaiting { id, step: wf.step });
    }
    let wrong = |cause: String| WorkflowError::WrongCertificate {
        id,
        path: cert_file.to_path_buf(),
        cause,
    };
    let (bytes, _) = crate::inventory::scan::read_file_bytes(cert_file).map_err(&wrong)?;
    let ders = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        ca::pem_certificates(cert_file, &bytes).map_err(|e| wrong(e.to_string()))?
    } else {
        X509::from_der(&bytes).map_err(|_| wrong("neither a PEM nor a DER certificate".into()))?;
        vec![bytes]
    };
    let leaf_der = &ders[0];
    let leaf = X509::from_der(leaf_der).map_err(|e| wrong(format!("unreadable ({e})")))?;
    let key = step_key(&wf, secrets)?;
    let matches = leaf.public_key().is_ok_and(|pk| pk.public_eq(&key));
    if !matches {
        return Err(wrong(format!(
            "its public key is not the workflow's key (the CSR {} was made with it): was another CSR signed?",
            wf.csr.as_deref().unwrap_or("")
        )));
    }
    let facts = facts_from_der(leaf_der).map_err(|e| wrong(e.to_string()))?;
    let old = store.get(&wf.old)?.ok_or_else(|| {
        step_err(&wf, WorkflowStep::Issued)("the old certificate left the store".into())
    })?;
    let new_names = names(&facts);
    let missing: Vec<String> = names(&old.facts)
        .into_iter()
        .filter(|n| !covers(&facts, &new_names, n))
        .collect();
    if !missing.is_empty() {
        return Err(wrong(format!(
            "it does not name {} of the old certificate (it names {})",
            missing.join(", "),
            if new_names.is_empty() {
                "nothing".to_string()
            } else {
                new_names.join(", ")
            }
        )));
    }
    if facts.is_ca {
        return Err(wrong("it is a CA certificate".into()));
    }
    if facts.not_after <= now || facts.not_before > now {
        return Err(wrong(format!(
            "it is not valid now (valid {} to {})",
            certctl_store::rfc3339(facts.not_before),
            certctl_store::rfc3339(facts.not_after)
        )));
    }
    // The chain first, then the certificate: a crash in between leaves no `new.pem`, so the
    // workflow still awaits it.
    let dir = PathBuf::from(&wf.dir);
    let mut chain = String::new();
    for der in &ders {
        chain.push_str(&der_to_pem(der)?);
    }
    write_atomic(
        &dir.join("new.chain.pem"),
        chain.as_bytes(),
        FileMode::Private,
    )?;
    write_atomic(
        &dir.join("new.pem"),
        der_to_pem(leaf_der)?.as_bytes(),
        FileMode::Private,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use certctl_store::{KeyAlgorithm, SubjectAltNames};

    fn facts(cn: Option<&str>, dns: &[&str]) -> certctl_store::CertificateFacts {
        certctl_store::CertificateFacts {
            fingerprint: certctl_store::Sha256([0; 32]),
            subject: String::new(),
            subject_cn: cn.map(str::to_string),
            issuer: String::new(),
            serial: String::new(),
            not_before: 0,
            not_after: 1,
            sans: SubjectAltNames {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            key: KeyAlgorithm::Ed25519,
            signature_algorithm: String::new(),
            is_ca: false,
            subject_key_id: None,
            authority_key_id: None,
            spki_sha256: certctl_store::Sha256([0; 32]),
            crl_distribution_points: vec![],
            ocsp_urls: vec![],
        }
    }

    #[test]
    fn names_must_be_covered() {
        let new = facts(Some("gw"), &["GW.example.com", "b.example.com"]);
        let n = names(&new);
        assert!(covers(&new, &n, "DNS:gw.example.com"));
        assert!(!covers(&new, &n, "DNS:c.example.com"));
        // An old certificate without SANs: its CN as a DNS name or the new CN.
        assert!(covers(&new, &n, "CN:b.example.com"));
        assert!(covers(&new, &n, "CN:gw"));
        assert!(!covers(&new, &n, "CN:other"));
    }
}
