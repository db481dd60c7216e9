//! Agents locked out after a registration loss: registrations, the pending queue,
//! approve/block decisions and the deny list.
//!
//! Agents that connect through an internet gateway are let in only when the management
//! server knows their registration. After a database rollback some registrations vanish;
//! their agents keep presenting certificates that the inventory sees (role `agent`).
//!
//! - [`parse_registrations`]: the management server's export, CSV (with a header) or a
//!   JSON array: agent name, resource GUID, optionally `spki_sha256` and `fingerprint`.
//! - [`pending`]: agents with a present, unrevoked agent certificate that no registration
//!   covers and about which nobody has decided yet.
//! - [`decide`]: approve or block agents by name or GUID; every decision goes to the audit
//!   history, and the deny list (one fingerprint per line) is rewritten atomically.
//!
//! **Matching rule.** The agent of a certificate is its subject CN (else its first SAN). A
//! registration covers a certificate when the registration carries a fingerprint and it is
//! the certificate's, or carries an SPKI hash and it is the certificate's key; a
//! registration with neither covers every certificate whose agent name equals its agent
//! name (case-insensitive). A certificate whose name is registered only with another key is
//! pending with reason `key-mismatch`; one whose name is not registered at all, `unregistered`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;

use std::path::{Path, PathBuf};

use certctl_store::{
    AgentDecision, AgentVerdict, AuditEvent, Certificate, Fingerprint, Registration, Role, Sha256,
    SourceLocation, Store, StoreError, UnixTime,
};
use serde::{Deserialize, Serialize};

use crate::history::AuditAction;

/// The store setting that remembers the deny-list path.
pub(crate) const DENY_LIST_SETTING: &str = "deny-list";

/// Largest registrations file `agents import-registrations` reads (16 MiB: about 150,000
/// agents in CSV, several times the largest fleets; the whole file is parsed in memory).
/// Only regular files are read ([`crate::inventory::scan::read_regular_file`]).
pub const MAX_REGISTRATIONS_FILE_BYTES: u64 = 16 << 20;

