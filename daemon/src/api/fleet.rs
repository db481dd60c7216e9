//! The fleet requests (agents, reports, tracked artifacts) carried by
//! `Request::Fleet`: one dispatcher, so they answer the same directly and
//! through certd.

use std::path::{Path, PathBuf};

use certctl_store::{AgentDecision, Registration, Store, UnixTime};
use serde::{Deserialize, Serialize};

use crate::api::error::ErrorKind;
use crate::fleet::agents::{
    decide_with, deny_list_path, import, pending, write_deny_list, AgentsError, DecideRequest,
    DecisionReport, ImportReport, PendingAgent,
};
use crate::fleet::reports::{self, ReportKind};
use crate::inventory::artifacts::ArtifactError;

/// The fleet requests (`agents ...`, `report`, `track`, the artifacts of `list`), carried
/// by `Request::Fleet` so they work the same directly and through certd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "fleet", rename_all = "kebab-case")]
pub enum FleetRequest {
    /// `certctl agents import-registrations FILE` (parsed by the client).
    ImportRegistrations {
        /// The registrations file as the client resolved it (absolute path), for the
        /// report's `source`; certd does not read it.
        source: String,
        /// The rows of FILE, parsed and validated by the client.
        registrations: Vec<Registration>,
        /// `--merge`: add to the stored registrations instead of replacing them all.
        merge: bool,
    },
    /// `certctl agents pending`.
    Pending,
    /// `certctl agents decisions`.
    Decisions,
    /// `certctl agents approve|block`.
    Decide {
        /// The agents, the verdict, who decides, the deny list to rewrite and the CA
        /// passphrase for revoking a blocked agent's certificates.
        decide: DecideRequest,
    },
    /// `certctl agents deny-list`: rewrite the deny list now.
    DenyList {
        /// `--deny-list FILE` (absolute; remembered in the store); `None`: certd's
        /// configured `[agents] deny_list`, else the path remembered in the store.
        path: Option<PathBuf>,
    },
    /// `certctl report NAME`.
    Report {
        /// The report's NAME (`by-role`, `expiring`, ...: one of `reports::REPORTS`);
        /// another is refused as `invalid`.
        name: String,
        /// `--tolerance` and `--ephemeral-lifetime` (used by `clock-skew` only).
        options: crate::fleet::reports::ReportOptions,
    },
    /// `certctl track FILE` (the artifact is prepared by the client, which reads the file).
    Track {
        /// The artifact to record (id = SHA-256 of the file, absolute path, expiry, ...).
        artifact: certctl_store::TrackedArtifact,
    },
    /// `certctl untrack ID`: stop tracking the files `id` names (id prefix, path or name).
    Untrack {
        /// An id prefix (at least 8 hex characters), the absolute path (the client makes
        /// a relative one absolute) or the name of one tracked artifact.
        id: String,
    },
    /// The tracked artifacts `certctl list` shows.
    Artifacts {
        /// `list`'s filters: `--role` and `--issuer` exclude every artifact, `--name` matches
        /// its name or path, the time filters apply to its expiry.
        filter: crate::inventory::query::ListFilter,
    },
    /// `certctl metrics`: Prometheus text exposition.
    Metrics {
        /// `--per-agent`: one expiry series per agent certificate too (else agents are
        /// aggregated by credential kind and status).
        per_agent: bool,
    },
    /// `certctl report NAME --html FILE`: the dashboard's overview and the report, as one
    /// standalone HTML page.
    ReportHtml {
        /// The report's NAME, as in [`FleetRequest::Report`].
        name: String,
        /// `--tolerance` and `--ephemeral-lifetime`, as in [`FleetRequest::Report`].
        options: crate::fleet::reports::ReportOptions,
    },
}

impl FleetRequest {
    /// Whether answering may write to the store (certd serialises those with its scans and
    /// probes). Reports, the queue, the decisions, metrics and the artifacts `list` shows
    /// only read, so `list` never waits behind a scan for them.
    pub(crate) fn writes_store(&self) -> bool {
        !matches!(
            self,
            FleetRequest::Pending
                | FleetRequest::Decisions
                | FleetRequest::Report { .. }
                | FleetRequest::ReportHtml { .. }
                | FleetRequest::Artifacts { .. }
                | FleetRequest::Metrics { .. }
        )
    }
}

