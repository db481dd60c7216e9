//! Tracked artifacts: files that expire like certificates without being one — cloud
//! enrollment bundles (valid 10 days after they are issued), offline agent packages,
//! gateway configuration backups.
//!
//! `certctl track FILE --kind KIND [--issued DATE] [--lifetime DUR]` records the file in its
//! own keyspace of the store (`X`, see [`certctl_store::TrackedArtifact`]), identified by the
//! SHA-256 of its bytes. `certctl list` shows tracked artifacts next to certificates (see
//! [`matches()`]); they never enter the certificate records or indexes, so certificate
//! queries, statistics and `check` are unchanged and no fake certificate facts (key,
//! issuer, serial) are invented.
//!
//! **Policies and reminders.** Artifact policies (`artifacts = ["enrollment-bundle"]`
//! instead of `roles`, see [`crate::policy`]) apply to them, and the reminder pass
//! ([`crate::reminders::due`]) reminds about them once per (artifact, threshold, recipient),
//! with the sent records kept under the artifact's own keys. [`KINDS`] are the kinds a
//! policy may name.
//!
//! **Expiry.** The bundle's own expiry wins: a JSON object with `expires` / `expires_at` /
//! `not_after` / `valid_until`, or a text line `expires: ...` / `expires=...` (RFC 3339,
//! `YYYY-MM-DD`, or Unix seconds). Otherwise expiry = issued + lifetime, where lifetime is
//! `--lifetime`, else 10 days for `enrollment-bundle` (other kinds need `--lifetime` or an
//! expiry in the file). Issued = `--issued`, else the bundle's `issued` / `issued_at` /
//! `created` / `created_at`, else the file's modification time.
//!
//! **Gone.** A tracked file that was deleted is marked gone (since when) by the next scan
//! or reminder pass ([`refresh_presence`]), like a certificate's file: no more reminders
//! about it, `list` shows it `gone` (`gone_since` in JSON), `status` names it; it comes
//! back if the file does. `certctl untrack` forgets it.

use std::path::Path;

use certctl_store::{rfc3339, Sha256, Store, StoreError, TrackedArtifact, UnixTime};
use serde_json::{json, Value};
use sha2::Digest;

use crate::duration::{days_left, DAY_SECS};
use crate::history::AuditAction;
use crate::inventory::query::ListFilter;
use crate::inventory::view::EXPIRING_SECS;

/// Lifetime of a cloud enrollment bundle.
pub(crate) const ENROLLMENT_BUNDLE_LIFETIME_SECS: i64 = 10 * DAY_SECS;

/// Largest file `track` reads (64 MiB, as for certificate files): enrollment bundles and
/// agent packages are a few MiB at most; only the file's hash and a few declared fields are
/// kept. Only regular files are read ([`crate::inventory::scan::read_regular_file`]).
pub const MAX_TRACKED_FILE_BYTES: u64 = 64 << 20;

/// The artifact kinds `--kind` accepts.
pub const KINDS: [&str; 4] = certctl_store::ARTIFACT_KINDS;

/// Errors of `certctl track`; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown artifact kind `{0}` (expected one of: {kinds})", kinds = KINDS.join(", "))]
    Kind(String),
    #[error("{path}: cannot tell when it expires: the file names no expiry and kind `{kind}` has no default lifetime (give --lifetime DUR)")]
    NoExpiry { path: String, kind: String },
    #[error("{path}: the {field} `{value}` is not a date (RFC 3339, YYYY-MM-DD or Unix seconds)")]
    BadDate {
        path: String,
        field: String,
        value: String,
    },
    #[error("the artifact path must be absolute, got {0}")]
    Relative(String),
    #[error("no tracked file matches `{0}` (give its id prefix, its path or its name; see `certctl list`)")]
    NotTracked(String),
    #[error("`{0}` names several tracked files; give an id prefix:\n{1}")]
    Several(String, String),
}

/// Parses `2026-11-25`, `2026-11-25T17:00:00Z` (any offset) or Unix seconds.
pub fn parse_date(s: &str) -> Option<UnixTime> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

/// Dates and a name the file itself states.
#[derive(Debug, Default, PartialEq, Eq)]
struct Declared {
    name: Option<String>,
    issued: Option<String>,
    expires: Option<String>,
}

const EXPIRES_KEYS: [&str; 5] = [
    "expires",
    "expires_at",
    "not_after",
    "valid_until",
    "expiry",
];
const ISSUED_KEYS: [&str; 5] = ["issued", "issued_at", "created", "created_at", "not_before"];

