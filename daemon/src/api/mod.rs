//! The requests `certctl` makes and their answers, independent of who answers them.
//!
//! `certctl` either opens the store itself (no daemon running) or sends the same
//! [`Request`] to `certd` over the control socket. Both end in [`execute`], so the user sees
//! the same results either way. Requests and responses are plain serde types; the wire
//! format is one JSON document per line (see [`crate::api::control`]).
//!
//! May import: every capability below it (it is the one entry both modes use); only
//! `server` and the binaries import it.

pub mod control;
mod error;
pub mod fleet;

pub use error::ErrorKind;

use std::path::PathBuf;

use certctl_store::{Certificate, Endpoint, Role, Store, UnixTime};
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::duration::DAY_SECS;
use crate::fleet::check::{self, CheckReport};
use crate::history::{self, History, ValidAt};
use crate::inventory::query::{self, ListFilter, QueryError, Stats};
use crate::inventory::scan::{self, ScanOptions, ScanProgress, ScanSummary};
use crate::pki::ca::{self, IssueReport, IssueRequest, Secret};
use crate::pki::cas::{self, CaInfo, CaInitRequest};
use crate::pki::crl::{self, CrlPublished};
use crate::pki::crlfetch::{CrlFetchOptions, CrlFetchReport};
use crate::pki::revoke::{self, RevokeReport, RevokeRequest};
use crate::pki::workflow::{self, RegenerateRequest, WorkflowReport, WorkflowSecrets};
use crate::probe::ProbeTarget;
use crate::reminders::{self, PassMode, PassReport, Snoozed};

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// `certctl list` (and other commands that need the inventory): the certificates the
    /// filter keeps, answered with [`Response::Certificates`]. Also the fallback a newer
    /// client sends when an older certd refuses [`Request::ListJson`] or
    /// [`Request::ListLines`].
    List {
        /// `list`'s filters (`--role`, `--expiring-within`, `--expired`, `--issuer`,
        /// `--name`, `--kind`); the default keeps every certificate.
        filter: ListFilter,
    },
    /// `list --json`: certd answers with the JSON text itself, rendered at `at`, as a
    /// stream ([`Response::Stream`]). A certd from before this request refuses it as
    /// unreadable (kind `invalid`); the client then sends [`Request::List`].
    ListJson {
        /// `list`'s filters, as in [`Request::List`].
        filter: ListFilter,
        /// The client's "now" (Unix seconds; `$CERTCTL_NOW` when set) the text is rendered
        /// at: `days_left` and `status` in `list --json` count from it.
        at: UnixTime,
    },
    /// `list` as a table or CSV: certd answers with the certificates as a stream
    /// ([`Response::Stream`]) of JSON lines, one [`Certificate`] a line, sent as they are
    /// read (a terminal shows the first screen at once). A certd from before this request
    /// refuses it as unreadable (kind `invalid`); the client then sends [`Request::List`].
    ListLines {
        /// `list`'s filters, as in [`Request::List`].
        filter: ListFilter,
    },
    /// `certctl show ID` (also `policy` and others that name one certificate): the
    /// certificates `id` names, answered with [`Response::Certificates`].
    Find {
        /// A fingerprint prefix (at least 8 hex characters, colons allowed) or an exact
        /// subject CN / SAN; a name shared by several certificates (a renewed one) finds
        /// them all, an ambiguous prefix is an `ambiguous` error.
        id: String,
    },
    /// `certctl stats`: the total and the counts by role, status, key type and credential
    /// kind, answered with [`Response::Stats`].
    Stats,
    /// `certctl check`: the certificates and endpoints expiring, expired or with findings,
    /// answered with [`Response::Check`].
    Check {
        /// `--warn DUR`: a certificate expiring within this is a warning (default 30 days).
        warn: Duration,
        /// `--critical DUR`: a certificate expiring within this is critical (default 7 days).
        critical: Duration,
        /// Only the counts and the first certificate of each list (what the one-line summary
        /// needs), not every certificate: `check` without `--json`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        brief: bool,
        /// Only certificates and endpoints of this role.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        /// Judge each certificate by its policy's thresholds (absolute folder).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policies: Option<PathBuf>,
    },
    /// Paths must be absolute (the client resolves them against its own directory).
    Scan {
        /// The files and folders to scan (`certctl scan PATH...`), absolute; a relative one
        /// is refused as `invalid`.
        paths: Vec<PathBuf>,
        /// `scan`'s options: the role to give what is found, the PKCS#12 password, a full
        /// rescan (unchanged files too), the number of threads.
        options: ScanOptions,
    },
    /// `certctl probe HOST:PORT`: one TLS handshake with the endpoint, recorded in the store,
    /// answered with [`Response::Probe`] (certd does the network I/O without its writer lock).
    Probe {
        /// The endpoint and how to probe it (`--sni`, `--role`, `--expect-issuer`,
        /// `--timeout`, `--trust-store`).
        target: ProbeTarget,
    },
    /// Every probed endpoint's stored state, answered with [`Response::Endpoints`]. No
    /// `certctl` command sends it at present (`status` carries the endpoints).
    Endpoints,
    /// `certctl forget HOST:PORT`: deletes an endpoint's state and findings (audited);
    /// answered with [`Response::Endpoints`] holding the state removed.
    Forget {
        /// The endpoint as probed: `host:port` (`[v6]:port` for IPv6, `tls://` allowed); an
        /// unknown one is a `not-found` error.
        address: String,
    },
    /// `certctl status`: answered by certd with its own state filled in
    /// ([`StatusReport::daemon`]), in direct mode by [`direct_status`].
    Status,
    /// `certctl --config FILE remind --dry-run | --now`: one reminder pass with the
    /// configuration `config` (absolute; certd reads the same file), the policies folder
    /// `policies` (else the configuration's), at `at` (else now).
    Remind {
        /// certd's configuration file (`certctl --config FILE`, absolute; a relative one is
        /// refused as `invalid`): its `[smtp]` and `[reminders]`. `None` only for
        /// `--dry-run --policies DIR`.
        config: Option<PathBuf>,
        /// `--policies DIR` (absolute): the policies folder, instead of the configuration's.
        policies: Option<PathBuf>,
        /// `--dry-run` (print the digests, send and record nothing) or `--now` (send what is
        /// due, retry what is pending).
        mode: PassMode,
        /// The moment the pass runs at (Unix seconds; the client's `$CERTCTL_NOW` or clock);
        /// `None`: the answerer's now.
        at: Option<UnixTime>,
    },
    /// `certctl snooze ID --until DATE --reason TEXT`.
    Snooze {
        /// The certificate (a fingerprint prefix of at least 8 hex characters, or an exact
        /// subject CN / SAN naming exactly one), else the tracked artifact (id prefix,
        /// absolute path or name).
        id: String,
        /// `--until DATE` as Unix seconds: reminders stay silent until then.
        until: UnixTime,
        /// `--reason TEXT`, recorded in the audit history.
        reason: String,
        /// Who snoozes (the client's `$USER`, else `$LOGNAME`, else `uid N`), for the audit.
        by: String,
        /// When the snooze is recorded (Unix seconds; the client's clock or `$CERTCTL_NOW`);
        /// `None`: the answerer's now.
        at: Option<UnixTime>,
    },
    /// `certctl snoozed`: the snoozes in force.
    Snoozed {
        /// The moment "in force" is judged at (Unix seconds); `None`: the answerer's now.
        at: Option<UnixTime>,
    },
    /// `certctl ca init`.
    CaInit {
        /// The new CA's name, subject, key, validity, parent and CRL settings, from
        /// `ca init`'s options.
        init: CaInitRequest,
    },
    /// `certctl ca list`.
    CaList,
    /// `certctl ca export NAME --out FILE` (absolute path).
    CaExport {
        /// The managed CA's name, as `ca init NAME` gave it.
        name: String,
        /// Where to write the CA certificate as PEM (absolute; a relative path is refused as
        /// `invalid`). Answered with [`Response::Written`].
        out: PathBuf,
    },
    /// `certctl ca crl NAME --out FILE [--der]` (absolute path).
    CaCrl {
        /// The managed CA's name, as `ca init NAME` gave it.
        name: String,
        /// A copy besides the CA's CRL paths (absolute).
        #[serde(default)]
        out: Option<PathBuf>,
        /// `--der`: write the `out` copy as DER instead of PEM.
        der: bool,
        /// The CA key's passphrase (`--passphrase-file`, else `$CERTCTL_CA_PASSPHRASE`);
        /// `None` when the key is not encrypted.
        passphrase: Option<Secret>,
    },
    /// `certctl issue`.
    Issue {
        /// What to issue, from which CA, and where to write it (`issue`'s options).
        issue: IssueRequest,
    },
    /// `certctl revoke` (also its `--dry-run`).
    Revoke {
        /// The certificates (or key file) to revoke, the reason, `--dry-run` and whether to
        /// probe the endpoints that served them (`revoke`'s options).
        revoke: RevokeRequest,
    },
    /// `certctl regenerate`.
    Regenerate {
        /// The certificate to replace, the new key and where to deploy (`regenerate`'s
        /// options). Answered with [`Response::Workflow`].
        regenerate: RegenerateRequest,
    },
    /// `certctl workflows`.
    Workflows,
    /// `certctl workflows resume ID`.
    WorkflowResume {
        /// The workflow id, as `certctl workflows` lists it.
        id: u64,
        /// The CA passphrase and PKCS#12 password the workflow may need (never stored).
        secrets: WorkflowSecrets,
    },
    /// `certctl workflows complete ID --cert FILE` (absolute).
    WorkflowComplete {
        /// The workflow id; the workflow waits at step `awaiting-certificate`.
        id: u64,
        /// `--cert FILE`: the certificate the outside CA issued for the workflow's CSR
        /// (absolute; a relative path is refused as `invalid`).
        cert: PathBuf,
        /// The CA passphrase and PKCS#12 password the rest of the workflow may need.
        secrets: WorkflowSecrets,
    },
    /// `certctl history ID`.
    History {
        /// A fingerprint prefix (at least 8 hex characters) or exact subject CN / SAN, as in
        /// [`Request::Find`].
        id: String,
    },
    /// `certctl history --at DATE`.
    HistoryAt {
        /// `--at DATE` as Unix seconds: the moment asked about.
        at: UnixTime,
    },
    /// `certctl crl fetch`: check inventoried certificates against their CAs' CRLs.
    CrlFetch {
        /// How to fetch: the per-URL timeout, `--force`, the PKCS#12 password, the allowed
        /// hosts and the deadline of the whole pass (through certd, its configuration
        /// decides the last two).
        options: CrlFetchOptions,
    },
    /// `certctl store verify`: check the store's consistency (reads everything).
    VerifyStore,
    /// `certctl store backup --out FILE` (absolute path): a point-in-time copy of the store
    /// ([`crate::backup`]). certd holds its writer lock for the snapshot only.
    Backup {
        /// The backup file to write (absolute: the client resolves it).
        out: PathBuf,
    },
    /// `certctl store prune`: remove expired certificates nothing holds any more. certd
    /// fills the windows the request leaves out from its `[retention]`.
    Prune {
        /// `--dry-run`, the batch size and the retention windows given on the command line
        /// (those left out: certd's `[retention]`, else the defaults).
        prune: crate::retention::PruneRequest,
    },
    /// What retention kept of an agent's removed ephemeral credentials (`show NAME`).
    PrunedRenewals {
        /// The agent name (`show NAME`'s argument), matched case-insensitively.
        agent: String,
    },
    /// Fleet features: `agents ...`, `report`, `track`, the artifacts of `list`.
    Fleet {
        /// The fleet request, answered with [`Response::Fleet`].
        fleet: crate::api::fleet::FleetRequest,
    },
    /// `certctl renew ID` / `certctl renew --due [--dry-run]` (`pki::renewal`); certd
    /// uses its own configuration.
    Renew {
        /// One certificate (`renew ID`) or every due one (`--due`), `--dry-run`, and in
        /// direct mode the configuration and policies folder to use.
        renew: crate::pki::renewal::RenewRequest,
    },
}

