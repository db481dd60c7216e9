//! What certctl remembers about the CAs whose keys it holds and about its long-running
//! workflows (regenerate), in their own keyspaces so that the certificate record format
//! stays untouched.
//!
//! - `K` + CA name → [`ManagedCa`]: where the CA's files are, whether its key is encrypted,
//!   the last CRL number and where CRLs are published. A certificate is "held" by certctl
//!   when a `ManagedCa` points at its fingerprint.
//! - `W` + workflow id (8 bytes, big-endian) → [`Workflow`]: a persisted state machine.
//!   Values written by this release start with [`WORKFLOW_V2`] (the fields of `regenerate
//!   --csr` and of reload hooks added); those of older releases ([`crate::store`]'s version 1)
//!   still decode, with the new fields empty.
//!
//! Every write here is flushed before returning: a workflow step must be durable before
//! the next one starts, so that a crash at any point can be resumed.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::keys;
use crate::model::{Fingerprint, UnixTime};
use crate::store::{decode, encode, Store};

/// A CA whose private key certctl holds (`certctl ca init`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedCa {
    /// The name given at `ca init` (`[A-Za-z0-9._-]+`).
    pub name: String,
    /// Fingerprint of the CA certificate (its record has role `ca`).
    pub fingerprint: Fingerprint,
    /// The folder holding `ca.pem`, `ca.key`, `chain.pem` and `crl.pem`: relative to the
    /// store folder (`ca/NAME`), or absolute in stores written by the first release. Use
    /// [`ManagedCa::folder`].
    pub dir: String,
    /// The key type, as `certctl` writes it (`ec-p256`, `rsa-3072`, ...).
    pub key_kind: String,
    /// Whether `ca.key` is encrypted PKCS#8 (a passphrase is needed to use it).
    pub encrypted: bool,
    /// The number of the last CRL published (0: none yet).
    pub crl_number: u64,
    /// When the last CRL was published.
    pub crl_published: Option<UnixTime>,
    /// Extra places every new CRL is written to (besides `dir/crl.pem`).
    pub crl_paths: Vec<String>,
    /// nextUpdate − thisUpdate of the CRLs, in seconds.
    pub crl_validity_secs: i64,
    /// CRL distribution point URLs written into the certificates this CA issues.
    pub crl_urls: Vec<String>,
    pub created: UnixTime,
    /// Who created it.
    pub created_by: String,
}

/// The steps of a workflow, in order. A workflow's `step` is the last step completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkflowStep {
    Requested,
    KeyGenerated,
    Issued,
    Deployed,
    OldRevoked,
    Done,
    /// `regenerate --csr`: the key and CSR are written; the certificate comes from a CA
    /// certctl does not hold (`certctl workflows complete ID --cert FILE`).
    AwaitingCertificate,
    /// The reload hooks of the deployed targets ran (nothing to run counts as done).
    Reloaded,
}

impl ManagedCa {
    /// The CA's folder, for a store in `store_dir`. A relative `dir` is inside the store,
    /// so a store that was moved or restored from a backup keeps its CAs. An absolute one
    /// that no longer exists (a store of the first release, moved) falls back to where
    /// certctl keeps CA folders inside the store.
    pub fn folder(&self, store_dir: &std::path::Path) -> std::path::PathBuf {
        let dir = std::path::Path::new(&self.dir);
        if dir.is_relative() {
            return store_dir.join(dir);
        }
        let inside = store_dir.join("ca").join(&self.name);
        if !dir.exists() && inside.exists() {
            inside
        } else {
            dir.to_path_buf()
        }
    }
}

impl WorkflowStep {
    /// Every step, in the order a workflow takes them (`awaiting-certificate` only with
    /// `--csr`).
    pub const ALL: [WorkflowStep; 8] = [
        WorkflowStep::Requested,
        WorkflowStep::KeyGenerated,
        WorkflowStep::AwaitingCertificate,
        WorkflowStep::Issued,
        WorkflowStep::Deployed,
        WorkflowStep::Reloaded,
        WorkflowStep::OldRevoked,
        WorkflowStep::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStep::Requested => "requested",
            WorkflowStep::KeyGenerated => "key-generated",
            WorkflowStep::Issued => "issued",
            WorkflowStep::Deployed => "deployed",
            WorkflowStep::OldRevoked => "old-revoked",
            WorkflowStep::Done => "done",
            WorkflowStep::AwaitingCertificate => "awaiting-certificate",
            WorkflowStep::Reloaded => "reloaded",
        }
    }

    /// The step's number (requested = 0 ... done = 5, as in the first release;
    /// awaiting-certificate = 6, reloaded = 7, added later).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The step after this one (`Done` stays `Done`). A `--csr` workflow goes from
    /// `key-generated` to `awaiting-certificate` instead (see [`Workflow::next_step`]).
    pub fn next(self) -> WorkflowStep {
        match self {
            WorkflowStep::Requested => WorkflowStep::KeyGenerated,
            WorkflowStep::KeyGenerated | WorkflowStep::AwaitingCertificate => WorkflowStep::Issued,
            WorkflowStep::Issued => WorkflowStep::Deployed,
            WorkflowStep::Deployed => WorkflowStep::Reloaded,
            WorkflowStep::Reloaded => WorkflowStep::OldRevoked,
            WorkflowStep::OldRevoked | WorkflowStep::Done => WorkflowStep::Done,
        }
    }
}

