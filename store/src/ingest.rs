//! [`Ingest`]: batched, atomic writes of observations into the store.
//!
//! The scanner reports what it saw ("this certificate, in that file, now"); `Ingest` merges
//! that into the stored records, keeps the indexes, and writes everything of one batch
//! with a single atomic [`sled::Batch`]. One `Ingest` must be used by one writer at a time
//! (it reads, merges and writes records), which is what makes merging race-free.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::counts::{CountChanges, Counted};
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

/// How many of its own recent commits an [`Ingest`] remembers, to tell whether a
/// [`Lookup`] made before them is still true.
const REMEMBERED_COMMITS: usize = 16;

/// A certificate record looked up ahead of the writer ([`Store::look_up`]), by another
/// thread. A scan's parse workers look up what they parsed, so the scan's single writer
/// (which must merge and write every record) does not spend a quarter of its time on the
/// lookups. [`Ingest::observe_looked_up`] uses the lookup only when no commit since could
/// have changed the record; otherwise it reads the record again.
#[derive(Debug)]
pub struct Lookup {
    /// [`Store::record_commits`] before the record was read.
    pub(crate) after_commit: u64,
    pub(crate) record: Option<Certificate>,
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
    /// What the counts knew of each of them when it was read (`None`: new), and the
    /// [`Store::record_commits`] before that read (see [`crate::counts`]).
    befores: HashMap<Fingerprint, (Option<Counted>, u64), FingerprintHasher>,
    /// New index postings, per bucket key prefix.
    postings: BTreeMap<Vec<u8>, Vec<Posting>>,
    /// Directories whose file states are replaced.
    dirs: Vec<(String, Vec<FileState>)>,
    /// Endpoint states to save.
    endpoints: Vec<Endpoint>,
    /// Endpoint states to delete (`certctl forget`).
    forgotten_endpoints: Vec<String>,
    /// Managed CA records to save with this batch (`ca init`: the CA and its certificate
    /// appear together or not at all).
    managed_cas: Vec<crate::ManagedCa>,
    /// This ingest's last commits of records: the commit's number and what it wrote.
    committed: VecDeque<(u64, HashSet<Fingerprint, FingerprintHasher>)>,
    /// Set when the store held no certificate when this ingest began (a first import).
    first_import: Option<FirstImport>,
    /// The agent index entry of each record loaded from the store, as it was before this
    /// batch (see `agent_index`): commit writes only the entries that changed.
    agent_before: HashMap<Fingerprint, crate::AgentCredential, FingerprintHasher>,
}

/// What an ingest into an empty store knows: every record is one it wrote, as long as no
/// other writer commits records. A certificate it has not written is then known to be new
/// without reading the store, which saves the lookup that is the largest single cost of a
/// first import of a few hundred thousand certificates.
struct FirstImport {
    /// [`Store::record_commits`] when the store was found empty.
    commits_at_start: u64,
    /// Commits of records this ingest made since.
    own_commits: u64,
    /// The fingerprint prefixes it wrote (a prefix match reads the store to be sure).
    written: HashSet<FpPrefix>,
}

