//! `certctl report NAME`: fleet reports, clock-skew and drift findings.
//!
//! Every report is a [`Report`]: a name, the time it was made, column names and rows of
//! JSON values in column order. The CLI prints it as a table, CSV (the columns as header;
//! arrays joined with `;`) or JSON (`{"report", "generated_at", "rows": [{column: value}]}`).
//! The column names are a contract for scripts (see `docs/cli-contract.md`).
//!
//! Which certificates count: reports about what is deployed (`agents-by-credential`,
//! `expiring`, `weak-keys`, `clock-skew`) consider certificates still present in at least
//! one source; `by-role` and `by-issuer` count every certificate in the store, by status;
//! `revoked` lists every revoked certificate.
//!
//! **Clock skew.** A certificate is `clock-skew suspected` when its notBefore lies more than
//! the tolerance (default 5 min) in the future (`not-before-in-future`), when it is
//! ephemeral (validity ≤ 24 h) and its validity exceeds the configured ephemeral lifetime
//! (default 24 h) by more than the tolerance (`validity-longer-than-ephemeral-lifetime`), or
//! when its notAfter is before its notBefore (`not-after-before-not-before`).
//!
//! **Drift.** For every probed endpoint: the served leaf is `renewed-not-reloaded` when a
//! certificate with the same subject DN and a later notAfter is present in an inventoried
//! file while the endpoint still serves the old one; any served certificate (leaf or
//! intermediate) that is present in no inventoried file is `not-in-inventory`. The
//! *effective expiry* of an endpoint is the earliest notAfter of the chain it serves.
//!
//! **Gateways.** `by-gateway` covers endpoints probed with role `gateway` (or whose served
//! leaf has role `gateway`). An agent certificate counts for a gateway when it was issued by
//! a CA of the chain the gateway serves (its issuer DN is the subject of a served
//! certificate, or the issuer of the served leaf): the gateway is where agents with
//! certificates from that CA connect.

use std::collections::{BTreeMap, HashMap};

use certctl_store::{
    rfc3339, Certificate, CredentialKind, Endpoint, Finding, FindingKind, KeyAlgorithm, Role,
    SourceLocation, Status, Store, StoreError, UnixTime,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::duration::Duration;
use crate::duration::{DAY_SECS, WEEK_SECS};
use crate::fleet::agents::{self, AgentsError};
use crate::inventory::view::EXPIRING_SECS;

/// A report `certctl report NAME` can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportKind {
    ByRole,
    ByIssuer,
    ByGateway,
    AgentsByCredential,
    Expiring,
    WeakKeys,
    Revoked,
    PendingAgents,
    EndpointFindings,
    Drift,
    ClockSkew,
}

impl ReportKind {
    /// Every report, in the order `certctl report --help` lists them.
    pub(crate) const ALL: [ReportKind; 11] = [
        ReportKind::ByRole,
        ReportKind::ByIssuer,
        ReportKind::ByGateway,
        ReportKind::AgentsByCredential,
        ReportKind::Expiring,
        ReportKind::WeakKeys,
        ReportKind::Revoked,
        ReportKind::PendingAgents,
        ReportKind::EndpointFindings,
        ReportKind::Drift,
        ReportKind::ClockSkew,
    ];

    /// The report's name on the command line and in requests.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            ReportKind::ByRole => "by-role",
            ReportKind::ByIssuer => "by-issuer",
            ReportKind::ByGateway => "by-gateway",
            ReportKind::AgentsByCredential => "agents-by-credential",
            ReportKind::Expiring => "expiring",
            ReportKind::WeakKeys => "weak-keys",
            ReportKind::Revoked => "revoked",
            ReportKind::PendingAgents => "pending-agents",
            ReportKind::EndpointFindings => "endpoint-findings",
            ReportKind::Drift => "drift",
            ReportKind::ClockSkew => "clock-skew",
        }
    }
}

impl std::str::FromStr for ReportKind {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, ReportError> {
        ReportKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ReportError::Unknown(s.to_string()))
    }
}

/// The report names, in the order `certctl report --help` lists them.
pub const REPORTS: [&str; 11] = {
    let mut names = [""; 11];
    let mut i = 0;
    while i < names.len() {
        names[i] = ReportKind::ALL[i].name();
        i += 1;
    }
    names
};

/// The finding name of the clock-skew report.
pub(crate) const CLOCK_SKEW: &str = "clock-skew suspected";
/// How far ahead `expiring` looks.
pub(crate) const EXPIRING_HORIZON_DAYS: i64 = 90;

/// Errors of the reports.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Agents(#[from] AgentsError),
    #[error("unknown report `{0}` (expected one of: {names})", names = REPORTS.join(", "))]
    Unknown(String),
}

/// Knobs of the reports that have any.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReportOptions {
    /// Clock-skew tolerance (default 5 min).
    pub tolerance: Duration,
    /// The lifetime ephemeral agent certificates are issued with (default 24 h).
    pub ephemeral_lifetime: Duration,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            tolerance: Duration::from_secs(300),
            ephemeral_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// A report: columns and rows (values in column order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The report's name, one of [`REPORTS`] (`by-role`, `expiring`, ...): `report` in
    /// `report NAME --json`.
    pub report: String,
    /// When the report was computed (Unix seconds; RFC 3339 as `generated_at` in `--json`).
    pub generated_at: UnixTime,
    /// The column names in order (the CSV header; the keys of each `rows` object in
    /// `--json`), as `docs/cli-contract.md` lists them per report.
    pub columns: Vec<String>,
    /// One entry per row, its cells in `columns` order (strings, numbers, null, or arrays
    /// of strings; times already RFC 3339 UTC strings). Empty when nothing matched.
    pub rows: Vec<Vec<Value>>,
}