/// Errors of the agent commands; each names the file or the agent concerned.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the registrations file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {cause}", path.display())]
    Json { path: PathBuf, cause: String },
    #[error("{}: not valid CSV: {cause}", path.display())]
    Csv { path: PathBuf, cause: String },
    #[error("{}: {row}: {cause}", path.display())]
    Invalid {
        path: PathBuf,
        /// `line N` (CSV) or `entry N` (JSON).
        row: String,
        cause: String,
    },
    #[error("no agent named `{0}` is known (give an agent name as in its certificate's CN, or a registered resource GUID)")]
    UnknownAgent(String),
    #[error(
        "no deny-list file is set: give --deny-list FILE once (it is remembered in the store), or set [agents] deny_list in certd's configuration (with certd stopped, name that file: certctl --config FILE)"
    )]
    NoDenyList,
    #[error("the deny-list path must be absolute, got {}", .0.display())]
    RelativeDenyList(PathBuf),
    #[error("cannot write the deny list {}: {source}", path.display())]
    DenyList {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

// ---- registrations -----------------------------------------------------------------------------

/// One row of the export, before validation (field names accepted in CSV headers and JSON).
#[derive(Debug, Default, Deserialize)]
struct RawRegistration {
    #[serde(alias = "agent_name", alias = "name", alias = "agent")]
    agent: Option<String>,
    #[serde(alias = "resource_guid", alias = "guid", alias = "GUID")]
    guid: Option<String>,
    #[serde(alias = "spki", alias = "spki_sha256")]
    spki_sha256: Option<String>,
    #[serde(alias = "fingerprint_sha256", alias = "fingerprint")]
    fingerprint: Option<String>,
}

/// Reads a registrations export: a JSON array (first non-blank character `[`) or CSV with a
/// header line. Columns/keys: `agent` (or `agent_name`, `name`), `guid` (or
/// `resource_guid`), optional `spki_sha256` and `fingerprint` (64 hex, colons allowed).
pub fn parse_registrations(
    path: &Path,
    bytes: &[u8],
    now: UnixTime,
) -> Result<Vec<Registration>, AgentsError> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut rows: Vec<(String, RawRegistration)> = Vec::new();
    if trimmed.starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| AgentsError::Json {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?;
        for (i, v) in values.into_iter().enumerate() {
            let raw: RawRegistration =
                serde_json::from_value(v).map_err(|e| AgentsError::Invalid {
                    path: path.to_path_buf(),
                    row: format!("entry {}", i + 1),
                    cause: e.to_string(),
                })?;
            rows.push((format!("entry {}", i + 1), raw));
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(trimmed.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| AgentsError::Csv {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?
            .clone();
        let lower: Vec<String> = headers.iter().map(|h| h.to_lowercase()).collect();
        let col = |names: &[&str]| lower.iter().position(|h| names.contains(&h.as_str()));
        let agent_col = col(&["agent", "agent_name", "name", "agent name"]);
        let guid_col = col(&["guid", "resource_guid", "resource guid", "resourceguid"]);
        let spki_col = col(&["spki_sha256", "spki"]);
        let fp_col = col(&["fingerprint", "fingerprint_sha256"]);
        if agent_col.is_none() || guid_col.is_none() {
            return Err(AgentsError::Invalid {
                path: path.to_path_buf(),
                row: "line 1".into(),
                cause: format!(
                    "the header needs an `agent` and a `guid` column, found: {}",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            });
        }
        for record in reader.records() {
            let record = record.map_err(|e| AgentsError::Csv {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?;
            let line = record.position().map_or(0, |p| p.line());
            if record.iter().all(str::is_empty) {
                continue;
            }
            let get = |c: Option<usize>| {
                c.and_then(|c| record.get(c))
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            rows.push((
                format!("line {line}"),
                RawRegistration {
                    agent: get(agent_col),
                    guid: get(guid_col),
                    spki_sha256: get(spki_col),
                    fingerprint: get(fp_col),
                },
            ));
        }
    }
    rows.into_iter()
        .map(|(row, raw)| validate(path, &row, raw, now))
        .collect()
}

fn validate(
    path: &Path,
    row: &str,
    raw: RawRegistration,
    now: UnixTime,
) -> Result<Registration, AgentsError> {
    let invalid = |cause: String| AgentsError::Invalid {
        path: path.to_path_buf(),
        row: row.to_string(),
        cause,
    };
    let agent = raw
        .agent
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("the agent name is missing".into()))?;
    let guid = raw
        .guid
        .map(|g| g.trim().trim_matches(['{', '}']).to_string())
        .filter(|g| !g.is_empty())
        .ok_or_else(|| invalid(format!("the resource GUID of agent `{agent}` is missing")))?;
    let digest = |v: Option<String>, what: &str| -> Result<Option<Sha256>, AgentsError> {
        match v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse::<Sha256>()
                .map(Some)
                .map_err(|e| invalid(format!("{what} of agent `{agent}`: {e}"))),
        }
    };
    Ok(Registration {
        spki_sha256: digest(raw.spki_sha256, "spki_sha256")?,
        fingerprint: digest(raw.fingerprint, "fingerprint")?,
        agent,
        guid,
        imported_at: now,
    })
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    /// The file the registrations came from.
    pub source: String,
    /// How many registrations the file held (all of them saved).
    pub imported: u64,
    /// Whether the import replaced the registrations (else merged into them).
    pub replaced: bool,
    /// Registrations held by the store afterwards.
    pub registrations: u64,
    /// Agents pending after the import.
    pub pending: u64,
}

/// Saves parsed registrations (replacing the stored set unless `merge`).
pub(crate) fn import(
    store: &Store,
    source: &str,
    registrations: &[Registration],
    merge: bool,
    now: UnixTime,
) -> Result<ImportReport, AgentsError> {
    store.import_registrations(registrations, !merge)?;
    Ok(ImportReport {
        source: source.to_string(),
        imported: registrations.len() as u64,
        replaced: !merge,
        registrations: store.registrations()?.len() as u64,
        pending: pending(store, now)?.len() as u64,
    })
}

// ---- the pending queue -------------------------------------------------------------------------

/// An agent waiting for an admin's decision. Field names are part of the `--json` contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingAgent {
    /// The agent's name: its agent certificate's CN (`agent` in `agents pending --json`).
    pub agent: String,
    /// `unregistered` (no registration has this name) or `key-mismatch` (registered with
    /// another certificate or key).
    pub reason: String,
    /// GUIDs of registrations with this name (for `key-mismatch`).
    pub registered_guids: Vec<String>,
    /// Who reported the agent's certificates: file paths and `tls://host:port`.
    pub sources: Vec<String>,
    /// When the first of its unregistered certificates was first seen.
    pub first_seen: UnixTime,
    /// Its unregistered certificates (lowercase hex fingerprints).
    pub certificates: Vec<String>,
}

/// The agent name of a certificate: subject CN, else its display name.
pub fn agent_name(cert: &Certificate) -> String {
    cert.facts.display_name().to_string()
}

/// The registrations, indexed for the matching rule.
pub(crate) struct RegistrationIndex {
    by_name: HashMap<String, Vec<Registration>>,
    fingerprints: HashSet<Fingerprint>,
    spkis: HashSet<Sha256>,
    by_guid: HashMap<String, Registration>,
}

impl RegistrationIndex {
    pub(crate) fn load(store: &Store) -> Result<Self, StoreError> {
        let mut idx = RegistrationIndex {
            by_name: HashMap::new(),
            fingerprints: HashSet::new(),
            spkis: HashSet::new(),
            by_guid: HashMap::new(),
        };
        for r in store.registrations()? {
            if let Some(fp) = r.fingerprint {
                idx.fingerprints.insert(fp);
            }
            if let Some(spki) = r.spki_sha256 {
                idx.spkis.insert(spki);
            }
            idx.by_guid.insert(r.guid.to_lowercase(), r.clone());
            idx.by_name
                .entry(r.agent.to_lowercase())
                .or_default()
                .push(r);
        }
        Ok(idx)
    }

    /// Why an agent is unregistered (or `None`), from what the agent index holds.
    pub(crate) fn unregistered_reason_of(
        &self,
        agent: &str,
        fingerprint: &Fingerprint,
        spki: &Sha256,
    ) -> Option<&'static str> {
        if self.fingerprints.contains(fingerprint) || self.spkis.contains(spki) {
            return None;
        }
        match self.by_name.get(&agent.to_lowercase()) {
            None => Some("unregistered"),
            Some(regs)
                if regs
                    .iter()
                    .any(|r| r.fingerprint.is_none() && r.spki_sha256.is_none()) =>
            {
                None
            }
            Some(_) => Some("key-mismatch"),
        }
    }

    fn guids_of(&self, agent: &str) -> Vec<String> {
        self.by_name
            .get(&agent.to_lowercase())
            .map(|regs| regs.iter().map(|r| r.guid.clone()).collect())
            .unwrap_or_default()
    }
}

/// Agent certificates that count for the queue: present somewhere and not revoked.
fn is_live_agent_certificate(c: &Certificate) -> bool {
    c.role == Role::Agent && c.revocation.is_none() && c.current_sources().next().is_some()
}

/// The pending queue, sorted by first seen then name.
///
/// Answered from the agent index ([`Store::live_agent_credentials`]: one small entry per
/// live agent credential): only the records of agents that are actually pending are read.
pub(crate) fn pending(store: &Store, _now: UnixTime) -> Result<Vec<PendingAgent>, AgentsError> {
    let index = RegistrationIndex::load(store)?;
    let decided: HashSet<String> = store
        .agent_decisions()?
        .into_iter()
        .map(|d| d.agent.to_lowercase())
        .collect();
    let mut by_agent: BTreeMap<String, (PendingAgent, Vec<(UnixTime, String)>)> = BTreeMap::new();
    for credential in store.live_agent_credentials()? {
        let key = credential.agent.to_lowercase();
        if decided.contains(&key) {
            continue;
        }
        let Some(reason) = index.unregistered_reason_of(
            &credential.agent,
            &credential.fingerprint,
            &credential.spki_sha256,
        ) else {
            continue;
        };
        // The index says live; the record has the sources (and says it once more).
        let Some(cert) = store.get(&credential.fingerprint)? else {
            continue;
        };
        if !is_live_agent_certificate(&cert) {
            continue;
        }
        let (entry, certificates) = by_agent.entry(key).or_insert_with(|| {
            (
                PendingAgent {
                    registered_guids: index.guids_of(&credential.agent),
                    agent: credential.agent.clone(),
                    reason: reason.to_string(),
                    sources: Vec::new(),
                    first_seen: cert.first_seen,
                    certificates: Vec::new(),
                },
                Vec::new(),
            )
        });
        entry.first_seen = entry.first_seen.min(cert.first_seen);
        certificates.push((cert.facts.not_after, cert.fingerprint().to_hex()));
        for s in cert.current_sources() {
            let place = match &s.location {
                SourceLocation::File { path, .. } => path.clone(),
                SourceLocation::Endpoint { address, .. } => format!("tls://{address}"),
            };
            if !entry.sources.contains(&place) {
                entry.sources.push(place);
            }
        }
    }
    let mut out: Vec<PendingAgent> = by_agent
        .into_values()
        .map(|(mut agent, mut certificates)| {
            certificates.sort();
            agent.certificates = certificates.into_iter().map(|(_, fp)| fp).collect();
            agent
        })
        .collect();
    out.sort_by(|a, b| (a.first_seen, &a.agent).cmp(&(b.first_seen, &b.agent)));
    Ok(out)
}

/// The number of distinct agents in the pending queue, from counts the store keeps on
/// every commit and every import of registrations: the agents with a live credential no
/// registration covers ([`Store::uncovered_agent_count`]), less the decided ones among
/// them (one lookup per decided agent). `/metrics` reads no live credential and no
/// registration for it. Agrees with [`pending`]`.len()` as long as the counts agree with
/// the records (`store verify` checks that).
pub(crate) fn pending_count(store: &Store) -> Result<usize, StoreError> {
    let decided: HashSet<String> = store
        .agent_decisions()?
        .into_iter()
        .map(|d| d.agent.to_lowercase())
        .collect();
    let uncovered = store.uncovered_agent_count()?;
    let mut decided_uncovered = 0u64;
    for agent in &decided {
        if store.agent_uncovered_credential_count(agent)? > 0 {
            decided_uncovered += 1;
        }
    }
    Ok(usize::try_from(uncovered.saturating_sub(decided_uncovered)).unwrap_or(usize::MAX))
}

// ---- decisions ---------------------------------------------------------------------------------

/// `certctl agents approve|block`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecideRequest {
    /// Agent names or resource GUIDs.
    pub ids: Vec<String>,
    /// `approve` (`Approved`) or `block` (`Blocked`): the same verdict for every named agent.
    pub verdict: AgentVerdict,
    /// Who decided (the CLI sends `$USER`, else `$LOGNAME`, else `uid N`); recorded in the
    /// decision and in each audit event, `actor` in `agents decisions --json` and `history`.
    pub actor: String,
    /// Absolute path of the deny list; else the remembered one.
    pub deny_list: Option<PathBuf>,
    /// Passphrase of a managed CA key, to revoke blocked agents' certificates it issued.
    #[serde(default)]
    pub passphrase: Option<crate::pki::ca::Secret>,
}

/// One decided agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecidedAgent {
    /// The agent's name (its agent certificate's CN), `agent` in `agents approve|block --json`.
    pub agent: String,
    /// The agent's registered resource GUID (or the GUID argument that named it); `None`
    /// when the agent has no known GUID.
    pub guid: Option<String>,
    /// `approved` or `blocked`.
    pub decision: String,
    /// The agent's certificates (lowercase hex), all of them: present, gone or revoked.
    pub certificates: Vec<String>,
}

/// What `approve` / `block` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionReport {
    /// One entry per distinct agent the arguments named, in argument order: `decided` in
    /// `agents approve|block --json`.
    pub decided: Vec<DecidedAgent>,
    /// The deny list written, if one is configured.
    pub deny_list: Option<String>,
    /// Fingerprints in the deny list after the decision.
    pub deny_list_entries: u64,
    /// Blocked agents' certificates revoked because certctl holds their CA (reason
    /// `privilege-withdrawn`; the CA's CRL is published at once).
    #[serde(default)]
    pub revoked: Vec<String>,
    /// Why revoking them failed, if it did (the block and the deny list stand).
    #[serde(default)]
    pub revoke_error: Option<String>,
}