impl Request {
    /// Whether answering talks to other servers (`probe`: the endpoint; `remind`: the mail
    /// server). certd answers these with [`execute_networked`], never holding the writer
    /// lock during that I/O.
    pub(crate) fn uses_network(&self) -> bool {
        match self {
            Request::Probe { .. } | Request::Remind { .. } => true,
            // It probes the endpoints that served what it revoked.
            Request::Revoke { revoke } => revoke.probe_endpoints && !revoke.dry_run,
            // A deploy probes the endpoints that served the old certificate.
            Request::Regenerate { regenerate } => regenerate.deploy,
            Request::WorkflowResume { .. } | Request::WorkflowComplete { .. } => true,
            // Workflows: reload hooks, probes, SCEP servers.
            Request::Renew { renew } => !renew.dry_run,
            _ => false,
        }
    }

    /// Whether answering may write to the store. certd runs such requests one at a time
    /// with its own scans and probes, so no merge ever races another. Anything not listed
    /// as read-only counts as a write, so a new request is safe by default.
    pub(crate) fn writes_store(&self) -> bool {
        if let Request::Fleet { fleet } = self {
            return fleet.writes_store();
        }
        !matches!(
            self,
            Request::List { .. }
                | Request::ListJson { .. }
                | Request::ListLines { .. }
                | Request::Find { .. }
                | Request::Stats
                | Request::Check { .. }
                | Request::Endpoints
                | Request::Status
                | Request::Snoozed { .. }
                | Request::CaList
                | Request::CaExport { .. }
                | Request::Workflows
                | Request::History { .. }
                | Request::HistoryAt { .. }
                | Request::VerifyStore
                | Request::Backup { .. }
                | Request::PrunedRenewals { .. }
        )
    }
}