/// The answers to [`FleetRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "fleet", rename_all = "kebab-case")]
pub enum FleetResponse {
    /// Answers [`FleetRequest::ImportRegistrations`].
    Imported {
        /// What the import did: `agents import-registrations --json`.
        report: ImportReport,
    },
    /// Answers [`FleetRequest::Pending`].
    Pending {
        /// The agents waiting for a decision, what `agents pending --json` is built from
        /// (`first_seen` printed as RFC 3339); empty when none waits.
        agents: Vec<PendingAgent>,
    },
    /// Answers [`FleetRequest::Decisions`].
    Decisions {
        /// Every recorded approve/block decision, by agent name (`agents decisions --json` sorts
        /// them by time and prints `verdict` as `decision`).
        decisions: Vec<AgentDecision>,
    },
    /// Answers [`FleetRequest::Decide`] and [`FleetRequest::DenyList`] (the latter with
    /// `decided` and `revoked` empty).
    Decided {
        /// What was decided and written: `agents approve|block|deny-list --json`.
        report: DecisionReport,
    },
    /// Answers [`FleetRequest::Report`].
    Report {
        /// Columns and rows; `report NAME --json` prints it as `{"report", "generated_at",
        /// "rows"}`.
        report: crate::fleet::reports::Report,
    },
    /// Answers [`FleetRequest::Artifacts`], [`FleetRequest::Track`] (the one artifact
    /// recorded) and [`FleetRequest::Untrack`] (the one removed).
    Artifacts {
        /// The tracked artifacts (for `list`: those the filter keeps).
        artifacts: Vec<certctl_store::TrackedArtifact>,
        /// Those whose file is gone (id hex → since when), for `list`.
        #[serde(default)]
        gone: std::collections::BTreeMap<String, UnixTime>,
    },
    /// Answers [`FleetRequest::Metrics`].
    Metrics {
        /// The store's series in the Prometheus text exposition format (the client appends
        /// certd's job and SMTP series from `status`).
        text: String,
    },
    /// Answers [`FleetRequest::ReportHtml`].
    Html {
        /// The whole standalone HTML page (UTF-8), which the client writes to FILE.
        html: String,
    },
}

/// Answers a fleet request; errors come back as (kind, message).
pub fn execute(
    store: &Store,
    request: FleetRequest,
    now: UnixTime,
) -> Result<FleetResponse, (ErrorKind, String)> {
    execute_with(store, request, None, now)
}