impl Report {
    fn new(name: &str, now: UnixTime, columns: &[&str]) -> Self {
        Report {
            report: name.to_string(),
            generated_at: now,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The rows as JSON objects keyed by column.
    pub fn objects(&self) -> Vec<serde_json::Map<String, Value>> {
        self.rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect()
            })
            .collect()
    }

    /// The `--json` document.
    pub fn to_json(&self) -> Value {
        json!({
            "report": self.report,
            "generated_at": rfc3339(self.generated_at),
            "rows": self.objects(),
        })
    }
}

/// A cell as text for tables and CSV: strings through [`crate::inventory::view::printable`], null
/// empty, arrays joined with `;`.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => crate::inventory::view::printable(s).into_owned(),
        Value::Array(items) => items.iter().map(cell_text).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

/// Makes the report `name`.
pub(crate) fn run(
    store: &Store,
    kind: ReportKind,
    options: &ReportOptions,
    now: UnixTime,
) -> Result<Report, ReportError> {
    match kind {
        ReportKind::ByRole => by_role(store, now),
        ReportKind::ByIssuer => by_issuer(store, now),
        ReportKind::ByGateway => by_gateway(store, now),
        ReportKind::AgentsByCredential => agents_by_credential(store, now),
        ReportKind::Expiring => expiring(store, now),
        ReportKind::WeakKeys => weak_keys(store, now),
        ReportKind::Revoked => revoked(store, now),
        ReportKind::PendingAgents => pending_agents(store, now),
        ReportKind::EndpointFindings => endpoint_findings(store, now),
        ReportKind::Drift => drift_report(store, now),
        ReportKind::ClockSkew => clock_skew(store, options, now),
    }
}

/// The certificates passing `keep`, read one at a time (a report never holds the whole
/// store in memory).
fn filtered(
    store: &Store,
    keep: impl Fn(&Certificate) -> bool,
) -> Result<Vec<Certificate>, StoreError> {
    let mut out = Vec::new();
    for c in store.iter() {
        let c = c?;
        if keep(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn present(c: &Certificate) -> bool {
    c.current_sources().next().is_some()
}

fn places(c: &Certificate) -> Value {
    Value::from(
        c.current_sources()
            .map(|s| s.location.to_string())
            .collect::<Vec<_>>(),
    )
}

const STATUSES: [Status; 5] = [
    Status::Valid,
    Status::Expiring,
    Status::Expired,
    Status::Revoked,
    Status::NotYetValid,
];

/// Counts per status, in [`STATUSES`] order.
#[derive(Default, Clone, Copy)]
struct StatusCounts {
    total: u64,
    by_status: [u64; 5],
}

impl StatusCounts {
    fn add(&mut self, c: &Certificate, now: UnixTime) {
        self.total += 1;
        let st = c.status(now, EXPIRING_SECS);
        if let Some(i) = STATUSES.iter().position(|s| *s == st) {
            self.by_status[i] += 1;
        }
    }

    fn row(&self, label: Value) -> Vec<Value> {
        let mut row = vec![label, json!(self.total)];
        row.extend(self.by_status.iter().map(|n| json!(n)));
        row
    }
}

const STATUS_COLUMNS: [&str; 5] = ["valid", "expiring", "expired", "revoked", "not_yet_valid"];

fn by_role(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut cols = vec!["role", "total"];
    cols.extend(STATUS_COLUMNS);
    let mut r = Report::new("by-role", now, &cols);
    let mut counts = [StatusCounts::default(); 6];
    for c in store.iter() {
        let c = c?;
        let i = Role::ALL.iter().position(|r| *r == c.role).unwrap_or(5);
        counts[i].add(&c, now);
    }
    for (role, n) in Role::ALL.iter().zip(counts) {
        r.rows.push(n.row(json!(role.as_str())));
    }
    Ok(r)
}

fn by_issuer(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut cols = vec!["issuer", "total"];
    cols.extend(STATUS_COLUMNS);
    let mut r = Report::new("by-issuer", now, &cols);
    let mut groups: HashMap<String, StatusCounts> = HashMap::new();
    for c in store.iter() {
        let c = c?;
        match groups.get_mut(&c.facts.issuer) {
            Some(n) => n.add(&c, now),
            None => {
                let mut n = StatusCounts::default();
                n.add(&c, now);
                groups.insert(c.facts.issuer.clone(), n);
            }
        }
    }
    let mut groups: Vec<(String, StatusCounts)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(&b.0)));
    for (issuer, n) in groups {
        r.rows.push(n.row(json!(issuer)));
    }
    Ok(r)
}

fn agents_by_credential(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "agents-by-credential",
        now,
        &["agent", "credential", "permanent", "ephemeral"],
    );
    let mut per: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    for c in store.by_role(Role::Agent)? {
        if !present(&c) || c.revocation.is_some() {
            continue;
        }
        let name = agents::agent_name(&c);
        let e = per
            .entry(name.to_lowercase())
            .or_insert_with(|| (name, 0, 0));
        match c.credential_kind() {
            Some(CredentialKind::Permanent) => e.1 += 1,
            Some(CredentialKind::Ephemeral) => e.2 += 1,
            None => {}
        }
    }
    for (_, (name, p, e)) in per {
        let kind = match (p > 0, e > 0) {
            (true, true) => "both",
            (true, false) => "permanent",
            (false, true) => "ephemeral",
            (false, false) => continue,
        };
        r.rows
            .push(vec![json!(name), json!(kind), json!(p), json!(e)]);
    }
    Ok(r)
}

