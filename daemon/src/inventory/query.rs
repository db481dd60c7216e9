//! The questions admins ask of the inventory: `list`, `show`, `stats` (`check` is
//! [`crate::fleet::check`], which also asks renewals, agents and endpoints).
//!
//! Each answers from the store's indexes where one fits (expiry, role, name) and only falls
//! back to reading every record when the filter has no index (issuer substring, all).

use std::collections::BTreeMap;

use certctl_store::{Certificate, CredentialKind, Role, Status, Store, StoreError, UnixTime};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::inventory::view::EXPIRING_SECS;

/// Errors of the query layer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No certificate has this ID (fingerprint prefix, subject CN or SAN); holds the ID as
    /// given.
    #[error("no certificate matches `{0}` (give a fingerprint prefix of at least 8 hex characters, or an exact subject CN or SAN)")]
    NotFound(String),
    /// The ID is a fingerprint prefix that several certificates share (a name shared by
    /// several certificates is not an error: all are returned).
    #[error("`{id}` is ambiguous: it matches {} certificates:\n{}", candidates.len(), candidates.join("\n"))]
    Ambiguous {
        /// The ID as given.
        id: String,
        /// One line per match: fingerprint, name and expiry (indented, for the error text).
        candidates: Vec<String>,
    },
}

/// `certctl list` filters. All given filters must match.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only certificates of this role (`--role`); `None`: any role.
    pub role: Option<Role>,
    /// Not yet expired and not_after before now + this.
    pub expiring_within: Option<Duration>,
    /// Already expired. With `expiring_within`, the union of both.
    pub expired: bool,
    /// Case-insensitive substring of the issuer DN.
    pub issuer: Option<String>,
    /// Case-insensitive substring of the subject CN or a SAN.
    pub name: Option<String>,
    /// Only long-lived or only short-lived (ephemeral) credentials; CA certificates have
    /// neither kind and are left out when this is given.
    #[serde(default)]
    pub kind: Option<CredentialKind>,
}

/// Certificates matching `filter` at `now`, sorted by not_after.
pub fn list(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
) -> Result<Vec<Certificate>, QueryError> {
    let mut all = Vec::new();
    list_batches(store, filter, now, |mut batch| {
        all.append(&mut batch);
        Ok::<(), QueryError>(())
    })?;
    Ok(all)
}

/// The hits of a list by expiry whose records are read first: a screenful, so that a
/// terminal (or a streamed answer) gets its first rows before the rest is read.
pub(crate) const FIRST_SLICE_HITS: usize = 64;
/// The most hits whose records are read (and held) at once.
const MAX_SLICE_HITS: usize = 8192;

/// [`list`], handed to `each` in sorted batches as it is read: an expiry window is read
/// from the expiry index's hits a slice at a time (`FIRST_SLICE_HITS` first, growing to
/// `MAX_SLICE_HITS`), so a long list (tens of thousands through certd) is never held
/// whole and its first rows come at once. Other filters give one batch.
pub fn list_batches<E: From<QueryError>>(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
    mut each: impl FnMut(Vec<Certificate>) -> Result<(), E>,
) -> Result<(), E> {
    use rayon::prelude::*;
    let time_range = match (filter.expired, filter.expiring_within) {
        (false, None) => None,
        (true, None) => Some((i64::MIN + 1, now + 1)),
        (false, Some(d)) => Some((now + 1, now.saturating_add(d.as_secs()).saturating_add(1))),
        (true, Some(d)) => Some((
            i64::MIN + 1,
            now.saturating_add(d.as_secs()).saturating_add(1),
        )),
    };
    let finish = |mut certs: Vec<Certificate>| -> Result<Vec<Certificate>, QueryError> {
        apply_text_filters(filter, &mut certs);
        refresh_last_seen(store, &mut certs)?;
        Ok(certs)
    };
    match (time_range, filter.role) {
        // The records of an expiry window are one range of the store, read in order.
        (Some((from, before)), None) => {
            for certs in store.expiring_slices(from, before, FIRST_SLICE_HITS, MAX_SLICE_HITS) {
                let certs = finish(certs.map_err(QueryError::from)?)?;
                if !certs.is_empty() {
                    each(certs)?;
                }
            }
            Ok(())
        }
        (Some((from, before)), Some(_)) => {
            // The hits come from the expiry index in order; their records are read a slice
            // at a time (the slice split between the threads), a small slice first so that
            // the first rows go out at once, then growing slices.
            let hits = store
                .expiry_hits(from, before, filter.role)
                .map_err(QueryError::from)?;
            let threads = rayon::current_num_threads().max(1);
            let (mut start, mut slice) = (0, FIRST_SLICE_HITS);
            while start < hits.len() {
                let end = (start + slice).min(hits.len());
                let part = slice.div_ceil(threads).max(1);
                let read: Vec<Vec<Certificate>> = hits[start..end]
                    .par_chunks(part)
                    .map(|part| store.records_of_hits(part, filter.role))
                    .collect::<Result<_, StoreError>>()
                    .map_err(QueryError::from)?;
                let certs = finish(read.into_iter().flatten().collect())?;
                if !certs.is_empty() {
                    each(certs)?;
                }
                start = end;
                slice = (slice * 8).min(MAX_SLICE_HITS);
            }
            Ok(())
        }
        (None, Some(role)) => each(finish(store.by_role(role).map_err(QueryError::from)?)?),
        (None, None) => {
            let mut all = store
                .iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(QueryError::from)?;
            all.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
            each(finish(all)?)
        }
    }
}