fn declared(bytes: &[u8]) -> Declared {
    let text = String::from_utf8_lossy(bytes);
    let mut d = Declared::default();
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text.trim()) {
        let get = |keys: &[&str]| {
            keys.iter().find_map(|k| match map.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        d.expires = get(&EXPIRES_KEYS);
        d.issued = get(&ISSUED_KEYS);
        d.name = get(&["name", "bundle_name"]);
        return d;
    }
    for line in text.lines().take(200) {
        let Some((k, v)) = line.split_once([':', '=']) else {
            continue;
        };
        let k = k.trim().to_lowercase();
        let v = v.trim().trim_matches('"').to_string();
        if EXPIRES_KEYS.contains(&k.as_str()) && d.expires.is_none() {
            d.expires = Some(v);
        } else if ISSUED_KEYS.contains(&k.as_str()) && d.issued.is_none() {
            d.issued = Some(v);
        }
    }
    d
}

/// Builds the artifact record for a file read by the caller (`path` absolute).
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    path: &Path,
    bytes: &[u8],
    modified: Option<UnixTime>,
    kind: &str,
    issued: Option<UnixTime>,
    lifetime: Option<i64>,
    actor: &str,
    now: UnixTime,
) -> Result<TrackedArtifact, ArtifactError> {
    let shown = path.display().to_string();
    if path.is_relative() {
        return Err(ArtifactError::Relative(shown));
    }
    if !KINDS.contains(&kind) {
        return Err(ArtifactError::Kind(kind.to_string()));
    }
    let d = declared(bytes);
    let date = |field: &str, v: &str| {
        parse_date(v).ok_or_else(|| ArtifactError::BadDate {
            path: shown.clone(),
            field: field.to_string(),
            value: v.to_string(),
        })
    };
    let issued = match (issued, &d.issued) {
        (Some(t), _) => t,
        (None, Some(v)) => date("issued date", v)?,
        (None, None) => modified.unwrap_or(now),
    };
    let (expires, expiry_from) = match (&d.expires, lifetime) {
        (Some(v), _) => (date("expiry", v)?, "bundle"),
        (None, Some(l)) => (issued.saturating_add(l), "lifetime"),
        (None, None) if kind == "enrollment-bundle" => (
            issued.saturating_add(ENROLLMENT_BUNDLE_LIFETIME_SECS),
            "default",
        ),
        (None, None) => {
            return Err(ArtifactError::NoExpiry {
                path: shown,
                kind: kind.to_string(),
            })
        }
    };
    let name = d.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| shown.clone())
    });
    Ok(TrackedArtifact {
        id: Sha256(sha2::Sha256::digest(bytes).into()),
        kind: kind.to_string(),
        name,
        path: shown,
        issued,
        expires,
        expiry_from: expiry_from.to_string(),
        tracked_at: now,
        tracked_by: actor.to_string(),
    })
}

/// Records an artifact. A file tracked before under the same path with other content (a
/// new bundle) replaces the old record.
pub(crate) fn track(
    store: &Store,
    artifact: &TrackedArtifact,
) -> Result<TrackedArtifact, ArtifactError> {
    if Path::new(&artifact.path).is_relative() {
        return Err(ArtifactError::Relative(artifact.path.clone()));
    }
    for old in store.artifacts()? {
        if old.path == artifact.path && old.id != artifact.id {
            store.remove_artifact(&old.id)?;
        }
    }
    store.put_artifact(artifact)?;
    Ok(artifact.clone())
}

/// Whether the tracked file is still there (anything at its path).
pub(crate) fn is_present(a: &TrackedArtifact) -> bool {
    std::fs::symlink_metadata(&a.path).is_ok()
}

/// Marks the tracked artifacts whose file is gone (since `now`, unless already marked) and
/// clears the mark of those whose file is back. Returns the ones gone, with since when.
pub(crate) fn refresh_presence(
    store: &Store,
    now: UnixTime,
) -> Result<std::collections::HashMap<Sha256, UnixTime>, StoreError> {
    let mut gone = store.artifacts_gone()?;
    for a in store.artifacts()? {
        match (is_present(&a), gone.contains_key(&a.id)) {
            (false, false) => {
                store.set_artifact_gone(&a.id, Some(now))?;
                gone.insert(a.id, now);
            }
            (true, true) => {
                store.set_artifact_gone(&a.id, None)?;
                gone.remove(&a.id);
            }
            _ => {}
        }
    }
    Ok(gone)
}

