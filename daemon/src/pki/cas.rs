//! The managed CAs as a whole: `certctl ca init` (a root or an intermediate, staged and
//! recorded so that a crash half-way leaves nothing half-made), `ca list` and `ca export`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use certctl_store::{
    AuditEvent, Certificate, CertificateFacts, ManagedCa, Role, SourceLocation, Store, UnixTime,
};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};

use crate::certs::x509::facts_from_der;
use crate::duration::Duration;
use crate::files::atomic;
use crate::history::{actor, AuditAction};

use crate::pki::ca::*;
use crate::pki::crl;

// ---- ca init -------------------------------------------------------------------------------

/// `certctl ca init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaInitRequest {
    /// The CA's name (`ca init NAME`): 1–64 ASCII letters, digits, `.`, `_`, `-`, not
    /// starting with `.`; names its folder `STORE/ca/NAME` and is how `issue --ca` refers to it.
    pub name: String,
    /// Subject CN (default: the name).
    pub cn: Option<String>,
    /// Subject O.
    pub org: Option<String>,
    /// The type of the CA's new private key (`--key`).
    pub key: KeyKind,
    /// Default: 10 years for a root, the parent's remaining validity (at most 10 years) for
    /// an intermediate.
    pub validity: Option<Duration>,
    /// PEM file with the parent CA certificate (first block), optionally followed by its chain.
    pub parent_cert: Option<PathBuf>,
    /// PEM file with the parent CA's private key.
    pub parent_key: Option<PathBuf>,
    /// Opens an encrypted parent key (else `passphrase` is tried).
    #[serde(default)]
    pub parent_passphrase: Option<Secret>,
    /// Encrypts the new CA key (and opens an encrypted parent key without its own).
    pub passphrase: Option<Secret>,
    /// Extra places each new CRL is written to (`.der`/`.crl`: DER, else PEM).
    pub crl_out: Vec<PathBuf>,
    /// CRL distribution point URLs put into the certificates this CA issues.
    pub crl_urls: Vec<String>,
    /// How long each CRL is valid, nextUpdate − thisUpdate (`--crl-validity`); `None`: 7 days.
    pub crl_validity: Option<Duration>,
}

/// A managed CA as `ca list` / `ca init` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaInfo {
    /// The store's record of the CA (name, key type, CRL number and paths, ...): the
    /// top-level fields of `ca list --json`.
    pub ca: ManagedCa,
    /// The CA certificate's inventory record; `None` if it is missing from the store
    /// (`certificate` null in `--json`).
    pub certificate: Option<Certificate>,
    /// `CAFOLDER/ca.pem`, the CA certificate (`cert_path` in `--json`).
    pub cert_path: PathBuf,
    /// `CAFOLDER/ca.key`, the CA's private key, 0600 (`key_path` in `--json`).
    pub key_path: PathBuf,
    /// `CAFOLDER/chain.pem`, the CA certificate then its parents (`chain_path` in `--json`).
    pub chain_path: PathBuf,
    /// `CAFOLDER/crl.pem`, the latest CRL (`crl_path` in `--json`).
    pub crl_path: PathBuf,
    /// Remarks for the admin (`ca init`: leftovers of an interrupted init it cleared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CaInfo {
    /// The view of `ca`: its certificate read from the store and its file paths under its
    /// folder ([`ManagedCa::folder`]); no notes. Fails only when the store cannot be read.
    pub fn new(store: &Store, ca: ManagedCa) -> Result<CaInfo, CaError> {
        let dir = ca.folder(store.path());
        Ok(CaInfo {
            certificate: store.get(&ca.fingerprint)?,
            cert_path: dir.join("ca.pem"),
            key_path: dir.join("ca.key"),
            chain_path: dir.join("chain.pem"),
            crl_path: dir.join("crl.pem"),
            notes: Vec::new(),
            ca,
        })
    }
}