fn expiring(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut cols = vec!["week", "from", "to", "total"];
    let role_cols: Vec<String> = Role::ALL
        .iter()
        .map(|r| r.as_str().replace('-', "_"))
        .collect();
    cols.extend(role_cols.iter().map(String::as_str));
    let mut r = Report::new("expiring", now, &cols);
    let end = now + EXPIRING_HORIZON_DAYS * DAY_SECS;
    let certs = store.expiring_between(now + 1, end + 1, None)?;
    let weeks = (EXPIRING_HORIZON_DAYS + 6) / 7;
    let mut counts = vec![[0u64; 6]; weeks as usize];
    for c in &certs {
        if !present(c)
            || c.revocation.is_some()
            || c.credential_kind() == Some(CredentialKind::Ephemeral)
        {
            continue;
        }
        let week = ((c.facts.not_after - now - 1).max(0) / (WEEK_SECS)) as usize;
        let role = Role::ALL.iter().position(|r| *r == c.role).unwrap_or(5);
        if let Some(w) = counts.get_mut(week) {
            w[role] += 1;
        }
    }
    for (i, w) in counts.iter().enumerate() {
        let from = now + i as i64 * WEEK_SECS;
        let to = (from + WEEK_SECS).min(end);
        let mut row = vec![
            json!(i + 1),
            json!(rfc3339(from)),
            json!(rfc3339(to)),
            json!(w.iter().sum::<u64>()),
        ];
        row.extend(w.iter().map(|n| json!(n)));
        r.rows.push(row);
    }
    Ok(r)
}

/// Why a certificate's key or signature is weak (empty: it is not).
pub(crate) fn weaknesses(c: &Certificate) -> Vec<&'static str> {
    let mut out = Vec::new();
    match c.facts.key {
        KeyAlgorithm::Rsa { bits } if bits < 2048 => out.push("rsa-key-under-2048"),
        KeyAlgorithm::Dsa { .. } => out.push("dsa-key"),
        _ => {}
    }
    let sig = c.facts.signature_algorithm.to_lowercase();
    if sig.contains("sha1") || sig.contains("sha-1") {
        out.push("sha1-signature");
    }
    if sig.contains("md5") {
        out.push("md5-signature");
    }
    if sig.contains("dsa") && !sig.contains("ecdsa") && !sig.contains("eddsa") {
        out.push("dsa-signature");
    }
    out
}

fn weak_keys(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "weak-keys",
        now,
        &[
            "fingerprint_sha256",
            "name",
            "role",
            "key",
            "signature_algorithm",
            "weaknesses",
            "not_after",
            "sources",
        ],
    );
    let mut certs = filtered(store, |c| present(c) && !weaknesses(c).is_empty())?;
    certs.sort_by_key(|c| c.facts.not_after);
    for c in &certs {
        let w = weaknesses(c);
        if w.is_empty() {
            continue;
        }
        r.rows.push(vec![
            json!(c.fingerprint().to_hex()),
            json!(c.facts.display_name()),
            json!(c.role.as_str()),
            json!(c.facts.key.to_string()),
            json!(c.facts.signature_algorithm),
            json!(w),
            json!(rfc3339(c.facts.not_after)),
            places(c),
        ]);
    }
    Ok(r)
}

fn revoked(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "revoked",
        now,
        &[
            "fingerprint_sha256",
            "name",
            "role",
            "revoked_at",
            "reason",
            "revoked_by",
            "still_present",
            "sources",
        ],
    );
    let mut certs = filtered(store, |c| c.revocation.is_some())?;
    certs.sort_by_key(|c| c.revocation.as_ref().map(|r| r.revoked_at));
    for c in &certs {
        let Some(rev) = &c.revocation else { continue };
        let reason = serde_json::to_value(rev.reason).unwrap_or(Value::Null);
        r.rows.push(vec![
            json!(c.fingerprint().to_hex()),
            json!(c.facts.display_name()),
            json!(c.role.as_str()),
            json!(rfc3339(rev.revoked_at)),
            reason,
            json!(rev.revoked_by),
            json!(present(c)),
            places(c),
        ]);
    }
    Ok(r)
}

fn pending_agents(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "pending-agents",
        now,
        &[
            "agent",
            "reason",
            "first_seen",
            "sources",
            "certificates",
            "registered_guids",
        ],
    );
    for p in agents::pending(store, now)? {
        r.rows.push(vec![
            json!(p.agent),
            json!(p.reason),
            json!(rfc3339(p.first_seen)),
            json!(p.sources),
            json!(p.certificates),
            json!(p.registered_guids),
        ]);
    }
    Ok(r)
}

// ---- drift -------------------------------------------------------------------------------------

/// One drift finding on an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Drift {
    pub endpoint: String,
    /// `renewed-not-reloaded` or `not-in-inventory`.
    pub finding: String,
    /// The served certificate concerned.
    pub served: String,
    pub served_name: String,
    pub served_not_after: UnixTime,
    /// For `renewed-not-reloaded`: the newer certificate on disk and where.
    pub newer: Option<String>,
    pub newer_not_after: Option<UnixTime>,
    pub newer_path: Option<String>,
    pub detail: String,
}

fn file_paths(c: &Certificate) -> Vec<String> {
    c.current_sources()
        .filter_map(|s| match &s.location {
            SourceLocation::File { path, .. } => Some(path.clone()),
            SourceLocation::Endpoint { .. } => None,
        })
        .collect()
}

