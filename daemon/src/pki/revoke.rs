//! Revocation: `certctl revoke` (one certificate, or the blast radius of a key or a CA),
//! CRLs of managed CAs, and checking that a revocation is visible.
//!
//! A revocation is recorded in the certificate's record ([`Revocation`]: time, reason, who)
//! and in the audit history. When certctl holds the issuing CA's key, a new CRL is signed at
//! once (CRL number + 1, thisUpdate = now, nextUpdate = now + the CA's CRL validity, every
//! revoked serial of that CA with its reason) and written, atomically, to `STORE/ca/NAME/crl.pem`
//! and to the CA's extra CRL paths (`.der`/`.crl`: DER, else PEM). Each file is then read back
//! and checked with OpenSSL: it parses, its signature verifies with the CA's key, and it
//! lists the revoked serials. For a CA certctl does not hold, the revocation is tracked
//! only, and the report says that the issuing CA must be told.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use certctl_store::{
    AuditEvent, Certificate, Endpoint, Fingerprint, Revocation, RevocationReason, Sha256,
    SourceLocation, Store, StoreError, UnixTime,
};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::history::{actor, AuditAction};
use crate::inventory::query::{self, QueryError};
use crate::pki::ca::{self, CaError, Secret, Signer};
use crate::pki::crl::{
    publish_crl, reason_name, stale_crls, verify_crl_file, CrlCheck, CrlError, CrlPublished,
};

/// Errors of revocation and CRL publishing.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("`{0}` names several certificates; give a fingerprint prefix:\n{1}")]
    SeveralMatches(String, String),
    #[error(
        "nothing to revoke: give a certificate ID, --spki HASH, --issuer ID or --key-file FILE"
    )]
    NoSelector,
    #[error("--spki {0}: not a SHA-256 (64 hex characters)")]
    BadSpki(String),
    #[error("--key-file {}: {cause}", path.display())]
    BadKeyFile { path: PathBuf, cause: String },
    #[error(transparent)]
    Crl(#[from] CrlError),
    #[error("unknown revocation reason `{0}` (expected one of: {REASONS})")]
    BadReason(String),
}

/// The reasons `--reason` accepts (RFC 5280 §5.3.1).
pub(crate) const REASONS: &str = "unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation, certificate-hold, privilege-withdrawn, aa-compromise";

/// Parses a reason as written on the command line (`key-compromise`, ...).
pub fn parse_reason(s: &str) -> Result<RevocationReason, RevokeError> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| RevokeError::BadReason(s.to_string()))
}

// ---- revoke --------------------------------------------------------------------------------

/// `certctl revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// Certificates by ID (fingerprint prefix or exact name; a name must be unambiguous).
    pub ids: Vec<String>,
    /// Every certificate with this SPKI SHA-256.
    pub spki: Option<String>,
    /// Every certificate issued by the CA certificate with this ID.
    pub issuer: Option<String>,
    /// Every certificate for the key in this file (private key, public key or certificate).
    pub key_file: Option<PathBuf>,
    /// The RFC 5280 reason recorded and put into the CRLs (`--reason`, e.g. `key-compromise`).
    pub reason: RevocationReason,
    /// `--dry-run`: only select and report, change nothing (no record, no CRL, no probe).
    pub dry_run: bool,
    /// The passphrase (`--passphrase-file` or `CERTCTL_CA_PASSPHRASE`) that opens encrypted
    /// managed CA keys (to sign their CRLs) and an encrypted `key_file`; `None` when none is
    /// encrypted.
    pub passphrase: Option<Secret>,
    /// Re-probe the TLS endpoints that served a revoked certificate.
    pub probe_endpoints: bool,
}

/// One certificate to revoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The certificate as the store held it before this run (`certificate` in `--json`).
    pub certificate: Certificate,
    /// The managed CA that issued it, if certctl holds that CA's key.
    pub managed_ca: Option<String>,
}

