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
