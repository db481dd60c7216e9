//! Reading records written by older releases, and upgrading a store in place.
//!
//! Every certificate record starts with a format byte. Format 1 (the first release) kept
//! key identifiers as hex strings; format 2 keeps them as raw bytes. [`decode_record`]
//! reads both, so a store is usable at once, and [`upgrade`] rewrites the old records in
//! batches when an old store is first opened. Each batch is atomic and a record's format
//! byte says which layout it has, so an upgrade cut short by a crash simply continues the
//! next time the store is opened.
//!
//! [`decode_record`]: crate::store::decode_record

use serde::Deserialize;

use crate::error::{Result, StoreError};
use crate::keys;
use crate::model::{
    Certificate, CertificateFacts, Fingerprint, KeyAlgorithm, KeyId, Revocation, Role, Sha256,
    Source, SubjectAltNames, UnixTime,
};

/// Format byte of a certificate record written by release 1 (schema 1).
pub(crate) const RECORD_FORMAT_1: u8 = 1;
/// Format byte of a certificate record as this release writes it.
pub(crate) const RECORD_FORMAT_2: u8 = 2;
/// Records rewritten per atomic batch during an upgrade.
const UPGRADE_BATCH: usize = 4096;

/// A certificate record in format 1: field for field what release 1 wrote.
#[derive(Deserialize)]
struct CertificateV1 {
    facts: FactsV1,
    role: Role,
    revocation: Option<Revocation>,
    first_seen: UnixTime,
    last_seen: UnixTime,
    sources: Vec<Source>,
    more_sources: u64,
}

#[derive(Deserialize)]
struct FactsV1 {
    fingerprint: Fingerprint,
    subject: String,
    subject_cn: Option<String>,
    issuer: String,
    serial: String,
    not_before: UnixTime,
    not_after: UnixTime,
    sans: SubjectAltNames,
    key: KeyAlgorithm,
    signature_algorithm: String,
    is_ca: bool,
    subject_key_id: Option<String>,
    authority_key_id: Option<String>,
    spki_sha256: Sha256,
    crl_distribution_points: Vec<String>,
    ocsp_urls: Vec<String>,
}

/// Decodes the body (after the format byte) of a format-1 record.
pub(crate) fn decode_v1(body: &[u8]) -> Result<Certificate> {
    let old: CertificateV1 = postcard::from_bytes(body).map_err(|e| StoreError::Corrupt {
        what: "certificate (format 1)",
        detail: e.to_string(),
    })?;
    let key_id = |hex: Option<String>| -> Result<Option<KeyId>> {
        hex.map(|h| {
            h.parse::<KeyId>().map_err(|detail| StoreError::Corrupt {
                what: "certificate (format 1) key identifier",
                detail,
            })
        })
        .transpose()
    };
    let f = old.facts;
    Ok(Certificate {
        facts: CertificateFacts {
            fingerprint: f.fingerprint,
            subject: f.subject,
            subject_cn: f.subject_cn,
            issuer: f.issuer,
            serial: f.serial,
            not_before: f.not_before,
            not_after: f.not_after,
            sans: f.sans,
            key: f.key,
            signature_algorithm: f.signature_algorithm,
            is_ca: f.is_ca,
            subject_key_id: key_id(f.subject_key_id)?,
            authority_key_id: key_id(f.authority_key_id)?,
            spki_sha256: f.spki_sha256,
            crl_distribution_points: f.crl_distribution_points,
            ocsp_urls: f.ocsp_urls,
        },
        role: old.role,
        revocation: old.revocation,
        first_seen: old.first_seen,
        last_seen: old.last_seen,
        sources: old.sources,
        more_sources: old.more_sources,
    })
}

/// Rewrites every certificate record of an older format in the current one. Returns how
/// many records were rewritten.
pub(crate) fn upgrade(tree: &sled::Tree) -> Result<u64> {
    let mut rewritten = 0u64;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    for kv in tree.scan_prefix([keys::CERT]) {
        let (key, value) = kv?;
        if value.first() == Some(&RECORD_FORMAT_2) {
            continue;
        }
        let cert = crate::store::decode_record(&value)?;
        batch.insert(key, crate::store::encode_record(&cert)?);
        pending += 1;
        if pending == UPGRADE_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            rewritten += pending as u64;
            pending = 0;
        }
    }
    if pending > 0 {
        tree.apply_batch(batch)?;
        rewritten += pending as u64;
    }
    Ok(rewritten)
}

