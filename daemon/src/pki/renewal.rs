//! Automatic renewal (issue 20): certd renews by itself the certificates whose policy says
//! `renew = "auto"`.
//!
//! - **When**: a certificate is due `renew_before` before its expiry (a duration, or a
//!   fraction of its lifetime such as `"1/3"`, the default), plus a jitter of up to a tenth
//!   of `renew_before` derived from its fingerprint ([`jitter_secs`]): a fleet issued together
//!   spreads out, and a restart does not reshuffle it. Agents' ephemeral credentials are
//!   never renewed by certd (the agents renew them), nor CA certificates, revoked ones, or
//!   ones deployed nowhere any more.
//! - **How** ([`method_for`], [`RenewalMethod`]): a certificate issued by a managed CA is
//!   signed by it (an encrypted CA key needs its `[workflows.ca_passphrase_files]` entry,
//!   else a person must act); otherwise a policy's `scep = "NAME"` names the `[[scep]]`
//!   server that issues it; otherwise nobody can, and the reminder says a person must run
//!   `certctl regenerate --csr`.
//! - **What**: the same persisted, resumable regenerate workflow as `certctl regenerate
//!   --deploy` ([`crate::pki::workflow`]): new key, new certificate, the files replaced where the
//!   old one was, the reload hooks of `[[workflows.targets]]`, the endpoints probed. A SCEP
//!   renewal is the CSR workflow (`regenerate --csr`, an RSA key) completed with the
//!   certificate the SCEP server returns ([`scep_enroll`], then
//!   [`crate::pki::workflow::complete`]), so recording, deploy, reload and revoke are shared.
//! - **Bookkeeping** ([`certctl_store::RenewalRecord`], one per renewed certificate): why the
//!   renewal was started, its workflow, the failures (retried with backoff between
//!   `[renewal] retry_min` and `retry_max`). The record is written *before* the workflow is
//!   started and a pass adopts any unfinished workflow of the certificate, so a crash at any
//!   point never starts a second one: exactly one new certificate per due certificate.
//! - **Limits**: at most `[renewal] max_concurrent` automatic renewals are unfinished at once;
//!   the others wait for a later pass.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use certctl_store::{
    AuditEvent, Certificate, CredentialKind, Fingerprint, RenewalRecord, RevocationReason, Store,
    StoreError, UnixTime, Workflow, WorkflowStep,
};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RenewalConfig};
use crate::history::AuditAction;
use crate::pki::ca::{self, KeyKind, Secret};
use crate::pki::scep::renew::{EnrollError, ScepEnrollment, ScepOutcome};
use crate::pki::workflow::{
    self, RegenerateRequest, WorkflowError, WorkflowReport, WorkflowSecrets,
};
use crate::policy::{Policy, PolicySet, RenewBefore, RenewMode, DEFAULT_RENEW_BEFORE};

/// Errors of automatic renewal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenewalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("SCEP server `{server}`: {cause}")]
    Scep { server: String, cause: String },
    #[error("{name}: {why}")]
    Manual { name: String, why: String },
    #[error("cannot use the policies: {0}")]
    Policy(String),
    #[error("no certificate matches `{0}`")]
    NotFound(String),
}

impl From<EnrollError> for RenewalError {
    fn from(e: EnrollError) -> Self {
        match e {
            EnrollError::Scep { server, cause } => RenewalError::Scep { server, cause },
            EnrollError::Workflow(e) => RenewalError::Workflow(e),
            EnrollError::Ca(e) => RenewalError::Ca(e),
        }
    }
}

// ---- methods -------------------------------------------------------------------------------

/// How a certificate is renewed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum RenewalMethod {
    /// Signed by the managed CA `ca`.
    ManagedCa {
        /// The managed CA's name (`ca init NAME`), `ca` in JSON.
        ca: String,
    },
    /// Enrolled at the `[[scep]]` server `server`.
    Scep {
        /// The `name` of the `[[scep]]` block in certd.toml, `server` in JSON.
        server: String,
    },
    /// Nobody but a person can: `why`.
    Manual {
        /// A sentence saying why it cannot be automatic (an encrypted CA key without a
        /// passphrase file, no managed CA or SCEP server can issue it, ...), `why` in JSON.
        why: String,
    },
}

impl RenewalMethod {
    /// `managed-ca`, `scep` or `manual` (the JSON `method` and the metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            RenewalMethod::ManagedCa { .. } => "managed-ca",
            RenewalMethod::Scep { .. } => "scep",
            RenewalMethod::Manual { .. } => "manual",
        }
    }
}

impl fmt::Display for RenewalMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewalMethod::ManagedCa { ca } => write!(f, "managed CA `{ca}`"),
            RenewalMethod::Scep { server } => write!(f, "SCEP server `{server}`"),
            RenewalMethod::Manual { why } => write!(f, "manual ({why})"),
        }
    }
}

/// What a person must do when no managed CA or SCEP server can issue a certificate.
pub(crate) const MANUAL_WHY: &str =
    "no managed CA or SCEP server can issue it: run certctl regenerate --csr";

/// How `cert` is renewed: by its managed CA (whose encrypted key needs a passphrase file in
/// `ca_passphrase_files`), else by the policy's `[[scep]]` server, else by a person.
pub(crate) fn method_for(
    store: &Store,
    cert: &Certificate,
    policy: Option<&Policy>,
    ca_passphrase_files: &BTreeMap<String, PathBuf>,
) -> Result<RenewalMethod, RenewalError> {
    let managed = ca::managed_issuer(store, cert)?.map(|(m, _)| m);
    Ok(method_from(
        cert,
        managed.as_ref(),
        policy,
        ca_passphrase_files,
    ))
}

/// [`method_for`] with the managed CA that issued `cert` already found (`None`: none did).
pub(crate) fn method_from(
    cert: &Certificate,
    managed: Option<&certctl_store::ManagedCa>,
    policy: Option<&Policy>,
    ca_passphrase_files: &BTreeMap<String, PathBuf>,
) -> RenewalMethod {
    if let Some(managed) = managed {
        if managed.encrypted && !ca_passphrase_files.contains_key(&managed.name) {
            return RenewalMethod::Manual {
                why: format!(
                    "the key of the managed CA `{}` is encrypted and [workflows.ca_passphrase_files] names no passphrase file for it: add one to certd.toml, or run certctl regenerate {} with its passphrase",
                    managed.name,
                    cert.fingerprint().to_hex().get(..16).unwrap_or_default()
                ),
            };
        }
        return RenewalMethod::ManagedCa {
            ca: managed.name.clone(),
        };
    }
    if let Some(server) = policy.and_then(|p| p.scep.clone()) {
        return RenewalMethod::Scep { server };
    }
    RenewalMethod::Manual {
        why: MANUAL_WHY.into(),
    }
}

/// What `policy explain` says about the renewal of a certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewalExplained {
    /// `auto` or `remind`.
    pub renew: RenewMode,
    /// When certd renews it (for `auto`; also shown for `remind`).
    #[serde(flatten)]
    pub timing: RenewalTiming,
    /// How (`null` for `remind` and for certificates certd never renews).
    pub method: Option<RenewalMethod>,
    /// Why certd never renews it whatever the policy (a CA certificate, an agent's
    /// ephemeral credential, revoked, deployed nowhere).
    pub never: Option<String>,
    /// One line for people.
    pub text: String,
}