/// Resolves an argument to an agent name: a known agent name (an agent certificate's CN,
/// case-insensitive), else a registered GUID, else a GUID that appears in a live agent
/// certificate's subject or SANs (`urn:uuid:...`). Names come from the agent index.
fn resolve(
    store: &Store,
    arg: &str,
    index: &RegistrationIndex,
) -> Result<(String, Option<String>), AgentsError> {
    let key = arg.trim().to_lowercase();
    let guid_key = key.trim_matches(['{', '}']).to_string();
    if let Some(credential) = store.agent_credentials(&key)?.first() {
        let name = credential.agent.clone();
        let guid = index.guids_of(&name).into_iter().next();
        return Ok((name, guid));
    }
    if let Some(r) = index.by_guid.get(&guid_key) {
        return Ok((r.agent.clone(), Some(r.guid.clone())));
    }
    if index.by_name.contains_key(&key) {
        let guid = index.guids_of(arg).into_iter().next();
        return Ok((arg.trim().to_string(), guid));
    }
    if guid_key.len() >= 8 {
        for credential in store.live_agent_credentials()? {
            let Some(c) = store.get(&credential.fingerprint)? else {
                continue;
            };
            let hit = c.facts.subject.to_lowercase().contains(&guid_key)
                || c.facts
                    .sans
                    .all()
                    .any(|n| n.to_lowercase().contains(&guid_key));
            if hit {
                return Ok((agent_name(&c), Some(arg.trim().to_string())));
            }
        }
    }
    Err(AgentsError::UnknownAgent(arg.to_string()))
}

