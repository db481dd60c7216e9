//! certctl's certificate inventory: the domain model ([`model`]) and its persistence.
//!
//! Everything that touches sled lives in this crate; the rest of certctl sees a [`Store`]
//! with domain methods, an [`Ingest`] batch for bulk writes, and a [`StoreError`].
//!
//! - [`model`]: `Certificate`, `Role`, `Source`, ... — what certctl knows.
//! - [`Store`]: opening the store (one process at a time) and the queries.
//! - [`Ingest`]: merging scan observations into records and indexes, atomically per batch.
//! - [`FileState`]: what was found in each scanned file, for re-scans.
//! - [`Endpoint`]: what each probed TLS endpoint served, and its findings.
//! - [`Counts`]: counts kept on every commit, so that `stats`, `check` and `/metrics`
//!   read what they report rather than every record.
//! - [`AgentCredential`]: the index of agents' credentials, kept on every commit.
//! - [`RetentionPolicy`] and [`Store::prune_batch`]: removing what nothing holds any more.
#![forbid(unsafe_code)]

mod agent_index;
mod audit;
mod backup;
mod batch;
mod counts;
mod coverage;
mod endpoints;
mod error;
mod failed_files;
mod files;
mod fleet;
mod ingest;
mod keys;
mod migrate;
pub mod model;
mod reclaim;
mod reminders;
mod renewals;
mod retention;
mod store;
#[cfg(test)]
mod test_support;
mod verify;
mod workflows;

pub use agent_index::{AgentCredential, LiveAgentEntry};
pub use audit::AuditEvent;
pub use backup::{kind_of, RestoredFrom, TreeCounts, TREE_MAGIC};
pub use counts::{CheckEntry, CountChanges, CountClass, Counts, StatusCounts};
pub use endpoints::{Endpoint, Finding, FindingKind};
pub use error::{Result, StoreError};
pub use files::{DirSeen, FileProblem, FileState};
pub use fleet::{AgentDecision, AgentVerdict, Registration, TrackedArtifact, ARTIFACT_KINDS};
pub use ingest::{Ingest, Lookup, Observed};
pub use model::*;
pub use reminders::{DeliveryOutcome, DeliveryState, SentReminder, SmtpState, Snooze};
pub use renewals::RenewalRecord;
pub use retention::{PruneCursor, PruneReport, PrunedRenewals, RetentionPolicy, RetentionState};
pub use store::{ExpiryHit, Store, DEFAULT_CACHE_BYTES, SCHEMA_VERSION};
pub use verify::Verification;
pub use workflows::{CachedCrl, ManagedCa, ReloadHook, Workflow, WorkflowStep};