/// `--kind`, `--issuer` and `--name`: filters that no index answers.
fn apply_text_filters(filter: &ListFilter, certs: &mut Vec<Certificate>) {
    if let Some(kind) = filter.kind {
        certs.retain(|c| c.credential_kind() == Some(kind));
    }
    if let Some(issuer) = &filter.issuer {
        let needle = issuer.to_lowercase();
        certs.retain(|c| c.facts.issuer.to_lowercase().contains(&needle));
    }
    if let Some(name) = &filter.name {
        let needle = name.to_lowercase();
        certs.retain(|c| {
            c.facts.names().any(|n| n.to_lowercase().contains(&needle))
                || c.facts.subject.to_lowercase().contains(&needle)
        });
    }
}

/// Folds the time each file was last confirmed into the certificates' file sources: a
/// re-scan that skips an unchanged file refreshes only the file's state (kept per folder),
/// not every certificate in it. One folder at a time and in parallel over folders: a long
/// listing touches a thousand folders of a thousand files. A folder whose files were all
/// confirmed at once costs one small read ([`Store::files_last_seen`]); only the others
/// have their file states read.
pub(crate) fn refresh_last_seen(
    store: &Store,
    certs: &mut [Certificate],
) -> Result<(), StoreError> {
    use rayon::prelude::*;
    // (folder, file name, certificate, source) of every current file source.
    let mut wanted: Vec<(&str, &str, usize, usize)> = Vec::new();
    for (c, cert) in certs.iter().enumerate() {
        for (k, source) in cert.sources.iter().enumerate() {
            let certctl_store::SourceLocation::File { path, .. } = &source.location else {
                continue;
            };
            if source.gone_since.is_some() {
                continue;
            }
            match path.rsplit_once('/') {
                Some(("", name)) => wanted.push(("/", name, c, k)),
                Some((dir, name)) => wanted.push((dir, name, c, k)),
                None => {}
            }
        }
    }
    wanted.sort_unstable();
    let folders: Vec<&[(&str, &str, usize, usize)]> = wanted.chunk_by(|a, b| a.0 == b.0).collect();
    // Per folder: the confirmed times of the files asked about.
    let seen: Vec<Vec<(usize, usize, UnixTime)>> = folders
        .par_iter()
        .map(|group| {
            let times = store.files_last_seen(group[0].0, group.iter().map(|w| w.1))?;
            Ok(group
                .iter()
                .zip(times)
                .filter_map(|((_, _, c, k), t)| t.map(|t| (*c, *k, t)))
                .collect())
        })
        .collect::<Result<_, StoreError>>()?;
    drop(folders);
    drop(wanted);
    for (c, k, t) in seen.into_iter().flatten() {
        let cert = &mut certs[c];
        let source = &mut cert.sources[k];
        source.last_seen = source.last_seen.max(t);
        cert.last_seen = cert.last_seen.max(source.last_seen);
    }
    Ok(())
}

/// The certificates `id` names: a fingerprint prefix (≥ 8 hex characters, colons allowed)
/// or an exact subject CN / SAN. An ambiguous prefix is an error listing the candidates;
/// a name shared by several certificates (e.g. a renewed one) returns them all.
pub(crate) fn find(store: &Store, id: &str) -> Result<Vec<Certificate>, QueryError> {
    let hex: String = id.chars().filter(|c| *c != ':').collect();
    let mut found = Vec::new();
    if hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        found = store.find_by_fingerprint_prefix(&hex)?;
        if found.len() > 1 {
            return Err(QueryError::Ambiguous {
                id: id.to_string(),
                candidates: found.iter().map(describe).collect(),
            });
        }
    }
    if found.is_empty() {
        found = store.find_by_name(id)?;
    }
    if found.is_empty() {
        return Err(QueryError::NotFound(id.to_string()));
    }
    refresh_last_seen(store, &mut found)?;
    Ok(found)
}