/// Creates a managed CA: key, certificate, files, store records and a first (empty) CRL,
/// atomically (see the module doc): the files are staged, moved into place, then recorded.
pub(crate) fn init(store: &Store, req: &CaInitRequest, now: UnixTime) -> Result<CaInfo, CaError> {
    if !valid_name(&req.name) {
        return Err(CaError::BadName(req.name.clone()));
    }
    if store.managed_ca(&req.name)?.is_some() {
        return Err(CaError::Exists(req.name.clone()));
    }
    for p in &req.crl_out {
        if p.is_relative() {
            return Err(CaError::Invalid(format!(
                "--crl-out {}: give an absolute path",
                p.display()
            )));
        }
        // Fail before anything is created when a CRL folder cannot be made.
        if let Some(parent) = p.parent() {
            atomic::create_dir_all(parent, 0o755)?;
        }
    }

    // The parent, for an intermediate.
    let parent = match (&req.parent_cert, &req.parent_key) {
        (Some(cert), Some(key)) => Some(load_parent(
            cert,
            key,
            req.parent_passphrase.as_ref().or(req.passphrase.as_ref()),
        )?),
        (None, None) => None,
        _ => {
            return Err(CaError::Invalid(
                "an intermediate needs both --parent-cert and --parent-key".into(),
            ))
        }
    };
    let cas = cas_dir(store);
    let dir = cas.join(&req.name);
    let new = new_ca(req, parent.as_ref(), &dir, now)?;
    private_dir(&cas)?;
    let notes = clear_leftovers(store, &req.name, now)?;
    let ca = ManagedCa {
        name: req.name.clone(),
        fingerprint: new.facts.fingerprint,
        // Relative to the store, so that the store can be moved (see ManagedCa::folder).
        dir: dir
            .strip_prefix(store.path())
            .unwrap_or(&dir)
            .to_string_lossy()
            .into_owned(),
        key_kind: req.key.as_str().to_string(),
        encrypted: req.passphrase.is_some(),
        // The first CRL (empty) is signed with the files, so relying parties can check
        // revocation from day one.
        crl_number: 1,
        crl_published: Some(now),
        crl_paths: req
            .crl_out
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        crl_validity_secs: req.crl_validity.unwrap_or(DEFAULT_CRL_VALIDITY).as_secs(),
        crl_urls: req.crl_urls.clone(),
        created: now,
        created_by: actor(),
    };
    let (signer, crl) = stage_files(store, &ca, new.key, &new.files, &dir, now)?;
    record_new_ca(store, &ca, new.facts, &dir, now)?;
    store.record_audit(&AuditEvent {
        at: now,
        fingerprint: Some(ca.fingerprint),
        actor: ca.created_by.clone(),
        action: AuditAction::CaCreated.into(),
        detail: format!(
            "managed CA `{}` ({} key{}{})",
            ca.name,
            ca.key_kind,
            if ca.encrypted { ", encrypted" } else { "" },
            match &parent {
                Some(p) => format!(", signed by {}", p.facts.subject),
                None => ", self-signed root".into(),
            }
        ),
    })?;
    crl::audit_crl(store, &signer, &crl, now)?;
    crate::crash_point::here("ca-init:audited");
    // The CRL copies outside the store last: `certctl ca crl NAME` writes them again.
    let copies: Vec<PathBuf> = ca.crl_paths.iter().map(PathBuf::from).collect();
    crl::write_crl(&copies, &crl)?;
    let mut info = CaInfo::new(store, ca)?;
    info.notes = notes;
    Ok(info)
}