/// A probe's result: the endpoint state as stored and the certificates it served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The endpoint's stored state after this probe (address, last chain, findings, probe
    /// times): `endpoint` in `probe --json`.
    pub endpoint: Endpoint,
    /// Why the probe failed, if it did (the stored chain is then the last good one).
    pub error: Option<String>,
    /// The certificates served in this handshake, in the order served (leaf first), as the
    /// store now holds them; empty when no chain was received. `chain` in `probe --json`.
    pub chain: Vec<Certificate>,
}

/// `certctl status`. Field names are part of the `status --json` contract (which adds an
/// RFC 3339 sibling to each Unix-time field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// `daemon` or `direct`.
    pub mode: String,
    /// The store folder answered about (`--store`, the configuration's `store`,
    /// `$CERTCTL_STORE` or the per-user default).
    pub store: PathBuf,
    /// How many certificate records the store holds (from its counts).
    pub certificates: u64,
    /// Every probed endpoint's stored state, with drift findings added.
    pub endpoints: Vec<Endpoint>,
    /// certd's own state (pid, uptime, sources, schedules); `None` in direct mode.
    pub daemon: Option<DaemonStatus>,
    /// The last error talking to the SMTP server (cleared by the next delivery).
    #[serde(default)]
    pub smtp_last_error: Option<String>,
    /// When `smtp_last_error` happened (Unix seconds); `None` when there is none.
    #[serde(default)]
    pub smtp_last_error_at: Option<UnixTime>,
    /// Reminders whose digest could not be delivered yet (retried with backoff).
    #[serde(default)]
    pub reminders_pending: u64,
    /// Scanned files whose last read failed (`PATH: CAUSE`, the first
    /// `query::FAILED_FILES_LISTED`), and how many there are.
    #[serde(default)]
    pub failed_files: Vec<String>,
    /// How many scanned files' last read failed, all of them (`failed_files` lists only
    /// the first few).
    #[serde(default)]
    pub failed_files_total: u64,
    /// Managed CAs whose published CRL misses a revocation the store holds (or cannot be
    /// read): relying parties still accept what was revoked.
    #[serde(default)]
    pub stale_crls: Vec<String>,
    /// What the last reminder pass that tried to deliver anything achieved (a failure, or
    /// the retry that succeeded after it).
    #[serde(default)]
    pub last_delivery: Option<LastDelivery>,
    /// Tracked files found deleted (no more reminders): `PATH (KIND, gone since TIME)`.
    #[serde(default)]
    pub gone_artifacts: Vec<String>,
    /// Set when the store was restored from a backup: from which date (what happened after
    /// it must be redone) and which CAs had published a newer CRL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<certctl_store::RestoredFrom>,
    /// Automatic renewals whose last attempt failed (retried with backoff).
    #[serde(default)]
    pub failing_renewals: Vec<crate::pki::renewal::FailingRenewal>,
}

/// The outcome of the last completed delivery, as `status` shows it (times RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDelivery {
    /// `delivered`, `failed` or `partial` (some recipients each way).
    pub outcome: String,
    /// When (RFC 3339).
    pub at: String,
    /// Recipients whose digest the SMTP server accepted, and their reminders.
    pub recipients_delivered: u64,
    /// The reminders those accepted digests carried.
    pub reminders_delivered: u64,
    /// Of those, recipients whose earlier delivery had failed (retries that succeeded).
    pub recipients_retried: u64,
    /// Recipients whose digest was not accepted (still pending).
    pub recipients_failed: u64,
    /// The first failure: `RECIPIENT: CAUSE`.
    pub error: Option<String>,
}

impl LastDelivery {
    /// `status`'s view of the store's last delivery outcome: `outcome` from its delivered
    /// and failed recipient counts, the time as RFC 3339.
    pub fn new(o: &certctl_store::DeliveryOutcome) -> LastDelivery {
        let outcome = match (o.delivered, o.failed) {
            (_, 0) => "delivered",
            (0, _) => "failed",
            _ => "partial",
        };
        LastDelivery {
            outcome: outcome.into(),
            at: certctl_store::rfc3339(o.at),
            recipients_delivered: o.delivered,
            reminders_delivered: o.reminders_delivered,
            recipients_retried: o.retried,
            recipients_failed: o.failed,
            error: o.error.clone(),
        }
    }
}

/// What a running certd says about itself: `daemon` in `status --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// certd's process id.
    pub pid: u32,
    /// When certd started (Unix seconds).
    pub started: UnixTime,
    /// Seconds from `started` to the answer.
    pub uptime_secs: i64,
    /// The configuration file certd runs with (as given to `certd run --config FILE`;
    /// reloads read it again).
    pub config: PathBuf,
    /// The `[[source]]` entries of its configuration: what its scans read.
    pub sources: Vec<SourceStatus>,
    /// Every job (`scan`, `probe`, `crl-fetch`, `remind`, `crl-upkeep`, `backup`,
    /// `retention`, `renew`), in that order, scheduled or not.
    pub schedules: Vec<ScheduleStatus>,
}

/// One scan source of certd's configuration (`daemon.sources[]` in `status --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The file or folder scanned.
    pub path: PathBuf,
    /// The role its `role =` gives the leaves found there; `None`: none given.
    pub role: Option<Role>,
    /// Whether certd watches it for changes between scans (`[scan] watch` is on and the
    /// path is a folder).
    pub watched: bool,
}

