//! CRLs of the managed CAs: signing ([`sign_crl`]), writing to every configured copy,
//! auditing, re-signing before nextUpdate ([`crl_upkeep`]) and checking the published files
//! against the store ([`stale_crls`]).

use std::path::{Path, PathBuf};

use certctl_store::{
    rfc3339, AuditEvent, Certificate, ManagedCa, RevocationReason, Store, StoreError, UnixTime,
};
use openssl::x509::{X509Crl, X509};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::history::{actor, AuditAction};
use crate::inventory::query::QueryError;
use crate::pki::ca::{self, write_atomic, CaError, FileMode, Secret, Signer};

/// Why a CRL could not be signed, written or checked.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("cannot sign the CRL of CA `{ca}`: {cause}")]
    CrlSigning { ca: String, cause: String },
}

/// A CRL that was signed and written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrlPublished {
    /// The managed CA that signed it (`ca init NAME`).
    pub ca: String,
    /// Its cRLNumber: one more than any this CA published before.
    pub number: u64,
    /// When it was signed (Unix seconds; RFC 3339 in `--json`).
    pub this_update: UnixTime,
    /// When relying parties stop accepting it: `this_update` + the CA's CRL validity (Unix
    /// seconds; RFC 3339 in `--json`).
    pub next_update: UnixTime,
    /// Serials listed.
    pub revoked: usize,
    /// Every file written (`crl.pem` first).
    pub paths: Vec<PathBuf>,
    /// The CRL itself, DER-encoded (not part of any `--json` output).
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
pub(crate) fn stale_crls(store: &Store, ca: &ManagedCa) -> Result<Vec<CrlCheck>, CrlError> {
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
pub(crate) fn crl_next_update(ca: &ManagedCa) -> Option<UnixTime> {
    ca.crl_published
        .map(|at| at.saturating_add(ca.crl_validity_secs.max(60)))
}

/// Whether the CRL of `ca` is due to be re-signed at `now`: `resign_before` seconds before
/// its nextUpdate, by default once half of its validity has passed (relying parties refuse
/// every certificate of a CA whose CRL has expired).
pub(crate) fn crl_resign_due(ca: &ManagedCa, now: UnixTime, resign_before: Option<i64>) -> bool {
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
pub(crate) enum Upkeep {
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
pub(crate) fn crl_upkeep(
    store: &Store,
    now: UnixTime,
    resign_before: Option<i64>,
    passphrase: &dyn Fn(&ManagedCa) -> Option<Secret>,
) -> Result<Vec<(String, Upkeep)>, CrlError> {
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
pub(crate) fn stale_cas(store: &Store) -> Result<Vec<String>, CrlError> {
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
pub(crate) fn serial_bytes(hex_serial: &str) -> Option<Vec<u8>> {
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
pub(crate) fn publish_crl(
    store: &Store,
    signer: &Signer,
    now: UnixTime,
) -> Result<CrlPublished, CaError> {
    let revoked = revoked_by(store, signer)?;
    let mut paths = vec![signer.dir.join("crl.pem")];
    paths.extend(signer.ca.crl_paths.iter().map(PathBuf::from));
    // A store restored from an older backup (or copied back by hand) never reuses a number
    // it published since: the next one is above every CRL file there is.
    if let Some(published) = highest_crl_number(&paths) {
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
pub(crate) struct SignedCrl {
    pub number: u64,
    pub next_update: UnixTime,
    /// How many serials it lists.
    pub listed: usize,
    pub der: Vec<u8>,
    pub pem: String,
}

/// Signs CRL number `number` of the CA listing the `revoked` certificates it issued
/// (thisUpdate = now, nextUpdate = now + the CA's CRL validity).
pub(crate) fn sign_crl(
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
pub(crate) fn write_crl(paths: &[PathBuf], crl: &SignedCrl) -> Result<(), CaError> {
    for p in paths {
        if let Some(parent) = p.parent() {
            crate::files::atomic::create_dir_all(parent, 0o755)?;
        }
        write_atomic(p, crl_bytes_for(p, &crl.der, &crl.pem), FileMode::Public)?;
    }
    Ok(())
}

/// Records the `crl-published` audit event of a CRL.
pub(crate) fn audit_crl(
    store: &Store,
    signer: &Signer,
    crl: &SignedCrl,
    now: UnixTime,
) -> Result<(), CaError> {
    store.record_audit(&AuditEvent {
        at: now,
        fingerprint: Some(signer.ca.fingerprint),
        actor: actor(),
        action: AuditAction::CrlPublished.into(),
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
    /// The CRL file read back: the CA's `crl.pem` or one of its `--crl-out` copies.
    pub path: PathBuf,
    /// It parsed, verified with the CA key, and listed every serial asked about.
    pub ok: bool,
    /// Sentences: what was checked, and what was wrong.
    pub detail: String,
}

/// Reads `path` (PEM or DER) and checks its signature with the CA certificate and that it
/// lists `serials` (lowercase hex).
pub(crate) fn verify_crl_file(path: &Path, ca_der: &[u8], serials: &[String]) -> CrlCheck {
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
pub(crate) fn ca_crl(
    store: &Store,
    name: &str,
    out: Option<&Path>,
    der: bool,
    passphrase: Option<&Secret>,
    now: UnixTime,
) -> Result<CrlPublished, CrlError> {
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
            .map_err(|e| CrlError::CrlSigning {
                ca: name.to_string(),
                cause: e.to_string(),
            })?
    };
    write_atomic(out, &bytes, FileMode::Public)?;
    published.paths.push(out.to_path_buf());
    Ok(published)
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

/// The highest CRL number among the CRL files (PEM or DER) that can be read.
pub(crate) fn highest_crl_number(paths: &[PathBuf]) -> Option<u64> {
    paths.iter().filter_map(|p| crl_number_of(p)).max()
}

/// The CRL number of a CRL file (PEM or DER); `None` when it cannot be read.
pub(crate) fn crl_number_of(path: &Path) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 64 << 20), &mut bytes).ok()?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        x509_parser::pem::parse_x509_pem(&bytes).ok()?.1.contents
    } else {
        bytes
    };
    let (_, crl) = x509_parser::parse_x509_crl(&der).ok()?;
    let number = crl.crl_number()?;
    let digits = number.to_u64_digits();
    match digits.as_slice() {
        [] => Some(0),
        [n] => Some(*n),
        _ => Some(u64::MAX),
    }
}