/// Whether, when and how `cert` is renewed under `policy` (`managed`: the managed CA that
/// issued it, if any).
pub fn explain(
    cert: &Certificate,
    policy: &Policy,
    managed: Option<&certctl_store::ManagedCa>,
    ca_passphrase_files: &BTreeMap<String, PathBuf>,
) -> RenewalExplained {
    let timing = timing(policy, cert);
    let never = never_renewed(cert).map(str::to_string);
    let method = (policy.renew == RenewMode::Auto && never.is_none())
        .then(|| method_from(cert, managed, Some(policy), ca_passphrase_files));
    let when = format!(
        "from {} (renew_before {} + jitter {}s)",
        certctl_store::rfc3339(timing.due_at),
        timing.renew_before,
        timing.jitter_secs
    );
    let text = match (&policy.renew, &never, &method) {
        (RenewMode::Remind, _, _) => {
            "remind: reminders only (renew = \"auto\" lets certd renew it)".to_string()
        }
        (RenewMode::Auto, Some(why), _) => {
            format!("auto, but certd never renews it: {why}")
        }
        (RenewMode::Auto, None, Some(RenewalMethod::Manual { why })) => {
            format!("auto, but a person must: {why} (reminders say so)")
        }
        (RenewMode::Auto, None, Some(m)) => format!("auto {when}, by {m}"),
        (RenewMode::Auto, None, None) => format!("auto {when}"),
    };
    RenewalExplained {
        renew: policy.renew,
        timing,
        method,
        never,
        text,
    }
}

/// The key type of a new key for `method`: SCEP servers (NDES, most MDMs) take RSA only, so
/// an EC certificate renewed by SCEP gets an RSA 2048 key (or stronger if the policy says).
pub(crate) fn key_for(
    method: &RenewalMethod,
    old: &Certificate,
    policy: Option<&Policy>,
) -> KeyKind {
    let same = KeyKind::like(&old.facts.key);
    let kind = match method {
        RenewalMethod::Scep { .. } if !same.is_rsa() => KeyKind::Rsa2048,
        _ => same,
    };
    match policy {
        Some(p) => workflow::stronger_if_required(kind, p),
        None => kind,
    }
}

// ---- when ----------------------------------------------------------------------------------

/// When a certificate is due for automatic renewal under a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalTiming {
    /// `renew_before` as written (or the default, `1/3`).
    pub renew_before: String,
    /// `renew_before` in seconds for this certificate.
    pub renew_before_secs: i64,
    /// The certificate's own delay, from its fingerprint (at most a tenth of
    /// `renew_before_secs`).
    pub jitter_secs: i64,
    /// From when it is due: not_after − renew_before + jitter.
    pub due_at: UnixTime,
}

/// The jitter of a certificate: a number in `0..window/10` taken from its fingerprint, so
/// it is the same at every pass and after every restart.
pub(crate) fn jitter_secs(fp: &Fingerprint, renew_before_secs: i64) -> i64 {
    let window = renew_before_secs.max(0) / 10;
    if window == 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&fp.0[..8]);
    (u64::from_be_bytes(b) % window.unsigned_abs()) as i64
}

/// When `cert` is due under `policy` (whatever its `renew`).
pub(crate) fn timing(policy: &Policy, cert: &Certificate) -> RenewalTiming {
    let before = policy.renew_before.unwrap_or(DEFAULT_RENEW_BEFORE);
    let secs = before.secs(cert.facts.validity_secs());
    let jitter = jitter_secs(&cert.fingerprint(), secs);
    RenewalTiming {
        renew_before: before.to_string(),
        renew_before_secs: secs,
        jitter_secs: jitter,
        due_at: cert.facts.not_after - secs + jitter,
    }
}

/// Why certd never renews `cert` itself whatever its policy, if so.
pub(crate) fn never_renewed(cert: &Certificate) -> Option<&'static str> {
    if cert.facts.is_ca {
        return Some("a CA certificate");
    }
    if cert.credential_kind() == Some(CredentialKind::Ephemeral) {
        return Some("an agent's ephemeral credential (the agent renews it)");
    }
    if cert.revocation.is_some() {
        return Some("revoked");
    }
    if cert.current_sources().next().is_none() {
        return Some("deployed nowhere any more (no current file or endpoint holds it)");
    }
    None
}

// ---- SCEP: the one place a SCEP renewal is executed ---------------------------------------

/// Completes a SCEP renewal's CSR workflow (waiting at `awaiting-certificate`): enrolls its
/// CSR ([`crate::pki::scep::renew::enroll`]) and, once issued, completes the workflow with the certificate
/// ([`crate::pki::workflow::complete`]: checked against the key and names, recorded,
/// deployed, reloaded). `Ok(None)`: the server answered PENDING.
///
/// The exchange with the SCEP server runs without certd's writer lock (it may take minutes
/// while a request is pending); `lock` is taken to complete the workflow.
pub(crate) fn renew_by_scep<G>(
    store: &Store,
    config: &Config,
    server: &str,
    workflow: &Workflow,
    secrets: &WorkflowSecrets,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<Option<WorkflowReport>, RenewalError> {
    let dir = PathBuf::from(&workflow.dir);
    let old = store
        .get(&workflow.old)?
        .ok_or_else(|| RenewalError::NotFound(workflow.old.to_hex()))?;
    let enrollment = ScepEnrollment {
        config,
        server,
        workflow,
        old: &old,
        secrets,
    };
    match crate::pki::scep::renew::enroll(&enrollment)? {
        ScepOutcome::Pending { detail } => {
            tracing::info!(workflow = workflow.id, server, %detail, "SCEP request pending");
            Ok(None)
        }
        ScepOutcome::Issued(ders) => {
            let mut pem = String::new();
            for der in &ders {
                pem.push_str(&ca::der_to_pem(der)?);
            }
            let received = dir.join("scep-response.pem");
            ca::write_atomic(&received, pem.as_bytes(), ca::FileMode::Private)?;
            let _writer = lock();
            Ok(Some(crate::pki::workflow::complete(
                store,
                workflow.id,
                &received,
                secrets,
                now,
            )?))
        }
    }
}

// ---- secrets -------------------------------------------------------------------------------

/// The secrets of a renewal's workflow, from `[workflows]`: the passphrase file of its CA
/// and the PFX password file. A file that cannot be used is logged; the workflow then fails
/// as without it.
pub(crate) fn secrets_for(config: &Config, ca_name: &str) -> WorkflowSecrets {
    let read = |what: &str, file: &Path| match Secret::from_private_file(file) {
        Ok(secret) => Some(secret),
        Err(e) => {
            tracing::warn!(error = %e, "cannot use the {what} file");
            None
        }
    };
    WorkflowSecrets {
        passphrase: config
            .workflows
            .ca_passphrase_files
            .get(ca_name)
            .and_then(|f| read("CA passphrase", f)),
        pfx_password: config
            .workflows
            .pfx_password_file
            .as_deref()
            .and_then(|f| read("PFX password", f)),
    }
}

// ---- the pass ------------------------------------------------------------------------------

/// One certificate certd renews (or would renew) automatically.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DueRenewal {
    /// The certificate to renew (SHA-256, `fingerprint` in `renew --due --json`).
    pub fingerprint: Fingerprint,
    /// Its display name (subject CN, else the first SAN, else the subject DN), `name` in JSON.
    pub name: String,
    /// When it expires (Unix seconds; `renew --json` adds `not_after_at`, RFC 3339).
    pub not_after: UnixTime,
    /// The name of the policy that renews it automatically; empty when none applies (a
    /// `renew ID` by hand).
    pub policy: String,
    /// How it is renewed: `method` (+ `ca`, `server` or `why`) flattened into the JSON.
    #[serde(flatten)]
    pub method: RenewalMethod,
    /// When it is due: `renew_before`, `renew_before_secs`, `jitter_secs`, `due_at`
    /// flattened into the JSON.
    #[serde(flatten)]
    pub timing: RenewalTiming,
    /// `auto-renewal: expires D, renew_before X`.
    pub reason: String,
    /// `due` (nothing started yet), `open` (its workflow is unfinished), `backoff` (failed,
    /// retried from `next_attempt`), `manual` (a person must act).
    pub state: String,
    /// The id of its unfinished renewal workflow (as `workflows` lists it); `None` when no
    /// workflow of it is open.
    pub workflow: Option<u64>,
    /// Failed attempts of its unfinished renewal since the last success; 0 when none failed
    /// or no renewal is under way.
    pub failures: u32,
    /// The cause of the last failed attempt of the unfinished renewal; `None` when none
    /// failed or no renewal is under way.
    pub last_error: Option<String>,
    /// No automatic attempt before this time (Unix seconds; the backoff after a failure);
    /// `None` when no renewal of it is under way.
    pub next_attempt: Option<UnixTime>,
}

