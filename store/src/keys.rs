//! The layout of the store's single sled tree.
//!
//! Every record and index lives in one tree so that a [`sled::Batch`] updates a record and
//! its index entries atomically. Keys start with one byte that says what they are:
//!
//! | prefix | key                                   | value                                  |
//! |--------|---------------------------------------|----------------------------------------|
//! | `C`    | not_after (8) + fingerprint (32)      | versioned [`Certificate`] record       |
//! | `H`    | fingerprint (32)                      | the record's not_after (8): where its `C` key is |
//! | `O`    | `n` + agent, `f` + fingerprint, `k` + SPKI hash | (empty) what the registrations cover, see `coverage` |
//! | `P`    | index (1) + bucket + segment id (8) + chunk (2) | up to 256 index postings     |
//! | `F`    | directory path + `\0` + segment (4)   | the [`FileState`]s of that directory   |
//! | `S`    | directory path                        | when its files were last confirmed (one time if all alike) |
//! | `T`    | `host:port`                           | [`Endpoint`] state of a TLS endpoint   |
//! | `A`    | fingerprint + time + id               | an [`AuditEvent`]                      |
//! | `M`    | name                                  | metadata (schema version)              |
//! | `K`    | CA name                               | a [`ManagedCa`] (certctl holds its key) |
//! | `W`    | workflow id (8, big-endian)           | a [`Workflow`] (regenerate state)      |
//! | `L`    | CRL URL                               | a [`CachedCrl`] (fetched from a CRL distribution point) |
//! | `N`    | fingerprint + recipient + `\0` + threshold (8) | a [`SentReminder`]             |
//! | `Q`    | `r` + recipient, `s`, or `c`          | [`DeliveryState`] / [`SmtpState`] / delivery counters |
//! | `Z`    | fingerprint                           | a [`Snooze`]                           |
//! | `G`    | resource GUID (lowercase)             | an agent [`Registration`]              |
//! | `V`    | `d` + agent name (lowercase), or `s` + setting | [`AgentDecision`] / a setting (deny-list path) |
//! | `X`    | artifact id (SHA-256 of the file, 32) | a [`TrackedArtifact`]                  |
//! | `X`    | artifact id + `N` + recipient + `\0` + threshold | a reminder sent about that artifact |
//! | `U`    | see [`crate::counts`]                 | counts by class and expiry time, `check`'s and `/metrics`' entries (kept on every record write) |
//! | `Y`    | `c` + agent (lowercase) + `\0` + fingerprint (32), or `e` + not_after (8) + the same | an agent's credential: every one (`c`) / every live one in expiry order (`e`), see `agent_index` |
//! | `R`    | agent (lowercase)                     | a [`PrunedRenewals`]: what retention removed of that agent's ephemeral credentials |
//! | `E`    | `r` + fingerprint (32), or `c` + method + `\0` + outcome | a [`RenewalRecord`] (automatic renewal) / a renewal counter |
//! | `B`    | directory path                        | its files whose last read failed: `(name, cause)` (see `failed_files`) |
//!
//! Certificate records are keyed by expiry (schema 7), so the certificates of an expiry
//! window are one contiguous range of the tree: `list --expiring-within 30d` reads the
//! leaves that hold them and no other, and the records retention removes (long expired)
//! sit together at the start. A certificate's notAfter never changes (it is part of what
//! the fingerprint hashes), so neither does its key; the small `H` entry finds the record
//! of a fingerprint.
//!
//! Indexes are *posting segments*: each committed batch appends, per bucket, one segment
//! holding all of that batch's entries for the bucket. That keeps the number of sled keys
//! written per certificate close to one (sled's cost is per key), while a query reads only
//! the buckets it needs. Postings are only rewritten by retention (`retention.rs`), which
//! removes a pruned record's postings from the segments that hold them (dropping a chunk
//! whose every posting is gone) in the same atomic batch as the record. A query checks
//! every hit against the record, so a stale posting (e.g. after a role change) is harmless.
//!
//! [`Certificate`]: crate::Certificate
//! [`FileState`]: crate::FileState
//! [`Endpoint`]: crate::Endpoint
//! [`AuditEvent`]: crate::AuditEvent
//! [`ManagedCa`]: crate::ManagedCa
//! [`Workflow`]: crate::Workflow
//! [`CachedCrl`]: crate::CachedCrl
//! [`SentReminder`]: crate::SentReminder
//! [`DeliveryState`]: crate::DeliveryState
//! [`SmtpState`]: crate::SmtpState
//! [`Snooze`]: crate::Snooze
//! [`Registration`]: crate::Registration
//! [`AgentDecision`]: crate::AgentDecision
//! [`TrackedArtifact`]: crate::TrackedArtifact
//! [`AgentCredential`]: crate::AgentCredential
//! [`PrunedRenewals`]: crate::PrunedRenewals
//! [`RenewalRecord`]: crate::RenewalRecord