impl<'s> Ingest<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Ingest {
            store,
            records: HashMap::default(),
            befores: HashMap::default(),
            postings: BTreeMap::new(),
            dirs: Vec::new(),
            endpoints: Vec::new(),
            forgotten_endpoints: Vec::new(),
            managed_cas: Vec::new(),
            committed: VecDeque::new(),
            first_import: None,
            agent_before: HashMap::default(),
        }
    }

    /// An ingest for a scan: on an empty store it knows new certificates without looking
    /// them up (see [`Ingest::is_first_import`]).
    pub(crate) fn for_scan(store: &'s Store) -> Result<Self> {
        let mut ingest = Ingest::new(store);
        // Count first: a commit that lands before the emptiness check moves the count, and
        // the first-import knowledge is then dropped at once.
        let commits_at_start = store.record_commits();
        if store.holds_no_certificate()? {
            ingest.first_import = Some(FirstImport {
                commits_at_start,
                own_commits: 0,
                written: HashSet::new(),
            });
        }
        Ok(ingest)
    }

    /// Whether every record in the store is one this ingest wrote (it began on an empty
    /// store and nobody else has written a certificate since): then a scan need not look
    /// up what it parsed, as this ingest knows what is new.
    pub fn is_first_import(&self) -> bool {
        self.first_import
            .as_ref()
            .is_some_and(|f| self.store.record_commits() == f.commits_at_start + f.own_commits)
    }

    /// How many certificates this batch holds so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.dirs.is_empty()
            && self.endpoints.is_empty()
            && self.forgotten_endpoints.is_empty()
            && self.managed_cas.is_empty()
    }

    /// Saves a managed CA record in the same atomic batch as the observations (replacing
    /// one of the same name). Flush the store after [`Ingest::commit`] to make it durable.
    pub fn put_managed_ca(&mut self, ca: crate::ManagedCa) {
        self.managed_cas.push(ca);
    }

    /// The record as this batch sees it (pending changes included).
    fn load(&mut self, fp: &Fingerprint) -> Result<Option<&mut Certificate>> {
        self.load_with(fp, None)
    }

    /// As [`Ingest::load`], using `lookup` instead of reading the store when it is still
    /// true.
    fn load_with(
        &mut self,
        fp: &Fingerprint,
        lookup: Option<Lookup>,
    ) -> Result<Option<&mut Certificate>> {
        if !self.records.contains_key(fp) {
            let read_after = self.store.record_commits();
            let (record, read_after) = match lookup {
                _ if self.known_new(fp) => (None, read_after),
                Some(lookup) if self.still_true(fp, lookup.after_commit) => {
                    (lookup.record, lookup.after_commit)
                }
                _ => match crate::store::record_bytes(self.store.tree(), &fp.0)? {
                    Some(bytes) => (Some(decode_record(&bytes)?), read_after),
                    None => (None, read_after),
                },
            };
            self.befores
                .insert(*fp, (record.as_ref().map(Counted::of), read_after));
            match record {
                Some(cert) => {
                    if let Some(entry) = crate::agent_index::entry_of(&cert) {
                        self.agent_before.insert(*fp, entry);
                    }
                    self.records.insert(*fp, cert);
                }
                None => return Ok(None),
            }
        }
        Ok(self.records.get_mut(fp))
    }

    /// Whether `fp` is certainly not in the store, known without reading it.
    fn known_new(&self, fp: &Fingerprint) -> bool {
        self.is_first_import()
            && self
                .first_import
                .as_ref()
                .is_some_and(|f| !f.written.contains(&fp_prefix(fp)))
    }

    /// Whether a lookup of `fp` made after commit number `after_commit` still holds: every
    /// commit since was one of this ingest's, and none of them wrote `fp`.
    fn still_true(&self, fp: &Fingerprint, after_commit: u64) -> bool {
        let mut next = after_commit + 1;
        for (number, written) in &self.committed {
            if *number < next {
                continue;
            }
            if *number > next || written.contains(fp) {
                return false;
            }
            next += 1;
        }
        next > self.store.record_commits()
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
        self.observe_looked_up(facts, None, role, location, now)
    }

    /// As [`Ingest::observe`], with the record already looked up by another thread
    /// ([`Store::look_up`]).
    pub fn observe_looked_up(
        &mut self,
        facts: CertificateFacts,
        lookup: Option<Lookup>,
        role: Option<Role>,
        location: SourceLocation,
        now: UnixTime,
    ) -> Result<Observed> {
        // The leaf an endpoint serves is deployed as a leaf.
        let deployed = matches!(location, SourceLocation::Endpoint { index: 0, .. });
        self.observe_deployed(facts, lookup, role, location, now, deployed)
    }

    /// As [`Ingest::observe_looked_up`]; `deployed_leaf` says the certificate is used as a
    /// server's own certificate (served first by an endpoint, or the first certificate of a
    /// file that holds a private key). Then a role given explicitly wins even when the
    /// certificate says `CA:TRUE` (`openssl req -x509` sets it by default, so self-signed
    /// gateway certificates would otherwise become `ca` and get the CA policy); `is_ca`
    /// stays its own fact.
    pub fn observe_deployed(
        &mut self,
        facts: CertificateFacts,
        lookup: Option<Lookup>,
        role: Option<Role>,
        location: SourceLocation,
        now: UnixTime,
        deployed_leaf: bool,
    ) -> Result<Observed> {
        let fp = facts.fingerprint;
        let wanted_role = match role {
            Some(r) if deployed_leaf => Some(r),
            _ if facts.is_ca => Some(Role::Ca),
            _ => role,
        };
        let mut new_role = None;
        let outcome = match self.load_with(&fp, lookup)? {
            Some(cert) => {
                let mut changed = false;
                // Serials read by an older release (negative ones were written unsigned).
                if cert.facts.serial != facts.serial {
                    cert.facts.serial = facts.serial;
                    changed = true;
                }
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
        self.mark_gone_looked_up(fp, None, location, now)
    }

    /// As [`Ingest::mark_gone`], with the record already looked up by another thread
    /// ([`Store::look_up`]): a scan's parse workers look up what a replaced file held, so
    /// that the writer of a renewal round does not read every old record itself.
    pub fn mark_gone_looked_up(
        &mut self,
        fp: &Fingerprint,
        lookup: Option<Lookup>,
        location: &SourceLocation,
        now: UnixTime,
    ) -> Result<bool> {
        let Some(cert) = self.load_with(fp, lookup)? else {
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

    /// Deletes the state of a TLS endpoint (its chain and findings) in this batch.
    pub fn forget_endpoint(&mut self, address: &str) {
        self.endpoints.retain(|e| e.address != address);
        self.forgotten_endpoints.push(address.to_string());
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
        let mut batch = crate::batch::Batch::default();
        // Bytes this batch adds, for the free-space check before anything is written.
        let mut bytes = 0u64;
        let mut size = |key: usize, value: &[u8]| {
            bytes += (key + value.len()) as u64;
        };
        let mut agent_bytes = 0u64;
        let mut written = HashSet::with_capacity_and_hasher(self.records.len(), FingerprintHasher);
        // What the counts must learn: each record as written, against what they knew of it.
        let mut counted: Vec<(Fingerprint, Option<Counted>, u64, Counted)> =
            Vec::with_capacity(self.records.len());
        for (fp, cert) in self.records.drain() {
            let (before, read_after) = self.befores.remove(&fp).unwrap_or((None, 0));
            // A new record needs its locator; a known one has it (see `changes` below for
            // one removed by another writer since it was read).
            let not_after = cert.facts.not_after;
            match before.as_ref().map(Counted::not_after) {
                Some(stored) if stored == not_after => {}
                stored => {
                    if let Some(stored) = stored {
                        // Only a test's made-up record changes its notAfter: move it.
                        batch.remove(keys::record_key(stored, &fp.0).as_slice());
                    }
                    size(33, &keys::time_bytes(not_after));
                    batch.insert(
                        keys::locator_key(&fp.0).as_slice(),
                        keys::time_bytes(not_after).as_slice(),
                    );
                }
            }
            counted.push((fp, before, read_after, Counted::of(&cert)));
            let before = self.agent_before.remove(&fp);
            let after = crate::agent_index::entry_of(&cert);
            agent_bytes += crate::agent_index::update(&mut batch, before.as_ref(), after.as_ref())?;
            let value = encode_record(&cert)?;
            size(41, &value);
            batch.insert(keys::record_key(not_after, &fp.0).as_slice(), value);
            written.insert(fp);
        }
        self.befores.clear();
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
            crate::failed_files::update(&mut batch, &dir, &files)?;
        }
        for endpoint in self.endpoints.drain(..) {
            let value = crate::endpoints::encode_endpoint(&endpoint)?;
            size(endpoint.address.len() + 1, &value);
            batch.insert(keys::endpoint_key(&endpoint.address), value);
        }
        for address in self.forgotten_endpoints.drain(..) {
            batch.remove(keys::endpoint_key(&address));
        }
        for ca in self.managed_cas.drain(..) {
            let value = encode(&ca)?;
            size(ca.name.len() + 1, &value);
            batch.insert(crate::workflows::ca_key(&ca.name), value);
        }
        self.agent_before.clear();
        let bytes = bytes + agent_bytes;
        let store = self.store;
        let this = &*self;
        let changes = |batch: &mut crate::batch::Batch| -> Result<CountChanges> {
            let mut changes = CountChanges::new();
            for (fp, before, read_after, after) in &counted {
                // A record another writer committed since it was read: count from what
                // is stored now.
                let before = if this.still_true(fp, *read_after) {
                    before.clone()
                } else {
                    match crate::store::record_bytes(tree, &fp.0)? {
                        Some(bytes) => Some(Counted::of(&decode_record(&bytes)?)),
                        None => {
                            // Removed (retention) since it was read: written again, it
                            // needs its locator again.
                            batch.insert(
                                keys::locator_key(&fp.0).as_slice(),
                                keys::time_bytes(after.not_after()).as_slice(),
                            );
                            None
                        }
                    }
                };
                changes.change(before.as_ref(), Some(after));
            }
            Ok(changes)
        };
        let number = store.apply_counted(
            batch,
            changes,
            |counts| store.ensure_space(bytes + counts),
            // Counted after the write: a lookup that read the old record sees an older
            // number, so `still_true` finds this commit and checks it.
            || (!written.is_empty()).then(|| store.count_record_commit()),
        )?;
        self.store.wrote(bytes);
        if let Some(number) = number {
            if let Some(first) = &mut self.first_import {
                if number == first.commits_at_start + first.own_commits + 1 {
                    first.own_commits += 1;
                    first.written.extend(written.iter().map(fp_prefix));
                } else {
                    // Someone else wrote certificates: look everything up from now on.
                    self.first_import = None;
                }
            }
            if self.committed.len() == REMEMBERED_COMMITS {
                self.committed.pop_front();
            }
            self.committed.push_back((number, written));
        }
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
    use crate::test_support::facts;

    fn at(path: &str) -> SourceLocation {
        SourceLocation::File {
            path: path.into(),
            index: 0,
        }
    }

    fn paths(store: &Store, n: u8) -> Vec<String> {
        let cert = store.get(&Sha256([n; 32])).expect("get").expect("stored");
        cert.sources
            .iter()
            .filter_map(|s| match &s.location {
                SourceLocation::File { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect()
    }

    use crate::Sha256;

    #[test]
    fn a_lookup_older_than_a_commit_that_wrote_the_record_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut ingest = store.ingest();
        // A parse worker looks certificate 1 up: not there yet.
        let stale = store.look_up(&Sha256([1; 32])).expect("look up");
        assert!(stale.record.is_none());
        // Meanwhile the writer stores it from another file.
        let outcome = ingest
            .observe(facts(1, "a"), Some(Role::Agent), at("/a.pem"), 10)
            .expect("observe");
        assert_eq!(outcome, Observed::New);
        ingest.commit().expect("commit");
        // The stale lookup must not make it look new again (that would drop /a.pem).
        let outcome = ingest
            .observe_looked_up(
                facts(1, "a"),
                Some(stale),
                Some(Role::Agent),
                at("/b.pem"),
                11,
            )
            .expect("observe");
        assert_eq!(outcome, Observed::Updated);
        ingest.commit().expect("commit");
        assert_eq!(paths(&store, 1), ["/a.pem", "/b.pem"]);
    }

    #[test]
    fn a_lookup_older_than_another_writers_commit_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut scan = store.ingest();
        let stale = store.look_up(&Sha256([2; 32])).expect("look up");
        // Another writer (a probe, say) stores the certificate.
        let mut other = store.ingest();
        other
            .observe(facts(2, "b"), Some(Role::Gateway), at("/other.pem"), 10)
            .expect("observe");
        other.commit().expect("commit");
        let outcome = scan
            .observe_looked_up(facts(2, "b"), Some(stale), None, at("/scan.pem"), 11)
            .expect("observe");
        assert_eq!(outcome, Observed::Updated);
        scan.commit().expect("commit");
        assert_eq!(paths(&store, 2), ["/other.pem", "/scan.pem"]);
    }

    #[test]
    fn a_current_lookup_is_used_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut first = store.ingest();
        first
            .observe(facts(3, "c"), Some(Role::Agent), at("/c.pem"), 10)
            .expect("observe");
        first.commit().expect("commit");
        let lookup = store.look_up(&Sha256([3; 32])).expect("look up");
        assert!(lookup.record.is_some());
        let mut scan = store.ingest();
        assert!(scan.still_true(&Sha256([3; 32]), lookup.after_commit));
        let outcome = scan
            .observe_looked_up(
                facts(3, "c"),
                Some(lookup),
                Some(Role::Agent),
                at("/c.pem"),
                11,
            )
            .expect("observe");
        assert_eq!(outcome, Observed::Refreshed);
    }

    #[test]
    fn a_first_import_knows_what_it_wrote_and_stops_guessing_when_another_writer_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut scan = store.scan_ingest().expect("scan ingest");
        assert!(scan.is_first_import());
        scan.observe(facts(4, "d"), Some(Role::Agent), at("/d1.pem"), 10)
            .expect("observe");
        scan.commit().expect("commit");
        assert!(
            scan.is_first_import(),
            "its own commits keep it a first import"
        );
        // The same certificate in a later file of the same scan: known, merged.
        let outcome = scan
            .observe(facts(4, "d"), Some(Role::Agent), at("/d2.pem"), 10)
            .expect("observe");
        assert_eq!(outcome, Observed::Updated);
        scan.commit().expect("commit");
        assert_eq!(paths(&store, 4), ["/d1.pem", "/d2.pem"]);
        // Another writer stores certificate 5: the scan must find it.
        let mut other = store.ingest();
        other
            .observe(facts(5, "e"), Some(Role::Gateway), at("/other.pem"), 10)
            .expect("observe");
        other.commit().expect("commit");
        assert!(!scan.is_first_import());
        let outcome = scan
            .observe(facts(5, "e"), None, at("/scan.pem"), 11)
            .expect("observe");
        assert_eq!(outcome, Observed::Updated);
        scan.commit().expect("commit");
        assert_eq!(paths(&store, 5), ["/other.pem", "/scan.pem"]);
    }

    #[test]
    fn a_serial_written_by_an_older_release_is_corrected_when_seen_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut old = facts(7, "g");
        old.serial = "edcc".into(); // how releases before 0.4 wrote -0x1234
        let mut ingest = store.ingest();
        ingest
            .observe(old, Some(Role::Agent), at("/g.pem"), 10)
            .expect("observe");
        ingest.commit().expect("commit");
        let mut now = facts(7, "g");
        now.serial = "-1234".into();
        let outcome = ingest
            .observe(now, Some(Role::Agent), at("/g.pem"), 11)
            .expect("observe");
        assert_eq!(outcome, Observed::Updated);
        ingest.commit().expect("commit");
        let cert = store.get(&Sha256([7; 32])).expect("get").expect("stored");
        assert_eq!(cert.facts.serial, "-1234");
    }

    #[test]
    fn a_scan_of_a_store_that_holds_certificates_is_no_first_import() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut first = store.ingest();
        first
            .observe(facts(6, "f"), Some(Role::Agent), at("/f.pem"), 10)
            .expect("observe");
        first.commit().expect("commit");
        drop(first);
        let store = {
            drop(store);
            Store::open(dir.path()).expect("reopen")
        };
        let mut scan = store.scan_ingest().expect("scan ingest");
        assert!(!scan.is_first_import());
        let outcome = scan
            .observe(facts(6, "f"), Some(Role::Agent), at("/f.pem"), 11)
            .expect("observe");
        assert_eq!(outcome, Observed::Refreshed);
    }

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