/// The reason recorded for a renewal.
pub(crate) fn reason(cert: &Certificate, timing: &RenewalTiming) -> String {
    format!(
        "auto-renewal: expires {}, renew_before {}",
        certctl_store::rfc3339(cert.facts.not_after),
        timing.renew_before
    )
}

/// The workflows not yet done, by the certificate they replace.
fn open_workflows(store: &Store) -> Result<BTreeMap<Fingerprint, Workflow>, StoreError> {
    Ok(store
        .workflows()?
        .into_iter()
        .filter(|w| w.step != WorkflowStep::Done)
        .map(|w| (w.old, w))
        .collect())
}

/// Policies whose `scep = "NAME"` names no `[[scep]]` block of the configuration, each as
/// `FILE:LINE: ...` (for `certd config check`: a typo would otherwise surface only when a
/// renewal fails).
pub fn unknown_scep_servers(config: &Config, policies: &PolicySet) -> Vec<String> {
    let known: Vec<&str> = config.scep.iter().map(|s| s.name.as_str()).collect();
    policies
        .policies
        .iter()
        .filter_map(|p| {
            let name = p.scep.as_deref()?;
            (!known.contains(&name)).then(|| {
                format!(
                    "{}:{}: policy `{}` names SCEP server `{name}`, which has no [[scep]] block ({})",
                    p.file.display(),
                    p.line,
                    p.name,
                    if known.is_empty() {
                        "the configuration defines none".to_string()
                    } else {
                        format!("defined: {}", known.join(", "))
                    }
                )
            })
        })
        .collect()
}

/// A certificate an automatic renewal made is not due again before a third of its lifetime
/// has passed, whatever `renew_before` says: with a `renew_before` longer than the lifetime
/// (60 days on 30-day certificates) it would be due the moment it is issued, and each
/// renewal would make another at the next pass.
pub(crate) fn not_again_at_once(
    mut timing: RenewalTiming,
    cert: &Certificate,
    made_by_renewal: bool,
) -> RenewalTiming {
    let earliest = cert.facts.not_before + cert.facts.validity_secs().max(0) / 3;
    if made_by_renewal && timing.due_at < earliest {
        timing.due_at = earliest;
        timing.renew_before = format!(
            "{} (a renewed certificate: not before a third of its lifetime)",
            timing.renew_before
        );
    }
    timing
}

/// The record of a renewal started at `now` (why, by which method, its workflow if any).
fn first_record(d: &DueRenewal, workflow: Option<u64>, now: UnixTime) -> RenewalRecord {
    RenewalRecord {
        fingerprint: d.fingerprint,
        method: d.method.name().into(),
        reason: d.reason.clone(),
        workflow,
        started: now,
        failures: 0,
        first_failure: None,
        last_attempt: now,
        next_attempt: now,
        last_error: None,
        finished: None,
        new: None,
    }
}

/// The certificates finished workflows made.
fn renewal_products(store: &Store) -> Result<std::collections::BTreeSet<Fingerprint>, StoreError> {
    Ok(store
        .workflows()?
        .into_iter()
        .filter(|w| w.step == WorkflowStep::Done)
        .filter_map(|w| w.new)
        .collect())
}

/// The certificates already replaced by a finished workflow.
fn renewed(store: &Store) -> Result<std::collections::BTreeSet<Fingerprint>, StoreError> {
    Ok(store
        .workflows()?
        .into_iter()
        .filter(|w| w.step == WorkflowStep::Done)
        .map(|w| w.old)
        .collect())
}

/// Every certificate whose policy says `renew = "auto"` and that is due at `now` (or
/// `only`, whatever its time, for `certctl renew ID`), with its method and state.
pub(crate) fn due(
    store: &Store,
    policies: &PolicySet,
    config: &Config,
    now: UnixTime,
) -> Result<Vec<DueRenewal>, RenewalError> {
    // The default (`renew = "remind"` everywhere) costs nothing: no record is read.
    if !policies.policies.iter().any(|p| p.renew == RenewMode::Auto) {
        return Ok(Vec::new());
    }
    let open = open_workflows(store)?;
    let done = renewed(store)?;
    let products = renewal_products(store)?;
    let mut out = Vec::new();
    for cert in candidates(store, policies, now)? {
        let cert = cert?;
        // An unfinished renewal is continued even though its deploy step already moved the
        // files to the new certificate.
        let unfinished = open.contains_key(&cert.fingerprint());
        if (!unfinished && never_renewed(&cert).is_some()) || done.contains(&cert.fingerprint()) {
            continue;
        }
        let Some(policy) = policies.select(&cert) else {
            continue;
        };
        if policy.renew != RenewMode::Auto {
            continue;
        }
        let timing = not_again_at_once(
            timing(policy, &cert),
            &cert,
            products.contains(&cert.fingerprint()),
        );
        if timing.due_at > now {
            continue;
        }
        out.push(describe(
            store,
            &cert,
            Some(policy),
            timing,
            config,
            &open,
            now,
        )?);
    }
    out.sort_by_key(|d| (d.timing.due_at, d.fingerprint));
    Ok(out)
}

/// Records read per slice of the expiry index's hits ([`candidates`]).
const CANDIDATE_SLICE: usize = 4096;