pub(crate) const CERT: u8 = b'C';
pub(crate) const POSTING: u8 = b'P';
pub(crate) const FILES: u8 = b'F';
pub(crate) const DIR_SEEN: u8 = b'S';
pub(crate) const META: u8 = b'M';
pub(crate) const ENDPOINT: u8 = b'T';
pub(crate) const AUDIT: u8 = b'A';
pub(crate) const MANAGED_CA: u8 = b'K';
pub(crate) const WORKFLOW: u8 = b'W';
pub(crate) const CACHED_CRL: u8 = b'L';
pub(crate) const SENT_REMINDER: u8 = b'N';
pub(crate) const DELIVERY: u8 = b'Q';
pub(crate) const SNOOZE: u8 = b'Z';
pub(crate) const REGISTRATION: u8 = b'G';
pub(crate) const AGENT_DECISION: u8 = b'V';
pub(crate) const ARTIFACT: u8 = b'X';
pub(crate) const AGENT_INDEX: u8 = b'Y';
pub(crate) const PRUNED: u8 = b'R';
pub(crate) const RENEWAL: u8 = b'E';
pub(crate) const FAILED_FILES: u8 = b'B';

pub(crate) fn endpoint_key(address: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(address.len() + 1);
    k.push(ENDPOINT);
    k.extend_from_slice(address.as_bytes());
    k
}

/// Seconds per expiry bucket (one week).
pub(crate) const EXPIRY_BUCKET_SECS: i64 = 7 * 86_400;
/// Number of hash buckets for the name, key (SPKI) and issuer indexes.
pub(crate) const NAME_BUCKETS: u64 = 256;
pub(crate) const SPKI_BUCKETS: u64 = 256;
pub(crate) const ISSUER_BUCKETS: u64 = 64;

/// The secondary indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Index {
    /// By not_after; bucket = expiry week.
    Expiry,
    /// By role then not_after; bucket = role code + expiry week.
    RoleExpiry,
    /// By SPKI hash; bucket = hash of the SPKI digest.
    Spki,
    /// By issuer DN; bucket = hash of the normalised issuer.
    Issuer,
    /// By subject CN and SAN (lowercased); bucket = hash of the name.
    Name,
}

impl Index {
    fn tag(self) -> u8 {
        match self {
            Index::Expiry => b'e',
            Index::RoleExpiry => b'r',
            Index::Spki => b'k',
            Index::Issuer => b'i',
            Index::Name => b'n',
        }
    }
}

pub(crate) const LOCATOR: u8 = b'H';
pub(crate) const REG_LOOKUP: u8 = b'O';

/// `C` + not_after + fingerprint: where a certificate record lives.
pub(crate) fn record_key(not_after: i64, fp: &[u8; 32]) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = CERT;
    k[1..9].copy_from_slice(&time_bytes(not_after));
    k[9..].copy_from_slice(fp);
    k
}