/// The served chain's certificates that the store holds, leaf first.
fn served_chain(store: &Store, e: &Endpoint) -> Result<Vec<Certificate>, StoreError> {
    let mut out = Vec::with_capacity(e.chain.len());
    for fp in &e.chain {
        if let Some(c) = store.get(fp)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// Earliest notAfter of the served chain.
pub(crate) fn effective_expiry(chain: &[Certificate]) -> Option<UnixTime> {
    chain.iter().map(|c| c.facts.not_after).min()
}

/// The `serving-revoked` finding of an endpoint whose last served leaf the inventory holds
/// as revoked (by certctl, or learned from a CRL), if it does.
pub(crate) fn serving_revoked(store: &Store, e: &Endpoint) -> Result<Option<Finding>, StoreError> {
    let Some(leaf) = e.chain.first() else {
        return Ok(None);
    };
    let Some(cert) = store.get(leaf)? else {
        return Ok(None);
    };
    Ok(cert.revocation.as_ref().map(|r| Finding {
        kind: FindingKind::ServingRevoked,
        detail: format!(
            "tls://{} still serves {} ({}), revoked {} ({}): deploy its replacement and reload the service",
            e.address,
            cert.facts.display_name(),
            &cert.fingerprint().to_hex()[..16],
            rfc3339(r.revoked_at),
            crate::pki::crl::reason_name(r.reason)
        ),
    }))
}

/// The endpoint with its drift findings (renewed but not reloaded, served but in no file)
/// and `serving-revoked` added to the probe's own: how `status` shows an endpoint.
/// (`probe` adds only `serving-revoked` to what the probe itself found.)
pub(crate) fn with_drift(store: &Store, mut e: Endpoint) -> Result<Endpoint, StoreError> {
    if let Some(f) = serving_revoked(store, &e)? {
        e.findings.push(f);
    }
    for d in drift(store, &e)? {
        let kind = match d.finding.as_str() {
            "renewed-not-reloaded" => FindingKind::RenewedNotReloaded,
            _ => FindingKind::NotInInventory,
        };
        e.findings.push(Finding {
            kind,
            detail: d.detail,
        });
    }
    Ok(e)
}

/// The drift findings of one endpoint.
pub(crate) fn drift(store: &Store, e: &Endpoint) -> Result<Vec<Drift>, StoreError> {
    let chain = served_chain(store, e)?;
    let mut out = Vec::new();
    for (i, c) in chain.iter().enumerate() {
        let name = c.facts.display_name().to_string();
        if i == 0 {
            let mut newer: Vec<Certificate> = store
                .find_by_name(&name)?
                .into_iter()
                .filter(|n| {
                    n.fingerprint() != c.fingerprint()
                        && n.facts.subject.eq_ignore_ascii_case(&c.facts.subject)
                        && n.facts.not_after > c.facts.not_after
                        && n.revocation.is_none()
                        && !file_paths(n).is_empty()
                })
                .collect();
            newer.sort_by_key(|n| n.facts.not_after);
            if let Some(n) = newer.last() {
                let path = file_paths(n).into_iter().next();
                out.push(Drift {
                    endpoint: e.address.clone(),
                    finding: "renewed-not-reloaded".into(),
                    served: c.fingerprint().to_hex(),
                    served_name: name.clone(),
                    served_not_after: c.facts.not_after,
                    newer: Some(n.fingerprint().to_hex()),
                    newer_not_after: Some(n.facts.not_after),
                    detail: format!(
                        "tls://{} still serves {name} expiring {}, but {} holds its renewal expiring {}: reload the service",
                        e.address,
                        rfc3339(c.facts.not_after),
                        path.as_deref().unwrap_or("a file"),
                        rfc3339(n.facts.not_after)
                    ),
                    newer_path: path,
                });
                continue;
            }
        }
        if file_paths(c).is_empty() {
            out.push(Drift {
                endpoint: e.address.clone(),
                finding: "not-in-inventory".into(),
                served: c.fingerprint().to_hex(),
                served_name: name.clone(),
                served_not_after: c.facts.not_after,
                newer: None,
                newer_not_after: None,
                newer_path: None,
                detail: format!(
                    "tls://{} serves {name} ({}), which is in no inventoried file",
                    e.address,
                    if i == 0 { "leaf" } else { "chain" }
                ),
            });
        }
    }
    Ok(out)
}

fn drift_report(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "drift",
        now,
        &[
            "endpoint",
            "finding",
            "fingerprint_sha256",
            "name",
            "served_not_after",
            "newer_fingerprint",
            "newer_not_after",
            "newer_path",
            "effective_expiry",
            "detail",
        ],
    );
    for e in store.endpoints()? {
        let eff = effective_expiry(&served_chain(store, &e)?);
        for d in drift(store, &e)? {
            r.rows.push(vec![
                json!(d.endpoint),
                json!(d.finding),
                json!(d.served),
                json!(d.served_name),
                json!(rfc3339(d.served_not_after)),
                json!(d.newer),
                json!(d.newer_not_after.map(rfc3339)),
                json!(d.newer_path),
                json!(eff.map(rfc3339)),
                json!(d.detail),
            ]);
        }
    }
    Ok(r)
}

fn endpoint_findings(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "endpoint-findings",
        now,
        &[
            "endpoint",
            "role",
            "last_probe",
            "effective_expiry",
            "finding",
            "detail",
        ],
    );
    for e in store.endpoints()? {
        let eff = effective_expiry(&served_chain(store, &e)?);
        let head = |finding: &str, detail: &str| {
            vec![
                json!(e.address),
                json!(e.role.map(|r| r.as_str())),
                json!(e.last_probe.map(rfc3339)),
                json!(eff.map(rfc3339)),
                json!(finding),
                json!(detail),
            ]
        };
        for f in &e.findings {
            r.rows.push(head(f.kind.as_str(), &f.detail));
        }
        for d in drift(store, &e)? {
            r.rows.push(head(&d.finding, &d.detail));
        }
    }
    Ok(r)
}