/// One of certd's jobs and its schedule (`daemon.schedules[]` in `status --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// `scan`, `probe`, ...
    pub job: String,
    /// The cron expression as written (`every Ns` for the jobs run at a fixed interval,
    /// `(not scheduled)` when the job is off).
    pub schedule: String,
    /// When it last ran (Unix seconds); `None` if it has not run since certd started.
    pub last_run: Option<UnixTime>,
    /// `ok`, or what went wrong.
    pub last_outcome: Option<String>,
    /// Whether the last run succeeded, as the job itself judged it (the words of
    /// `last_outcome` are for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_succeeded: Option<bool>,
    /// When it runs next (Unix seconds); `None` when it is not scheduled.
    pub next_run: Option<UnixTime>,
}

/// The answer. `Stream` ([`Request::ListJson`]'s): the text follows this line in frames
/// (see [`crate::api::control`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// Answers [`Request::List`], [`Request::Find`] and, in direct mode,
    /// [`Request::ListJson`] / [`Request::ListLines`].
    Certificates {
        /// The certificates found, as stored (empty when the filter keeps none; `Find`
        /// answers `not-found` instead).
        certificates: Vec<Certificate>,
    },
    /// Answers [`Request::Stats`].
    Stats {
        /// The counts `stats --json` prints.
        stats: Stats,
    },
    /// Answers [`Request::Check`].
    Check {
        /// What is expiring, expired, not yet valid or has findings, with the stale and
        /// expiring CRLs and the stalled and failing renewals: what `check` prints and
        /// judges its exit code by.
        report: CheckReport,
    },
    /// Answers [`Request::Scan`].
    Scan {
        /// Files read, certificates found and failures: `scan --json`.
        summary: ScanSummary,
    },
    /// Answers [`Request::Probe`].
    Probe {
        /// The endpoint's state, the probe's error and the chain: one object of
        /// `probe --json`.
        report: ProbeReport,
    },
    /// Answers [`Request::Endpoints`] (every endpoint) and [`Request::Forget`] (the one
    /// removed, as it was: `forget --json`).
    Endpoints {
        /// The endpoints' stored state.
        endpoints: Vec<Endpoint>,
    },
    /// Answers [`Request::Status`].
    Status {
        /// What `status` (and `status --json`) shows.
        status: StatusReport,
    },
    /// Answers [`Request::Backup`].
    Backup {
        /// The file written, its members and how long writers waited: `store backup --json`.
        report: crate::backup::BackupReport,
    },
    /// Answers [`Request::CaList`] (every managed CA) and [`Request::CaInit`] (the new one).
    Cas {
        /// The managed CAs with their certificate and file paths (never the key itself).
        cas: Vec<CaInfo>,
    },
    /// Answers [`Request::CaExport`].
    Written {
        /// The file written (the `out` of the request).
        path: PathBuf,
    },
    /// Answers [`Request::CaCrl`].
    Crl {
        /// The CRL signed: its number, validity, revoked count and every file written.
        crl: CrlPublished,
    },
    /// Answers [`Request::Issue`].
    Issued {
        /// The certificate issued, its CA, the files written (paths only, never the key)
        /// and remarks for the admin.
        report: Box<IssueReport>,
    },
    /// Answers [`Request::Revoke`] (also its `--dry-run` preview).
    Revoke {
        /// What was (or would be) revoked, the CRLs published and the endpoints probed.
        report: RevokeReport,
    },
    /// Answers [`Request::Regenerate`], [`Request::WorkflowResume`] and
    /// [`Request::WorkflowComplete`].
    Workflow {
        /// The workflow after this run (its step and last error), the old and new
        /// certificates, the files written, the reloads and the endpoints probed.
        report: Box<WorkflowReport>,
    },
    /// Answers [`Request::Workflows`].
    Workflows {
        /// Every workflow the store holds, finished or not.
        workflows: Vec<WorkflowReport>,
    },
    /// Answers [`Request::History`].
    History {
        /// One history per certificate `id` names (a renewed name finds several).
        histories: Vec<History>,
    },
    /// Answers [`Request::HistoryAt`].
    ValidAt {
        /// The moment asked about and the certificates valid then.
        report: ValidAtReport,
    },
    /// Answers [`Request::CrlFetch`].
    CrlFetch {
        /// Each CRL URL fetched (or skipped, or failed) and what it revoked: `crl fetch --json`.
        report: CrlFetchReport,
    },
    /// Answers [`Request::Remind`].
    Remind {
        /// The digests sent (or, for `--dry-run`, that would be): `remind --json`.
        report: PassReport,
    },
    /// Answers [`Request::Snoozed`] (the snoozes in force) and [`Request::Snooze`] (the one
    /// recorded).
    Snoozed {
        /// The snoozes; empty when none is in force.
        snoozes: Vec<Snoozed>,
    },
    /// Answers [`Request::Fleet`].
    Fleet {
        /// The fleet answer.
        fleet: crate::api::fleet::FleetResponse,
    },
    /// Answers [`Request::VerifyStore`].
    Verification {
        /// What the consistency check found: `store verify --json`.
        verification: certctl_store::Verification,
    },
    /// Answers [`Request::Prune`].
    Prune {
        /// What was (or, with `--dry-run`, would be) removed: `store prune --json`.
        summary: crate::retention::PruneSummary,
    },
    /// Answers [`Request::PrunedRenewals`].
    PrunedRenewals {
        /// What retention removed of the agent's ephemeral credentials; `None` when it
        /// removed nothing of that agent (or the name is unknown).
        renewals: Option<certctl_store::PrunedRenewals>,
    },
    /// Answers [`Request::Renew`].
    Renew {
        /// What is due and, without `--dry-run`, what was done.
        report: crate::pki::renewal::RenewReport,
    },
    /// Any request that failed; `certctl` prints `message` and exits 4 (except where it
    /// falls back, e.g. on an older certd's `invalid`).
    Error {
        /// Why, in a word: `not-found`, `ambiguous`, `invalid` or `failed`.
        kind: ErrorKind,
        /// The error's full message (names the file, host or ID and the cause).
        message: String,
    },
    /// certd's answer to [`Request::ListJson`] and [`Request::ListLines`]: the text follows
    /// on the connection in frames, ended by a frame of length 0.
    Stream,
}

impl Response {
    /// An [`Response::Error`] of `kind` with `message`.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error {
            kind,
            message: message.into(),
        }
    }

    fn from_query_error(e: QueryError) -> Self {
        let kind = match &e {
            QueryError::NotFound(_) => ErrorKind::NotFound,
            QueryError::Ambiguous { .. } => ErrorKind::Ambiguous,
            QueryError::Store(_) => ErrorKind::Failed,
        };
        Response::error(kind, e.to_string())
    }
}