impl std::fmt::Display for WorkflowStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `certctl regenerate` in progress (or finished).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: u64,
    /// The certificate being replaced.
    pub old: Fingerprint,
    /// The managed CA that signs the new certificate.
    pub ca: String,
    pub revoke_old: bool,
    pub deploy: bool,
    /// The key type of the new key (`ec-p256`, `rsa-2048`, ...).
    pub key_kind: String,
    /// Folder with the workflow's files (`new.key`, `new.pem`, `new.chain.pem`).
    pub dir: String,
    /// The last step completed.
    pub step: WorkflowStep,
    /// The new certificate, once issued.
    pub new: Option<Fingerprint>,
    /// Files written over by the deploy step so far.
    pub deployed: Vec<String>,
    /// Sources that could not be deployed to (TLS endpoints, unknown formats), with why.
    pub not_deployed: Vec<String>,
    pub created: UnixTime,
    pub updated: UnixTime,
    pub actor: String,
    /// What stopped the last attempt, if it failed.
    pub last_error: Option<String>,
    /// `regenerate --csr`: where the CSR was written. The certificate comes from a CA
    /// certctl does not hold; `ca` is then empty.
    pub csr: Option<String>,
    /// Whether `new.key` is encrypted PKCS#8 (with the passphrase given at `regenerate`).
    pub key_encrypted: bool,
    /// Commands to run after the deploy step replaced a target's files.
    pub reload: Vec<ReloadHook>,
}

/// A command run after a deploy replaced the files of a target (`[[workflows.targets]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadHook {
    /// The deployed file, or a folder holding deployed files, this hook is for (absolute).
    pub target: String,
    /// The program and its arguments (run directly, never through a shell).
    pub argv: Vec<String>,
    /// Killed after this many seconds.
    pub timeout_secs: u64,
}

impl Workflow {
    /// Whether the new certificate comes from outside (`regenerate --csr`).
    pub fn external(&self) -> bool {
        self.csr.is_some()
    }

    /// The step after the current one, for this workflow.
    pub fn next_step(&self) -> WorkflowStep {
        if self.step == WorkflowStep::KeyGenerated && self.external() {
            WorkflowStep::AwaitingCertificate
        } else {
            self.step.next()
        }
    }
}

/// The version byte of workflows written by this release.
pub(crate) const WORKFLOW_V2: u8 = 2;

/// A workflow as the first release wrote it (version 1).
#[derive(Deserialize)]
struct WorkflowV1 {
    id: u64,
    old: Fingerprint,
    ca: String,
    revoke_old: bool,
    deploy: bool,
    key_kind: String,
    dir: String,
    step: WorkflowStep,
    new: Option<Fingerprint>,
    deployed: Vec<String>,
    not_deployed: Vec<String>,
    created: UnixTime,
    updated: UnixTime,
    actor: String,
    last_error: Option<String>,
}

fn encode_workflow(wf: &Workflow) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    out.push(WORKFLOW_V2);
    postcard::to_io(wf, &mut out).map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(out)
}

/// Decodes a workflow of any version this release knows.
pub(crate) fn decode_workflow(bytes: &[u8]) -> Result<Workflow> {
    match bytes.split_first() {
        Some((&WORKFLOW_V2, body)) => postcard::from_bytes(body).map_err(|e| StoreError::Corrupt {
            what: "workflow",
            detail: e.to_string(),
        }),
        _ => {
            let w: WorkflowV1 = decode(bytes, "workflow")?;
            Ok(Workflow {
                id: w.id,
                old: w.old,
                ca: w.ca,
                revoke_old: w.revoke_old,
                deploy: w.deploy,
                key_kind: w.key_kind,
                dir: w.dir,
                step: w.step,
                new: w.new,
                deployed: w.deployed,
                not_deployed: w.not_deployed,
                created: w.created,
                updated: w.updated,
                actor: w.actor,
                last_error: w.last_error,
                csr: None,
                key_encrypted: false,
                reload: Vec::new(),
            })
        }
    }
}