fn by_gateway(store: &Store, now: UnixTime) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "by-gateway",
        now,
        &[
            "endpoint",
            "sni",
            "leaf",
            "leaf_fingerprint",
            "effective_expiry",
            "chain_certificates",
            "agents",
            "agent_certificates",
            "agents_permanent",
            "agents_ephemeral",
            "findings",
        ],
    );
    let agent_certs: Vec<Certificate> = store
        .by_role(Role::Agent)?
        .into_iter()
        .filter(|c| present(c) && c.revocation.is_none())
        .collect();
    for e in store.endpoints()? {
        let chain = served_chain(store, &e)?;
        let leaf = chain.first();
        let is_gateway =
            e.role == Some(Role::Gateway) || leaf.is_some_and(|l| l.role == Role::Gateway);
        if !is_gateway {
            continue;
        }
        let mut issuers: Vec<String> = chain
            .iter()
            .map(|c| c.facts.subject.to_lowercase())
            .collect();
        if let Some(l) = leaf {
            issuers.push(l.facts.issuer.to_lowercase());
        }
        let mut per_agent: HashMap<String, (bool, bool)> = HashMap::new();
        let mut count = 0u64;
        for a in &agent_certs {
            if !issuers.contains(&a.facts.issuer.to_lowercase()) {
                continue;
            }
            count += 1;
            let e = per_agent
                .entry(agents::agent_name(a).to_lowercase())
                .or_default();
            match a.credential_kind() {
                Some(CredentialKind::Permanent) => e.0 = true,
                Some(CredentialKind::Ephemeral) => e.1 = true,
                None => {}
            }
        }
        let mut findings: Vec<String> = e
            .findings
            .iter()
            .map(|f| f.kind.as_str().to_string())
            .collect();
        findings.extend(drift(store, &e)?.into_iter().map(|d| d.finding));
        r.rows.push(vec![
            json!(e.address),
            json!(e.sni),
            json!(leaf.map(|l| l.facts.display_name().to_string())),
            json!(leaf.map(|l| l.fingerprint().to_hex())),
            json!(effective_expiry(&chain).map(rfc3339)),
            json!(chain.len()),
            json!(per_agent.len()),
            json!(count),
            json!(per_agent.values().filter(|(p, _)| *p).count()),
            json!(per_agent.values().filter(|(_, e)| *e).count()),
            json!(findings),
        ]);
    }
    Ok(r)
}

// ---- clock skew --------------------------------------------------------------------------------

/// Why a certificate is `clock-skew suspected`, if it is.
pub(crate) fn skew_cause(
    c: &Certificate,
    options: &ReportOptions,
    now: UnixTime,
) -> Option<(&'static str, i64)> {
    let f = &c.facts;
    let tolerance = options.tolerance.as_secs();
    if f.not_after < f.not_before {
        return Some(("not-after-before-not-before", f.not_before - f.not_after));
    }
    if f.not_before > now.saturating_add(tolerance) {
        return Some(("not-before-in-future", f.not_before - now));
    }
    if c.credential_kind() == Some(CredentialKind::Ephemeral) {
        let excess = f
            .validity_secs()
            .saturating_sub(options.ephemeral_lifetime.as_secs());
        if excess > tolerance {
            return Some(("validity-longer-than-ephemeral-lifetime", excess));
        }
    }
    None
}

fn clock_skew(
    store: &Store,
    options: &ReportOptions,
    now: UnixTime,
) -> Result<Report, ReportError> {
    let mut r = Report::new(
        "clock-skew",
        now,
        &[
            "agent",
            "role",
            "finding",
            "cause",
            "skew_secs",
            "fingerprint_sha256",
            "not_before",
            "not_after",
            "sources",
        ],
    );
    let mut certs = filtered(store, |c| {
        present(c) && c.revocation.is_none() && skew_cause(c, options, now).is_some()
    })?;
    certs.sort_by(|a, b| {
        (a.facts.display_name(), a.facts.not_before)
            .cmp(&(b.facts.display_name(), b.facts.not_before))
    });
    for c in &certs {
        let Some((cause, skew)) = skew_cause(c, options, now) else {
            continue;
        };
        r.rows.push(vec![
            json!(agents::agent_name(c)),
            json!(c.role.as_str()),
            json!(CLOCK_SKEW),
            json!(cause),
            json!(skew),
            json!(c.fingerprint().to_hex()),
            json!(rfc3339(c.facts.not_before)),
            json!(rfc3339(c.facts.not_after)),
            places(c),
        ]);
    }
    Ok(r)
}

// ---- metrics -----------------------------------------------------------------------------------

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The inventory as Prometheus text exposition (version 0.0.4), for `certctl metrics` (a
/// node_exporter textfile collector, or any scraper).
///
/// Label cardinality stays bounded for 200,000 agents: one
/// `certctl_certificate_not_after_seconds` series per present, non-agent certificate
/// (fingerprint, CN, role, first source); agent certificates are aggregated by credential
/// kind and status unless `per_agent`.
pub(crate) fn metrics_text(
    store: &Store,
    per_agent: bool,
    now: UnixTime,
) -> Result<String, ReportError> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP certctl_certificate_not_after_seconds notAfter of a present certificate (Unix seconds).");
    let _ = writeln!(out, "# TYPE certctl_certificate_not_after_seconds gauge");
    // The counts by role and status come from the store's counts, the pending agents from
    // the agent index; only the certificates that get series of their own are read
    // (present non-agent ones, and with `per_agent` the agents' too).
    let (by_status, agents) = counts_by_status(store, now)?;
    certificate_series(store, per_agent, &mut out)?;
    status_series(&by_status, &agents, &mut out);
    endpoint_series(store, &mut out)?;
    agent_decision_series(store, &mut out)?;
    artifact_series(store, &mut out)?;
    crl_series(store, &mut out)?;
    probe_series(store, &mut out)?;
    source_read_error_series(store, &mut out)?;
    out.push_str(&smtp_counter_series(store)?);
    out.push_str(&crate::pki::renewal::metrics_text(store)?);
    Ok(out)
}