/// The certificates a pass must judge: those of the roles an auto policy names (a policy
/// always names its roles), expiring no later than the longest `renew_before` of the auto
/// policies from `now` (a certificate is due at `not_after - renew_before + jitter`, and
/// the jitter and the renewed-certificate rule only make it later). A `renew_before` that
/// is a fraction of the lifetime bounds nothing by expiry alone: then every certificate of
/// those roles. Read from the role-and-expiry index a slice at a time, so an agent fleet's
/// credentials are never read unless a policy renews agents.
fn candidates<'s>(
    store: &'s Store,
    policies: &PolicySet,
    now: UnixTime,
) -> Result<impl Iterator<Item = Result<Certificate, StoreError>> + 's, StoreError> {
    let auto: Vec<&Policy> = policies
        .policies
        .iter()
        .filter(|p| p.renew == RenewMode::Auto)
        .collect();
    let mut roles: Vec<certctl_store::Role> = auto.iter().flat_map(|p| p.roles.clone()).collect();
    roles.sort();
    roles.dedup();
    let horizon = auto.iter().try_fold(0i64, |longest, p| {
        match p.renew_before.unwrap_or(DEFAULT_RENEW_BEFORE) {
            RenewBefore::Duration(d) => Some(longest.max(d.as_secs())),
            RenewBefore::Fraction { .. } => None,
        }
    });
    let before = horizon.map_or(UnixTime::MAX, |h| now.saturating_add(h).saturating_add(1));
    let mut slices = Vec::new();
    for role in roles {
        let hits = store.expiry_hits(UnixTime::MIN, before, Some(role))?;
        for slice in hits.chunks(CANDIDATE_SLICE) {
            slices.push((role, slice.to_vec()));
        }
    }
    Ok(slices.into_iter().flat_map(move |(role, slice)| {
        match store.records_of_hits(&slice, Some(role)) {
            Ok(certs) => certs.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }
    }))
}

fn describe(
    store: &Store,
    cert: &Certificate,
    policy: Option<&Policy>,
    timing: RenewalTiming,
    config: &Config,
    open: &BTreeMap<Fingerprint, Workflow>,
    now: UnixTime,
) -> Result<DueRenewal, RenewalError> {
    let fp = cert.fingerprint();
    let method = method_for(store, cert, policy, &config.workflows.ca_passphrase_files)?;
    let record = store.renewal(&fp)?.filter(|r| r.finished.is_none());
    let workflow = open.get(&fp).map(|w| w.id);
    let state = match (&method, &record, workflow) {
        (RenewalMethod::Manual { .. }, _, None) => "manual",
        (_, Some(r), _) if r.failures > 0 && r.next_attempt > now => "backoff",
        (_, _, Some(_)) => "open",
        _ => "due",
    };
    Ok(DueRenewal {
        fingerprint: fp,
        name: cert.facts.display_name().to_string(),
        not_after: cert.facts.not_after,
        policy: policy.map(|p| p.name.clone()).unwrap_or_default(),
        reason: record
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| reason(cert, &timing)),
        method,
        timing,
        state: state.into(),
        workflow,
        failures: record.as_ref().map_or(0, |r| r.failures),
        last_error: record.as_ref().and_then(|r| r.last_error.clone()),
        next_attempt: record.as_ref().map(|r| r.next_attempt),
    })
}

/// How one renewal of a pass went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewalOutcome {
    /// The certificate being renewed (SHA-256).
    pub fingerprint: Fingerprint,
    /// Its display name (subject CN, else the first SAN, else the subject DN).
    pub name: String,
    /// `managed-ca`, `scep` or `manual` ([`RenewalMethod::name`]).
    pub method: String,
    /// The id of the certificate's renewal workflow (started or continued by this pass, or
    /// the open one of a renewal in backoff); `None` when there is none (manual, waiting).
    pub workflow: Option<u64>,
    /// `renewed`, `pending`, `failed`, `waiting` (the `max_concurrent` limit), `manual`,
    /// `backoff`.
    pub outcome: String,
    /// A sentence for the admin: what was done, or why not (the error of a failure).
    pub detail: String,
    /// The new certificate, once issued.
    pub new: Option<Fingerprint>,
}

/// What a renewal pass did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RenewalPassReport {
    /// One outcome per due certificate the pass looked at (`renewals` in `renew --json`).
    pub renewals: Vec<RenewalOutcome>,
    /// Old certificates revoked as `superseded` after `revoke_superseded_after`.
    #[serde(default)]
    pub revoked_superseded: Vec<Fingerprint>,
}

impl RenewalPassReport {
    /// How many renewals of the pass failed.
    pub fn failed(&self) -> usize {
        self.renewals
            .iter()
            .filter(|r| r.outcome == "failed")
            .count()
    }

    /// One line for `status` (the job's last outcome).
    pub fn summary(&self) -> String {
        let count = |o: &str| self.renewals.iter().filter(|r| r.outcome == o).count();
        let failed = self.failed();
        let line = format!(
            "{} renewed, {} failed, {} pending, {} waiting, {} manual",
            count("renewed"),
            failed,
            count("pending"),
            count("waiting"),
            count("manual")
        );
        if failed > 0 {
            format!("failed: {line}")
        } else {
            format!("ok: {line}")
        }
    }
}

/// The backoff after `failures` failed attempts: `retry_min` doubled per failure, at most
/// `retry_max`.
pub(crate) fn backoff_secs(renewal: &RenewalConfig, failures: u32) -> i64 {
    let min = renewal.retry_min.as_secs().max(1);
    let max = renewal.retry_max.as_secs().max(min);
    let factor = 1u64 << failures.saturating_sub(1).min(20);
    i64::try_from(min.saturating_mul(factor).min(max)).unwrap_or(i64::MAX)
}

