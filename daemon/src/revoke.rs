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
    rfc3339, AuditEvent, Certificate, Endpoint, Fingerprint, ManagedCa, Revocation,
    RevocationReason, Sha256, SourceLocation, Store, StoreError, UnixTime,
};
use openssl::x509::{X509Crl, X509};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::OffsetDateTime;

use crate::ca::{self, write_atomic, CaError, FileMode, Secret, Signer};
use crate::history::actor;
use crate::query::{self, QueryError};

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
    #[error("cannot sign the CRL of CA `{ca}`: {cause}")]
    CrlSigning { ca: String, cause: String },
    #[error("unknown revocation reason `{0}` (expected one of: {REASONS})")]
    BadReason(String),
}

/// The reasons `--reason` accepts (RFC 5280 §5.3.1).
pub const REASONS: &str = "unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation, certificate-hold, privilege-withdrawn, aa-compromise";

/// Parses a reason as written on the command line (`key-compromise`, ...).
pub fn parse_reason(s: &str) -> Result<RevocationReason, RevokeError> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| RevokeError::BadReason(s.to_string()))
}

/// The kebab-case name of a reason.
pub fn reason_name(r: RevocationReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{r:?}"))
}

fn rcgen_reason(r: RevocationReason) -> rcgen::RevocationReason {
    use rcgen::RevocationReason as R;
    match r {
        RevocationReason::Unspecified => R::Unspecified,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::CaCompromise => R::CaCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::CertificateHold => R::CertificateHold,
        RevocationReason::RemoveFromCrl => R::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => R::AaCompromise,
    }
}

// ---- CRLs ----------------------------------------------------------------------------------

/// A CRL that was signed and written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrlPublished {
    pub ca: String,
    pub number: u64,
    pub this_update: UnixTime,
    pub next_update: UnixTime,
    /// Serials listed.
    pub revoked: usize,
    /// Every file written (`crl.pem` first).
    pub paths: Vec<PathBuf>,
    pub der: Vec<u8>,
}

/// The certificates of a CA's CRL: everything it issued that is revoked.
fn revoked_by(store: &Store, signer: &Signer) -> Result<Vec<Certificate>, StoreError> {
    revoked_by_ca(store, &signer.cert)
}

fn revoked_by_ca(store: &Store, ca_cert: &Certificate) -> Result<Vec<Certificate>, StoreError> {
    let mut out: Vec<Certificate> = store
        .find_by_issuer(&ca_cert.facts.subject)?
        .into_iter()
        .filter(|c| c.revocation.is_some() && ca::issued_by(ca_cert, c))
        .collect();
    out.sort_by(|a, b| a.facts.serial.cmp(&b.facts.serial));
    out.dedup_by(|a, b| a.facts.serial == b.facts.serial);
    Ok(out)
}

/// The published CRL files of managed CA `ca` that do not show what the store holds: a file
/// missing, unreadable, not signed by the CA, or not listing a serial the store holds as
/// revoked by it (a publish that failed after the revocation was recorded: a full disk, a
/// read-only folder, a kill between the two). Empty when every file is current. Needs no key.
pub fn stale_crls(store: &Store, ca: &ManagedCa) -> Result<Vec<CrlCheck>, RevokeError> {
    let Some(ca_cert) = store.get(&ca.fingerprint)? else {
        return Ok(Vec::new());
    };
    let dir = ca.folder(store.path());
    let ca_der = match std::fs::read(dir.join("ca.pem"))
        .ok()
        .and_then(|pem| X509::from_pem(&pem).ok())
        .and_then(|x| x.to_der().ok())
    {
        Some(der) => der,
        // Without its certificate nothing can be checked; `ca list` and `store verify` say why.
        None => return Ok(Vec::new()),
    };
    // Negative serials are left out of certctl's CRLs (see `serial_bytes`).
    let serials: Vec<String> = revoked_by_ca(store, &ca_cert)?
        .into_iter()
        .map(|c| c.facts.serial)
        .filter(|s| !s.starts_with('-'))
        .collect();
    let mut paths = vec![dir.join("crl.pem")];
    paths.extend(ca.crl_paths.iter().map(PathBuf::from));
    Ok(paths
        .iter()
        .map(|p| verify_crl_file(p, &ca_der, &serials))
        .filter(|c| !c.ok)
        .collect())
}

/// The nextUpdate of the last CRL certctl published for `ca` (`None`: none yet).
pub fn crl_next_update(ca: &ManagedCa) -> Option<UnixTime> {
    ca.crl_published
        .map(|at| at.saturating_add(ca.crl_validity_secs.max(60)))
}

