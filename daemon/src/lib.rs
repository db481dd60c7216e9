//! certctl's engine: everything between the store and the binaries, one folder per
//! capability (the README's "Architecture" has the map and how a request travels).
//!
//! This file is the facade. The capability folders are private; what `certctl`, `certd`,
//! the tests and the benchmarks use is re-exported below, grouped the way the binaries think
//! of it (`query::list`, `revoke::revoke`, `ca::Secret`). The single-file capabilities
//! (`config`, `policy`, `probe`, `history`, `backup`, `retention`, `demo`, `manpages`,
//! `duration`) and [`api`] and [`server`] are public modules: their `pub` items are exactly
//! their interface (`unreachable_pub` keeps everything else crate-private).
#![forbid(unsafe_code)]

pub mod api;
pub mod backup;
mod certs;
pub mod clock;
pub mod config;
mod crash_point;
pub mod demo;
pub mod duration;
mod files;
mod fleet;
pub mod history;
mod inventory;
mod mail;
pub mod manpages;
mod net;
mod pki;
pub mod policy;
pub mod probe;
mod reminders;
pub mod retention;
pub mod server;

pub use api::fleet::{FleetRequest, FleetResponse};
pub use duration::Duration;

/// Reading certificates out of DER, PEM and PKCS#12 bytes.
pub mod formats {
    pub use crate::certs::formats::{read_certificates, read_certificates_partial, FormatError};
    pub use crate::certs::openssl_setup::ensure_legacy_provider;
}

/// X.509 facts.
pub mod x509 {
    pub use crate::certs::x509::take_lax_date_notes;
}

/// The one symlink-safe atomic writer.
pub mod atomic_file {
    pub use crate::files::atomic::{FileMode, Options};
}

/// `certctl scan`: the walk-parse-store pipeline, and reading a file the way it does.
pub mod scan {
    pub use crate::inventory::scan::{
        read_file_bytes, read_regular_file, scan, ScanOptions, ScanProgress, ScanSummary,
    };
}

/// `certctl list`, `show`, `stats`.
pub mod query {
    pub use crate::inventory::query::{list, list_batches, ListFilter, QueryError, Stats};
}

/// The JSON/CSV form of a certificate (a contract for scripts).
pub mod view {
    pub use crate::inventory::view::{
        printable, with_rfc3339_times, write_json_list, CertificateView, JsonListWriter, Printable,
        EXPIRING_SECS,
    };
}

/// Tracked artifacts (`certctl track`).
pub mod artifacts {
    pub use crate::inventory::artifacts::{
        csv_row, id_from_client, matches_id, parse_date, prepare, status, to_json, to_json_gone,
        KINDS, MAX_TRACKED_FILE_BYTES,
    };
}

/// Agents: registrations, decisions, the deny list.
pub mod agents {
    pub use crate::fleet::agents::{
        agent_name, configured_deny_list, parse_registrations, DecideRequest, DecidedAgent,
        DecisionReport, MAX_REGISTRATIONS_FILE_BYTES,
    };
}

/// `certctl check`.
pub mod check {
    pub use crate::fleet::check::{
        check, counts_for_check, CheckFinding, CheckReport, CheckTotals, CrlExpiry,
        FailingRenewalCheck, Verdict,
    };
}

/// Fleet reports.
pub mod reports {
    pub use crate::fleet::reports::{cell_text, Report, ReportOptions, REPORTS};
}

/// Agents whose ephemeral credentials stopped being renewed.
pub mod stalled {
    pub use crate::fleet::stalled::{
        grace, judge, renewal_expected, NewestCredentials, StalledRenewal,
    };
}

/// Reminders: the pass, snoozes, how a date is said.
pub mod remind {
    pub use crate::reminders::digest::{Digest, Entry};
    pub use crate::reminders::pass::Undelivered;
    pub use crate::reminders::snooze::silences;
    pub use crate::reminders::{when, PassMode, PassReport, Snoozed};
}

/// Managed CAs: secrets, keys, issuing, `ca init`/`list`.
pub mod ca {
    pub use crate::pki::ca::{issued_by, IssueRequest, KeyKind, PfxFormat, Secret};
    pub use crate::pki::cas::{CaInfo, CaInitRequest};
}

/// Revocation and CRLs.
pub mod revoke {
    pub use crate::pki::crl::{reason_name, CrlCheck, CrlPublished};
    pub use crate::pki::revoke::{
        parse_reason, EndpointCheck, RevokeReport, RevokeRequest, Target,
    };
}

/// The regenerate workflow.
pub mod workflow {
    pub use crate::pki::reload::ReloadOutcome;
    pub use crate::pki::workflow::{
        EndpointServes, RegenerateRequest, WorkflowReport, WorkflowSecrets,
    };
}

/// Automatic renewal.
pub mod renewal {
    pub use crate::pki::renewal::{
        explain, unknown_scep_servers, DueRenewal, RenewReport, RenewRequest, RenewalMethod,
        RenewalTiming,
    };
}

/// SCEP enrollment by hand (`certd scep enroll`).
pub mod scep {
    pub use crate::pki::scep::admin::{enroll, AdminError, EnrollReport, EnrollRequest};
}

/// CRLs of other CAs.
pub mod crlfetch {
    pub use crate::pki::crlfetch::CrlFetchOptions;
}