/// A renewal pass: every due certificate gets its renewal started (or its unfinished one
/// continued), at most `[renewal] max_concurrent` unfinished at once. `only`: just this
/// certificate, due or not (`certctl renew ID`). Each workflow runs under `lock` (the
/// store's writer lock); the endpoints are probed without it.
pub(crate) fn run_pass<G>(
    store: &Store,
    policies: &PolicySet,
    config: &Config,
    only: Option<&Certificate>,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<RenewalPassReport, RenewalError> {
    let mut report = RenewalPassReport::default();
    {
        let _writer = lock();
        reconcile(store, now)?;
    }
    let due = match only {
        Some(cert) => {
            let open = open_workflows(store)?;
            let policy = policies.select(cert);
            let timing = match policy {
                Some(p) => timing(p, cert),
                None => RenewalTiming {
                    renew_before: "-".into(),
                    renew_before_secs: 0,
                    jitter_secs: 0,
                    due_at: now,
                },
            };
            let mut d = describe(store, cert, policy, timing, config, &open, now)?;
            if d.state == "backoff" {
                d.state = "open".into();
            }
            d.reason = format!("certctl renew by {}", crate::history::actor());
            vec![d]
        }
        None => due(store, policies, config, now)?,
    };
    let mut unfinished = {
        let open = open_workflows(store)?;
        store
            .renewals()?
            .iter()
            .filter(|r| {
                r.finished.is_none()
                    && r.workflow
                        .is_some_and(|id| open.values().any(|w| w.id == id))
            })
            .count()
    };
    for d in due {
        let outcome = match (&d.method, d.state.as_str()) {
            (RenewalMethod::Manual { why }, "manual") => {
                let _writer = lock();
                record_manual(store, &d, why, now)?;
                RenewalOutcome {
                    fingerprint: d.fingerprint,
                    name: d.name.clone(),
                    method: d.method.name().into(),
                    workflow: None,
                    outcome: "manual".into(),
                    detail: why.clone(),
                    new: None,
                }
            }
            (_, "backoff") => RenewalOutcome {
                fingerprint: d.fingerprint,
                name: d.name.clone(),
                method: d.method.name().into(),
                workflow: d.workflow,
                outcome: "backoff".into(),
                detail: format!(
                    "failed {} times; next attempt from {}",
                    d.failures,
                    d.next_attempt
                        .map(certctl_store::rfc3339)
                        .unwrap_or_default()
                ),
                new: None,
            },
            (_, "due") if unfinished >= config.renewal.max_concurrent => RenewalOutcome {
                fingerprint: d.fingerprint,
                name: d.name.clone(),
                method: d.method.name().into(),
                workflow: None,
                outcome: "waiting".into(),
                detail: format!(
                    "{unfinished} renewals unfinished ([renewal] max_concurrent = {})",
                    config.renewal.max_concurrent
                ),
                new: None,
            },
            _ => {
                let started_new = d.workflow.is_none();
                if started_new {
                    unfinished += 1;
                }
                let outcome = renew_one(store, config, &d, now, lock)?;
                if outcome.outcome == "renewed" && started_new {
                    unfinished -= 1;
                } else if outcome.outcome == "renewed" {
                    unfinished = unfinished.saturating_sub(1);
                }
                outcome
            }
        };
        report.renewals.push(outcome);
    }
    if only.is_none() {
        report.revoked_superseded = revoke_superseded(store, config, now, lock)?;
    }
    Ok(report)
}

/// Remembers that a person must renew `d` (and why), for the reminders and `status`.
fn record_manual(
    store: &Store,
    d: &DueRenewal,
    why: &str,
    now: UnixTime,
) -> Result<(), RenewalError> {
    let existing = store.renewal(&d.fingerprint)?;
    if existing.as_ref().is_some_and(|r| {
        r.finished.is_none() && r.method == "manual" && r.last_error.as_deref() == Some(why)
    }) {
        return Ok(());
    }
    store.put_renewal(&RenewalRecord {
        fingerprint: d.fingerprint,
        method: "manual".into(),
        reason: d.reason.clone(),
        workflow: None,
        started: now,
        failures: 0,
        first_failure: None,
        last_attempt: now,
        next_attempt: now,
        last_error: Some(why.to_string()),
        finished: None,
        new: None,
    })?;
    Ok(())
}

/// Marks finished the renewals whose workflow a crash let finish elsewhere (certd's
/// start-up resume, `certctl workflows resume`) before the record said so.
fn reconcile(store: &Store, now: UnixTime) -> Result<(), RenewalError> {
    let done: BTreeMap<Fingerprint, Workflow> = store
        .workflows()?
        .into_iter()
        .filter(|w| w.step == WorkflowStep::Done)
        .map(|w| (w.old, w))
        .collect();
    for mut record in store.renewals()? {
        if record.finished.is_some() {
            continue;
        }
        let Some(wf) = done.get(&record.fingerprint) else {
            continue;
        };
        if record.workflow.is_some_and(|id| id != wf.id) {
            continue;
        }
        record.workflow = Some(wf.id);
        record.finished = Some(now);
        record.new = wf.new;
        record.failures = 0;
        record.last_error = None;
        store.put_renewal(&record)?;
        store.count_renewal(&record.method, "success")?;
    }
    Ok(())
}

/// Starts or continues the renewal of one certificate and records how it went.
fn renew_one<G>(
    store: &Store,
    config: &Config,
    d: &DueRenewal,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<RenewalOutcome, RenewalError> {
    let ca_name = match &d.method {
        RenewalMethod::ManagedCa { ca } => ca.clone(),
        _ => String::new(),
    };
    let secrets = secrets_for(config, &ca_name);
    let attempted = {
        let _writer = lock();
        attempt(store, config, d, &secrets, now)
    };
    let attempt = match attempted {
        Ok(Attempted::Report(report)) => Ok(Some(*report)),
        Ok(Attempted::Scep { server, workflow }) => {
            renew_by_scep(store, config, &server, &workflow, &secrets, now, lock)
        }
        Err(e) => Err(e),
    };
    let mut record = store
        .renewal(&d.fingerprint)?
        .unwrap_or_else(|| first_record(d, None, now));
    record.last_attempt = now;
    let mut outcome = RenewalOutcome {
        fingerprint: d.fingerprint,
        name: d.name.clone(),
        method: d.method.name().into(),
        workflow: record.workflow,
        outcome: String::new(),
        detail: String::new(),
        new: None,
    };
    match attempt {
        Ok(Some(mut wf_report)) => {
            workflow::probe_endpoints(store, &mut wf_report, now, lock)?;
            let wf = &wf_report.workflow;
            record.workflow = Some(wf.id);
            outcome.workflow = Some(wf.id);
            if wf.step == WorkflowStep::Done {
                record.finished = Some(now);
                record.new = wf.new;
                record.failures = 0;
                record.last_error = None;
                outcome.outcome = "renewed".into();
                outcome.new = wf.new;
                outcome.detail = match wf.new {
                    Some(new) => format!("new certificate {new}"),
                    None => "done".into(),
                };
                store.count_renewal(d.method.name(), "success")?;
            } else {
                record.next_attempt = now + backoff_secs(&config.renewal, 1);
                outcome.outcome = "pending".into();
                outcome.detail = format!("workflow {} at step {}", wf.id, wf.step);
            }
        }
        Ok(None) => {
            record.next_attempt = now + backoff_secs(&config.renewal, 1);
            outcome.outcome = "pending".into();
            outcome.detail = "the CA has not issued the certificate yet".into();
        }
        Err(e) => {
            let cause = e.to_string();
            record.failures += 1;
            record.first_failure.get_or_insert(now);
            record.last_error = Some(cause.clone());
            record.next_attempt = now + backoff_secs(&config.renewal, record.failures);
            if let Some(wf) = open_workflows(store)?.get(&d.fingerprint) {
                record.workflow = Some(wf.id);
                outcome.workflow = Some(wf.id);
            }
            outcome.outcome = "failed".into();
            outcome.detail = cause.clone();
            store.count_renewal(d.method.name(), "failure")?;
            tracing::error!(certificate = %d.name, fingerprint = %d.fingerprint, failures = record.failures, error = %cause, "automatic renewal failed; retried with backoff");
            let _writer = lock();
            store.record_audit(&AuditEvent {
                at: now,
                fingerprint: Some(d.fingerprint),
                actor: crate::history::actor(),
                action: AuditAction::RenewalFailed.into(),
                detail: format!("attempt {} ({}): {cause}", record.failures, d.method.name()),
            })?;
        }
    }
    {
        let _writer = lock();
        store.put_renewal(&record)?;
    }
    Ok(outcome)
}

/// One attempt, under the writer lock: records the renewal before anything is started,
/// then continues the certificate's unfinished workflow or starts one. A SCEP renewal's
/// workflow waiting for its certificate is handed back ([`Attempted::Scep`]).
fn attempt(
    store: &Store,
    config: &Config,
    d: &DueRenewal,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<Attempted, RenewalError> {
    if let RenewalMethod::Manual { why } = &d.method {
        if d.workflow.is_none() {
            return Err(RenewalError::Manual {
                name: d.name.clone(),
                why: why.clone(),
            });
        }
    }
    // Adopt an unfinished workflow of the certificate (started by a pass a crash
    // interrupted, or by a person): never a second one.
    let open = open_workflows(store)?.remove(&d.fingerprint);
    let existing = store.renewal(&d.fingerprint)?;
    if existing
        .as_ref()
        .is_none_or(|r| r.finished.is_some() || r.method != d.method.name())
    {
        store.put_renewal(&first_record(d, open.as_ref().map(|w| w.id), now))?;
    }
    crate::crash_point::here("renewal-recorded");
    let report = match open {
        Some(wf) if wf.step == WorkflowStep::AwaitingCertificate => match &d.method {
            RenewalMethod::Scep { server } => {
                return Ok(Attempted::Scep {
                    server: server.clone(),
                    workflow: Box::new(wf),
                })
            }
            _ => workflow::resume(store, wf.id, secrets, now)?,
        },
        Some(wf) => workflow::resume(store, wf.id, secrets, now)?,
        None => {
            let report = start(store, config, d, secrets, now)?;
            if let Some(mut record) = store.renewal(&d.fingerprint)? {
                record.workflow = Some(report.workflow.id);
                store.put_renewal(&record)?;
            }
            store.record_audit(&AuditEvent {
                at: now,
                fingerprint: Some(d.fingerprint),
                actor: crate::history::actor(),
                action: AuditAction::RenewalStarted.into(),
                detail: format!(
                    "workflow {} by {}: {}",
                    report.workflow.id, d.method, d.reason
                ),
            })?;
            if let (RenewalMethod::Scep { server }, WorkflowStep::AwaitingCertificate) =
                (&d.method, report.workflow.step)
            {
                return Ok(Attempted::Scep {
                    server: server.clone(),
                    workflow: Box::new(report.workflow),
                });
            }
            report
        }
    };
    Ok(Attempted::Report(Box::new(report)))
}

/// What [`attempt`] did under the writer lock: a workflow report, or a SCEP renewal whose
/// exchange with the server follows without the lock ([`renew_by_scep`]).
enum Attempted {
    Report(Box<WorkflowReport>),
    Scep {
        server: String,
        workflow: Box<Workflow>,
    },
}

/// Starts the regenerate workflow of a renewal (deploy on; for SCEP the CSR workflow with
/// an RSA key, the CSR kept in the workflow folder).
fn start(
    store: &Store,
    config: &Config,
    d: &DueRenewal,
    secrets: &WorkflowSecrets,
    now: UnixTime,
) -> Result<WorkflowReport, RenewalError> {
    let old = store
        .get(&d.fingerprint)?
        .ok_or_else(|| RenewalError::NotFound(d.fingerprint.to_hex()))?;
    let policies = config.reminders.as_ref().map(|r| r.policies.clone());
    let policy_set = match &policies {
        Some(dir) => {
            Some(crate::policy::load_dir(dir).map_err(|e| RenewalError::Policy(e.to_string()))?)
        }
        None => None,
    };
    let policy = policy_set.as_ref().and_then(|s| s.select(&old));
    let csr = match &d.method {
        RenewalMethod::Scep { .. } => Some(
            store
                .path()
                .join("renewal")
                .join(format!("{}.csr", d.fingerprint.to_hex())),
        ),
        _ => None,
    };
    if let Some(csr) = &csr {
        if let Some(parent) = csr.parent() {
            ca::private_dir(parent)?;
        }
    }
    let request = RegenerateRequest {
        id: d.fingerprint.to_hex(),
        revoke_old: config.renewal.revoke_superseded_after == Some(std::time::Duration::ZERO),
        deploy: true,
        key: Some(key_for(&d.method, &old, policy)),
        policies: None,
        secrets: secrets.clone(),
        csr,
        reload: config.workflows.targets.clone(),
    };
    Ok(workflow::regenerate(store, &request, now)?)
}

/// Revokes (as `superseded`) the certificates an automatic renewal replaced more than
/// `[renewal] revoke_superseded_after` ago.
fn revoke_superseded<G>(
    store: &Store,
    config: &Config,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<Vec<Fingerprint>, RenewalError> {
    let Some(grace) = config.renewal.revoke_superseded_after else {
        return Ok(Vec::new());
    };
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for record in store.renewals()? {
        let Some(finished) = record.finished else {
            continue;
        };
        if finished.saturating_add(grace) > now {
            continue;
        }
        let _writer = lock();
        let Some(old) = store.get(&record.fingerprint)? else {
            continue;
        };
        if old.revocation.is_some() {
            continue;
        }
        let ca_name = ca::managed_issuer(store, &old)?
            .map(|(m, _)| m.name)
            .unwrap_or_default();
        let secrets = secrets_for(config, &ca_name);
        match crate::pki::revoke::revoke_one(
            store,
            &record.fingerprint,
            RevocationReason::Superseded,
            secrets.passphrase.as_ref(),
            now,
        ) {
            Ok(_) => out.push(record.fingerprint),
            Err(e) => {
                tracing::warn!(fingerprint = %record.fingerprint, error = %e, "cannot revoke the superseded certificate")
            }
        }
    }
    Ok(out)
}

// ---- what others show ----------------------------------------------------------------------

/// A renewal that keeps failing: what `check`, `/metrics` and the reminders say.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailingRenewal {
    /// The certificate whose renewal fails (SHA-256).
    pub fingerprint: Fingerprint,
    /// `managed-ca`, `scep` or `manual`, as the renewal record says.
    pub method: String,
    /// Failed attempts since the last success (at least 1).
    pub failures: u32,
    /// The first failure of this run of failures (Unix seconds).
    pub since: UnixTime,
    /// The cause of the last failed attempt (empty if none was recorded).
    pub last_error: String,
    /// The id of the renewal's workflow, if one was started.
    pub workflow: Option<u64>,
}

impl FailingRenewal {
    /// "automatic renewal failed 3 times since D: CAUSE".
    pub fn sentence(&self) -> String {
        format!(
            "automatic renewal failed {} time{} since {}: {}",
            self.failures,
            if self.failures == 1 { "" } else { "s" },
            certctl_store::rfc3339(self.since),
            self.last_error
        )
    }
}

/// The renewals whose last attempt failed, by certificate.
pub(crate) fn failing(store: &Store) -> Result<BTreeMap<Fingerprint, FailingRenewal>, StoreError> {
    Ok(store
        .renewals()?
        .into_iter()
        .filter(|r| r.finished.is_none() && r.failures > 0)
        .map(|r| {
            (
                r.fingerprint,
                FailingRenewal {
                    fingerprint: r.fingerprint,
                    method: r.method.clone(),
                    failures: r.failures,
                    since: r.first_failure.unwrap_or(r.last_attempt),
                    last_error: r.last_error.clone().unwrap_or_default(),
                    workflow: r.workflow,
                },
            )
        })
        .collect())
}

/// What the reminders say about automatic renewals, by certificate: "automatic renewal
/// failed N times since D: CAUSE" for a failing one, "a person must act" and why for one no
/// managed CA or SCEP server can do.
pub(crate) fn reminder_notes(store: &Store) -> Result<BTreeMap<Fingerprint, String>, StoreError> {
    let mut out = BTreeMap::new();
    for r in store.renewals()? {
        if r.finished.is_some() {
            continue;
        }
        if r.failures > 0 {
            let f = FailingRenewal {
                fingerprint: r.fingerprint,
                method: r.method.clone(),
                failures: r.failures,
                since: r.first_failure.unwrap_or(r.last_attempt),
                last_error: r.last_error.clone().unwrap_or_default(),
                workflow: r.workflow,
            };
            out.insert(r.fingerprint, f.sentence());
        } else if r.method == "manual" {
            out.insert(
                r.fingerprint,
                format!(
                    "automatic renewal is on (renew = \"auto\"), but a person must act: {}",
                    r.last_error.as_deref().unwrap_or(MANUAL_WHY)
                ),
            );
        }
    }
    Ok(out)
}

/// For a certificate whose policy says `renew = "auto"` but that neither a managed CA nor a
/// `[[scep]]` server can renew: the reminder's note saying a person must act (known without
/// a renewal pass having run). `None` otherwise.
pub(crate) fn nobody_can_renew(
    store: &Store,
    cert: &Certificate,
    policy: &Policy,
) -> Result<Option<String>, RenewalError> {
    if policy.renew != RenewMode::Auto || policy.scep.is_some() || never_renewed(cert).is_some() {
        return Ok(None);
    }
    if ca::managed_issuer(store, cert)?.is_some() {
        return Ok(None);
    }
    Ok(Some(format!(
        "automatic renewal is on (renew = \"auto\"), but a person must act: {MANUAL_WHY}"
    )))
}

/// The renewal series of `/metrics` and `certctl metrics` (kept in the store, so they
/// survive restarts and are the same with and without certd):
/// `certctl_renewals_total{method,outcome}` (automatic renewals that ended so; a counter)
/// and `certctl_renewal_failing{method}` (renewals whose last attempt failed; a gauge).
pub(crate) fn metrics_text(store: &Store) -> Result<String, StoreError> {
    use std::fmt::Write;
    let mut out = String::new();
    out.push_str("# HELP certctl_renewals_total Automatic renewals that ended, by method (managed-ca, scep, manual) and outcome (success, failure: one per failed attempt).\n");
    out.push_str("# TYPE certctl_renewals_total counter\n");
    for (method, outcome, n) in store.renewal_counts()? {
        let _ = writeln!(
            out,
            "certctl_renewals_total{{method=\"{}\",outcome=\"{}\"}} {n}",
            crate::inventory::view::printable(&method),
            crate::inventory::view::printable(&outcome)
        );
    }
    out.push_str("# HELP certctl_renewal_failing Automatic renewals whose last attempt failed (retried with backoff), by method.\n");
    out.push_str("# TYPE certctl_renewal_failing gauge\n");
    let mut by_method: BTreeMap<String, u64> = ["managed-ca", "scep", "manual"]
        .into_iter()
        .map(|m| (m.to_string(), 0))
        .collect();
    for f in failing(store)?.values() {
        *by_method.entry(f.method.clone()).or_default() += 1;
    }
    for (method, n) in by_method {
        let _ = writeln!(
            out,
            "certctl_renewal_failing{{method=\"{}\"}} {n}",
            crate::inventory::view::printable(&method)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_before_parses_durations_and_fractions() {
        assert_eq!(
            "1/3".parse::<RenewBefore>().unwrap(),
            RenewBefore::Fraction { num: 1, den: 3 }
        );
        assert_eq!("1/3".parse::<RenewBefore>().unwrap().secs(90), 30);
        assert_eq!("30d".parse::<RenewBefore>().unwrap().secs(1), 30 * 86_400);
        for bad in ["3/1", "0/3", "1/0", "x/3", "soon", "0s", "1/3/4"] {
            assert!(bad.parse::<RenewBefore>().is_err(), "{bad}");
        }
        assert_eq!("AUTO".parse::<RenewMode>().unwrap(), RenewMode::Auto);
        assert!("yes".parse::<RenewMode>().is_err());
    }

    #[test]
    fn jitter_is_fixed_per_certificate_and_bounded() {
        let a = certctl_store::Sha256([0xab; 32]);
        let b = certctl_store::Sha256([0x12; 32]);
        let window = 30 * 86_400;
        assert_eq!(jitter_secs(&a, window), jitter_secs(&a, window));
        assert_ne!(jitter_secs(&a, window), jitter_secs(&b, window));
        for fp in [a, b] {
            assert!((0..window / 10).contains(&jitter_secs(&fp, window)));
        }
        assert_eq!(jitter_secs(&a, 5), 0);
    }

    #[test]
    fn methods_serialize_with_their_names() {
        let json = serde_json::to_value(RenewalMethod::ManagedCa { ca: "x".into() }).unwrap();
        assert_eq!(json["method"], "managed-ca");
        let json = serde_json::to_value(RenewalMethod::Scep { server: "s".into() }).unwrap();
        assert_eq!(json["method"], "scep");
        let json = serde_json::to_value(RenewalMethod::Manual { why: "w".into() }).unwrap();
        assert_eq!(json["method"], "manual");
    }

    #[test]
    fn the_csr_workflow_can_make_an_rsa_key_and_csr() {
        // SCEP servers take RSA: the CSR step signs the request with the workflow's key.
        let key = KeyKind::Rsa2048.generate().unwrap();
        let pair = ca::rcgen_key(&key).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::DnsName("a.example".try_into().unwrap())];
        let pem = params.serialize_request(&pair).unwrap().pem().unwrap();
        let req = openssl::x509::X509Req::from_pem(pem.as_bytes()).unwrap();
        assert!(req.public_key().unwrap().rsa().is_ok());
        assert!(req.verify(&req.public_key().unwrap()).unwrap());
    }

    /// One policy `all` with `renew = "auto"` for `roles` (a TOML array's inside), and `extra`
    /// lines.
    fn auto_policy(roles: &str, extra: &str) -> Policy {
        let set = crate::policy::parse_files(&[(
            PathBuf::from("p.toml"),
            format!("[[policy]]\nname = \"all\"\nroles = [{roles}]\nremind = []\nwarn = \"1d\"\ncritical = \"1h\"\nrecipients = [\"a@example.com\"]\nrenew = \"auto\"\n{extra}"),
        )])
        .unwrap();
        set.policies[0].clone()
    }

    #[test]
    fn a_renew_before_longer_than_the_lifetime_does_not_renew_every_pass() {
        use certctl_store::Role;
        let policy = &auto_policy("\"gateway\"", "renew_before = \"60d\"\n");
        // A 30-day certificate under a 60-day renew_before is due the moment it is issued
        // (as configured: the first one is renewed at once)...
        let gw = crate::policy::tests::cert("gw", Role::Gateway, 0, 30 * 86_400);
        let first = not_again_at_once(timing(policy, &gw), &gw, false);
        assert!(first.due_at < 0, "due {}", first.due_at);
        // ... but the certificate that renewal made is not, or every pass would make one.
        let renewed = not_again_at_once(timing(policy, &gw), &gw, true);
        assert!(
            renewed.due_at >= 10 * 86_400,
            "due {} s after issuance: renewed again at once",
            renewed.due_at
        );
        assert!(
            renewed.renew_before.contains("a renewed certificate"),
            "{}",
            renewed.renew_before
        );
    }

    #[test]
    fn agents_ephemeral_credentials_are_never_renewed_and_fractions_follow_the_lifetime() {
        use certctl_store::Role;
        let policy = &auto_policy("\"agent\", \"gateway\"", "");
        let none = BTreeMap::new();
        let ephemeral = crate::policy::tests::cert("agent-1", Role::Agent, 0, 8 * 3600);
        let e = explain(&ephemeral, policy, None, &none);
        assert!(e.never.as_deref().unwrap().contains("ephemeral"), "{e:?}");
        assert!(e.method.is_none());
        assert!(e.text.contains("never renews"), "{}", e.text);
        // 90 days, renew_before 1/3 (the default): due 30 days (+ jitter) before expiry.
        let gw = crate::policy::tests::cert("gw", Role::Gateway, 0, 90 * 86_400);
        let t = timing(policy, &gw);
        assert_eq!(t.renew_before, "1/3");
        assert_eq!(t.renew_before_secs, 30 * 86_400);
        assert_eq!(t.due_at, 60 * 86_400 + t.jitter_secs);
        assert!(t.jitter_secs < 3 * 86_400);
    }

    /// 300 agents' ephemeral credentials and 20 gateways expiring every 10 days from
    /// 15 days on, at `now`.
    fn agents_and_gateways(store: &Store, now: UnixTime) {
        use certctl_store::{Role, Sha256, SourceLocation};
        let mut ingest = store.ingest();
        let mut add = |n: u32, cn: &str, role: Role, not_before: i64, not_after: i64| {
            let mut facts = crate::policy::tests::cert(cn, role, not_before, not_after).facts;
            let mut fp = [0u8; 32];
            fp[..4].copy_from_slice(&n.to_be_bytes());
            fp[31] = 0x5a;
            facts.fingerprint = Sha256(fp);
            let at = SourceLocation::File {
                path: format!("/fleet/{cn}.pem"),
                index: 0,
            };
            ingest.observe(facts, Some(role), at, now).expect("observe");
        };
        for i in 0..300 {
            add(
                i,
                &format!("agent-{i}"),
                Role::Agent,
                now - 3600,
                now + 5 * 3600,
            );
        }
        for i in 0..20 {
            let not_after = now + (15 + 10 * i64::from(i)) * 86_400;
            add(
                1000 + i,
                &format!("gw-{i}"),
                Role::Gateway,
                now - 300 * 86_400,
                not_after,
            );
        }
        ingest.commit().expect("commit");
    }

    #[test]
    fn a_pass_reads_only_the_auto_policies_roles_due_within_their_renew_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let now = 1_800_000_000;
        agents_and_gateways(&store, now);
        let config =
            crate::config::parse("store = \"/var/lib/certctl\"\n", Path::new("certd.toml"))
                .expect("config");
        let set = PolicySet {
            policies: vec![auto_policy("\"gateway\"", "renew_before = \"30d\"\n")],
            ..Default::default()
        };
        let before = store.records_read();
        let found = due(&store, &set, &config, now).expect("due");
        // The gateways expiring in 15 and 25 days (a jitter of at most 3 days).
        assert_eq!(found.len(), 2, "{found:?}");
        let read = store.records_read() - before;
        assert!(
            read <= 2 * found.len() as u64,
            "{read} records read for {} due: only the gateways expiring within 30 days should be",
            found.len()
        );
        // A fraction of the lifetime bounds nothing by expiry: every gateway is read, and
        // still no agent credential.
        let set = PolicySet {
            policies: vec![auto_policy("\"gateway\"", "")],
            ..Default::default()
        };
        let before = store.records_read();
        due(&store, &set, &config, now).expect("due");
        let read = store.records_read() - before;
        assert!(
            read <= 2 * 20,
            "{read} records read: no agent credential should be"
        );
    }

    #[test]
    fn backoff_doubles_between_bounds() {
        let c = RenewalConfig::default();
        assert_eq!(backoff_secs(&c, 1), 600);
        assert_eq!(backoff_secs(&c, 2), 1200);
        assert_eq!(backoff_secs(&c, 30), 6 * 3600);
    }
}

// ---- `certctl renew` -----------------------------------------------------------------------

/// `certctl renew ID` / `certctl renew --due [--dry-run]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RenewRequest {
    /// `renew ID`: this certificate now, due or not.
    pub id: Option<String>,
    /// `--due`: every due certificate.
    pub due: bool,
    /// `--dry-run`: say what would be done, start nothing.
    pub dry_run: bool,
    /// certd's configuration file (absolute; direct mode; certd uses its own).
    pub config: Option<PathBuf>,
    /// The policies folder (absolute), instead of the configuration's `[reminders] policies`.
    pub policies: Option<PathBuf>,
}

/// The answer to a [`RenewRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RenewReport {
    /// What is (or was) due, with method and reason.
    pub due: Vec<DueRenewal>,
    /// What was done (absent for `--dry-run`).
    pub pass: Option<RenewalPassReport>,
}

/// The configuration a renewal request uses: `config` (certd's own), else the request's
/// file, else the defaults (no passphrase files, no reload hooks).
pub(crate) fn request_config(
    store: &Store,
    request: &RenewRequest,
    config: Option<&Config>,
) -> Result<Config, RenewalError> {
    if let Some(c) = config {
        return Ok(c.clone());
    }
    let bad = |e: crate::config::ConfigError| RenewalError::Policy(e.to_string());
    match &request.config {
        Some(file) => crate::config::load_for_store(file, store.path()).map_err(bad),
        None => {
            let text = format!(
                "store = {}\n",
                toml::Value::String(store.path().to_string_lossy().into_owned())
            );
            crate::config::parse(&text, Path::new("(defaults)")).map_err(bad)
        }
    }
}

/// Answers `certctl renew` with `config` (certd's, or see [`request_config`]).
pub(crate) fn execute<G>(
    store: &Store,
    request: &RenewRequest,
    config: &Config,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Result<RenewReport, RenewalError> {
    let policies_dir = request
        .policies
        .clone()
        .or_else(|| config.reminders.as_ref().map(|r| r.policies.clone()));
    let policies = match &policies_dir {
        Some(dir) => {
            crate::policy::load_dir(dir).map_err(|e| RenewalError::Policy(e.to_string()))?
        }
        None if request.id.is_some() => PolicySet::default(),
        None => {
            return Err(RenewalError::Policy(
                "no policies: give --policies DIR, or --config FILE with [reminders] policies"
                    .into(),
            ))
        }
    };
    match &request.id {
        Some(id) => {
            let found = crate::inventory::query::find(store, id)
                .map_err(|e| RenewalError::Policy(e.to_string()))?;
            let cert = match found.len() {
                0 => return Err(RenewalError::NotFound(id.clone())),
                1 => found
                    .into_iter()
                    .next()
                    .ok_or_else(|| RenewalError::NotFound(id.clone()))?,
                _ => {
                    return Err(RenewalError::Policy(format!(
                        "`{id}` names {} certificates; give a fingerprint prefix of one",
                        found.len()
                    )))
                }
            };
            if let Some(why) = never_renewed(&cert) {
                return Err(RenewalError::Manual {
                    name: cert.facts.display_name().to_string(),
                    why: format!("certctl does not renew it: {why}"),
                });
            }
            let open = open_workflows(store)?;
            let policy = policies.select(&cert);
            let t = match policy {
                Some(p) => timing(p, &cert),
                None => RenewalTiming {
                    renew_before: "-".into(),
                    renew_before_secs: 0,
                    jitter_secs: 0,
                    due_at: now,
                },
            };
            let mut d = describe(store, &cert, policy, t, config, &open, now)?;
            d.reason = format!("certctl renew by {}", crate::history::actor());
            let pass = if request.dry_run {
                None
            } else {
                Some(run_pass(store, &policies, config, Some(&cert), now, lock)?)
            };
            Ok(RenewReport { due: vec![d], pass })
        }
        None => {
            let due = due(store, &policies, config, now)?;
            let pass = if request.dry_run {
                None
            } else {
                Some(run_pass(store, &policies, config, None, now, lock)?)
            };
            Ok(RenewReport { due, pass })
        }
    }
}
