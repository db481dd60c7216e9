//! certctl's engine: everything between the store and the binaries.
//!
//! - [`x509`] and [`formats`]: reading certificates out of DER, PEM and PKCS#12 bytes;
//!   [`pkcs12_guard`]: the work factors a PKCS#12 file may ask for, checked before opening.
//! - [`inventory`]: `scan`, the parallel walk-parse-store pipeline over files and folders.
//! - [`query`]: `list`, `show`, `stats`, `check` over the store; [`stalled`]: agents whose
//!   ephemeral credentials stopped being renewed.
//! - [`view`]: the JSON/CSV form of a certificate (a contract for scripts).
//! - [`fleet`]: the demo fleet and benchmark certificate generator.
//! - [`duration`]: `30d`, `12h`, `2w`.
//!
//! - [`api`]: the requests `certctl` makes, answered by [`api::execute`] on a store.
//! - [`server`]: the `certd` daemon (schedules, folder watching, signals, control socket).
//! - [`metrics_http`]: certd's `GET /metrics` (Prometheus) responder.
//! - [`control`] and [`signals`]: the OS-specific parts (Unix socket, Unix signals).
//! - [`config`] and [`schedule`]: certd's TOML configuration and cron schedules.
//! - [`smtp_client`] and [`smtp_tls`]: the bounded SMTP session reminders go out through
//!   (reply sizes, one deadline per session) and its TLS side (`smtp.ca_file`).
//! - [`probe`]: fetching and judging the chains served by live TLS endpoints.
//! - [`ca`], [`revoke`] and [`workflow`]: managed CAs and issuing, revocation and CRLs,
//!   the regenerate workflow and the audit history queries; [`workflow_csr`]: regenerating
//!   a certificate of a CA certctl does not hold (`--csr`, `workflows complete`);
//!   [`reload`]: the post-deploy reload hooks of deploy targets.
//! - [`agents`], [`reports`] and [`artifacts`]: agent registrations, the pending queue,
//!   approve/block and the deny list; fleet reports, clock skew, drift and metrics; tracked
//!   artifacts (enrollment bundles) shown by `list`.
//! - [`manpages`]: the manual pages, rendered from the clap definitions.
//! - [`retention`]: prune passes (`certctl store prune`, certd's `[retention]` job).
//!
//! The `certd` binary (src/bin/certd.rs) runs [`server::run`]; the `certctl` CLI sends
//! [`api::Request`]s to certd when it runs, and executes them itself when not.
#![forbid(unsafe_code)]

pub mod api;
pub mod backup;
pub mod certs;
pub mod config;
pub mod crash_point;
pub mod demo;
pub mod duration;
pub mod files;
pub mod fleet;
pub mod history;
pub mod inventory;
pub mod mail;
pub mod manpages;
pub mod net;
pub mod pki;
pub mod policy;
pub mod probe;
pub mod reminders;
pub mod retention;
pub mod server;

pub use api::control;
pub use api::fleet::{FleetRequest, FleetResponse};
/// Transitional: the CLI's old paths (the facade replaces them).
pub use certs::{formats, pkcs12_guard, x509};
pub use files::atomic as atomic_file;
pub use pki::{ca, crlfetch, reload, renewal, revoke, scep, workflow};

pub use duration::Duration;