/// Certificate counts keyed by two labels (role or credential kind, and status).
type SeriesCounts = BTreeMap<(&'static str, &'static str), u64>;

/// Status counts keyed by (role, status), and those of the present agent certificates
/// keyed by (credential kind, status).
fn counts_by_status(
    store: &Store,
    now: UnixTime,
) -> Result<(SeriesCounts, SeriesCounts), ReportError> {
    let mut by_status = SeriesCounts::new();
    let mut agents = SeriesCounts::new();
    let counts = store.counts(now, EXPIRING_SECS)?;
    for (class, n) in &counts.status {
        for status in [
            Status::Valid,
            Status::NotYetValid,
            Status::Expiring,
            Status::Expired,
            Status::Revoked,
        ] {
            let count = n.of(status);
            if count == 0 {
                continue;
            }
            *by_status
                .entry((class.role.as_str(), status.as_str()))
                .or_default() += count;
            if class.role == Role::Agent && class.present {
                let kind = class.kind.map_or("none", |k| k.as_str());
                *agents.entry((kind, status.as_str())).or_default() += count;
            }
        }
    }
    Ok((by_status, agents))
}

/// The per-certificate series: notAfter (with its first source), notBefore and `_info`,
/// for the present non-agent certificates (and the agents' with `per_agent`).
fn certificate_series(store: &Store, per_agent: bool, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let mut present = Vec::new();
    for fp in store.present_fingerprints(per_agent)? {
        let Some(c) = store.get(&fp)? else { continue };
        if c.role != Role::Agent || per_agent {
            present.push(c);
        }
    }
    // In fingerprint order, as the series always came.
    present.sort_by_key(|c| c.facts.fingerprint);
    // The same certificates' notBefore and descriptive labels, in series of their own (the
    // exporters' conventions: `_timestamp_seconds`, and an `_info` series of value 1 whose
    // labels a query joins on `fingerprint`).
    let mut not_before = String::new();
    let mut info = String::new();
    for c in &present {
        let Some(source) = c.current_sources().next() else {
            continue;
        };
        let fingerprint = c.fingerprint().to_hex();
        let _ = writeln!(
            out,
            "certctl_certificate_not_after_seconds{{fingerprint=\"{}\",cn=\"{}\",role=\"{}\",source=\"{}\"}} {}",
            fingerprint,
            label(c.facts.display_name()),
            c.role.as_str(),
            label(&source.location.to_string()),
            c.facts.not_after
        );
        let _ = writeln!(
            not_before,
            "certctl_certificate_not_before_timestamp_seconds{{fingerprint=\"{fingerprint}\"}} {}",
            c.facts.not_before
        );
        let _ = writeln!(
            info,
            "certctl_certificate_info{{fingerprint=\"{fingerprint}\",cn=\"{}\",role=\"{}\",issuer=\"{}\",serial=\"{}\",key=\"{}\",revoked=\"{}\"}} 1",
            label(c.facts.display_name()),
            c.role.as_str(),
            label(&c.facts.issuer),
            label(&c.facts.serial),
            label(&c.facts.key.to_string()),
            c.revocation.is_some()
        );
    }
    drop(present);
    let _ = writeln!(out, "# HELP certctl_certificate_not_before_timestamp_seconds notBefore of a present certificate (Unix seconds).");
    let _ = writeln!(
        out,
        "# TYPE certctl_certificate_not_before_timestamp_seconds gauge"
    );
    out.push_str(&not_before);
    let _ = writeln!(out, "# HELP certctl_certificate_info A present certificate's issuer, serial, key type and revocation (value 1; join on fingerprint).");
    let _ = writeln!(out, "# TYPE certctl_certificate_info gauge");
    out.push_str(&info);
    Ok(())
}

/// `certctl_certificates` and `certctl_agent_certificates`: the counts by status.
fn status_series(by_status: &SeriesCounts, agents: &SeriesCounts, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP certctl_certificates Certificates in the store by role and status."
    );
    let _ = writeln!(out, "# TYPE certctl_certificates gauge");
    for ((role, status), n) in by_status {
        let _ = writeln!(
            out,
            "certctl_certificates{{role=\"{role}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP certctl_agent_certificates Present agent certificates by credential kind and status.");
    let _ = writeln!(out, "# TYPE certctl_agent_certificates gauge");
    for ((kind, status), n) in agents {
        let _ = writeln!(
            out,
            "certctl_agent_certificates{{credential_kind=\"{kind}\",status=\"{status}\"}} {n}"
        );
    }
}

/// Each endpoint's effective expiry, and its findings (probe and drift) by kind.
fn endpoint_series(store: &Store, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP certctl_endpoint_effective_expiry_seconds Earliest notAfter of the chain an endpoint serves.");
    let _ = writeln!(
        out,
        "# TYPE certctl_endpoint_effective_expiry_seconds gauge"
    );
    let mut findings: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in store.endpoints()? {
        if let Some(t) = effective_expiry(&served_chain(store, &e)?) {
            let _ = writeln!(
                out,
                "certctl_endpoint_effective_expiry_seconds{{endpoint=\"{}\"}} {t}",
                label(&e.address)
            );
        }
        for f in &e.findings {
            *findings
                .entry((e.address.clone(), f.kind.as_str().to_string()))
                .or_default() += 1;
        }
        for d in drift(store, &e)? {
            *findings.entry((e.address.clone(), d.finding)).or_default() += 1;
        }
    }
    let _ = writeln!(
        out,
        "# HELP certctl_endpoint_findings Findings per endpoint (probe and drift)."
    );
    let _ = writeln!(out, "# TYPE certctl_endpoint_findings gauge");
    for ((endpoint, kind), n) in &findings {
        let _ = writeln!(
            out,
            "certctl_endpoint_findings{{endpoint=\"{}\",finding=\"{kind}\"}} {n}",
            label(endpoint)
        );
    }
    Ok(())
}