/// Whether the CRL of `ca` is due to be re-signed at `now`: `resign_before` seconds before
/// its nextUpdate, by default once half of its validity has passed (relying parties refuse
/// every certificate of a CA whose CRL has expired).
pub fn crl_resign_due(ca: &ManagedCa, now: UnixTime, resign_before: Option<i64>) -> bool {
    match crl_next_update(ca) {
        None => true,
        Some(next) => {
            let before = resign_before.unwrap_or(ca.crl_validity_secs.max(60) / 2);
            now >= next.saturating_sub(before)
        }
    }
}

/// What certd's CRL upkeep did for one managed CA.
#[derive(Debug)]
pub enum Upkeep {
    /// Re-signed and published (it was due, or its published files were behind the store).
    Published(CrlPublished),
    /// Due, but the CA key is encrypted and no passphrase file is configured for it.
    NeedsPassphrase,
    /// Due, but signing or writing failed.
    Failed(String),
}

/// certd's CRL upkeep: re-signs and publishes the CRL of every managed CA that is due
/// ([`crl_resign_due`]) or whose published files are behind the store ([`stale_crls`]).
/// `passphrase` gives the secret of an encrypted CA, if certd has one.
pub fn crl_upkeep(
    store: &Store,
    now: UnixTime,
    resign_before: Option<i64>,
    passphrase: &dyn Fn(&ManagedCa) -> Option<Secret>,
) -> Result<Vec<(String, Upkeep)>, RevokeError> {
    let mut out = Vec::new();
    for ca in store.managed_cas()? {
        if !crl_resign_due(&ca, now, resign_before) && stale_crls(store, &ca)?.is_empty() {
            continue;
        }
        let secret = if ca.encrypted {
            match passphrase(&ca) {
                Some(s) => Some(s),
                None => {
                    out.push((ca.name, Upkeep::NeedsPassphrase));
                    continue;
                }
            }
        } else {
            None
        };
        let outcome = Signer::load(store, &ca.name, secret.as_ref())
            .and_then(|signer| publish_crl(store, &signer, now));
        out.push((
            ca.name,
            match outcome {
                Ok(published) => Upkeep::Published(published),
                Err(e) => Upkeep::Failed(e.to_string()),
            },
        ));
    }
    Ok(out)
}

/// The names of the managed CAs whose published CRL is behind the store.
pub fn stale_cas(store: &Store) -> Result<Vec<String>, RevokeError> {
    let mut out = Vec::new();
    for ca in store.managed_cas()? {
        if !stale_crls(store, &ca)?.is_empty() {
            out.push(ca.name);
        }
    }
    Ok(out)
}

/// Lowercase hex serial → bytes (an odd number of digits gets a leading zero). `None` for a
/// negative serial (`-…`): rcgen writes every serial as a positive INTEGER, so it cannot list
/// one, and listing its magnitude would revoke a different certificate.
fn serial_bytes(hex_serial: &str) -> Option<Vec<u8>> {
    if hex_serial.starts_with('-') {
        return None;
    }
    let padded = if hex_serial.len() % 2 == 1 {
        format!("0{hex_serial}")
    } else {
        hex_serial.to_string()
    };
    hex::decode(padded).ok()
}

/// Signs a new CRL for the CA (number + 1) and writes it to every configured path.
pub fn publish_crl(store: &Store, signer: &Signer, now: UnixTime) -> Result<CrlPublished, CaError> {
    let revoked = revoked_by(store, signer)?;
    let mut paths = vec![signer.dir.join("crl.pem")];
    paths.extend(signer.ca.crl_paths.iter().map(PathBuf::from));
    // A store restored from an older backup (or copied back by hand) never reuses a number
    // it published since: the next one is above every CRL file there is.
    if let Some(published) = crate::backup::highest_crl_number(&paths) {
        if store.raise_crl_number(&signer.ca.name, published)? {
            tracing::warn!(ca = %signer.ca.name, published, "a published CRL has a higher number than the store remembers (restored from a backup?): numbering continues above it");
        }
    }
    let number = store.next_crl_number(&signer.ca.name, now)?;
    let crl = sign_crl(signer, &revoked, number, now)?;
    write_crl(&paths, &crl)?;
    audit_crl(store, signer, &crl, now)?;
    Ok(CrlPublished {
        ca: signer.ca.name.clone(),
        number,
        this_update: now,
        next_update: crl.next_update,
        revoked: crl.listed,
        paths,
        der: crl.der,
    })
}