/// A CRL fetched from a CRL distribution point, kept until its nextUpdate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedCrl {
    pub url: String,
    /// The CRL as fetched (DER), after its signature was checked.
    pub der: Vec<u8>,
    /// The CA certificate whose key signed it.
    pub issuer: Fingerprint,
    pub this_update: UnixTime,
    pub next_update: Option<UnixTime>,
    pub fetched: UnixTime,
}

fn crl_key(url: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(url.len() + 1);
    k.push(keys::CACHED_CRL);
    k.extend_from_slice(url.as_bytes());
    k
}

pub(crate) fn ca_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(keys::MANAGED_CA);
    k.extend_from_slice(name.as_bytes());
    k
}

fn workflow_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = keys::WORKFLOW;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Store {
    /// Saves a managed CA (replacing one of the same name), durably.
    pub fn put_managed_ca(&self, ca: &ManagedCa) -> Result<()> {
        let value = encode(ca)?;
        self.ensure_space(value.len() as u64)?;
        self.tree().insert(ca_key(&ca.name), value)?;
        self.flush()
    }

    /// The managed CA called `name`.
    pub fn managed_ca(&self, name: &str) -> Result<Option<ManagedCa>> {
        match self.tree().get(ca_key(name))? {
            Some(v) => Ok(Some(decode(&v, "managed CA")?)),
            None => Ok(None),
        }
    }

    /// Every managed CA, by name.
    pub fn managed_cas(&self) -> Result<Vec<ManagedCa>> {
        self.tree()
            .scan_prefix([keys::MANAGED_CA])
            .map(|kv| decode(&kv?.1, "managed CA"))
            .collect()
    }

    /// Takes the next CRL number of a CA (last + 1), records it with its time, durably, and
    /// returns it. Atomic within the process.
    pub fn next_crl_number(&self, name: &str, now: UnixTime) -> Result<u64> {
        let mut failure: Option<StoreError> = None;
        let updated = self.tree().update_and_fetch(ca_key(name), |old| {
            let old = old?;
            match decode::<ManagedCa>(old, "managed CA") {
                Ok(mut ca) => {
                    ca.crl_number += 1;
                    ca.crl_published = Some(now);
                    match encode(&ca) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            failure = Some(e);
                            Some(old.to_vec())
                        }
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let Some(bytes) = updated else {
            return Err(StoreError::Io(format!("no managed CA is called `{name}`")));
        };
        let ca: ManagedCa = decode(&bytes, "managed CA")?;
        self.flush()?;
        Ok(ca.crl_number)
    }

    /// The managed CA whose certificate has this fingerprint.
    pub fn managed_ca_by_fingerprint(&self, fp: &Fingerprint) -> Result<Option<ManagedCa>> {
        Ok(self
            .managed_cas()?
            .into_iter()
            .find(|ca| ca.fingerprint == *fp))
    }

    /// A new, unique workflow id.
    pub fn new_workflow_id(&self) -> Result<u64> {
        self.next_segment_id()
    }

    /// Saves a workflow's state, durably (flushed before returning).
    pub fn put_workflow(&self, workflow: &Workflow) -> Result<()> {
        let value = encode_workflow(workflow)?;
        self.ensure_space(value.len() as u64)?;
        self.tree().insert(workflow_key(workflow.id), value)?;
        self.flush()
    }

    pub fn workflow(&self, id: u64) -> Result<Option<Workflow>> {
        match self.tree().get(workflow_key(id))? {
            Some(v) => Ok(Some(decode_workflow(&v)?)),
            None => Ok(None),
        }
    }

    /// Saves a fetched CRL (replacing the one from the same URL), durably.
    pub fn put_cached_crl(&self, crl: &CachedCrl) -> Result<()> {
        self.tree().insert(crl_key(&crl.url), encode(crl)?)?;
        self.flush()
    }

    /// The CRL last fetched from `url`.
    pub fn cached_crl(&self, url: &str) -> Result<Option<CachedCrl>> {
        match self.tree().get(crl_key(url))? {
            Some(v) => Ok(Some(decode(&v, "cached CRL")?)),
            None => Ok(None),
        }
    }

    /// Every workflow, oldest first.
    pub fn workflows(&self) -> Result<Vec<Workflow>> {
        self.tree()
            .scan_prefix([keys::WORKFLOW])
            .map(|kv| decode_workflow(&kv?.1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sha256;

    fn ca(name: &str) -> ManagedCa {
        ManagedCa {
            name: name.into(),
            fingerprint: Sha256([7; 32]),
            dir: "/tmp/x".into(),
            key_kind: "ec-p256".into(),
            encrypted: false,
            crl_number: 0,
            crl_published: None,
            crl_paths: vec![],
            crl_validity_secs: 86_400,
            crl_urls: vec![],
            created: 1,
            created_by: "me".into(),
        }
    }

    #[test]
    fn crl_numbers_increase_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        store.put_managed_ca(&ca("root")).unwrap();
        assert_eq!(store.next_crl_number("root", 5).unwrap(), 1);
        assert_eq!(store.next_crl_number("root", 6).unwrap(), 2);
        let got = store.managed_ca("root").unwrap().unwrap();
        assert_eq!((got.crl_number, got.crl_published), (2, Some(6)));
        assert!(store.next_crl_number("nope", 5).is_err());
        assert_eq!(store.managed_cas().unwrap().len(), 1);
        assert_eq!(
            store
                .managed_ca_by_fingerprint(&Sha256([7; 32]))
                .unwrap()
                .map(|c| c.name),
            Some("root".to_string())
        );
    }

    #[test]
    fn a_managed_ca_saved_with_an_ingest_appears_with_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let mut ingest = store.ingest();
        assert!(ingest.is_empty());
        ingest.put_managed_ca(ca("root"));
        assert!(!ingest.is_empty());
        assert_eq!(
            store.managed_ca("root").unwrap(),
            None,
            "not before the commit"
        );
        ingest.commit().unwrap();
        assert_eq!(store.managed_ca("root").unwrap(), Some(ca("root")));
    }

    #[test]
    fn workflows_round_trip_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = store.new_workflow_id().unwrap();
            ids.push(id);
            store
                .put_workflow(&Workflow {
                    id,
                    old: Sha256([1; 32]),
                    ca: "root".into(),
                    revoke_old: true,
                    deploy: false,
                    key_kind: "ec-p256".into(),
                    dir: "/tmp/w".into(),
                    step: WorkflowStep::Requested,
                    new: None,
                    deployed: vec![],
                    not_deployed: vec![],
                    created: 1,
                    updated: 1,
                    actor: "me".into(),
                    last_error: None,
                    csr: None,
                    key_encrypted: false,
                    reload: vec![],
                })
                .unwrap();
        }
        let got: Vec<u64> = store.workflows().unwrap().iter().map(|w| w.id).collect();
        assert_eq!(got, ids);
        assert_eq!(WorkflowStep::Requested.next(), WorkflowStep::KeyGenerated);
        assert_eq!(WorkflowStep::Done.number(), 5);
        assert_eq!(WorkflowStep::Deployed.next(), WorkflowStep::Reloaded);
        assert_eq!(WorkflowStep::AwaitingCertificate.number(), 6);
    }

    /// A workflow written by the first release (version 1, without the `--csr` and reload
    /// fields) still reads, with those fields empty.
    #[test]
    fn first_release_workflows_still_decode() {
        #[derive(Serialize)]
        struct V1<'a> {
            id: u64,
            old: Fingerprint,
            ca: &'a str,
            revoke_old: bool,
            deploy: bool,
            key_kind: &'a str,
            dir: &'a str,
            step: WorkflowStep,
            new: Option<Fingerprint>,
            deployed: Vec<String>,
            not_deployed: Vec<String>,
            created: UnixTime,
            updated: UnixTime,
            actor: &'a str,
            last_error: Option<String>,
        }
        let bytes = encode(&V1 {
            id: 7,
            old: Sha256([1; 32]),
            ca: "root",
            revoke_old: true,
            deploy: true,
            key_kind: "ec-p256",
            dir: "/tmp/w",
            step: WorkflowStep::Deployed,
            new: Some(Sha256([2; 32])),
            deployed: vec!["/etc/x.pem".into()],
            not_deployed: vec![],
            created: 1,
            updated: 2,
            actor: "me",
            last_error: None,
        })
        .unwrap();
        let wf = decode_workflow(&bytes).unwrap();
        assert_eq!(
            (wf.id, wf.step, wf.ca.as_str()),
            (7, WorkflowStep::Deployed, "root")
        );
        assert_eq!(
            (wf.csr, wf.key_encrypted, wf.reload.len()),
            (None, false, 0)
        );
        assert_eq!(wf.deployed, vec!["/etc/x.pem".to_string()]);
    }
}