/// Agents awaiting a decision, and blocked agents.
fn agent_decision_series(store: &Store, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let pending = agents::pending_count(store)?;
    let blocked = store
        .agent_decisions()?
        .iter()
        .filter(|d| d.verdict == certctl_store::AgentVerdict::Blocked)
        .count();
    let _ = writeln!(
        out,
        "# HELP certctl_agents_pending Agents awaiting an approve/block decision."
    );
    let _ = writeln!(out, "# TYPE certctl_agents_pending gauge");
    let _ = writeln!(out, "certctl_agents_pending {pending}");
    let _ = writeln!(out, "# HELP certctl_agents_blocked Blocked agents.");
    let _ = writeln!(out, "# TYPE certctl_agents_blocked gauge");
    let _ = writeln!(out, "certctl_agents_blocked {blocked}");
    Ok(())
}

/// Each tracked artifact's expiry.
fn artifact_series(store: &Store, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP certctl_artifact_expiry_seconds Expiry of a tracked artifact (enrollment bundle, ...).");
    let _ = writeln!(out, "# TYPE certctl_artifact_expiry_seconds gauge");
    for a in store.artifacts()? {
        let _ = writeln!(
            out,
            "certctl_artifact_expiry_seconds{{kind=\"{}\",name=\"{}\",path=\"{}\"}} {}",
            label(&a.kind),
            label(&a.name),
            label(&a.path),
            a.expires
        );
    }
    Ok(())
}

/// Scanned files whose last read failed: the unlabelled series is the total (released
/// before the per-source series), then one series per source folder (the folder holding
/// the files) that has any.
fn source_read_error_series(store: &Store, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let failed = store.failed_files()?;
    let mut by_source: BTreeMap<&str, u64> = BTreeMap::new();
    for (path, _) in &failed {
        let source = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let source = if source.is_empty() { "/" } else { source };
        *by_source.entry(source).or_default() += 1;
    }
    let _ = writeln!(out, "# HELP certctl_source_read_errors Scanned files whose last read failed (their certificates are not seen): without labels the total, with `source` per source folder.");
    let _ = writeln!(out, "# TYPE certctl_source_read_errors gauge");
    let _ = writeln!(out, "certctl_source_read_errors {}", failed.len());
    for (source, n) in &by_source {
        let _ = writeln!(
            out,
            "certctl_source_read_errors{{source=\"{}\"}} {n}",
            label(source)
        );
    }
    Ok(())
}

/// Each endpoint's last probe, as blackbox_exporter names it: whether it got the chain
/// (`certctl_probe_success`) and when it ran.
fn probe_series(store: &Store, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let endpoints = store.endpoints()?;
    let _ = writeln!(out, "# HELP certctl_probe_success Whether the last probe of an endpoint got its certificate chain (1) or not (0).");
    let _ = writeln!(out, "# TYPE certctl_probe_success gauge");
    for e in &endpoints {
        if let Some(t) = e.last_probe {
            let ok = u8::from(e.last_success == Some(t));
            let _ = writeln!(
                out,
                "certctl_probe_success{{endpoint=\"{}\"}} {ok}",
                label(&e.address)
            );
        }
    }
    let _ = writeln!(out, "# HELP certctl_probe_last_timestamp_seconds When an endpoint was last probed (Unix seconds).");
    let _ = writeln!(out, "# TYPE certctl_probe_last_timestamp_seconds gauge");
    for e in &endpoints {
        if let Some(t) = e.last_probe {
            let _ = writeln!(
                out,
                "certctl_probe_last_timestamp_seconds{{endpoint=\"{}\"}} {t}",
                label(&e.address)
            );
        }
    }
    let _ = writeln!(out, "# HELP certctl_probe_duration_seconds How long the last probe of an endpoint took (connect and handshake, or until it failed).");
    let _ = writeln!(out, "# TYPE certctl_probe_duration_seconds gauge");
    for e in &endpoints {
        // A probe recorded before schema 4 has no duration: no sample.
        if let (Some(_), Some(us)) = (e.last_probe, e.last_probe_duration_us) {
            let _ = writeln!(
                out,
                "certctl_probe_duration_seconds{{endpoint=\"{}\"}} {}",
                label(&e.address),
                Seconds(us)
            );
        }
    }
    Ok(())
}