/// A CRL signed by a managed CA, not yet written anywhere.
pub struct SignedCrl {
    pub number: u64,
    pub next_update: UnixTime,
    /// How many serials it lists.
    pub listed: usize,
    pub der: Vec<u8>,
    pub pem: String,
}

/// Signs CRL number `number` of the CA listing the `revoked` certificates it issued
/// (thisUpdate = now, nextUpdate = now + the CA's CRL validity).
pub fn sign_crl(
    signer: &Signer,
    revoked: &[Certificate],
    number: u64,
    now: UnixTime,
) -> Result<SignedCrl, CaError> {
    let next_update = now.saturating_add(signer.ca.crl_validity_secs.max(60));
    let to_dt = |t: UnixTime| {
        OffsetDateTime::from_unix_timestamp(t)
            .map_err(|_| CaError::Invalid(format!("time {t} is out of range")))
    };
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for c in revoked {
        let Some(r) = &c.revocation else { continue };
        let Some(serial) = serial_bytes(&c.facts.serial) else {
            tracing::warn!(
                ca = %signer.ca.name,
                serial = %c.facts.serial,
                "a negative serial cannot be listed in a CRL certctl signs; left out"
            );
            continue;
        };
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: to_dt(r.revoked_at.min(now))?,
            reason_code: Some(rcgen_reason(r.reason)),
            invalidity_date: None,
        });
    }
    let listed = revoked_certs.len();
    let params = CertificateRevocationListParams {
        this_update: to_dt(now)?,
        next_update: to_dt(next_update)?,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: match &signer.cert.facts.subject_key_id {
            Some(ski) => KeyIdMethod::PreSpecified(ski.0.clone()),
            None => KeyIdMethod::Sha256,
        },
    };
    let issuer = signer.issuer()?;
    let crl = params.signed_by(&issuer).map_err(|e| CaError::Crypto {
        what: format!("sign the CRL of CA `{}`", signer.ca.name),
        cause: e.to_string(),
    })?;
    let der = crl.der().to_vec();
    let pem = crl.pem().map_err(|e| CaError::Crypto {
        what: "encode the CRL as PEM".into(),
        cause: e.to_string(),
    })?;
    Ok(SignedCrl {
        number,
        next_update,
        listed,
        der,
        pem,
    })
}

/// Writes a CRL to each path (`.der`/`.crl`: DER, else PEM), atomically.
pub fn write_crl(paths: &[PathBuf], crl: &SignedCrl) -> Result<(), CaError> {
    for p in paths {
        if let Some(parent) = p.parent() {
            crate::files::atomic::create_dir_all(parent, 0o755)?;
        }
        write_atomic(p, crl_bytes_for(p, &crl.der, &crl.pem), FileMode::Public)?;
    }
    Ok(())
}

/// Records the `crl-published` audit event of a CRL.
pub fn audit_crl(
    store: &Store,
    signer: &Signer,
    crl: &SignedCrl,
    now: UnixTime,
) -> Result<(), CaError> {
    store.record_audit(&AuditEvent {
        at: now,
        fingerprint: Some(signer.ca.fingerprint),
        actor: actor(),
        action: "crl-published".into(),
        detail: format!(
            "CRL #{} of CA `{}` with {} revoked serials, next update {}",
            crl.number,
            signer.ca.name,
            crl.listed,
            rfc3339(crl.next_update)
        ),
    })?;
    Ok(())
}

/// DER for `.der`/`.crl` files, PEM otherwise.
fn crl_bytes_for<'a>(path: &Path, der: &'a [u8], pem: &'a str) -> &'a [u8] {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("der") | Some("crl") => der,
        _ => pem.as_bytes(),
    }
}

/// What reading a published CRL file back showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrlCheck {
    pub path: PathBuf,
    /// It parsed, verified with the CA key, and listed every serial asked about.
    pub ok: bool,
    /// Sentences: what was checked, and what was wrong.
    pub detail: String,
}

