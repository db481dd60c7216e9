//! [`Ingest`]: batched, atomic writes of observations into the store.
//!
//! The scanner reports what it saw ("this certificate, in that file, now"); `Ingest` merges
//! that into the stored records, keeps the indexes, and writes everything of one batch
//! with a single atomic [`sled::Batch`]. One `Ingest` must be used by one writer at a time
//! (it reads, merges and writes records), which is what makes merging race-free.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::endpoints::Endpoint;
use crate::error::Result;
use crate::files::FileState;
use crate::keys::{self, Index};
use crate::model::{
    Certificate, CertificateFacts, Fingerprint, Role, Source, SourceLocation, UnixTime,
    MAX_INLINE_SOURCES,
};
use crate::store::{decode_record, encode, encode_record, Store};

/// Index postings per stored value (about 14 bytes each).
const POSTINGS_PER_VALUE: usize = 256;

/// File states per directory segment.
const FILES_PER_SEGMENT: usize = 1024;

/// One index entry: a sort key (not_after) or a truncated hash key, and the first eight
/// bytes of the certificate's fingerprint. Postings are kept small because sled's cost
/// grows with the bytes in a leaf; every hit is checked against the record it leads to,
/// so the truncations never produce a wrong answer (only, very rarely, an extra read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Posting {
    pub key: i64,
    pub fp: FpPrefix,
}

/// The first eight bytes of a fingerprint.
pub(crate) type FpPrefix = [u8; 8];

pub(crate) fn fp_prefix(fp: &Fingerprint) -> FpPrefix {
    let mut p = [0u8; 8];
    p.copy_from_slice(&fp.0[..8]);
    p
}

/// Hash keys are kept to 32 bits (short varints); hits are verified anyway.
pub(crate) fn hash_key(h: u64) -> i64 {
    i64::from(h as u32)
}

/// What an observation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The certificate was not in the store before.
    New,
    /// Known certificate; something besides last_seen changed (a new source, a role, a
    /// source that had gone came back).
    Updated,
    /// Known certificate, same place: only last_seen was refreshed.
    Refreshed,
}

/// A batch of writes. Nothing is visible to readers until [`Ingest::commit`].
pub struct Ingest<'s> {
    store: &'s Store,
    /// Records touched in this batch, already merged.
    records: HashMap<Fingerprint, Certificate, FingerprintHasher>,
    /// New index postings, per bucket key prefix.
    postings: BTreeMap<Vec<u8>, Vec<Posting>>,
    /// Directories whose file states are replaced.
    dirs: Vec<(String, Vec<FileState>)>,
    /// Endpoint states to save.
    endpoints: Vec<Endpoint>,
}