/// Answers a fleet request from a store, with certd's configured deny list
/// (`[agents] deny_list`) when `approve`, `block` or `deny-list` name none: certctl in
/// direct mode passes the one of `certctl --config FILE`
/// ([`crate::fleet::agents::configured_deny_list`]), so it picks the same file certd would.
pub fn execute_fleet(
    store: &Store,
    fleet: crate::api::fleet::FleetRequest,
    configured_deny_list: Option<&std::path::Path>,
    now: UnixTime,
) -> Response {
    match crate::api::fleet::execute_with(store, fleet, configured_deny_list, now) {
        Ok(fleet) => Response::Fleet { fleet },
        Err((kind, message)) => Response::Error { kind, message },
    }
}

/// Answers a request from a store. `status` is filled in by the daemon; here it is the
/// direct-mode status. `progress` lets a caller watch (or cancel) a scan.
pub fn execute(
    store: &Store,
    request: Request,
    now: UnixTime,
    progress: &ScanProgress,
) -> Response {
    match request {
        Request::Fleet { fleet } => execute_fleet(store, fleet, None, now),
        // Rendering the text is for whoever streams the answer (certd's control socket,
        // `certctl` itself in direct mode, see [`list_json`]): here the certificates are
        // the answer.
        Request::List { filter }
        | Request::ListJson { filter, .. }
        | Request::ListLines { filter } => certificates_answer(query::list(store, &filter, now)),
        Request::Find { id } => certificates_answer(query::find(store, &id)),
        Request::Stats => stats_answer(store, now),
        Request::Check {
            warn,
            critical,
            brief,
            role,
            policies,
        } => check_answer(store, warn, critical, brief, role, policies.as_deref(), now),
        Request::Scan { paths, options } => scan_answer(store, &paths, &options, now, progress),
        Request::Probe { target } => probe(store, &target, now, &|| ()),
        Request::Forget { address } => forget_answer(store, &address, now),
        Request::Backup { out } => crate::backup::backup(store, &out, now, &Default::default())
            .map_or_else(failed, |report| Response::Backup { report }),
        Request::VerifyStore => verify_store_answer(store),
        Request::Prune { prune } => {
            crate::retention::pass(store, &prune, Default::default(), now, &mut |_| ())
                .map_or_else(failed, |summary| Response::Prune { summary })
        }
        Request::Renew { renew } => renew_answer(store, &renew, None, now, &|| ()),
        Request::PrunedRenewals { agent } => store
            .pruned_renewals(&agent)
            .map_or_else(failed, |renewals| Response::PrunedRenewals { renewals }),
        Request::Endpoints => store
            .endpoints()
            .map_or_else(failed, |endpoints| Response::Endpoints { endpoints }),
        Request::Status => {
            direct_status(store).map_or_else(failed, |status| Response::Status { status })
        }
        Request::Remind {
            config,
            policies,
            mode,
            at,
        } => remind_answer(store, config, policies, mode, at.unwrap_or(now)),
        Request::Snooze {
            id,
            until,
            reason,
            by,
            at,
        } => snooze_answer(store, &id, until, &reason, &by, at.unwrap_or(now)),
        Request::Snoozed { at } => reminders::snoozed(store, at.unwrap_or(now))
            .map_or_else(failed, |snoozes| Response::Snoozed { snoozes }),
        Request::CaInit { init } => cas::init(store, &init, now)
            .map_or_else(failed, |info| Response::Cas { cas: vec![info] }),
        Request::CaList => cas::list(store).map_or_else(failed, |cas| Response::Cas { cas }),
        Request::CaExport { name, out } => ca_export_answer(store, &name, &out),
        Request::CaCrl {
            name,
            out,
            der,
            passphrase,
        } => ca_crl_answer(store, &name, out.as_deref(), der, passphrase.as_ref(), now),
        Request::Issue { issue } => issue_answer(store, &issue, now),
        Request::Revoke { revoke: request } => revoke_answer(store, &request, now),
        request @ (Request::Regenerate { .. }
        | Request::WorkflowResume { .. }
        | Request::WorkflowComplete { .. }) => workflow_answer(store, request, now, &|| ()),
        Request::Workflows => workflow::listing(store)
            .map_or_else(failed, |workflows| Response::Workflows { workflows }),
        Request::History { id } => history_answer(store, &id),
        Request::CrlFetch { options } => crate::pki::crlfetch::fetch(store, &options, now)
            .map_or_else(failed, |report| Response::CrlFetch { report }),
        Request::HistoryAt { at } => valid_at_answer(store, at),
    }
}

/// `certctl list` and `certctl find`: the certificates, or the query's error.
fn certificates_answer(result: Result<Vec<Certificate>, QueryError>) -> Response {
    match result {
        Ok(certificates) => Response::Certificates { certificates },
        Err(e) => Response::from_query_error(e),
    }
}

/// `certctl stats`.
fn stats_answer(store: &Store, now: UnixTime) -> Response {
    match query::stats(store, now) {
        Ok(stats) => Response::Stats { stats },
        Err(e) => Response::from_query_error(e),
    }
}

/// `certctl verify-store`.
fn verify_store_answer(store: &Store) -> Response {
    match store.verify() {
        Ok(verification) => Response::Verification { verification },
        Err(e) => failed(e),
    }
}

/// `certctl issue`.
fn issue_answer(store: &Store, issue: &IssueRequest, now: UnixTime) -> Response {
    match ca::issue(store, issue, now) {
        Ok(report) => Response::Issued {
            report: Box::new(report),
        },
        Err(e) => failed(e),
    }
}

/// `certctl history --at`: the certificates valid at `at`.
fn valid_at_answer(store: &Store, at: UnixTime) -> Response {
    match history::valid_at(store, at) {
        Ok(certificates) => Response::ValidAt {
            report: ValidAtReport { at, certificates },
        },
        Err(e) => failed(e),
    }
}

/// `certctl check`: the report by policy files or by thresholds, with the CRL and renewal
/// findings added.
fn check_answer(
    store: &Store,
    warn: Duration,
    critical: Duration,
    brief: bool,
    role: Option<Role>,
    policies: Option<&std::path::Path>,
    now: UnixTime,
) -> Response {
    let report = match policies {
        Some(dir) => match crate::policy::load_dir(dir) {
            Ok(set) => check::check_by_policies(store, warn, critical, role, &set, now, brief),
            Err(e) => return Response::error(ErrorKind::Invalid, e.to_string()),
        },
        None if brief => check::check_brief(store, warn, critical, role, now),
        None => check::check(store, warn, critical, role, now),
    };
    match report {
        // A revocation is only visible once the published CRL lists it.
        Ok(report) => match crl_state(store, now) {
            Ok((stale, expiring)) => {
                match report
                    .with_crls(stale, expiring, now)
                    .with_renewals(store, now)
                {
                    Ok(report) => Response::Check { report },
                    Err(e) => failed(e),
                }
            }
            Err(e) => failed(e),
        },
        Err(e) => Response::from_query_error(e),
    }
}