/// Reads `path` (PEM or DER) and checks its signature with the CA certificate and that it
/// lists `serials` (lowercase hex).
pub fn verify_crl_file(path: &Path, ca_der: &[u8], serials: &[String]) -> CrlCheck {
    let fail = |detail: String| CrlCheck {
        path: path.to_path_buf(),
        ok: false,
        detail,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read it: {}", crate::files::io_cause(&e))),
    };
    let crl = match X509Crl::from_pem(&bytes).or_else(|_| X509Crl::from_der(&bytes)) {
        Ok(c) => c,
        Err(e) => return fail(format!("does not parse as a CRL: {e}")),
    };
    let key = match X509::from_der(ca_der).and_then(|c| c.public_key()) {
        Ok(k) => k,
        Err(e) => return fail(format!("cannot read the CA key: {e}")),
    };
    match crl.verify(&key) {
        Ok(true) => {}
        _ => return fail("its signature does not verify with the CA's key".into()),
    }
    // Serials compared as the inventory stores them (see `x509::crl_entries`).
    let entries = match crl
        .to_der()
        .map_err(|e| e.to_string())
        .and_then(|der| crate::certs::x509::crl_entries(&der).map_err(|e| e.to_string()))
    {
        Ok(e) => e,
        Err(e) => return fail(format!("its entries cannot be read: {e}")),
    };
    let missing: Vec<String> = serials
        .iter()
        .filter(|s| !entries.contains_key(s.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return fail(format!(
            "signed by the CA, but does not list serial(s) {}",
            missing.join(", ")
        ));
    }
    CrlCheck {
        path: path.to_path_buf(),
        ok: true,
        detail: if serials.is_empty() {
            "parses and is signed by the CA".into()
        } else {
            format!(
                "parses, is signed by the CA and lists serial(s) {}",
                serials.join(", ")
            )
        },
    }
}

/// `certctl ca crl NAME --out FILE [--der]`: signs a fresh CRL (published to the configured
/// paths as well) and writes a copy to `out`.
pub fn ca_crl(
    store: &Store,
    name: &str,
    out: Option<&Path>,
    der: bool,
    passphrase: Option<&Secret>,
    now: UnixTime,
) -> Result<CrlPublished, RevokeError> {
    let signer = Signer::load(store, name, passphrase)?;
    let mut published = publish_crl(store, &signer, now)?;
    let Some(out) = out else {
        return Ok(published);
    };
    let bytes = if der {
        published.der.clone()
    } else {
        X509Crl::from_der(&published.der)
            .and_then(|c| c.to_pem())
            .map_err(|e| RevokeError::CrlSigning {
                ca: name.to_string(),
                cause: e.to_string(),
            })?
    };
    write_atomic(out, &bytes, FileMode::Public)?;
    published.paths.push(out.to_path_buf());
    Ok(published)
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
    pub reason: RevocationReason,
    pub dry_run: bool,
    pub passphrase: Option<Secret>,
    /// Re-probe the TLS endpoints that served a revoked certificate.
    pub probe_endpoints: bool,
}

/// One certificate to revoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub certificate: Certificate,
    /// The managed CA that issued it, if certctl holds that CA's key.
    pub managed_ca: Option<String>,
}

/// What an endpoint that served a revoked certificate serves now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointCheck {
    pub endpoint: String,
    pub fingerprint: Fingerprint,
    /// `still-serving`, `replaced`, `unreachable`, or `not-probed`.
    pub state: String,
    pub detail: String,
}

/// What `certctl revoke` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeReport {
    pub dry_run: bool,
    pub reason: RevocationReason,
    pub targets: Vec<Target>,
    /// Selected certificates that were revoked already (left as they are).
    pub already_revoked: Vec<Certificate>,
    pub crls: Vec<CrlPublished>,
    pub crl_checks: Vec<CrlCheck>,
    /// Issuer DNs of revoked certificates whose CA certctl does not hold.
    pub tell_issuers: Vec<String>,
    pub endpoints: Vec<EndpointCheck>,
    /// Managed CAs of already-revoked certificates whose published CRL was behind the store
    /// (a publish that failed): republished by this run (a dry run only names them).
    #[serde(default)]
    pub republished: Vec<String>,
}

/// The certificates a request selects (deduplicated, sorted by expiry).
pub fn select(store: &Store, req: &RevokeRequest) -> Result<Vec<Certificate>, RevokeError> {
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
    crate::query::refresh_last_seen(store, &mut out)?;
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
pub fn spki_of_file(path: &Path, passphrase: Option<&Secret>) -> Result<Sha256, RevokeError> {
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
pub fn revoke(
    store: &Store,
    req: &RevokeRequest,
    now: UnixTime,
) -> Result<RevokeReport, RevokeError> {
    revoke_locked(store, req, now, &|| ())
}

/// [`revoke`] taking the store's writer lock with `lock` for the revocation itself, and
/// probing the endpoints that served the revoked certificates without it (each outcome is
/// recorded under it), so a slow endpoint cannot hold up scans.
pub fn revoke_locked<G>(
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
            action: "revoked".into(),
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
pub fn revoke_one(
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
            action: "revoked".into(),
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
        use crate::ca::{self, CaInitRequest, IssueRequest, KeyKind};
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
        let info = ca::init(&store, &init, now).unwrap();
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