/// Microseconds written as Prometheus seconds (`0.001234`), exact, without float noise.
struct Seconds(u64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if micros == 0 {
            write!(f, "{whole}")
        } else {
            let frac = format!("{micros:06}");
            write!(f, "{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// The managed CAs' CRLs: when each expires, and whether its published files are behind
/// the store (a revocation relying parties cannot see yet).
fn crl_series(store: &Store, out: &mut String) -> Result<(), ReportError> {
    use std::fmt::Write as _;
    let cas = store.managed_cas()?;
    let _ = writeln!(out, "# HELP certctl_crl_next_update_timestamp_seconds nextUpdate of the last CRL certctl published for a managed CA.");
    let _ = writeln!(
        out,
        "# TYPE certctl_crl_next_update_timestamp_seconds gauge"
    );
    for ca in &cas {
        if let Some(t) = crate::pki::crl::crl_next_update(ca) {
            let _ = writeln!(
                out,
                "certctl_crl_next_update_timestamp_seconds{{ca=\"{}\"}} {t}",
                label(&ca.name)
            );
        }
    }
    let _ = writeln!(out, "# HELP certctl_crl_behind Whether a managed CA's published CRL misses a revocation the store holds, or cannot be read (1) or not (0).");
    let _ = writeln!(out, "# TYPE certctl_crl_behind gauge");
    for ca in &cas {
        let behind = crate::pki::crl::stale_crls(store, ca)
            .map(|stale| !stale.is_empty())
            .unwrap_or(true);
        let _ = writeln!(
            out,
            "certctl_crl_behind{{ca=\"{}\"}} {}",
            label(&ca.name),
            u8::from(behind)
        );
    }
    Ok(())
}

/// The SMTP delivery counters kept in the store (so they survive restarts and are the same
/// with and without certd): `certctl_smtp_deliveries_total` (digests the server accepted)
/// and `certctl_smtp_delivery_failures_total` (failed attempts, one per digest and
/// attempt). [`metrics_text`] appends them, so `certctl metrics` and
/// certd's `/metrics` both have them.
pub(crate) fn smtp_counter_series(
    store: &certctl_store::Store,
) -> Result<String, certctl_store::StoreError> {
    Ok(smtp_counters_text(
        store.smtp_deliveries_total()?,
        store.smtp_delivery_failures_total()?,
    ))
}

fn smtp_counters_text(delivered: u64, failed: u64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP certctl_smtp_deliveries_total Reminder digests the SMTP server accepted.\n",
    );
    out.push_str("# TYPE certctl_smtp_deliveries_total counter\n");
    out.push_str(&format!("certctl_smtp_deliveries_total {delivered}\n"));
    out.push_str("# HELP certctl_smtp_delivery_failures_total Failed attempts to deliver a reminder digest (server unreachable, login or message refused, connection broken), one per digest and attempt.\n");
    out.push_str("# TYPE certctl_smtp_delivery_failures_total counter\n");
    out.push_str(&format!("certctl_smtp_delivery_failures_total {failed}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::agents::tests::renewing_fleet;
    use certctl_store::AgentVerdict;

    #[test]
    fn cells_join_arrays_and_blank_nulls() {
        assert_eq!(cell_text(&json!(["a", "b"])), "a;b");
        assert_eq!(cell_text(&Value::Null), "");
        assert_eq!(cell_text(&json!(3)), "3");
        assert_eq!(cell_text(&json!("x")), "x");
    }

    #[test]
    fn unknown_report_names_the_choices() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let err = "nope".parse::<ReportKind>().expect_err("unknown");
        assert!(err.to_string().contains("by-gateway"), "{err}");
        for name in REPORTS {
            run(
                &store,
                name.parse().expect("a report"),
                &ReportOptions::default(),
                0,
            )
            .expect("empty store report");
        }
    }

    #[test]
    fn metrics_count_the_pending_queue_without_reading_agent_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (agents, rounds) = (40u8, 4u8);
        let (store, t) = renewing_fleet(&dir.path().join("store"), agents, rounds);
        let before = store.records_read();
        let text = crate::fleet::reports::metrics_text(&store, false, t).expect("metrics");
        assert_eq!(
            store.records_read() - before,
            0,
            "the default /metrics reads no agent record"
        );
        assert!(
            text.contains(&format!("\ncertctl_agents_pending {agents}\n")),
            "{text}"
        );
        // A decided agent leaves the count.
        store
            .put_agent_decision(&certctl_store::AgentDecision {
                agent: "agent-3".into(),
                guid: None,
                verdict: AgentVerdict::Approved,
                actor: "test".into(),
                at: t,
                fingerprints: Vec::new(),
            })
            .expect("decide");
        let text = crate::fleet::reports::metrics_text(&store, false, t).expect("metrics");
        assert!(
            text.contains(&format!("\ncertctl_agents_pending {}\n", agents - 1)),
            "{text}"
        );
        // With --per-agent the agents' own series are there (and their records read).
        let text = crate::fleet::reports::metrics_text(&store, true, t).expect("metrics");
        assert!(text.contains("cn=\"agent-7\""), "{text}");
    }

    #[test]
    fn smtp_counters_are_prometheus_counters_from_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = certctl_store::Store::open(dir.path()).expect("open");
        let text = smtp_counter_series(&store).expect("series");
        assert!(
            text.contains("\ncertctl_smtp_delivery_failures_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\ncertctl_smtp_deliveries_total 0\n"),
            "{text}"
        );
        let failure = |recipient: &str, at| certctl_store::DeliveryState {
            recipient: recipient.into(),
            attempts: 1,
            first_failure: at,
            last_attempt: at,
            next_attempt: at + 60,
            last_error: "SMTP server 127.0.0.1:25 (none): connection refused".into(),
            pending: 3,
        };
        store
            .record_delivery_failure(&failure("a@example.org", 10))
            .expect("failure");
        store
            .record_delivery_failure(&failure("b@example.org", 10))
            .expect("failure");
        store
            .record_delivery("a@example.org", &[], 20)
            .expect("delivery");
        // A success clears the failing state but never lowers the failure counter.
        let text = smtp_counter_series(&store).expect("series");
        assert!(
            text.contains("# TYPE certctl_smtp_delivery_failures_total counter\ncertctl_smtp_delivery_failures_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE certctl_smtp_deliveries_total counter\ncertctl_smtp_deliveries_total 1\n"
            ),
            "{text}"
        );
        assert_eq!(store.smtp_state().expect("state").last_error, None);
    }
}