/// `certctl scan`: the paths must be absolute.
fn scan_answer(
    store: &Store,
    paths: &[PathBuf],
    options: &ScanOptions,
    now: UnixTime,
    progress: &ScanProgress,
) -> Response {
    if let Some(p) = paths.iter().find(|p| p.is_relative()) {
        return Response::error(
            ErrorKind::Invalid,
            format!("scan paths must be absolute, got {}", p.display()),
        );
    }
    match scan::scan(store, paths, options, now, progress) {
        Ok(summary) => Response::Scan { summary },
        Err(e) => Response::error(ErrorKind::Failed, e.to_string()),
    }
}

/// `certctl forget`: an unknown endpoint is `not-found`.
fn forget_answer(store: &Store, address: &str, now: UnixTime) -> Response {
    match crate::probe::forget(store, address, now) {
        Ok(endpoint) => Response::Endpoints {
            endpoints: vec![endpoint],
        },
        Err(e @ crate::probe::ForgetError::Unknown(_)) => {
            Response::error(ErrorKind::NotFound, e.to_string())
        }
        Err(e) => Response::error(ErrorKind::Failed, e.to_string()),
    }
}

/// `certctl remind`: the configuration path must be absolute.
fn remind_answer(
    store: &Store,
    config: Option<PathBuf>,
    policies: Option<PathBuf>,
    mode: PassMode,
    at: UnixTime,
) -> Response {
    if let Some(config) = config.as_ref().filter(|c| c.is_relative()) {
        return Response::error(
            ErrorKind::Invalid,
            format!(
                "the configuration path must be absolute, got {}",
                config.display()
            ),
        );
    }
    remind(
        store,
        config.as_deref(),
        policies.as_deref(),
        mode,
        at,
        &|| (),
    )
}

/// `certctl snooze`: an unknown certificate is the query's error, a bad snooze `invalid`.
fn snooze_answer(
    store: &Store,
    id: &str,
    until: UnixTime,
    reason: &str,
    by: &str,
    at: UnixTime,
) -> Response {
    match reminders::snooze(store, id, until, reason, by, at) {
        Ok(s) => Response::Snoozed { snoozes: vec![s] },
        Err(reminders::SnoozeError::Query(e)) => Response::from_query_error(e),
        Err(e) => Response::error(ErrorKind::Invalid, e.to_string()),
    }
}

/// `certctl ca export`: the output path must be absolute.
fn ca_export_answer(store: &Store, name: &str, out: &std::path::Path) -> Response {
    match relative(out) {
        Some(r) => r,
        None => match cas::export(store, name, out) {
            Ok(path) => Response::Written { path },
            Err(e) => failed(e),
        },
    }
}

/// `certctl ca crl`: the output path, when given, must be absolute.
fn ca_crl_answer(
    store: &Store,
    name: &str,
    out: Option<&std::path::Path>,
    der: bool,
    passphrase: Option<&Secret>,
    now: UnixTime,
) -> Response {
    match out.and_then(relative) {
        Some(r) => r,
        None => match crl::ca_crl(store, name, out, der, passphrase, now) {
            Ok(crl) => Response::Crl { crl },
            Err(e) => failed(e),
        },
    }
}

/// `certctl revoke`: the key file, when given, must be absolute.
fn revoke_answer(store: &Store, request: &RevokeRequest, now: UnixTime) -> Response {
    if let Some(r) = request.key_file.as_deref().and_then(relative) {
        return r;
    }
    match revoke::revoke(store, request, now) {
        Ok(report) => Response::Revoke { report },
        Err(revoke::RevokeError::Query(e)) => Response::from_query_error(e),
        Err(e) => failed(e),
    }
}

/// `certctl history`: an unknown certificate is the query's error.
fn history_answer(store: &Store, id: &str) -> Response {
    match history::history(store, id) {
        Ok(histories) => Response::History { histories },
        Err(history::HistoryError::Query(e)) => Response::from_query_error(e),
        Err(e) => failed(e),
    }
}

/// `certctl list --json` ([`Request::ListJson`]): writes the JSON text of the
/// answer to `out` and returns `Ok`, or returns the error [`Response`] before writing
/// anything.
pub fn list_json(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
    at: UnixTime,
    out: &mut dyn std::io::Write,
) -> Result<std::io::Result<()>, Box<Response>> {
    let mut list = crate::inventory::view::JsonListWriter::new(out, at);
    match write_list_batches(store, filter, now, |batch| list.write(&batch)) {
        Ok(Ok(())) => Ok(list.finish()),
        other => other,
    }
}

/// `certctl list` as a table or CSV ([`Request::ListLines`]): writes the certificates to
/// `out` as JSON lines, a batch at a time (flushed after each), and returns `Ok`, or
/// returns the error [`Response`] before writing anything.
pub fn list_lines(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
    out: &mut dyn std::io::Write,
) -> Result<std::io::Result<()>, Box<Response>> {
    write_list_batches(store, filter, now, |batch| {
        for cert in &batch {
            serde_json::to_writer(&mut *out, cert).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    })
}

/// The list's batches handed to `write` as they are read: `Ok(Err(_))` when the output
/// failed, `Err(response)` when the store did (before anything was written, if on the
/// first batch).
fn write_list_batches(
    store: &Store,
    filter: &ListFilter,
    now: UnixTime,
    mut write: impl FnMut(Vec<Certificate>) -> std::io::Result<()>,
) -> Result<std::io::Result<()>, Box<Response>> {
    /// Why a streamed list stopped: the store (an error answer, if nothing was written
    /// yet) or the output.
    enum Stop {
        Query(QueryError),
        Output(std::io::Error),
    }
    impl From<QueryError> for Stop {
        fn from(e: QueryError) -> Self {
            Stop::Query(e)
        }
    }
    match query::list_batches(store, filter, now, |batch| {
        write(batch).map_err(Stop::Output)
    }) {
        Ok(()) => Ok(Ok(())),
        Err(Stop::Output(e)) => Ok(Err(e)),
        Err(Stop::Query(e)) => Err(Box::new(Response::from_query_error(e))),
    }
}

/// Reads [`list_lines`]' JSON lines as they arrive (a [`std::io::Write`] for
/// [`crate::api::control::Client::call_streaming`]): every complete line is a certificate, and
/// each flush (one per frame certd sent) hands those read so far to `each`.
pub struct CertificateLines<F: FnMut(Vec<Certificate>) -> std::io::Result<()>> {
    partial: Vec<u8>,
    read: Vec<Certificate>,
    each: F,
}

impl<F: FnMut(Vec<Certificate>) -> std::io::Result<()>> CertificateLines<F> {
    /// A reader handing each flush's certificates (a non-empty batch, in the order certd
    /// sent them) to `each`; an error from `each` stops the transfer.
    pub fn new(each: F) -> Self {
        CertificateLines {
            partial: Vec::new(),
            read: Vec::new(),
            each,
        }
    }
}

impl<F: FnMut(Vec<Certificate>) -> std::io::Result<()>> std::io::Write for CertificateLines<F> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let cert: Certificate = serde_json::from_slice(&self.partial).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a certificate line from certd: {e}"),
                )
            })?;
            self.read.push(cert);
            self.partial.clear();
        }
        self.partial.extend_from_slice(rest);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.read.is_empty() {
            return Ok(());
        }
        (self.each)(std::mem::take(&mut self.read))
    }
}