/// Approves or blocks agents: records the decisions (store and audit history) and rewrites
/// the deny list when one is configured (always when blocking: blocking without a deny
/// list is refused before anything is recorded). With certd's configured deny list (`[agents] deny_list`), used when the
/// request names none. Precedence: `request.deny_list` (remembered in the store), then
/// `configured`, then the remembered path.
pub(crate) fn decide_with(
    store: &Store,
    request: &DecideRequest,
    configured: Option<&Path>,
    now: UnixTime,
) -> Result<DecisionReport, AgentsError> {
    let deny_list = deny_list_path(store, request.deny_list.as_deref(), configured)?;
    if deny_list.is_none() && request.verdict == AgentVerdict::Blocked {
        return Err(AgentsError::NoDenyList);
    }
    let index = RegistrationIndex::load(store)?;
    // Resolve everything first: one unknown name decides nothing.
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    for id in &request.ids {
        let t = resolve(store, id, &index)?;
        if !targets.iter().any(|(n, _)| n.eq_ignore_ascii_case(&t.0)) {
            targets.push(t);
        }
    }
    let mut decided = Vec::new();
    for (name, guid) in targets {
        let mut credentials = store.agent_credentials(&name)?;
        credentials.sort_by_key(|c| (c.not_after, c.fingerprint));
        let fps: Vec<Fingerprint> = credentials.iter().map(|c| c.fingerprint).collect();
        let decision = AgentDecision {
            agent: name.clone(),
            guid: guid.clone(),
            verdict: request.verdict,
            at: now,
            actor: request.actor.clone(),
            fingerprints: fps.clone(),
        };
        store.put_agent_decision(&decision)?;
        let action = match request.verdict {
            AgentVerdict::Approved => AuditAction::AgentApproved,
            AgentVerdict::Blocked => AuditAction::AgentBlocked,
        };
        let detail = format!(
            "agent {name}{}",
            guid.as_deref()
                .map(|g| format!(" (resource GUID {g})"))
                .unwrap_or_default()
        );
        if fps.is_empty() {
            store.record_audit(&AuditEvent {
                at: now,
                fingerprint: None,
                actor: request.actor.clone(),
                action: action.into(),
                detail: detail.clone(),
            })?;
        }
        for fp in &fps {
            store.record_audit(&AuditEvent {
                at: now,
                fingerprint: Some(*fp),
                actor: request.actor.clone(),
                action: action.into(),
                detail: detail.clone(),
            })?;
        }
        decided.push(DecidedAgent {
            agent: name,
            guid,
            decision: request.verdict.as_str().to_string(),
            certificates: fps.iter().map(|f| f.to_hex()).collect(),
        });
    }
    let mut report = DecisionReport {
        decided,
        deny_list: None,
        deny_list_entries: 0,
        revoked: Vec::new(),
        revoke_error: None,
    };
    if request.verdict == AgentVerdict::Blocked {
        let decided = report.decided.clone();
        revoke_managed(store, &decided, request, now, &mut report);
    }
    if let Some(path) = deny_list {
        let entries = write_deny_list(store, &path, now)?;
        report.deny_list = Some(path.display().to_string());
        report.deny_list_entries = entries as u64;
    }
    Ok(report)
}