/// `certctl untrack ID`: stops tracking the artifact `id` names (no more reminders, gone
/// from `list`); several matches are refused, listing them. Returns what was removed.
pub(crate) fn untrack(
    store: &Store,
    id: &str,
    now: UnixTime,
) -> Result<Vec<TrackedArtifact>, ArtifactError> {
    let found = find(store, id)?;
    match found.len() {
        0 => Err(ArtifactError::NotTracked(id.to_string())),
        1 => {
            let a = &found[0];
            store.remove_artifact(&a.id)?;
            store.record_audit(&certctl_store::AuditEvent {
                at: now,
                fingerprint: Some(a.id),
                actor: crate::history::actor(),
                action: AuditAction::Untracked.into(),
                detail: format!("{} ({}, {})", a.name, a.kind, a.path),
            })?;
            Ok(found)
        }
        _ => Err(ArtifactError::Several(
            id.to_string(),
            found
                .iter()
                .map(|a| format!("  {}  {}  {}", a.id.to_hex(), a.name, a.path))
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}

/// An artifact id as a client should send it: a relative path (`bundles/a.bundle`,
/// `./a.bundle`) made absolute against the client's working directory, as `track` stored
/// it, so the path the user gave finds the file; anything else as is (an id prefix, a name,
/// an absolute path). certd does not share the client's working directory.
pub fn id_from_client(id: &str) -> String {
    let looks_like_path = id.contains('/') || id.starts_with('.');
    if looks_like_path && Path::new(id).is_relative() {
        if let Ok(abs) = std::path::absolute(id) {
            return abs.to_string_lossy().into_owned();
        }
    }
    id.to_string()
}

/// Whether `id` names the artifact: a prefix of its id (at least 8 hex characters, colons
/// allowed), its exact path, or its exact name (case-insensitive).
pub fn matches_id(a: &TrackedArtifact, id: &str) -> bool {
    let hex: String = id
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    let is_hex = hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit());
    (is_hex && a.id.to_hex().starts_with(&hex)) || a.path == id || a.name.eq_ignore_ascii_case(id)
}

/// The tracked artifacts `id` names (see [`matches_id`]).
pub(crate) fn find(store: &Store, id: &str) -> Result<Vec<TrackedArtifact>, StoreError> {
    Ok(store
        .artifacts()?
        .into_iter()
        .filter(|a| matches_id(a, id))
        .collect())
}

/// Whether an artifact passes `certctl list`'s filters: it has no role and no issuer, so
/// `--role` and `--issuer` exclude it; `--name` matches its name or path; the time filters
/// apply to its expiry as to a certificate's notAfter.
pub(crate) fn matches(a: &TrackedArtifact, filter: &ListFilter, now: UnixTime) -> bool {
    if filter.role.is_some() || filter.issuer.is_some() {
        return false;
    }
    if let Some(name) = &filter.name {
        let needle = name.to_lowercase();
        if !a.name.to_lowercase().contains(&needle) && !a.path.to_lowercase().contains(&needle) {
            return false;
        }
    }
    let expired = a.expires <= now;
    match (filter.expired, filter.expiring_within) {
        (false, None) => true,
        (true, None) => expired,
        (false, Some(d)) => !expired && a.expires <= now.saturating_add(d.as_secs()),
        (true, Some(d)) => a.expires <= now.saturating_add(d.as_secs()),
    }
}

/// Tracked artifacts passing `filter`, soonest expiry first.
pub(crate) fn list(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
) -> Result<Vec<TrackedArtifact>, ArtifactError> {
    let mut out: Vec<TrackedArtifact> = store
        .artifacts()?
        .into_iter()
        .filter(|a| matches(a, filter, now))
        .collect();
    out.sort_by(|a, b| (a.expires, &a.path).cmp(&(b.expires, &b.path)));
    Ok(out)
}

/// Status like a certificate's: `expired`, `not-yet-valid`, `expiring` (within 30 days), `valid`.
pub fn status(a: &TrackedArtifact, now: UnixTime) -> &'static str {
    if a.expires <= now {
        "expired"
    } else if a.issued > now {
        "not-yet-valid"
    } else if a.expires <= now + EXPIRING_SECS {
        "expiring"
    } else {
        "valid"
    }
}

/// The JSON object of an artifact in `list --json` (`"kind": "artifact"`; the fields it
/// shares with a certificate object have the same names and meaning).
pub fn to_json(a: &TrackedArtifact, now: UnixTime) -> Value {
    to_json_gone(a, None, now)
}

/// [`to_json`] for an artifact whose file may be gone (`gone_since`, added: also in its
/// source; `status` is then `gone`).
pub fn to_json_gone(a: &TrackedArtifact, gone_since: Option<UnixTime>, now: UnixTime) -> Value {
    let gone = gone_since.map(rfc3339);
    json!({
        "kind": "artifact",
        "artifact_kind": a.kind,
        "fingerprint_sha256": a.id.to_hex(),
        "subject": a.name,
        "subject_cn": a.name,
        "not_before": rfc3339(a.issued),
        "not_after": rfc3339(a.expires),
        "days_left": days_left(a.expires, now),
        "status": if gone.is_some() { "gone" } else { status(a, now) },
        "gone_since": gone,
        "role": null,
        "credential_kind": null,
        "revoked": false,
        "expiry_from": a.expiry_from,
        "tracked_at": rfc3339(a.tracked_at),
        "tracked_by": a.tracked_by,
        "sources": [{
            "kind": "file",
            "path": a.path,
            "index": 0,
            "first_seen": rfc3339(a.tracked_at),
            "last_seen": rfc3339(a.tracked_at),
            "gone_since": gone,
        }],
        "more_sources": 0,
    })
}

/// The `list --csv` row of an artifact (same 17 columns as a certificate; `issuer` says
/// `(tracked KIND)`, role, key and signature columns are empty), each cell through
/// [`crate::inventory::view::printable`].
pub fn csv_row(a: &TrackedArtifact, now: UnixTime) -> [String; 17] {
    [
        a.id.to_hex(),
        a.name.clone(),
        format!("(tracked {})", a.kind),
        String::new(),
        rfc3339(a.issued),
        rfc3339(a.expires),
        days_left(a.expires, now).to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        "false".into(),
        format!("{}#0", a.path),
        status(a, now).to_string(),
        a.name.clone(),
    ]
    .map(|cell| crate::inventory::view::printable(&cell).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Duration;

    const NOW: UnixTime = 1_800_000_000;

    #[test]
    fn default_is_issued_plus_ten_days() {
        let a = prepare(
            Path::new("/b/x.bundle"),
            b"opaque",
            Some(NOW - 86_400),
            "enrollment-bundle",
            None,
            None,
            "me",
            NOW,
        )
        .expect("prepare");
        assert_eq!(a.issued, NOW - 86_400);
        assert_eq!(a.expires, NOW + 9 * 86_400);
        assert_eq!(a.expiry_from, "default");
        assert_eq!(a.name, "x.bundle");
        let a = prepare(
            Path::new("/b/x"),
            b"x",
            None,
            "enrollment-bundle",
            Some(NOW),
            None,
            "me",
            NOW,
        )
        .expect("prepare");
        assert_eq!(a.expires, NOW + 10 * 86_400);
    }

    #[test]
    fn the_bundle_says_otherwise() {
        let json = br#"{"name":"Cloud bundle","issued_at":"2027-01-01","expires_at":"2027-01-05T00:00:00Z"}"#;
        let a = prepare(
            Path::new("/b/x.json"),
            json,
            None,
            "enrollment-bundle",
            None,
            None,
            "me",
            NOW,
        )
        .expect("prepare");
        assert_eq!(a.name, "Cloud bundle");
        assert_eq!(a.expires - a.issued, 4 * 86_400);
        assert_eq!(a.expiry_from, "bundle");
        let text = b"# bundle\nexpires = 2027-01-05\n";
        let a = prepare(
            Path::new("/b/x.txt"),
            text,
            None,
            "enrollment-bundle",
            Some(0),
            None,
            "me",
            NOW,
        )
        .expect("prepare");
        assert_eq!(Some(a.expires), parse_date("2027-01-05"));
        let err = prepare(
            Path::new("/b/y"),
            b"expires: soon",
            None,
            "enrollment-bundle",
            None,
            None,
            "me",
            NOW,
        )
        .expect_err("bad date");
        assert!(
            err.to_string().contains("/b/y") && err.to_string().contains("soon"),
            "{err}"
        );
        let err = prepare(
            Path::new("/b/y"),
            b"x",
            None,
            "agent-package",
            None,
            None,
            "me",
            NOW,
        )
        .expect_err("no lifetime");
        assert!(err.to_string().contains("--lifetime"), "{err}");
    }

    #[test]
    fn list_filters_apply_to_the_expiry() {
        let a = prepare(
            Path::new("/b/x"),
            b"x",
            None,
            "enrollment-bundle",
            Some(NOW),
            None,
            "me",
            NOW,
        )
        .expect("prepare");
        let f = |expired, within: Option<i64>| ListFilter {
            expired,
            expiring_within: within.map(Duration::days),
            ..Default::default()
        };
        assert!(matches(&a, &f(false, None), NOW));
        assert!(matches(&a, &f(false, Some(11)), NOW));
        assert!(!matches(&a, &f(false, Some(7)), NOW));
        assert!(!matches(&a, &f(true, None), NOW));
        assert!(matches(&a, &f(true, None), NOW + 11 * 86_400));
        let role = ListFilter {
            role: Some(certctl_store::Role::Agent),
            ..Default::default()
        };
        assert!(!matches(&a, &role, NOW));
    }
}