/// `certctl history --at DATE`: the moment asked about and the certificates valid then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidAtReport {
    /// `--at DATE` as Unix seconds.
    pub at: UnixTime,
    /// Each certificate valid at `at`, where it was deployed then and whether certctl knew
    /// it then; empty when none was valid.
    pub certificates: Vec<ValidAt>,
}

/// A failed request, with the error's full message.
fn failed(e: impl std::fmt::Display) -> Response {
    Response::error(ErrorKind::Failed, e.to_string())
}

/// Paths sent to certd must be absolute (the client resolves them): the error for one
/// that is not.
fn relative(p: &std::path::Path) -> Option<Response> {
    p.is_relative().then(|| {
        Response::error(
            ErrorKind::Invalid,
            format!("paths must be absolute, got {}", p.display()),
        )
    })
}

/// The managed CAs whose published CRL is behind the store, and those whose CRL expires
/// within a day or has expired (for `check`).
fn crl_state(
    store: &Store,
    now: UnixTime,
) -> Result<(Vec<String>, Vec<check::CrlExpiry>), revoke::RevokeError> {
    let stale = crl::stale_cas(store)?;
    let mut expiring = Vec::new();
    for ca in store.managed_cas()? {
        if let Some(next_update) = crl::crl_next_update(&ca) {
            // Within a day of it, or past half its validity for CRLs shorter than two days
            // (certd re-signs at half the validity).
            if next_update - now < (ca.crl_validity_secs / 2).min(DAY_SECS) {
                expiring.push(check::CrlExpiry {
                    ca: ca.name,
                    next_update,
                });
            }
        }
    }
    Ok((stale, expiring))
}

fn rfc3339_of(t: UnixTime) -> String {
    certctl_store::rfc3339(t)
}

/// Status of a store opened directly (no daemon).
pub fn direct_status(store: &Store) -> Result<StatusReport, certctl_store::StoreError> {
    let smtp = store.smtp_state()?;
    let (failed_files, failed_files_total) = query::failed_files(store)?;
    Ok(StatusReport {
        mode: "direct".into(),
        store: store.path().to_path_buf(),
        certificates: store.len() as u64,
        endpoints: store
            .endpoints()?
            .into_iter()
            .map(|e| crate::fleet::reports::with_drift(store, e))
            .collect::<Result<_, _>>()?,
        daemon: None,
        smtp_last_error: smtp.last_error,
        smtp_last_error_at: smtp.last_error_at,
        reminders_pending: store.delivery_states()?.iter().map(|d| d.pending).sum(),
        stale_crls: crl::stale_cas(store).unwrap_or_default(),
        failed_files_total,
        failed_files,
        last_delivery: store
            .last_delivery_outcome()?
            .as_ref()
            .map(LastDelivery::new),
        gone_artifacts: {
            let gone = store.artifacts_gone()?;
            store
                .artifacts()?
                .into_iter()
                .filter_map(|a| {
                    gone.get(&a.id)
                        .map(|t| format!("{} ({}, gone since {})", a.path, a.kind, rfc3339_of(*t)))
                })
                .collect()
        },
        restored: store.restored_from()?,
        failing_renewals: crate::pki::renewal::failing(store)?.into_values().collect(),
    })
}