/// A new CA's key, certificate facts and the bytes of its files.
struct NewCa {
    key: PKey<Private>,
    facts: CertificateFacts,
    /// `ca.key`, `ca.pem` and `chain.pem`, in that order.
    files: [(&'static str, Vec<u8>); 3],
}

/// Generates the key and signs the certificate (self-signed, or by the parent).
fn new_ca(
    req: &CaInitRequest,
    parent: Option<&Parent>,
    dir: &Path,
    now: UnixTime,
) -> Result<NewCa, CaError> {
    let key = req.key.generate()?;
    let key_pair = rcgen_key(&key)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(org) = &req.org {
        dn.push(DnType::OrganizationName, org.as_str());
    }
    dn.push(DnType::CommonName, req.cn.as_deref().unwrap_or(&req.name));
    params.distinguished_name = dn;
    let not_before = now - BACKDATE_SECS;
    let mut not_after = now.saturating_add(req.validity.unwrap_or(DEFAULT_CA_VALIDITY).as_secs());
    if let Some(p) = parent {
        not_after = not_after.min(p.facts.not_after);
    }
    if not_after <= now {
        return Err(CaError::Invalid("the CA would already be expired".into()));
    }
    params.not_before = to_datetime(not_before)?;
    params.not_after = to_datetime(not_after)?;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = parent.is_some();
    let cert = match parent {
        None => params
            .self_signed(&key_pair)
            .map_err(rcgen_err("self-sign the CA certificate"))?,
        Some(p) => {
            let issuer = Issuer::from_ca_cert_pem(&p.cert_pem, &p.key_pair)
                .map_err(rcgen_err("read the parent CA certificate"))?;
            params
                .signed_by(&key_pair, &issuer)
                .map_err(rcgen_err("sign the CA certificate with the parent"))?
        }
    };
    let facts = facts_from_der(cert.der()).map_err(|source| CaError::Parse {
        path: dir.join("ca.pem"),
        source,
    })?;
    let key_pem = match &req.passphrase {
        Some(p) => encrypted_pkcs8_pem(&key, p)?,
        None => key
            .private_key_to_pem_pkcs8()
            .map_err(crypto("encode the CA key"))?,
    };
    let cert_pem = cert.pem();
    let mut chain = cert_pem.clone();
    if let Some(p) = parent {
        for der in &p.chain {
            chain.push_str(&der_to_pem(der)?);
        }
    }
    Ok(NewCa {
        key,
        facts,
        files: [
            ("ca.key", key_pem),
            ("ca.pem", cert_pem.into_bytes()),
            ("chain.pem", chain.into_bytes()),
        ],
    })
}

/// Removes what earlier, unfinished inits left in `STORE/ca` (the caller holds the store's
/// writer lock, so no other init is running): every staging folder, and a folder named like
/// the new CA that no store record claims, which is set aside (it may hold a key). Returns
/// what it did, for the admin.
fn clear_leftovers(store: &Store, name: &str, now: UnixTime) -> Result<Vec<String>, CaError> {
    let cas = cas_dir(store);
    let mut notes = Vec::new();
    for entry in fs::read_dir(&cas).map_err(io_err(&cas))? {
        let entry = entry.map_err(io_err(&cas))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(".staging-") {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
            notes.push(format!(
                "removed {}: the files of a `ca init` that was interrupted before it was recorded",
                path.display()
            ));
        }
    }
    let dir = cas.join(name);
    let Ok(meta) = fs::symlink_metadata(&dir) else {
        return Ok(notes);
    };
    if meta.is_dir() && fs::remove_dir(&dir).is_ok() {
        return Ok(notes); // empty
    }
    let aside = (0..)
        .map(|n| match n {
            0 => cas.join(format!(".orphan-{name}-{now}")),
            n => cas.join(format!(".orphan-{name}-{now}-{n}")),
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| cas.join(format!(".orphan-{name}")));
    fs::rename(&dir, &aside).map_err(io_err(&dir))?;
    sync_dir(&cas)?;
    let note = format!(
        "{} held the files of an unfinished `ca init` (no CA `{name}` is recorded): set aside as {}; delete it once you are sure nothing uses that key",
        dir.display(),
        aside.display()
    );
    tracing::warn!("{note}");
    notes.push(note);
    Ok(notes)
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes the CA's files and its first CRL into a staging folder next to `dir`, then renames
/// the folder to `dir`. On failure the staging folder is removed.
fn stage_files(
    store: &Store,
    ca: &ManagedCa,
    key: PKey<Private>,
    files: &[(&'static str, Vec<u8>)],
    dir: &Path,
    now: UnixTime,
) -> Result<(Signer, crl::SignedCrl), CaError> {
    let cas = dir.parent().unwrap_or(Path::new("."));
    let mut random = [0u8; 8];
    openssl::rand::rand_bytes(&mut random).map_err(crypto("draw a folder name"))?;
    let staging = cas.join(format!(".staging-{}-{}", ca.name, hex::encode(random)));
    let result = (|| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io_err(&staging))?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&staging))?;
        for (name, bytes) in files {
            write_atomic(&staging.join(name), bytes, FileMode::Private)?;
            crate::crash_point::here(match *name {
                "ca.key" => "ca-init:staged-key",
                "ca.pem" => "ca-init:staged-cert",
                _ => "ca-init:staged-chain",
            });
        }
        let mut signer = Signer::from_key_in(store, ca.clone(), key, staging.clone())?;
        let crl = crl::sign_crl(&signer, &[], ca.crl_number, now)?;
        crl::write_crl(&[staging.join("crl.pem")], &crl)?;
        crate::crash_point::here("ca-init:staged-crl");
        // A folder at `dir` now is an init running in parallel (it cannot be: the caller
        // holds the writer lock) or a race with the admin: rename refuses a non-empty one.
        fs::rename(&staging, dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
                CaError::Exists(ca.name.clone())
            }
            _ => io_err(dir)(e),
        })?;
        sync_dir(cas)?;
        crate::crash_point::here("ca-init:moved");
        signer.dir = dir.to_path_buf();
        Ok((signer, crl))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// The commit point of `ca init`: the CA record and its certificate's record in one atomic
/// batch, flushed. When that fails (no space), the folder is removed again.
fn record_new_ca(
    store: &Store,
    ca: &ManagedCa,
    facts: CertificateFacts,
    dir: &Path,
    now: UnixTime,
) -> Result<(), CaError> {
    let mut ingest = store.ingest();
    let committed = ingest
        .observe(
            facts,
            Some(Role::Ca),
            SourceLocation::File {
                path: dir.join("ca.pem").to_string_lossy().into_owned(),
                index: 0,
            },
            now,
        )
        .and_then(|_| {
            ingest.put_managed_ca(ca.clone());
            ingest.commit()
        })
        .and_then(|()| store.flush());
    if let Err(e) = committed {
        if !matches!(store.managed_ca(&ca.name), Ok(Some(_))) {
            let _ = fs::remove_dir_all(dir);
        }
        return Err(e.into());
    }
    crate::crash_point::here("ca-init:recorded");
    Ok(())
}

/// `certctl ca list`.
pub(crate) fn list(store: &Store) -> Result<Vec<CaInfo>, CaError> {
    store
        .managed_cas()?
        .into_iter()
        .map(|ca| CaInfo::new(store, ca))
        .collect()
}

/// `certctl ca export NAME --out FILE`: the CA certificate as PEM (0644).
pub(crate) fn export(store: &Store, name: &str, out: &Path) -> Result<PathBuf, CaError> {
    let ca = store
        .managed_ca(name)?
        .ok_or_else(|| CaError::NoSuchCa(name.to_string()))?;
    let src = ca.folder(store.path()).join("ca.pem");
    let der = pem_certificates(&src, &read(&src)?)?.remove(0);
    write_atomic(out, der_to_pem(&der)?.as_bytes(), FileMode::Public)?;
    Ok(out.to_path_buf())
}

struct Parent {
    cert_pem: String,
    facts: CertificateFacts,
    key_pair: KeyPair,
    /// The parent certificate and the rest of its file (its own chain), as DER.
    chain: Vec<Vec<u8>>,
}

fn load_parent(cert: &Path, key: &Path, passphrase: Option<&Secret>) -> Result<Parent, CaError> {
    let bytes = read(cert)?;
    let chain = pem_certificates(cert, &bytes)?;
    let facts = facts_from_der(&chain[0]).map_err(|source| CaError::Parse {
        path: cert.to_path_buf(),
        source,
    })?;
    if !facts.is_ca {
        return Err(CaError::NotACa {
            path: cert.to_path_buf(),
        });
    }
    let key_bytes = read(key)?;
    let pkey = load_private_key(&key_bytes, passphrase).map_err(|e| match e {
        KeyLoadError::NeedsPassphrase => CaError::BadFile {
            path: key.to_path_buf(),
            cause: "the key is encrypted: give its passphrase with --passphrase-file or CERTCTL_CA_PASSPHRASE".into(),
        },
        KeyLoadError::Unreadable(cause) => CaError::BadFile {
            path: key.to_path_buf(),
            cause,
        },
    })?;
    let x509 = X509::from_der(&chain[0]).map_err(crypto("read the parent certificate"))?;
    let matches = x509
        .public_key()
        .map(|pk| pk.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(CaError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
        });
    }
    Ok(Parent {
        cert_pem: der_to_pem(&chain[0])?,
        facts,
        key_pair: rcgen_key(&pkey)?,
        chain,
    })
}