/// What an endpoint that served a revoked certificate serves now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointCheck {
    /// The endpoint, `host:port`.
    pub endpoint: String,
    /// The revoked certificate it served (`fingerprint_sha256` in `--json`).
    pub fingerprint: Fingerprint,
    /// `still-serving`, `replaced`, `unreachable`, or `not-probed`.
    pub state: String,
    /// A sentence: what it serves now, the probe's error, or why it was not probed.
    pub detail: String,
}

/// What `certctl revoke` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeReport {
    /// The request's `dry_run`: true when nothing was changed (`dry_run` in `revoke --json`).
    pub dry_run: bool,
    /// The reason recorded (`reason` in `--json`, kebab-case as `--reason` takes it).
    pub reason: RevocationReason,
    /// The selected certificates not yet revoked: revoked now (or, dry run, would be),
    /// soonest-expiring first (`targets` in `--json`).
    pub targets: Vec<Target>,
    /// Selected certificates that were revoked already (left as they are).
    pub already_revoked: Vec<Certificate>,
    /// One CRL per managed CA whose certificates were revoked (or whose CRL was behind),
    /// signed and published by this run (`crls` in `--json`); empty in a dry run.
    pub crls: Vec<CrlPublished>,
    /// Each published CRL file read back and checked to list the revoked serials
    /// (`crl_checks` in `--json`); empty in a dry run.
    pub crl_checks: Vec<CrlCheck>,
    /// Issuer DNs of revoked certificates whose CA certctl does not hold.
    pub tell_issuers: Vec<String>,
    /// The TLS endpoints that last served a revoked certificate, re-probed unless
    /// `--no-probe` (`endpoints` in `--json`); empty in a dry run.
    pub endpoints: Vec<EndpointCheck>,
    /// Managed CAs of already-revoked certificates whose published CRL was behind the store
    /// (a publish that failed): republished by this run (a dry run only names them).
    #[serde(default)]
    pub republished: Vec<String>,
}

/// The certificates a request selects (deduplicated, sorted by expiry).
pub(crate) fn select(store: &Store, req: &RevokeRequest) -> Result<Vec<Certificate>, RevokeError> {
    if req.ids.is_empty() && req.spki.is_none() && req.issuer.is_none() && req.key_file.is_none() {
        return Err(RevokeError::NoSelector);
    }
    let mut selected: BTreeMap<Fingerprint, Certificate> = BTreeMap::new();
    for id in &req.ids {
        let found = query::find(store, id)?;
        if found.len() > 1 {
            let list: Vec<String> = found
                .iter()
                .map(|c| format!("  {}  {}", c.fingerprint(), c.facts.display_name()))
                .collect();
            return Err(RevokeError::SeveralMatches(id.clone(), list.join("\n")));
        }
        for c in found {
            selected.insert(c.fingerprint(), c);
        }
    }
    if let Some(spki) = &req.spki {
        let hash: Sha256 = spki
            .parse()
            .map_err(|_| RevokeError::BadSpki(spki.clone()))?;
        for c in store.find_by_spki(&hash)? {
            selected.insert(c.fingerprint(), c);
        }
    }
    if let Some(path) = &req.key_file {
        let hash = spki_of_file(path, req.passphrase.as_ref())?;
        for c in store.find_by_spki(&hash)? {
            selected.insert(c.fingerprint(), c);
        }
    }
    if let Some(id) = &req.issuer {
        for c in issued_by_selector(store, id)? {
            selected.insert(c.fingerprint(), c);
        }
    }
    let mut out: Vec<Certificate> = selected.into_values().collect();
    crate::inventory::query::refresh_last_seen(store, &mut out)?;
    out.sort_by_key(|c| (c.facts.not_after, c.fingerprint()));
    Ok(out)
}