/// Probes one endpoint and records what it served.
/// `certctl remind`: one pass; `lock` takes the store's writer lock around store work only.
fn remind<G>(
    store: &Store,
    config: Option<&std::path::Path>,
    policies: Option<&std::path::Path>,
    mode: PassMode,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Response {
    match reminders::pass_with_config_locked(store, config, policies, now, mode, lock) {
        Ok(report) => Response::Remind { report },
        Err(e) => failed(e),
    }
}

/// Answers a request that talks to other servers (`Request::uses_network`: `probe`,
/// `remind`) without holding the store's writer lock during that I/O: `lock` takes it only
/// around store reads and writes. certd answers these so that a slow or hostile server
/// cannot hold up scans; any other request is answered by [`execute`] under `lock`.
pub fn execute_networked<G>(
    store: &Store,
    request: Request,
    now: UnixTime,
    progress: &ScanProgress,
    lock: &dyn Fn() -> G,
) -> Response {
    match request {
        Request::Probe { target } => probe(store, &target, now, lock),
        Request::Remind {
            config,
            policies,
            mode,
            at,
        } if config.as_ref().is_none_or(|c| c.is_absolute()) => remind(
            store,
            config.as_deref(),
            policies.as_deref(),
            mode,
            at.unwrap_or(now),
            lock,
        ),
        Request::Revoke { revoke: request }
            if request.key_file.as_deref().is_none_or(|p| p.is_absolute()) =>
        {
            match revoke::revoke_locked(store, &request, now, lock) {
                Ok(report) => Response::Revoke { report },
                Err(revoke::RevokeError::Query(e)) => Response::from_query_error(e),
                Err(e) => failed(e),
            }
        }
        request @ (Request::Regenerate { .. }
        | Request::WorkflowResume { .. }
        | Request::WorkflowComplete { .. }) => workflow_answer(store, request, now, lock),
        Request::Renew { renew } => renew_answer(store, &renew, None, now, lock),
        request => {
            let _writer = lock();
            execute(store, request, now, progress)
        }
    }
}

/// `certctl renew`: with certd's configuration `config`, else the request's file (see
/// `pki::renewal::request_config`).
pub fn renew_answer<G>(
    store: &Store,
    request: &crate::pki::renewal::RenewRequest,
    config: Option<&crate::config::Config>,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Response {
    if let Some(p) = request
        .config
        .iter()
        .chain(request.policies.iter())
        .find(|p| p.is_relative())
    {
        return Response::error(
            ErrorKind::Invalid,
            format!("the path must be absolute, got {}", p.display()),
        );
    }
    let result = crate::pki::renewal::request_config(store, request, config)
        .and_then(|config| crate::pki::renewal::execute(store, request, &config, now, lock));
    match result {
        Ok(report) => Response::Renew { report },
        Err(crate::pki::renewal::RenewalError::NotFound(id)) => {
            Response::from_query_error(QueryError::NotFound(id))
        }
        Err(e) => failed(e),
    }
}

/// `regenerate`, `workflows resume`, `workflows complete`: the workflow under `lock`, then
/// (after a deploy) the endpoints that served the old certificate probed without it.
fn workflow_answer<G>(
    store: &Store,
    request: Request,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> Response {
    let result = {
        let _writer = lock();
        match request {
            Request::Regenerate { regenerate } => {
                if let Some(r) = regenerate.csr.as_deref().and_then(relative) {
                    return r;
                }
                workflow::regenerate(store, &regenerate, now)
            }
            Request::WorkflowResume { id, secrets } => workflow::resume(store, id, &secrets, now),
            Request::WorkflowComplete { id, cert, secrets } => {
                if let Some(r) = relative(&cert) {
                    return r;
                }
                crate::pki::workflow::complete(store, id, &cert, &secrets, now)
            }
            _ => return Response::error(ErrorKind::Invalid, "not a workflow request"),
        }
    };
    match result {
        Ok(mut report) => match workflow::probe_endpoints(store, &mut report, now, lock) {
            Ok(()) => Response::Workflow {
                report: Box::new(report),
            },
            Err(e) => failed(e),
        },
        Err(workflow::WorkflowError::Query(e)) => Response::from_query_error(e),
        Err(e) => failed(e),
    }
}

/// `certctl probe`: the handshake without `lock`, the outcome recorded under it.
fn probe<G>(store: &Store, target: &ProbeTarget, now: UnixTime, lock: &dyn Fn() -> G) -> Response {
    let outcome = crate::probe::probe(target, now);
    let _writer = lock();
    let mut endpoint = match crate::probe::record(store, target, &outcome, now) {
        Ok(e) => e,
        Err(e) => return Response::error(ErrorKind::Failed, e.to_string()),
    };
    match crate::fleet::reports::serving_revoked(store, &endpoint) {
        Ok(Some(f)) => endpoint.findings.push(f),
        Ok(None) => {}
        Err(e) => return Response::error(ErrorKind::Failed, e.to_string()),
    }
    let mut chain = Vec::with_capacity(outcome.chain.len());
    for facts in &outcome.chain {
        match store.get(&facts.fingerprint) {
            Ok(Some(cert)) => chain.push(cert),
            Ok(None) => {}
            Err(e) => return Response::error(ErrorKind::Failed, e.to_string()),
        }
    }
    Response::Probe {
        report: ProbeReport {
            endpoint,
            error: outcome.error,
            chain,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Duration;
    use crate::inventory::query::tests::store_with_file_states;
    use crate::inventory::query::{list, list_batches, FIRST_SLICE_HITS};

    /// What a streamed answer's writer saw: the bytes, and how many had been written at
    /// each flush (when they go out to the socket or the terminal).
    #[derive(Default)]
    struct Flushes {
        bytes: Vec<u8>,
        at: Vec<usize>,
    }

    impl std::io::Write for Flushes {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.at.push(self.bytes.len());
            Ok(())
        }
    }

    /// Issue 16 item 4: a long list goes out a screenful first, before the rest is read,
    /// and the JSON text is the same as the whole list's.
    #[test]
    fn a_long_list_goes_out_a_screenful_first() {
        let now = 1_795_000_000;
        let (_dir, store) = store_with_file_states(now);
        let filter = ListFilter {
            expiring_within: Some(Duration::days(30)),
            ..Default::default()
        };
        let mut sizes = Vec::new();
        list_batches(&store, &filter, now, |batch| {
            sizes.push(batch.len());
            Ok::<(), QueryError>(())
        })
        .expect("list");
        let total: usize = sizes.iter().sum();
        assert!(total > 2000, "{total}");
        assert!(
            sizes[0] <= FIRST_SLICE_HITS,
            "the first batch holds {} of {total} rows",
            sizes[0]
        );

        // `list --json` (certd's stream, or stdout directly): the first rows are flushed
        // on their own, and the text is byte for byte the whole list's.
        let whole = list(&store, &filter, now).expect("list");
        let mut expected = Vec::new();
        crate::inventory::view::write_json_list(&whole, now, &mut expected).expect("render");
        let mut out = Flushes::default();
        list_json(&store, &filter, now, now, &mut out)
            .map_err(|e| format!("{e:?}"))
            .expect("list")
            .expect("written");
        assert!(out.bytes == expected, "the streamed JSON differs");
        let first = out.at.first().copied().expect("flushed");
        let rows_in_first = out.bytes[..first]
            .windows(b"\"fingerprint_sha256\"".len())
            .filter(|w| *w == b"\"fingerprint_sha256\"")
            .count();
        assert!(
            rows_in_first > 0 && rows_in_first <= FIRST_SLICE_HITS,
            "the first flush holds {rows_in_first} of {} rows",
            whole.len()
        );

        // The table's stream: JSON lines read back into the same certificates.
        let mut lines = Flushes::default();
        list_lines(&store, &filter, now, &mut lines)
            .map_err(|e| format!("{e:?}"))
            .expect("list")
            .expect("written");
        let first = lines.at.first().copied().expect("flushed");
        assert!(lines.bytes[..first].iter().filter(|&&b| b == b'\n').count() <= FIRST_SLICE_HITS);
        let mut back = Vec::new();
        let mut reader = CertificateLines::new(|batch| {
            back.extend(batch);
            Ok(())
        });
        for piece in lines.bytes.chunks(1000) {
            std::io::Write::write_all(&mut reader, piece).expect("parse");
        }
        std::io::Write::flush(&mut reader).expect("flush");
        assert!(back == whole, "the certificates read back differ");
    }
}