/// `C` + not_after + the first bytes of a fingerprint: the records an index posting (a
/// notAfter and a fingerprint prefix) may lead to.
pub(crate) fn record_prefix(not_after: i64, fp_prefix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + fp_prefix.len());
    k.push(CERT);
    k.extend_from_slice(&time_bytes(not_after));
    k.extend_from_slice(fp_prefix);
    k
}

/// The first key of the records with `not_after >= t`.
pub(crate) fn records_from(t: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = CERT;
    k[1..].copy_from_slice(&time_bytes(t));
    k
}

/// `H` + fingerprint: the locator of a certificate record (its value: the not_after).
pub(crate) fn locator_key(fp: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = LOCATOR;
    k[1..].copy_from_slice(fp);
    k
}

/// The fingerprint a record key ends with, if the key is one.
pub(crate) fn fingerprint_of_record_key(key: &[u8]) -> Option<[u8; 32]> {
    (key.len() == 41 && key[0] == CERT)
        .then(|| key[9..].try_into().ok())
        .flatten()
}

/// Order-preserving encoding of a signed time.
pub(crate) fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`time_bytes`].
pub(crate) fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

pub(crate) fn expiry_week(not_after: i64) -> i64 {
    not_after.div_euclid(EXPIRY_BUCKET_SECS)
}

/// The key prefix of one bucket of one index (segment ids follow).
pub(crate) fn bucket_prefix(index: Index, bucket: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + bucket.len() + 8);
    k.push(POSTING);
    k.push(index.tag());
    k.extend_from_slice(bucket);
    k
}

/// The key prefix of a whole index.
pub(crate) fn index_prefix(index: Index) -> [u8; 2] {
    [POSTING, index.tag()]
}

pub(crate) fn expiry_bucket(week: i64) -> [u8; 8] {
    time_bytes(week)
}

pub(crate) fn role_expiry_bucket(role_code: u8, week: i64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = role_code;
    b[1..].copy_from_slice(&time_bytes(week));
    b
}

pub(crate) fn hash_bucket(hash: u64, buckets: u64) -> [u8; 2] {
    ((hash % buckets) as u16).to_be_bytes()
}

/// FNV-1a over the lowercased bytes: stable across releases (it is part of the layout).
pub(crate) fn name_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn spki_hash(spki: &[u8; 32]) -> u64 {
    u64::from_be_bytes([
        spki[0], spki[1], spki[2], spki[3], spki[4], spki[5], spki[6], spki[7],
    ])
}

/// `F` + directory + `\0`: the prefix of one directory's file-state segments.
pub(crate) fn dir_prefix(dir: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + 6);
    k.push(FILES);
    k.extend_from_slice(dir.as_bytes());
    k.push(0);
    k
}

/// `S` + directory: the key of a directory's [`crate::files::DirSeen`].
pub(crate) fn dir_seen_key(dir: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + 1);
    k.push(DIR_SEEN);
    k.extend_from_slice(dir.as_bytes());
    k
}

pub(crate) fn dir_segment_key(dir: &str, segment: u32) -> Vec<u8> {
    let mut k = dir_prefix(dir);
    k.extend_from_slice(&segment.to_be_bytes());
    k
}

/// Splits a file-state key back into its directory.
pub(crate) fn dir_of_key(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(&[FILES])?;
    let end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bytes_sort_like_times() {
        let times = [-5_000_000_000i64, -1, 0, 1, 1_700_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_bytes(w[0]) < time_bytes(w[1]));
        }
    }

    #[test]
    fn name_hash_ignores_case() {
        assert_eq!(name_hash("GW.Example.COM"), name_hash("gw.example.com"));
        assert_ne!(name_hash("a"), name_hash("b"));
    }

    #[test]
    fn dir_keys_round_trip() {
        let k = dir_segment_key("/etc/ssl", 3);
        assert_eq!(dir_of_key(&k), Some("/etc/ssl"));
        assert!(k.starts_with(&dir_prefix("/etc/ssl")));
        assert!(!k.starts_with(&dir_prefix("/etc/ss")));
    }
}