/// The certificates `revoke --issuer ID` selects. ID is what certctl prints of a CA: a
/// fingerprint prefix or the CN of an inventoried CA certificate (its issued certificates,
/// key identifiers checked), else an issuer DN exactly as `show`/`list` print it (every
/// certificate naming that issuer, inventoried CA or not), else a case-insensitive substring
/// of issuer DNs, like `list --issuer`, which must point at one DN (several are listed).
fn issued_by_selector(store: &Store, id: &str) -> Result<Vec<Certificate>, RevokeError> {
    let several = |list: Vec<String>| RevokeError::SeveralMatches(id.to_string(), list.join("\n"));
    // A fingerprint prefix or a CN of a CA certificate.
    let cas: Vec<Certificate> = match query::find(store, id) {
        Ok(found) => found.into_iter().filter(|c| c.facts.is_ca).collect(),
        Err(QueryError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if cas.len() > 1 {
        return Err(several(
            cas.iter()
                .map(|c| format!("  {}  {}", c.fingerprint(), c.facts.subject))
                .collect(),
        ));
    }
    if let Some(ca_cert) = cas.first() {
        return Ok(store
            .find_by_issuer(&ca_cert.facts.subject)?
            .into_iter()
            .filter(|c| ca::issued_by(ca_cert, c))
            .collect());
    }
    // The issuer DN as printed (the CA's own, self-issued certificate is not one it issued).
    let issued = |c: &Certificate| c.facts.subject != c.facts.issuer;
    let exact: Vec<Certificate> = store
        .find_by_issuer(id)?
        .into_iter()
        .filter(issued)
        .collect();
    if !exact.is_empty() {
        return Ok(exact);
    }
    // A substring of issuer DNs: one DN, or the candidates.
    let needle = id.to_lowercase();
    let mut by_dn: BTreeMap<String, Vec<Certificate>> = BTreeMap::new();
    for c in store.iter() {
        let c = c?;
        if issued(&c) && c.facts.issuer.to_lowercase().contains(&needle) {
            by_dn.entry(c.facts.issuer.clone()).or_default().push(c);
        }
    }
    match by_dn.len() {
        0 => Err(QueryError::NotFound(id.to_string()).into()),
        1 => Ok(by_dn.into_values().next().unwrap_or_default()),
        _ => Err(several(
            by_dn
                .iter()
                .map(|(dn, certs)| format!("  {dn}  ({} certificates)", certs.len()))
                .collect(),
        )),
    }
}

/// SHA-256 of the SubjectPublicKeyInfo of the key in a file: a private key (PEM, maybe
/// encrypted), a public key (PEM) or a certificate (PEM or DER).
pub(crate) fn spki_of_file(
    path: &Path,
    passphrase: Option<&Secret>,
) -> Result<Sha256, RevokeError> {
    let bad = |cause: String| RevokeError::BadKeyFile {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(crate::files::io_cause(&e)))?;
    let spki = if let Ok(k) = ca::load_private_key(&bytes, passphrase) {
        k.public_key_to_der()
    } else if let Ok(k) = openssl::pkey::PKey::public_key_from_pem(&bytes) {
        k.public_key_to_der()
    } else if let Ok(c) = X509::from_pem(&bytes).or_else(|_| X509::from_der(&bytes)) {
        c.public_key().and_then(|k| k.public_key_to_der())
    } else {
        return Err(bad(
            "no private key, public key or certificate in it (an encrypted key needs --passphrase-file)".into(),
        ));
    }
    .map_err(|e| bad(e.to_string()))?;
    Ok(Sha256(sha2::Sha256::digest(&spki).into()))
}

/// Revokes (or, with `dry_run`, lists) the selected certificates.
pub(crate) fn revoke(
    store: &Store,
    req: &RevokeRequest,
    now: UnixTime,
) -> Result<RevokeReport, RevokeError> {
    revoke_locked(store, req, now, &|| ())
}

/// [`revoke`] taking the store's writer lock with `lock` for the revocation itself, and
/// probing the endpoints that served the revoked certificates without it (each outcome is
/// recorded under it), so a slow endpoint cannot hold up scans.
pub(crate) fn revoke_locked<G>(
    store: &Store,
    req: &RevokeRequest,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<RevokeReport, RevokeError> {
    let guard = lock();
    let mut report = revoke_records(store, req, now)?;
    if req.dry_run || report.targets.is_empty() {
        return Ok(report);
    }
    let to_probe = endpoints_of(store, &report.targets)?;
    drop(guard);
    report.endpoints = check_endpoints(store, to_probe, req.probe_endpoints, now, lock)?;
    Ok(report)
}

/// Everything of a revocation but the endpoint checks.
fn revoke_records(
    store: &Store,
    req: &RevokeRequest,
    now: UnixTime,
) -> Result<RevokeReport, RevokeError> {
    let selected = select(store, req)?;
    let (already, todo): (Vec<Certificate>, Vec<Certificate>) =
        selected.into_iter().partition(|c| c.revocation.is_some());
    let mut targets = Vec::with_capacity(todo.len());
    for c in todo {
        let managed_ca = ca::managed_issuer(store, &c)?.map(|(ca, _)| ca.name);
        targets.push(Target {
            certificate: c,
            managed_ca,
        });
    }
    let mut report = RevokeReport {
        dry_run: req.dry_run,
        reason: req.reason,
        targets,
        already_revoked: already,
        crls: Vec::new(),
        crl_checks: Vec::new(),
        tell_issuers: Vec::new(),
        endpoints: Vec::new(),
        republished: Vec::new(),
    };
    let tell: BTreeSet<String> = report
        .targets
        .iter()
        .filter(|t| t.managed_ca.is_none())
        .map(|t| t.certificate.facts.issuer.clone())
        .collect();
    report.tell_issuers = tell.into_iter().collect();
    // The revocation is only complete once the CRL shows it: an earlier run may have
    // recorded these certificates as revoked and failed to publish.
    let mut behind = BTreeSet::new();
    for c in &report.already_revoked {
        if let Some((ca, _)) = ca::managed_issuer(store, c)? {
            if !behind.contains(&ca.name) && !stale_crls(store, &ca)?.is_empty() {
                behind.insert(ca.name);
            }
        }
    }
    report.republished = behind.iter().cloned().collect();
    if req.dry_run || (report.targets.is_empty() && behind.is_empty()) {
        return Ok(report);
    }

    // Load every signing key first: a wrong passphrase must stop everything before any
    // certificate is marked revoked.
    let ca_names: BTreeSet<String> = report
        .targets
        .iter()
        .filter_map(|t| t.managed_ca.clone())
        .chain(behind.iter().cloned())
        .collect();
    let mut signers = Vec::new();
    for name in &ca_names {
        signers.push(Signer::load(store, name, req.passphrase.as_ref())?);
    }

    let who = actor();
    for t in &mut report.targets {
        let revocation = Revocation {
            revoked_at: now,
            reason: req.reason,
            revoked_by: who.clone(),
        };
        t.certificate.revocation = Some(revocation);
        store.put(&t.certificate)?;
        let detail = match &t.managed_ca {
            Some(ca) => format!(
                "reason {}; serial {}; published in the CRL of managed CA `{ca}`",
                reason_name(req.reason),
                t.certificate.facts.serial
            ),
            None => format!(
                "reason {}; serial {}; tracked only: the issuing CA ({}) must also be told",
                reason_name(req.reason),
                t.certificate.facts.serial,
                t.certificate.facts.issuer
            ),
        };
        store.record_audit(&AuditEvent {
            at: now,
            fingerprint: Some(t.certificate.fingerprint()),
            actor: who.clone(),
            action: AuditAction::Revoked.into(),
            detail,
        })?;
    }
    store.flush()?;

    for signer in &signers {
        let published = publish_crl(store, signer, now)?;
        let mut serials: Vec<String> = report
            .targets
            .iter()
            .filter(|t| t.managed_ca.as_deref() == Some(signer.ca.name.as_str()))
            .map(|t| t.certificate.facts.serial.clone())
            .collect();
        if behind.contains(&signer.ca.name) {
            for c in &report.already_revoked {
                if signer.issued(c) && !c.facts.serial.starts_with('-') {
                    serials.push(c.facts.serial.clone());
                }
            }
        }
        for p in &published.paths {
            report
                .crl_checks
                .push(verify_crl_file(p, &signer.cert_der, &serials));
        }
        report.crls.push(published);
    }
    Ok(report)
}

/// The endpoints whose last known chain had a revoked certificate: (endpoint, the revoked
/// certificate's fingerprint).
fn endpoints_of(
    store: &Store,
    targets: &[Target],
) -> Result<Vec<(Endpoint, Fingerprint)>, RevokeError> {
    let mut out = Vec::new();
    for t in targets {
        let fp = t.certificate.fingerprint();
        let addresses: BTreeSet<String> = t
            .certificate
            .current_sources()
            .filter_map(|s| match &s.location {
                SourceLocation::Endpoint { address, .. } => Some(address.clone()),
                SourceLocation::File { .. } => None,
            })
            .collect();
        for address in addresses {
            if let Some(endpoint) = store.endpoint(&address)? {
                out.push((endpoint, fp));
            }
        }
    }
    Ok(out)
}

/// For each endpoint whose last known chain had a revoked certificate: what it serves now.
/// The handshakes run without `lock`; each outcome is recorded under it.
fn check_endpoints<G>(
    store: &Store,
    endpoints: Vec<(Endpoint, Fingerprint)>,
    probe: bool,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<Vec<EndpointCheck>, RevokeError> {
    let mut out = Vec::new();
    for (endpoint, fp) in endpoints {
        let address = endpoint.address.clone();
        if !probe {
            out.push(EndpointCheck {
                endpoint: address,
                fingerprint: fp,
                state: "not-probed".into(),
                detail: "served it at the last probe; run `certctl probe` to check".into(),
            });
            continue;
        }
        let outcome = crate::probe::reprobe(store, &endpoint, now, lock);
        let (state, detail) = match (&outcome.error, outcome.chain.first()) {
            (Some(e), _) => ("unreachable", e.clone()),
            (None, Some(leaf)) if leaf.fingerprint == fp => (
                "still-serving",
                "still serves the revoked certificate: the replacement is not live yet".to_string(),
            ),
            (None, Some(leaf)) => (
                "replaced",
                format!("now serves {} ({})", leaf.display_name(), leaf.fingerprint),
            ),
            (None, None) => ("unreachable", "served no certificate".to_string()),
        };
        out.push(EndpointCheck {
            endpoint: address,
            fingerprint: fp,
            state: state.into(),
            detail,
        });
    }
    Ok(out)
}

/// Marks one certificate revoked (if it is not already) and republishes its managed CA's
/// CRL; used by the regenerate workflow (`superseded`). Returns the CRL checks.
pub(crate) fn revoke_one(
    store: &Store,
    fp: &Fingerprint,
    reason: RevocationReason,
    passphrase: Option<&Secret>,
    now: UnixTime,
) -> Result<Vec<CrlCheck>, RevokeError> {
    let Some(mut cert) = store.get(fp)? else {
        return Err(RevokeError::Query(QueryError::NotFound(fp.to_hex())));
    };
    let managed = ca::managed_issuer(store, &cert)?;
    let signer = match &managed {
        Some((ca, _)) => Some(Signer::load(store, &ca.name, passphrase)?),
        None => None,
    };
    if cert.revocation.is_none() {
        cert.revocation = Some(Revocation {
            revoked_at: now,
            reason,
            revoked_by: actor(),
        });
        store.put(&cert)?;
        store.record_audit(&AuditEvent {
            at: now,
            fingerprint: Some(*fp),
            actor: actor(),
            action: AuditAction::Revoked.into(),
            detail: format!(
                "reason {}; serial {}",
                reason_name(reason),
                cert.facts.serial
            ),
        })?;
    }
    let mut checks = Vec::new();
    if let Some(signer) = signer {
        // Republish only if the current CRL does not list it yet (idempotent on resume).
        let crl_path = signer.dir.join("crl.pem");
        let serials = vec![cert.facts.serial.clone()];
        let current = verify_crl_file(&crl_path, &signer.cert_der, &serials);
        let paths = if current.ok {
            let mut p = vec![crl_path];
            p.extend(signer.ca.crl_paths.iter().map(PathBuf::from));
            p
        } else {
            publish_crl(store, &signer, now)?.paths
        };
        for p in paths {
            checks.push(verify_crl_file(&p, &signer.cert_der, &serials));
        }
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::crl::serial_bytes;

    #[test]
    fn reasons_parse_in_kebab_case() {
        assert_eq!(
            parse_reason("key-compromise").unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            parse_reason("Superseded").unwrap(),
            RevocationReason::Superseded
        );
        assert!(parse_reason("stolen").is_err());
        assert_eq!(reason_name(RevocationReason::CaCompromise), "ca-compromise");
    }

    #[test]
    fn each_revocation_publishes_the_next_crl_listing_every_revoked_serial() {
        use crate::pki::ca::{self, IssueRequest, KeyKind};
        use crate::pki::cas::{self, CaInitRequest};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let now = certctl_store::now();
        let init = CaInitRequest {
            name: "unit".into(),
            cn: None,
            org: None,
            key: KeyKind::EcP256,
            validity: None,
            parent_cert: None,
            parent_key: None,
            parent_passphrase: None,
            passphrase: None,
            crl_out: vec![],
            crl_urls: vec![],
            crl_validity: None,
        };
        let info = cas::init(&store, &init, now).unwrap();
        assert_eq!(info.ca.crl_number, 1);
        let mut serials = Vec::new();
        for (i, cn) in ["a.test", "b.test"].iter().enumerate() {
            let issued = ca::issue(
                &store,
                &IssueRequest {
                    ca: "unit".into(),
                    cn: cn.to_string(),
                    sans: vec![],
                    role: certctl_store::Role::Other,
                    validity: None,
                    key: KeyKind::EcP256,
                    out: dir.path().join("out"),
                    pfx_password: None,
                    pfx_format: Default::default(),
                    passphrase: None,
                    overwrite: false,
                },
                now,
            )
            .unwrap();
            serials.push(issued.certificate.facts.serial.clone());
            let report = revoke(
                &store,
                &RevokeRequest {
                    ids: vec![issued.certificate.fingerprint().to_hex()],
                    spki: None,
                    issuer: None,
                    key_file: None,
                    reason: RevocationReason::KeyCompromise,
                    dry_run: false,
                    passphrase: None,
                    probe_endpoints: false,
                },
                now,
            )
            .unwrap();
            assert_eq!(report.crls[0].number, 2 + i as u64);
            assert_eq!(report.crls[0].revoked, i + 1);
            assert!(
                report.crl_checks.iter().all(|c| c.ok),
                "{:?}",
                report.crl_checks
            );
        }
        let check = verify_crl_file(
            &info.crl_path,
            &{
                let pem = std::fs::read(&info.cert_path).unwrap();
                X509::from_pem(&pem).unwrap().to_der().unwrap()
            },
            &serials,
        );
        assert!(check.ok, "{}", check.detail);
        // A serial it does not list is reported.
        let check = verify_crl_file(
            &info.crl_path,
            &X509::from_pem(&std::fs::read(&info.cert_path).unwrap())
                .unwrap()
                .to_der()
                .unwrap(),
            &["7777".into()],
        );
        assert!(!check.ok && check.detail.contains("7777"));
    }

    #[test]
    fn serials_become_bytes() {
        assert_eq!(serial_bytes("a1b"), Some(vec![0x0a, 0x1b]));
        assert_eq!(serial_bytes("10ff"), Some(vec![0x10, 0xff]));
        assert_eq!(serial_bytes("-1234"), None);
    }
}