/// [`execute`] with certd's configured deny list (`[agents] deny_list`; certd's own, or in
/// direct mode the one of `certctl --config FILE`): the path `approve`, `block` and
/// `deny-list` use when the request names none (before the path remembered in the store).
pub fn execute_with(
    store: &Store,
    request: FleetRequest,
    configured_deny_list: Option<&Path>,
    now: UnixTime,
) -> Result<FleetResponse, (ErrorKind, String)> {
    let fail = |e: &dyn std::fmt::Display| (ErrorKind::Failed, e.to_string());
    let invalid = |e: &dyn std::fmt::Display| (ErrorKind::Invalid, e.to_string());
    let agents_err = |e: AgentsError| match e {
        AgentsError::UnknownAgent(_) => (ErrorKind::NotFound, e.to_string()),
        AgentsError::NoDenyList | AgentsError::RelativeDenyList(_) => {
            (ErrorKind::Invalid, e.to_string())
        }
        other => fail(&other),
    };
    match request {
        FleetRequest::ImportRegistrations {
            source,
            registrations,
            merge,
        } => import(store, &source, &registrations, merge, now)
            .map(|report| FleetResponse::Imported { report })
            .map_err(agents_err),
        FleetRequest::Pending => pending(store, now)
            .map(|agents| FleetResponse::Pending { agents })
            .map_err(agents_err),
        FleetRequest::Decisions => store
            .agent_decisions()
            .map(|decisions| FleetResponse::Decisions { decisions })
            .map_err(|e| fail(&e)),
        FleetRequest::Decide { decide: d } => decide_with(store, &d, configured_deny_list, now)
            .map(|report| FleetResponse::Decided { report })
            .map_err(agents_err),
        FleetRequest::DenyList { path } => (|| {
            let path = deny_list_path(store, path.as_deref(), configured_deny_list)?
                .ok_or(AgentsError::NoDenyList)?;
            let entries = write_deny_list(store, &path, now)?;
            Ok(DecisionReport {
                decided: Vec::new(),
                deny_list: Some(path.display().to_string()),
                deny_list_entries: entries as u64,
                revoked: Vec::new(),
                revoke_error: None,
            })
        })()
        .map(|report| FleetResponse::Decided { report })
        .map_err(agents_err),
        FleetRequest::Report { name, options } => {
            let kind = name.parse::<ReportKind>().map_err(|e| invalid(&e))?;
            reports::run(store, kind, &options, now)
                .map(|report| FleetResponse::Report { report })
                .map_err(|e| fail(&e))
        }
        FleetRequest::ReportHtml { name, options } => {
            let kind = name.parse::<ReportKind>().map_err(|e| invalid(&e))?;
            let report = reports::run(store, kind, &options, now).map_err(|e| fail(&e))?;
            crate::fleet::dashboard::overview(store, now)
                .map(|o| FleetResponse::Html {
                    html: crate::fleet::dashboard::render_standalone(&o, &report),
                })
                .map_err(|e| fail(&e))
        }
        FleetRequest::Track { artifact } => crate::inventory::artifacts::track(store, &artifact)
            .map(|a| FleetResponse::Artifacts {
                artifacts: vec![a],
                gone: Default::default(),
            })
            .map_err(|e| fail(&e)),
        FleetRequest::Untrack { id } => crate::inventory::artifacts::untrack(store, &id, now)
            .map(|artifacts| FleetResponse::Artifacts {
                artifacts,
                gone: Default::default(),
            })
            .map_err(|e| match e {
                ArtifactError::NotTracked(_) => (ErrorKind::NotFound, e.to_string()),
                ArtifactError::Several(..) => (ErrorKind::Ambiguous, e.to_string()),
                other => fail(&other),
            }),
        FleetRequest::Metrics { per_agent } => {
            crate::fleet::reports::metrics_text(store, per_agent, now)
                .map(|text| FleetResponse::Metrics { text })
                .map_err(|e| fail(&e))
        }
        FleetRequest::Artifacts { filter } => (|| {
            let artifacts = crate::inventory::artifacts::list(store, &filter, now)?;
            let gone = store.artifacts_gone()?;
            let gone = artifacts
                .iter()
                .filter_map(|a| gone.get(&a.id).map(|t| (a.id.to_hex(), *t)))
                .collect();
            Ok::<_, crate::inventory::artifacts::ArtifactError>(FleetResponse::Artifacts {
                artifacts,
                gone,
            })
        })()
        .map_err(|e| fail(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certctl_store::AgentVerdict;

    #[test]
    fn only_decisions_imports_tracking_and_deny_lists_write() {
        assert!(!FleetRequest::Pending.writes_store());
        assert!(!FleetRequest::Artifacts {
            filter: Default::default()
        }
        .writes_store());
        assert!(FleetRequest::DenyList { path: None }.writes_store());
        let decide = DecideRequest {
            ids: vec!["a".into()],
            verdict: AgentVerdict::Blocked,
            actor: "me".into(),
            deny_list: None,
            passphrase: None,
        };
        assert!(FleetRequest::Decide { decide }.writes_store());
    }

    /// `untrack` of an ID that matches no tracked file is `not-found`, as `forget` of an
    /// unknown endpoint is; one that matches several is `ambiguous`.
    #[test]
    fn untracking_an_unknown_file_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let untrack = |id: &str| {
            execute(
                &store,
                FleetRequest::Untrack { id: id.to_string() },
                1_800_000_000,
            )
        };
        let Err((kind, message)) = untrack("/nowhere/site.bundle") else {
            panic!("an unknown file was untracked");
        };
        assert_eq!(kind, ErrorKind::NotFound, "{message}");
        assert!(message.contains("no tracked file matches"), "{message}");
    }
}