impl<'s> Ingest<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Ingest {
            store,
            records: HashMap::default(),
            postings: BTreeMap::new(),
            dirs: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// How many certificates this batch holds so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.dirs.is_empty() && self.endpoints.is_empty()
    }

    /// The record as this batch sees it (pending changes included).
    fn load(&mut self, fp: &Fingerprint) -> Result<Option<&mut Certificate>> {
        if !self.records.contains_key(fp) {
            match self.store.tree().get(keys::cert_key(&fp.0))? {
                Some(bytes) => {
                    self.records.insert(*fp, decode_record(&bytes)?);
                }
                None => return Ok(None),
            }
        }
        Ok(self.records.get_mut(fp))
    }

    /// Records that `facts` was seen at `location` at `now`.
    ///
    /// `role` is the role the admin assigned to the source (`--role`); CA certificates
    /// always get [`Role::Ca`]. Without one, a new certificate gets `ca` or `other` and a
    /// known one keeps its role.
    pub fn observe(
        &mut self,
        facts: CertificateFacts,
        role: Option<Role>,
        location: SourceLocation,
        now: UnixTime,
    ) -> Result<Observed> {
        let fp = facts.fingerprint;
        let wanted_role = if facts.is_ca { Some(Role::Ca) } else { role };
        let mut new_role = None;
        let outcome = match self.load(&fp)? {
            Some(cert) => {
                let mut changed = false;
                if let Some(r) = wanted_role {
                    if cert.role != r {
                        cert.role = r;
                        new_role = Some(r);
                        changed = true;
                    }
                }
                cert.last_seen = cert.last_seen.max(now);
                match cert.sources.iter_mut().find(|s| s.location == location) {
                    Some(source) => {
                        source.last_seen = source.last_seen.max(now);
                        if source.gone_since.take().is_some() {
                            changed = true;
                        }
                    }
                    None => {
                        add_source(cert, location, now);
                        changed = true;
                    }
                }
                if changed {
                    Observed::Updated
                } else {
                    Observed::Refreshed
                }
            }
            None => {
                let role = wanted_role.unwrap_or(Role::Other);
                let mut cert = Certificate::new(facts, role, now);
                add_source(&mut cert, location, now);
                self.add_postings(&cert);
                self.records.insert(fp, cert);
                Observed::New
            }
        };
        if let Some(r) = new_role {
            if let Some(cert) = self.records.get(&fp) {
                let (fp, not_after) = (cert.facts.fingerprint, cert.facts.not_after);
                self.post_role(r, not_after, fp);
            }
        }
        Ok(outcome)
    }

    /// Records that the certificate is no longer at `location` (the file changed or went
    /// away). The certificate itself stays. Returns whether anything changed.
    pub fn mark_gone(
        &mut self,
        fp: &Fingerprint,
        location: &SourceLocation,
        now: UnixTime,
    ) -> Result<bool> {
        let Some(cert) = self.load(fp)? else {
            return Ok(false);
        };
        match cert.sources.iter_mut().find(|s| &s.location == location) {
            Some(source) if source.gone_since.is_none() => {
                source.gone_since = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Replaces a whole record (after a revocation, a role change, ...).
    pub fn replace(&mut self, cert: Certificate) -> Result<()> {
        let fp = cert.fingerprint();
        let old_role = self.load(&fp)?.map(|c| c.role);
        match old_role {
            None => self.add_postings(&cert),
            Some(r) if r != cert.role => self.post_role(cert.role, cert.facts.not_after, fp),
            Some(_) => {}
        }
        self.records.insert(fp, cert);
        Ok(())
    }

    /// Replaces the remembered file states of `dir` with `files`.
    pub fn replace_dir(&mut self, dir: &str, files: Vec<FileState>) {
        self.dirs.retain(|(d, _)| d != dir);
        self.dirs.push((dir.to_string(), files));
    }

    /// Saves the state of a TLS endpoint (replacing the previous one).
    pub fn put_endpoint(&mut self, endpoint: Endpoint) {
        self.endpoints.retain(|e| e.address != endpoint.address);
        self.endpoints.push(endpoint);
    }

    fn add_postings(&mut self, cert: &Certificate) {
        let fp = cert.fingerprint();
        for (bucket, key) in index_entries(cert) {
            self.post(bucket, key, fp);
        }
    }

    fn post_role(&mut self, role: Role, not_after: UnixTime, fp: Fingerprint) {
        let bucket = keys::role_expiry_bucket(role.code(), keys::expiry_week(not_after));
        self.post(
            keys::bucket_prefix(Index::RoleExpiry, &bucket),
            not_after,
            fp,
        );
    }

    fn post(&mut self, bucket: Vec<u8>, key: i64, fp: Fingerprint) {
        self.postings.entry(bucket).or_default().push(Posting {
            key,
            fp: fp_prefix(&fp),
        });
    }

    /// Writes the batch atomically: records, their index postings and file states.
    pub fn commit(&mut self) -> Result<()> {
        if self.is_empty() && self.postings.is_empty() {
            return Ok(());
        }
        let tree = self.store.tree();
        let mut batch = sled::Batch::default();
        // Bytes this batch adds, for the free-space check before anything is written.
        let mut bytes = 0u64;
        let mut size = |key: usize, value: &[u8]| bytes += (key + value.len()) as u64;
        for (fp, cert) in self.records.drain() {
            let value = encode_record(&cert)?;
            size(33, &value);
            batch.insert(keys::cert_key(&fp.0).as_slice(), value);
        }
        if !self.postings.is_empty() {
            let segment = self.store.next_segment_id()?.to_be_bytes();
            for (mut bucket, postings) in std::mem::take(&mut self.postings) {
                bucket.extend_from_slice(&segment);
                // A hot bucket (one issuer for the whole fleet) is split into values of a
                // few KiB: sled rewrites a whole leaf per insert and moves pages above
                // ~128 KiB out to blob files, so one huge value per batch costs far more
                // than several small ones.
                for (n, chunk) in postings.chunks(POSTINGS_PER_VALUE).enumerate() {
                    let mut key = bucket.clone();
                    key.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
                    let value = encode(&chunk)?;
                    size(key.len(), &value);
                    batch.insert(key, value);
                }
            }
        }
        for (dir, files) in self.dirs.drain(..) {
            for kv in tree.scan_prefix(keys::dir_prefix(&dir)) {
                batch.remove(kv?.0);
            }
            for (n, chunk) in files.chunks(FILES_PER_SEGMENT).enumerate() {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                let value = encode(&chunk)?;
                size(dir.len() + 6, &value);
                batch.insert(keys::dir_segment_key(&dir, n), value);
            }
            match crate::files::DirSeen::of(&files) {
                Some(seen) => {
                    let value = encode(&seen)?;
                    size(dir.len() + 1, &value);
                    batch.insert(keys::dir_seen_key(&dir), value);
                }
                None => batch.remove(keys::dir_seen_key(&dir)),
            }
        }
        for endpoint in self.endpoints.drain(..) {
            let value = encode(&endpoint)?;
            size(endpoint.address.len() + 1, &value);
            batch.insert(keys::endpoint_key(&endpoint.address), value);
        }
        self.store.ensure_space(bytes)?;
        tree.apply_batch(batch)?;
        self.store.wrote(bytes);
        Ok(())
    }
}

/// Fingerprints are SHA-256 digests, already uniformly distributed: hashing them again
/// (SipHash) is wasted work on the scan's hot path. Only used for in-memory maps.
#[derive(Clone, Copy, Default)]
pub(crate) struct FingerprintHasher;

impl std::hash::BuildHasher for FingerprintHasher {
    type Hasher = TakeFirstEight;
    fn build_hasher(&self) -> TakeFirstEight {
        TakeFirstEight(0)
    }
}

/// Uses the first eight bytes written as the hash (the digest's prefix).
#[derive(Default)]
pub(crate) struct TakeFirstEight(u64);

impl std::hash::Hasher for TakeFirstEight {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    /// Slices hash their length first; it carries no information here.
    fn write_usize(&mut self, _: usize) {}
}

/// The index entries a record must have (bucket key prefix, posting key), each once: its
/// expiry, its role and expiry, its key, its issuer and each of its names.
pub(crate) fn index_entries(cert: &Certificate) -> Vec<(Vec<u8>, i64)> {
    let f = &cert.facts;
    let week = keys::expiry_week(f.not_after);
    let mut out = vec![
        (
            keys::bucket_prefix(Index::Expiry, &keys::expiry_bucket(week)),
            f.not_after,
        ),
        (
            keys::bucket_prefix(
                Index::RoleExpiry,
                &keys::role_expiry_bucket(cert.role.code(), week),
            ),
            f.not_after,
        ),
    ];
    let h = keys::spki_hash(&f.spki_sha256.0);
    out.push((
        keys::bucket_prefix(Index::Spki, &keys::hash_bucket(h, keys::SPKI_BUCKETS)),
        hash_key(h),
    ));
    let h = keys::name_hash(&f.issuer);
    out.push((
        keys::bucket_prefix(Index::Issuer, &keys::hash_bucket(h, keys::ISSUER_BUCKETS)),
        hash_key(h),
    ));
    let mut names: Vec<u64> = f.names().map(keys::name_hash).collect();
    names.sort_unstable();
    names.dedup();
    for h in names {
        out.push((
            keys::bucket_prefix(Index::Name, &keys::hash_bucket(h, keys::NAME_BUCKETS)),
            hash_key(h),
        ));
    }
    out
}

fn add_source(cert: &mut Certificate, location: SourceLocation, now: UnixTime) {
    if cert.sources.len() < MAX_INLINE_SOURCES {
        cert.sources.push(Source {
            location,
            first_seen: now,
            last_seen: now,
            gone_since: None,
        });
    } else {
        cert.more_sources += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn fingerprint_hash_is_the_digest_prefix() {
        let a = crate::Sha256([1; 32]);
        let mut b = [1u8; 32];
        b[0] = 2;
        let b = crate::Sha256(b);
        let h = FingerprintHasher;
        assert_eq!(h.hash_one(a), 0x0101_0101_0101_0101);
        assert_ne!(h.hash_one(a), h.hash_one(b));
    }
}