/// Revokes the blocked agents' unrevoked certificates that a managed CA issued.
fn revoke_managed(
    store: &Store,
    decided: &[DecidedAgent],
    request: &DecideRequest,
    now: UnixTime,
    report: &mut DecisionReport,
) {
    let mut ids = Vec::new();
    for fp in decided.iter().flat_map(|d| &d.certificates) {
        let Ok(fp) = fp.parse::<Fingerprint>() else {
            continue;
        };
        match store.get(&fp) {
            Ok(Some(c)) if c.revocation.is_none() => {
                match crate::pki::ca::managed_issuer(store, &c) {
                    Ok(Some(_)) => ids.push(fp.to_hex()),
                    Ok(None) => {}
                    Err(e) => {
                        report.revoke_error = Some(e.to_string());
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                report.revoke_error = Some(e.to_string());
                return;
            }
        }
    }
    if ids.is_empty() {
        return;
    }
    let req = crate::pki::revoke::RevokeRequest {
        ids: ids.clone(),
        spki: None,
        issuer: None,
        key_file: None,
        reason: certctl_store::RevocationReason::PrivilegeWithdrawn,
        dry_run: false,
        passphrase: request.passphrase.clone(),
        probe_endpoints: false,
    };
    match crate::pki::revoke::revoke(store, &req, now) {
        Ok(_) => report.revoked = ids,
        Err(e) => report.revoke_error = Some(e.to_string()),
    }
}

/// The deny-list path: the one given (then remembered), else certd's configured one
/// (`[agents] deny_list`, not remembered), else the remembered one.
pub(crate) fn deny_list_path(
    store: &Store,
    given: Option<&Path>,
    configured: Option<&Path>,
) -> Result<Option<PathBuf>, AgentsError> {
    match given {
        Some(p) if p.is_relative() => Err(AgentsError::RelativeDenyList(p.to_path_buf())),
        Some(p) => {
            let text = p.display().to_string();
            if store.fleet_setting(DENY_LIST_SETTING)?.as_deref() != Some(text.as_str()) {
                store.set_fleet_setting(DENY_LIST_SETTING, &text)?;
            }
            Ok(Some(p.to_path_buf()))
        }
        None => match configured {
            Some(p) => Ok(Some(p.to_path_buf())),
            None => Ok(store.fleet_setting(DENY_LIST_SETTING)?.map(PathBuf::from)),
        },
    }
}

/// The deny list certd's configuration file names (`[agents] deny_list`), for certctl in
/// direct mode: with `certctl --config FILE` it uses that path exactly as certd would
/// (given > configured > remembered, see `decide_with`). `None` without a file or without
/// the key; a file that cannot be read or does not parse is the configuration's error,
/// which names the file.
pub fn configured_deny_list(
    config_file: Option<&Path>,
) -> Result<Option<PathBuf>, crate::config::ConfigError> {
    match config_file {
        Some(file) => Ok(crate::config::load(file)?.agents.deny_list),
        None => Ok(None),
    }
}

/// The deny list in effect when nobody names one: certd's configured path, else the one
/// remembered from the last `--deny-list`.
pub(crate) fn effective_deny_list(
    store: &Store,
    configured: Option<&Path>,
) -> Result<Option<PathBuf>, AgentsError> {
    deny_list_path(store, None, configured)
}

/// The deny list's text: one lowercase hex fingerprint per line, sorted.
fn deny_list_text(store: &Store, now: UnixTime) -> Result<(String, usize), AgentsError> {
    let fps = deny_list_fingerprints(store, now)?;
    let mut text = String::with_capacity(fps.len() * 65);
    for fp in &fps {
        text.push_str(fp);
        text.push('\n');
    }
    Ok((text, fps.len()))
}

/// Rewrites the deny list at `path` only when its content would change (or the file is
/// missing or unreadable). Returns `Some(entries)` when it was written, `None` when it was
/// already current. certd calls it after each scan.
pub(crate) fn refresh_deny_list(
    store: &Store,
    path: &Path,
    now: UnixTime,
) -> Result<Option<usize>, AgentsError> {
    let (text, entries) = deny_list_text(store, now)?;
    if fs::read(path).is_ok_and(|current| current == text.as_bytes()) {
        return Ok(None);
    }
    write_deny_list_file(path, &text)?;
    Ok(Some(entries))
}

/// The fingerprints the deny list holds: every not yet expired certificate (present in a
/// source or not) of every blocked agent, sorted. Expired certificates are left out: a
/// gateway rejects them anyway, and an agent renewing a six-hour credential would otherwise
/// grow the list by four lines a day.
pub(crate) fn deny_list_fingerprints(
    store: &Store,
    now: UnixTime,
) -> Result<BTreeSet<String>, AgentsError> {
    let blocked: Vec<AgentDecision> = store
        .agent_decisions()?
        .into_iter()
        .filter(|d| d.verdict == AgentVerdict::Blocked)
        .collect();
    let mut out = BTreeSet::new();
    if blocked.is_empty() {
        return Ok(out);
    }
    // From the agent index: each blocked agent's own credentials, never every agent's.
    for d in &blocked {
        let credentials = store.agent_credentials(&d.agent)?;
        let indexed: HashMap<Fingerprint, UnixTime> = credentials
            .iter()
            .map(|c| (c.fingerprint, c.not_after))
            .collect();
        for c in &credentials {
            if c.not_after > now {
                out.insert(c.fingerprint.to_hex());
            }
        }
        // Known at the decision but no longer an agent certificate (role changed) or gone.
        for fp in d.fingerprints.iter().filter(|fp| !indexed.contains_key(fp)) {
            let expired = store.get(fp)?.is_some_and(|c| c.facts.not_after <= now);
            if !expired {
                out.insert(fp.to_hex());
            }
        }
    }
    Ok(out)
}

/// Rewrites the deny list at `path` (atomically: temporary file, fsync, rename, fsync of
/// the folder; mode 0644 so a gateway service can read it). Returns the number of entries.
pub(crate) fn write_deny_list(
    store: &Store,
    path: &Path,
    now: UnixTime,
) -> Result<usize, AgentsError> {
    let (text, entries) = deny_list_text(store, now)?;
    write_deny_list_file(path, &text)?;
    Ok(entries)
}

/// The deny list through the one symlink-safe atomic writer, 0644 (a gateway service reads
/// it) whatever the umask.
fn write_deny_list_file(path: &Path, text: &str) -> Result<(), AgentsError> {
    let options = crate::files::atomic::Options::new(crate::files::atomic::FileMode::Public);
    options
        .write(path, text.as_bytes())
        .map_err(|e| AgentsError::DenyList {
            path: path.to_path_buf(),
            source: e.source,
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use certctl_store::{CertificateFacts, KeyAlgorithm, SubjectAltNames};

    /// The facts of agent N's six-hour credential of renewal round `round`, issued at `t`.
    fn six_hour_credential<N: std::fmt::Display + std::fmt::LowerHex>(
        agent: N,
        fingerprint: Sha256,
        spki_sha256: Sha256,
        round: u32,
        t: i64,
    ) -> CertificateFacts {
        CertificateFacts {
            fingerprint,
            subject: format!("CN=agent-{agent}"),
            subject_cn: Some(format!("agent-{agent}")),
            issuer: "CN=Fleet CA".into(),
            serial: format!("{agent:x}{round:02x}"),
            not_before: t,
            not_after: t + 6 * 3600,
            sans: SubjectAltNames::default(),
            key: KeyAlgorithm::Ed25519,
            signature_algorithm: "ED25519".into(),
            is_ca: false,
            subject_key_id: None,
            authority_key_id: None,
            spki_sha256,
            crl_distribution_points: vec![],
            ocsp_urls: vec![],
        }
    }

    /// `agents` agents renewing `rounds` times: each round's credential replaces the last
    /// one in the agent's file. Returns the store and the time of the last round.
    pub(crate) fn renewing_fleet(dir: &Path, agents: u8, rounds: u8) -> (Store, UnixTime) {
        let store = Store::open(dir).expect("open");
        let start = 1_800_000_000i64;
        let at = |a: u8| SourceLocation::File {
            path: format!("/fleet/agent-{a}.pem"),
            index: 0,
        };
        let fp = |a: u8, r: u8| {
            let mut b = [0u8; 32];
            b[0] = a;
            b[1] = r;
            b[2] = 0xa9;
            Sha256(b)
        };
        for r in 0..rounds {
            let t = start + i64::from(r) * 6 * 3600;
            let mut ingest = store.ingest();
            for a in 0..agents {
                let facts = six_hour_credential(a, fp(a, r), Sha256([a; 32]), u32::from(r), t);
                ingest
                    .observe(facts, Some(Role::Agent), at(a), t)
                    .expect("observe");
                if r > 0 {
                    ingest.mark_gone(&fp(a, r - 1), &at(a), t).expect("gone");
                }
            }
            ingest.commit().expect("commit");
        }
        (store, start + i64::from(rounds - 1) * 6 * 3600)
    }

    /// The pending queue's size for `/metrics` (issue 16): without registrations it comes
    /// from the live agents' counts, not from a walk of every live credential.
    #[test]
    fn the_pending_count_walks_no_live_credential_without_registrations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, t) = renewing_fleet(&dir.path().join("store"), 40, 4);
        let before = store.live_agent_entries_read();
        assert_eq!(pending_count(&store).expect("count"), 40);
        store
            .put_agent_decision(&certctl_store::AgentDecision {
                agent: "AGENT-3".into(),
                guid: None,
                verdict: AgentVerdict::Blocked,
                actor: "test".into(),
                at: t,
                fingerprints: Vec::new(),
            })
            .expect("decide");
        assert_eq!(pending_count(&store).expect("count"), 39);
        assert_eq!(
            store.live_agent_entries_read() - before,
            0,
            "live credentials walked for the count"
        );
        // The same as the queue itself.
        assert_eq!(pending(&store, t).expect("pending").len(), 39);
    }

    /// With registrations imported the pending queue's size still comes from counts the
    /// store keeps on every commit (issue 16): `/metrics` walks no live credential, and the
    /// count is the queue's length through registrations by name, by key and by
    /// certificate, a renewal, a merged import, a decision and a replacing import.
    #[test]
    fn the_pending_count_walks_no_live_credential_with_registrations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, t) = renewing_fleet(&dir.path().join("store"), 40, 4);
        // renewing_fleet's credentials: agent a's key is [a; 32], its round-r certificate
        // fp(a, r) as below.
        let fp = |a: u8, r: u8| {
            let mut b = [0u8; 32];
            b[0] = a;
            b[1] = r;
            b[2] = 0xa9;
            Sha256(b)
        };
        let reg = |a: u8, spki: Option<Sha256>, fingerprint: Option<Sha256>| Registration {
            agent: format!("Agent-{a}"),
            guid: format!("{a:08}-0000-4000-8000-000000000000"),
            spki_sha256: spki,
            fingerprint,
            imported_at: t,
        };
        let mut regs = Vec::new();
        regs.extend((0..10).map(|a| reg(a, None, None))); // by name: never pending
        regs.extend((10..20).map(|a| reg(a, Some(Sha256([a; 32])), None))); // by its key
        regs.extend((20..25).map(|a| reg(a, Some(Sha256([0xee; 32])), None))); // another key
        regs.push(reg(25, None, Some(fp(25, 3)))); // by its current certificate
        store.import_registrations(&regs, true).expect("import");
        let count_and_queue = |store: &Store| {
            let before = store.live_agent_entries_read();
            let count = pending_count(store).expect("count");
            let walked = store.live_agent_entries_read() - before;
            assert_eq!(walked, 0, "live credentials walked for the count");
            (count, pending(store, t).expect("pending").len())
        };
        // 20..25 key-mismatch, 26..40 unregistered.
        assert_eq!(count_and_queue(&store), (19, 19));

        // Everyone renews (same keys, new certificates): agent 25's registered certificate
        // is gone, so agent 25 is pending now; the others stay as they were.
        let (t5, at) = (t + 6 * 3600, |a: u8| SourceLocation::File {
            path: format!("/fleet/agent-{a}.pem"),
            index: 0,
        });
        let mut ingest = store.ingest();
        for a in 0..40u8 {
            let facts = six_hour_credential(a, fp(a, 4), Sha256([a; 32]), 4, t5);
            ingest
                .observe(facts, Some(Role::Agent), at(a), t5)
                .expect("observe");
            ingest.mark_gone(&fp(a, 3), &at(a), t5).expect("gone");
        }
        ingest.commit().expect("commit");
        assert_eq!(count_and_queue(&store), (20, 20));

        // Agent 30 registered by name (merged); agent 31 blocked.
        store
            .import_registrations(&[reg(30, None, None)], false)
            .expect("merge");
        assert_eq!(count_and_queue(&store), (19, 19));
        store
            .put_agent_decision(&certctl_store::AgentDecision {
                agent: "agent-31".into(),
                guid: None,
                verdict: AgentVerdict::Blocked,
                actor: "test".into(),
                at: t,
                fingerprints: Vec::new(),
            })
            .expect("decide");
        assert_eq!(count_and_queue(&store), (18, 18));

        // A replacing import of every agent by name: nobody is pending.
        let all: Vec<Registration> = (0..40).map(|a| reg(a, None, None)).collect();
        store.import_registrations(&all, true).expect("import");
        assert_eq!(count_and_queue(&store), (0, 0));
        let v = store.verify().expect("verify");
        assert!(v.is_ok(), "{:?}", v.problems);
    }

    /// Not a test: a measurement (`CERTCTL_AGENTS_BENCH=AGENTS cargo test -p
    /// certctl-daemon --lib agents::tests::measure -- --ignored --nocapture`). Times the
    /// deny list and `agents block` from the agent index against the former whole-role read
    /// (`by_role(Agent)`) on a store of AGENTS agents × 4 renewals.
    #[test]
    #[ignore]
    fn measure_agent_decisions_against_a_whole_role_read() {
        use std::time::Instant;
        let agents: u32 = std::env::var("CERTCTL_AGENTS_BENCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let start = 1_800_000_000i64;
        let fp = |a: u32, r: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&a.to_be_bytes());
            b[4..8].copy_from_slice(&r.to_be_bytes());
            Sha256(b)
        };
        let at = |a: u32| SourceLocation::File {
            path: format!("/fleet/{}/agent-{a}.pem", a / 1000),
            index: 0,
        };
        let filled = Instant::now();
        for r in 0..4u32 {
            let t = start + i64::from(r) * 6 * 3600;
            let mut ingest = store.ingest();
            for a in 0..agents {
                let facts = six_hour_credential(a, fp(a, r), Sha256(fp(a, 99).0), r, t);
                ingest
                    .observe(facts, Some(Role::Agent), at(a), t)
                    .expect("observe");
                if r > 0 {
                    ingest.mark_gone(&fp(a, r - 1), &at(a), t).expect("gone");
                }
                if ingest.len() >= 5000 {
                    ingest.commit().expect("commit");
                }
            }
            ingest.commit().expect("commit");
        }
        let t = start + 3 * 6 * 3600 + 60;
        eprintln!(
            "{} records in {:.1}s",
            store.len(),
            filled.elapsed().as_secs_f64()
        );
        let deny = dir.path().join("deny.txt");
        let block = DecideRequest {
            ids: vec!["agent-7".into()],
            verdict: AgentVerdict::Blocked,
            actor: "bench".into(),
            deny_list: Some(deny),
            passphrase: None,
        };
        let clock = Instant::now();
        decide_with(&store, &block, None, t).expect("block");
        let block_new = clock.elapsed();
        let clock = Instant::now();
        let denied = deny_list_fingerprints(&store, t).expect("deny list");
        let deny_new = clock.elapsed();
        // What the deny list and block did before the index: read every agent record.
        let clock = Instant::now();
        let all = store.by_role(Role::Agent).expect("by role");
        let old: BTreeSet<String> = all
            .iter()
            .filter(|c| c.facts.not_after > t && agent_name(c).eq_ignore_ascii_case("agent-7"))
            .map(|c| c.fingerprint().to_hex())
            .collect();
        let role_read = clock.elapsed();
        assert_eq!(old, denied);
        eprintln!(
            "agents block: {:.3}s (index) · deny list: {:.4}s (index) · whole-role read the former code did for each: {:.3}s · ratio deny {:.0}×, block {:.0}×",
            block_new.as_secs_f64(),
            deny_new.as_secs_f64(),
            role_read.as_secs_f64(),
            role_read.as_secs_f64() / deny_new.as_secs_f64().max(1e-6),
            role_read.as_secs_f64() / block_new.as_secs_f64().max(1e-6),
        );
    }

    #[test]
    fn agent_decisions_read_only_the_agents_concerned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (agents, rounds) = (60u8, 8u8);
        let (store, t) = renewing_fleet(&dir.path().join("store"), agents, rounds);
        let deny = dir.path().join("deny.txt");
        let block = DecideRequest {
            ids: vec!["AGENT-7".into()],
            verdict: AgentVerdict::Blocked,
            actor: "test".into(),
            deny_list: Some(deny.clone()),
            passphrase: None,
        };
        let before = store.records_read();
        let report = decide_with(&store, &block, None, t).expect("block");
        let block_reads = store.records_read() - before;
        assert_eq!(report.decided[0].agent, "agent-7");
        assert_eq!(report.decided[0].certificates.len(), usize::from(rounds));
        // Its own credentials (to revoke what a managed CA issued), never the fleet's.
        assert!(
            block_reads <= u64::from(rounds),
            "agents block read {block_reads} records of {}",
            u64::from(agents) * u64::from(rounds)
        );

        // The deny list: the blocked agent's unexpired credential, from the index alone.
        let before = store.records_read();
        let denied = deny_list_fingerprints(&store, t + 60).expect("deny list");
        assert_eq!(
            store.records_read() - before,
            0,
            "the deny list reads no record"
        );
        assert_eq!(denied.len(), 1, "{denied:?}");
        let current = store.agent_credentials("agent-7").expect("index");
        let live = current.iter().find(|c| c.live).expect("a live credential");
        assert!(denied.contains(&live.fingerprint.to_hex()));

        // The pending queue: one record per pending agent (for its sources), not one per
        // credential ever stored.
        let before = store.records_read();
        let queue = pending(&store, t).expect("pending");
        let pending_reads = store.records_read() - before;
        assert_eq!(queue.len(), usize::from(agents) - 1);
        assert!(queue.iter().all(|p| p.certificates.len() == 1));
        assert_eq!(pending_reads, u64::from(agents) - 1);
    }

    #[test]
    fn csv_with_header_and_optional_columns() {
        let fp = "ab".repeat(32);
        let text = format!(
            "Agent_Name, Resource_GUID ,fingerprint\nagent-1,{{1111-AAAA}},{fp}\nagent-2,2222,\n\n"
        );
        let regs = parse_registrations(Path::new("r.csv"), text.as_bytes(), 9).expect("parse");
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[0].agent, "agent-1");
        assert_eq!(regs[0].guid, "1111-AAAA");
        assert_eq!(regs[0].fingerprint.map(|f| f.to_hex()), Some(fp));
        assert_eq!(regs[1].fingerprint, None);
        assert_eq!(regs[1].imported_at, 9);
    }

    #[test]
    fn json_array_and_errors_name_file_and_row() {
        let text = r#"[{"agent":"a","guid":"g1","spki_sha256":null},{"agent":"b"}]"#;
        let err = parse_registrations(Path::new("/x/r.json"), text.as_bytes(), 0)
            .expect_err("missing guid");
        let msg = err.to_string();
        assert!(
            msg.contains("/x/r.json") && msg.contains("entry 2") && msg.contains("GUID"),
            "{msg}"
        );
        let err = parse_registrations(Path::new("r.csv"), b"name,guid\na,g,\nb,g2\n", 0);
        assert!(err.is_ok());
        let err = parse_registrations(Path::new("r.csv"), b"host,id\na,g\n", 0)
            .expect_err("no agent column");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_registrations(Path::new("r.csv"), b"agent,guid,spki\na,g,zz\n", 0)
            .expect_err("bad hex");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn given_then_configured_then_remembered_deny_list() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let given = dir.path().join("given.txt");
        let configured = dir.path().join("configured.txt");
        assert_eq!(deny_list_path(&store, None, None).expect("none"), None);
        assert_eq!(
            deny_list_path(&store, None, Some(&configured)).expect("configured"),
            Some(configured.clone())
        );
        // The configured path is not remembered.
        assert_eq!(
            store.fleet_setting(DENY_LIST_SETTING).expect("setting"),
            None
        );
        assert_eq!(
            deny_list_path(&store, Some(&given), Some(&configured)).expect("given"),
            Some(given.clone())
        );
        assert_eq!(
            deny_list_path(&store, None, Some(&configured)).expect("configured"),
            Some(configured.clone())
        );
        assert_eq!(
            effective_deny_list(&store, None).expect("remembered"),
            Some(given.clone())
        );
        // Written once, then left alone while nothing changes.
        assert_eq!(
            refresh_deny_list(&store, &given, 0).expect("write"),
            Some(0)
        );
        assert_eq!(refresh_deny_list(&store, &given, 0).expect("same"), None);
        fs::write(&given, "stale\n").expect("tamper");
        assert_eq!(
            refresh_deny_list(&store, &given, 0).expect("rewrite"),
            Some(0)
        );
        assert_eq!(fs::read_to_string(&given).expect("read"), "");
    }

    #[test]
    fn configured_deny_list_comes_from_the_config_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("certd.toml");
        assert_eq!(configured_deny_list(None).expect("no file"), None);
        fs::write(&file, "store = \"/s\"\n").expect("write");
        assert_eq!(configured_deny_list(Some(&file)).expect("no key"), None);
        fs::write(
            &file,
            "store = \"/s\"\n[agents]\ndeny_list = \"/gw/deny.txt\"\n",
        )
        .expect("write");
        assert_eq!(
            configured_deny_list(Some(&file)).expect("key"),
            Some(PathBuf::from("/gw/deny.txt"))
        );
        // A file that does not parse, or is missing, is an error naming it.
        fs::write(&file, "store = \"/s\"\n[agents]\ndeny_list = 3\n").expect("write");
        let e = configured_deny_list(Some(&file)).expect_err("bad type");
        assert!(
            e.to_string().starts_with(&file.display().to_string()),
            "{e}"
        );
        let missing = dir.path().join("missing.toml");
        let e = configured_deny_list(Some(&missing)).expect_err("missing");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("deny.txt");
        write_deny_list_file(&p, "a\n").expect("write");
        write_deny_list_file(&p, "b\n").expect("rewrite");
        assert_eq!(fs::read_to_string(&p).expect("read"), "b\n");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