/// Moves every certificate record keyed by fingerprint alone (`C` + fingerprint, schema 6
/// and older) to its key by expiry (`C` + not_after + fingerprint) and writes its locator
/// (`H` + fingerprint → not_after), in atomic batches: a record is under one key or the
/// other, never lost, and a move cut short by a crash continues at the next open (the old
/// keys are the 33-byte ones). Returns how many records were moved.
pub(crate) fn key_records_by_expiry(tree: &sled::Tree) -> Result<u64> {
    let mut moved = 0u64;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    for kv in tree.scan_prefix([keys::CERT]) {
        let (key, value) = kv?;
        let Ok(fp) = <[u8; 32]>::try_from(&key[1..]) else {
            continue; // already moved (41 bytes)
        };
        let cert = crate::store::decode_record(&value)?;
        let not_after = cert.facts.not_after;
        batch.remove(key);
        batch.insert(keys::record_key(not_after, &fp).as_slice(), value);
        batch.insert(
            keys::locator_key(&fp).as_slice(),
            keys::time_bytes(not_after).as_slice(),
        );
        pending += 1;
        if pending == UPGRADE_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            moved += pending as u64;
            pending = 0;
        }
    }
    if pending > 0 {
        tree.apply_batch(batch)?;
        moved += pending as u64;
    }
    Ok(moved)
}

/// Rewrites every endpoint record of format 1 (no probe duration) in format 2, in one
/// atomic batch (a site has a few hundred endpoints at most). Returns how many were
/// rewritten.
pub(crate) fn upgrade_endpoints(tree: &sled::Tree) -> Result<u64> {
    let mut batch = sled::Batch::default();
    let mut rewritten = 0u64;
    for kv in tree.scan_prefix([keys::ENDPOINT]) {
        let (key, value) = kv?;
        if value.first() == Some(&crate::endpoints::ENDPOINT_FORMAT_2) {
            continue;
        }
        let endpoint = crate::endpoints::decode_endpoint(&value)?;
        batch.insert(key, crate::endpoints::encode_endpoint(&endpoint)?);
        rewritten += 1;
    }
    if rewritten > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceLocation;
    use crate::test_support::facts;
    use crate::Store;

    /// Puts a record back where schema 6 kept it (`C` + fingerprint, no locator).
    fn as_schema_6(store: &Store, n: u8) {
        let tree = store.tree();
        let cert = store.get(&Sha256([n; 32])).expect("get").expect("stored");
        let key = keys::record_key(cert.facts.not_after, &[n; 32]);
        let value = tree.get(key).expect("read").expect("the record");
        tree.remove(key).expect("remove");
        tree.remove(keys::locator_key(&[n; 32])).expect("remove");
        let mut old = vec![keys::CERT];
        old.extend_from_slice(&[n; 32]);
        tree.insert(old, value).expect("insert");
    }

    /// A store of schema 6 keeps its records under their fingerprints. Opened, they move to
    /// their keys by expiry with a locator each; a move cut short (some records moved, some
    /// not, as a crash between two batches leaves it) completes at the next open.
    #[test]
    fn records_keyed_by_fingerprint_move_to_their_expiry_keys_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).expect("open");
            let mut ingest = store.ingest();
            for n in 1..=6u8 {
                let at = SourceLocation::File {
                    path: format!("/c/{n}.pem"),
                    index: 0,
                };
                ingest
                    .observe(
                        facts(n, &format!("host{n}")),
                        Some(crate::Role::Agent),
                        at,
                        10,
                    )
                    .expect("observe");
            }
            ingest.commit().expect("commit");
            // Four of six records as schema 6 left them: a half-done move.
            for n in 1..=4u8 {
                as_schema_6(&store, n);
            }
            // host1 registered by name; schema 6 had no lookups nor uncovered counts.
            store
                .import_registrations(
                    &[crate::Registration {
                        agent: "host1".into(),
                        guid: "0001".into(),
                        spki_sha256: None,
                        fingerprint: None,
                        imported_at: 10,
                    }],
                    true,
                )
                .expect("import");
            for prefix in [&[keys::REG_LOOKUP][..], b"Uq", b"UQ"] {
                for kv in store.tree().scan_prefix(prefix) {
                    store.tree().remove(kv.expect("read").0).expect("remove");
                }
            }
            store
                .tree()
                .insert([keys::META, b's'], &6u32.to_be_bytes())
                .expect("schema 6");
            assert!(store.get(&Sha256([1; 32])).expect("get").is_none());
            store.flush().expect("flush");
        }
        let store = Store::open(&path).expect("reopen");
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
        assert_eq!(v.records, 6);
        assert_eq!(store.uncovered_agent_count().expect("count"), 5);
        for n in 1..=6u8 {
            let cert = store.get(&Sha256([n; 32])).expect("get").expect("found");
            assert_eq!(
                cert.facts.subject_cn.as_deref(),
                Some(format!("host{n}").as_str())
            );
        }
        // In expiry order: facts(n) expires n days after the same moment.
        let order: Vec<u8> = store
            .iter()
            .map(|c| c.expect("record").facts.fingerprint.0[0])
            .collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 6]);
        let window = store
            .expiring_between(1_800_000_000 + 2 * 86_400, 1_800_000_000 + 5 * 86_400, None)
            .expect("window");
        assert_eq!(window.len(), 3);
    }
}