fn describe(c: &Certificate) -> String {
    format!(
        "  {}  {}  expires {}",
        c.fingerprint().to_hex(),
        c.facts.display_name(),
        certctl_store::rfc3339(c.facts.not_after)
    )
}

/// `certctl stats`. Field names are part of the `--json` contract.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Every stored certificate (`total`).
    pub total: u64,
    /// Certificates per role name (`gateway`, `iis`, `site-server`, `agent`, `ca`, `other`);
    /// roles with none are absent (`by_role`).
    pub by_role: BTreeMap<String, u64>,
    /// Certificates per status (`valid`, `expiring` within 30 days, `expired`, `revoked`,
    /// `not-yet-valid`); every status is present, 0 when none (`by_status`).
    pub by_status: BTreeMap<String, u64>,
    /// Certificates per public key (`"EC P-256"`, `"RSA 2048"`, ...) (`by_key`).
    pub by_key: BTreeMap<String, u64>,
    /// Leaves per credential kind (`permanent`, `ephemeral`); CA certificates are not
    /// counted here (`by_credential_kind`).
    pub by_credential_kind: BTreeMap<String, u64>,
}

/// `certctl stats`, from the counts the store keeps on every commit (no record is read).
pub(crate) fn stats(store: &Store, now: UnixTime) -> Result<Stats, QueryError> {
    let counts = store.counts(now, EXPIRING_SECS)?;
    let mut s = Stats::default();
    for status in ALL_STATUSES {
        s.by_status.insert(status.as_str().to_string(), 0);
    }
    for (class, n) in &counts.status {
        let total = n.total();
        if total == 0 {
            continue;
        }
        s.total += total;
        *s.by_role
            .entry(class.role.as_str().to_string())
            .or_default() += total;
        for status in ALL_STATUSES {
            *s.by_status.entry(status.as_str().to_string()).or_default() += n.of(status);
        }
        if let Some(kind) = class.kind {
            *s.by_credential_kind
                .entry(kind.as_str().to_string())
                .or_default() += total;
        }
    }
    for ((_, _, key), n) in &counts.keys {
        *s.by_key.entry(key.clone()).or_default() += n;
    }
    Ok(s)
}

const ALL_STATUSES: [Status; 5] = [
    Status::Valid,
    Status::Expiring,
    Status::Expired,
    Status::Revoked,
    Status::NotYetValid,
];

#[cfg(test)]
/// [`stats`] by reading every record: what the counts must equal (tests, benchmarks).
pub(crate) fn stats_by_reading_all(store: &Store, now: UnixTime) -> Result<Stats, QueryError> {
    let mut s = Stats::default();
    for status in ALL_STATUSES {
        s.by_status.insert(status.as_str().to_string(), 0);
    }
    for cert in store.iter() {
        let cert = cert?;
        s.total += 1;
        *s.by_role.entry(cert.role.as_str().to_string()).or_default() += 1;
        *s.by_status
            .entry(cert.status(now, EXPIRING_SECS).as_str().to_string())
            .or_default() += 1;
        *s.by_key.entry(cert.facts.key.to_string()).or_default() += 1;
        if let Some(kind) = cert.credential_kind() {
            *s.by_credential_kind
                .entry(kind.as_str().to_string())
                .or_default() += 1;
        }
    }
    Ok(s)
}

/// The scanned files whose last read failed, as `check` and `status` show them: the first
/// [`FAILED_FILES_LISTED`] as `PATH: CAUSE`, and how many there are.
pub(crate) fn failed_files(store: &Store) -> Result<(Vec<String>, u64), StoreError> {
    let failed = store.failed_files()?;
    let total = failed.len() as u64;
    let listed = failed
        .into_iter()
        .take(FAILED_FILES_LISTED)
        .map(|(path, cause)| format!("{path}: {cause}"))
        .collect();
    Ok((listed, total))
}

/// How many failed files a check report names.
pub(crate) const FAILED_FILES_LISTED: usize = 10;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use certctl_store::{
        CertificateFacts, FileState, KeyAlgorithm, Sha256, SourceLocation, SubjectAltNames,
    };

    pub(crate) fn facts(i: u32, not_after: UnixTime) -> CertificateFacts {
        let mut fp = [0u8; 32];
        fp[..4].copy_from_slice(&i.to_be_bytes());
        fp[31] = 0xaa;
        CertificateFacts {
            fingerprint: Sha256(fp),
            subject: format!("CN=h{i}"),
            subject_cn: Some(format!("h{i}")),
            issuer: "CN=CA".into(),
            serial: format!("{i:x}"),
            not_before: not_after - 365 * 86_400,
            not_after,
            sans: SubjectAltNames::default(),
            key: KeyAlgorithm::Ec {
                curve: "P-256".into(),
            },
            signature_algorithm: "ecdsa-with-SHA256".into(),
            is_ca: false,
            subject_key_id: None,
            authority_key_id: None,
            spki_sha256: Sha256(fp),
            crl_distribution_points: vec![],
            ocsp_urls: vec![],
        }
    }

    /// A store like a scan leaves it, then a re-scan that confirmed some files later.
    pub(crate) fn store_with_file_states(now: UnixTime) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_with_cache(dir.path(), 16 << 20).expect("store");
        let mut batch = store.ingest();
        for folder in 0..12u32 {
            let d = format!("/srv/f{folder}");
            let mut files = Vec::new();
            for j in 0..700u32 {
                let i = folder * 700 + j;
                let f = facts(i, now + i64::from(i % 90) * 86_400 - 5 * 86_400);
                let fp = f.fingerprint;
                let name = format!("c{j}.pem");
                batch
                    .observe(
                        f,
                        Some(Role::Agent),
                        SourceLocation::File {
                            path: format!("{d}/{name}"),
                            index: 0,
                        },
                        now - 1000,
                    )
                    .expect("observe");
                if i.is_multiple_of(5) {
                    // A second source in the root folder, some gone.
                    let f = facts(i, now + i64::from(i % 90) * 86_400 - 5 * 86_400);
                    batch
                        .observe(
                            f,
                            None,
                            SourceLocation::File {
                                path: format!("/r{i}.pem"),
                                index: 1,
                            },
                            now - 2000,
                        )
                        .expect("observe");
                }
                // Even folders were scanned whole at one time (their summary dates them);
                // odd ones have files confirmed at different times and some never.
                let uniform = folder.is_multiple_of(2);
                if uniform || !j.is_multiple_of(3) {
                    files.push(FileState {
                        name,
                        size: 1,
                        modified_ns: 0,
                        last_seen: if uniform {
                            now - 500
                        } else {
                            now - 1000 + i64::from(j % 7) * 100
                        },
                        certificates: vec![fp],
                        problem: None,
                    });
                }
            }
            batch.replace_dir(&d, files);
            batch.commit().expect("commit");
        }
        let root: Vec<FileState> = (0..8400u32)
            .step_by(10)
            .map(|i| FileState {
                name: format!("r{i}.pem"),
                size: 1,
                modified_ns: 0,
                last_seen: now - 1500 + i64::from(i),
                certificates: vec![],
                problem: None,
            })
            .collect();
        batch.replace_dir("/", root);
        batch.commit().expect("commit");
        (dir, store)
    }

    #[test]
    fn batched_list_is_the_index_read_with_each_source_dated_by_its_file_state() {
        let now = 1_795_000_000;
        let (_dir, store) = store_with_file_states(now);
        let day = 86_400;
        for (expired, within, from, before) in [
            (false, 30, now + 1, now + 30 * day + 1),
            (true, 100, i64::MIN + 1, now + 100 * day + 1),
            (false, 0, now + 1, now + 1),
        ] {
            // The plain way: every file source looked up in its folder's file states.
            let mut want = store.expiring_between(from, before, None).expect("read");
            let mut folders = std::collections::HashMap::new();
            for cert in &mut want {
                for source in cert.sources.iter_mut().filter(|s| s.gone_since.is_none()) {
                    let certctl_store::SourceLocation::File { path, .. } = &source.location else {
                        continue;
                    };
                    let (dir, name) = path.rsplit_once('/').expect("absolute path");
                    let dir = if dir.is_empty() { "/" } else { dir };
                    let files = folders
                        .entry(dir.to_string())
                        .or_insert_with(|| store.dir_files(dir).expect("file states"));
                    if let Some(f) = files.iter().find(|f| f.name == name) {
                        source.last_seen = source.last_seen.max(f.last_seen);
                        cert.last_seen = cert.last_seen.max(source.last_seen);
                    }
                }
            }
            let filter = ListFilter {
                expired,
                expiring_within: Some(Duration::days(within)),
                ..Default::default()
            };
            let mut batches = 0;
            let mut got = Vec::new();
            list_batches(&store, &filter, now, |mut batch| {
                batches += 1;
                got.append(&mut batch);
                Ok::<(), QueryError>(())
            })
            .expect("list");
            assert_eq!(got.len(), want.len());
            assert!(got == want, "range {from}..{before}");
            if within == 30 {
                assert!(batches > 1, "a month is read a few weeks at a time");
            }
        }
        let filter = ListFilter {
            expiring_within: Some(Duration::days(30)),
            ..Default::default()
        };
        let listed = list(&store, &filter, now).expect("list");
        assert!(listed.len() > 2000);
        assert!(listed
            .windows(2)
            .all(|w| (w[0].facts.not_after, w[0].facts.fingerprint)
                <= (w[1].facts.not_after, w[1].facts.fingerprint)));
    }
}
