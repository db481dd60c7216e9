//! `certctl policy check|explain|conflicts`: the policies folder (`--policies DIR`, else
//! `[reminders] policies` of `--config FILE`; the repository's `policies/` only when given).

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::api::Request;
use certctl_daemon::artifacts;
use certctl_daemon::policy::{self, PolicyError, PolicySet, Successors};
use certctl_daemon::query::ListFilter;
use certctl_daemon::remind::Snoozed;
use certctl_store::{rfc3339, Certificate, TrackedArtifact, UnixTime};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::exit::Exit;
use crate::session::{clock, Globals, Session};
use crate::table::Table;

use super::renew::RenewalContext;

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check the policy files of a folder; each problem as FILE:LINE:COLUMN: message.
    Check(PolicyCheckArgs),
    /// Which policy applies to a certificate, why, its thresholds and its state.
    Explain(PolicyExplainArgs),
    /// Certificates matched by more than one policy, with the policies (first one wins).
    Conflicts(PolicyConflictsArgs),
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The policies folder (its *.toml files).
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PoliciesArg {
    /// The policies folder [default: `[reminders] policies` of --config FILE].
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PolicyExplainArgs {
    /// Fingerprint prefix (≥ 8 hex characters) or exact subject CN / SAN; for a tracked
    /// artifact, an id prefix (≥ 8 hex characters), its exact path or its name.
    pub id: String,
    #[command(flatten)]
    pub source: PoliciesArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyConflictsArgs {
    #[command(flatten)]
    pub source: PoliciesArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: PolicyArgs) -> Result<Exit> {
    match a.command {
        PolicyCommand::Check(a) => check(a),
        PolicyCommand::Explain(a) => {
            let set = g.policies(a.source.policies.clone())?;
            explain(&g.existing()?, &set, g, a)
        }
        PolicyCommand::Conflicts(a) => {
            let set = g.policies(a.source.policies.clone())?;
            conflicts(&g.existing()?, &set, a.json)
        }
    }
}

fn thresholds_json(p: &policy::Policy) -> serde_json::Value {
    json!({
        "remind": p.remind.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "warn": p.warn.to_string(),
        "critical": p.critical.to_string(),
        "renewal_expected": p.renewal_expected.map(|d| d.to_string()),
        "grace": p.grace.map(|d| d.to_string()),
        "thresholds": p.thresholds().into_iter().map(policy::threshold_label).collect::<Vec<_>>(),
    })
}

fn policy_json(p: &policy::Policy) -> serde_json::Value {
    json!({
        "name": p.name,
        "file": p.file,
        "line": p.line,
        "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "artifacts": p.artifacts,
        "specificity": p.specificity(),
        "thresholds": thresholds_json(p),
        "recipients": p.recipients,
    })
}

fn check(a: PolicyCheckArgs) -> Result<Exit> {
    match policy::load_dir(&a.dir) {
        Ok(set) => {
            if a.json {
                let v = json!({
                    "ok": true,
                    "files": set.files,
                    "policies": set.policies.iter().map(policy_json).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}: {} policies in {} files, no problems (in precedence order):",
                    a.dir.display(),
                    set.policies.len(),
                    set.files.len()
                );
                let mut t = Table::new(&["POLICY", "WHERE", "ROLES", "THRESHOLDS", "RECIPIENTS"]);
                for p in &set.policies {
                    t.row(vec![
                        p.name.clone(),
                        p.location(),
                        if p.is_for_artifacts() {
                            format!("artifacts:{}", p.artifacts.join(","))
                        } else {
                            p.roles
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                        p.thresholds()
                            .into_iter()
                            .map(policy::threshold_label)
                            .collect::<Vec<_>>()
                            .join(" "),
                        p.recipients.join(","),
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(Exit::Success)
        }
        Err(PolicyError::Invalid(problems)) => {
            if a.json {
                let v = json!({
                    "ok": false,
                    "errors": problems.iter().map(|d| json!({
                        "file": d.file, "line": d.line, "column": d.column, "message": d.message,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            for d in &problems {
                eprintln!("{d}");
            }
            eprintln!(
                "{}: {} problem{}",
                a.dir.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            Ok(Exit::Failure)
        }
        Err(e) => Err(e.into()),
    }
}

/// `policy explain` for tracked artifacts: the same fields as for a certificate where they
/// apply (`"kind": "artifact"`, `role` null, no renewal or key rules).
fn explain_artifact(
    set: &PolicySet,
    a: &TrackedArtifact,
    snoozes: &[Snoozed],
    now: UnixTime,
) -> serde_json::Value {
    // A snooze stops applying once the file has expired, as for a certificate.
    let snooze = snoozes
        .iter()
        .map(|s| &s.snooze)
        .find(|s| s.fingerprint == a.id && certctl_daemon::remind::silences(s, a.expires, now));
    let matching = set.matching_artifact(a);
    let chosen = matching.first();
    let state = chosen.map_or(policy::State::Untracked, |(p, _)| {
        p.state_at(a.expires, now)
    });
    json!({
        "kind": "artifact",
        "artifact_kind": a.kind,
        "fingerprint_sha256": a.id.to_hex(),
        "name": a.name,
        "path": a.path,
        "subject": format!("{} {}", a.kind, a.path),
        "role": null,
        "credential_kind": null,
        "not_after": rfc3339(a.expires),
        "days_left": certctl_daemon::duration::days_left(a.expires, now),
        "when": certctl_daemon::remind::when(a.expires, now),
        "state": state.as_str(),
        "policy": chosen.map(|(p, _)| json!({"name": p.name, "file": p.file, "line": p.line})),
        "reasons": chosen.map(|(_, why)| why.clone()).unwrap_or_default(),
        "thresholds": chosen.map(|(p, _)| thresholds_json(p)),
        "crossed": chosen.and_then(|(p, _)| p.crossed_at(a.expires, now)).map(policy::threshold_label),
        "renewal_pending": false,
        "renewal_stalled_days": null,
        "superseded_by": null,
        "renewed_not_reloaded": null,
        "stalled_renewal": null,
        "violations": [],
        "recipients": chosen.map(|(p, _)| p.recipients.clone()).unwrap_or_default(),
        "also_matched": matching.iter().skip(1).map(|(p, _)| json!({"name": p.name, "file": p.file, "line": p.line})).collect::<Vec<_>>(),
        "snoozed_until": snooze.map(|s| rfc3339(s.until)),
        "snooze_reason": snooze.map(|s| s.reason.clone()),
    })
}

fn explain(session: &Session, set: &PolicySet, g: &Globals, a: PolicyExplainArgs) -> Result<Exit> {
    let now = clock()?;
    let renewals = RenewalContext::load(session, g.config_file())?;
    let certs = match session.certificates(Request::Find { id: a.id.clone() }) {
        Ok(certs) => certs,
        Err(e) => {
            // Not a certificate: perhaps a tracked artifact.
            let found =
                find_artifacts(session, &artifacts::id_from_client(&a.id)).unwrap_or_default();
            if found.is_empty() {
                return Err(e);
            }
            let snoozed = session.snoozes(now)?;
            let out: Vec<serde_json::Value> = found
                .iter()
                .map(|x| explain_artifact(set, x, &snoozed, now))
                .collect();
            return print_explained(&out, a.json);
        }
    };
    let snoozed = session.snoozes(now)?;
    let mut out = Vec::new();
    for cert in &certs {
        // Renewals: other certificates answering to the same name.
        let mut family = certs.clone();
        if let Some(cn) = &cert.facts.subject_cn {
            if let Ok(more) = session.certificates(Request::Find { id: cn.clone() }) {
                family.extend(more);
            }
        }
        let renewal = Successors::new(&family).renewal(cert);
        let stalled = stalled_renewal_json(cert, &family, set, now);
        let successor = match &renewal {
            Some(policy::Renewal::Renewed(fp)) => Some(*fp),
            _ => None,
        };
        let not_reloaded = match &renewal {
            Some(policy::Renewal::NotReloaded { by, endpoints }) => {
                Some(json!({"by": by.to_hex(), "still_served_by": endpoints}))
            }
            _ => None,
        };
        let matching = set.matching(cert);
        let snooze = snoozed.iter().map(|s| &s.snooze).find(|s| {
            s.fingerprint == cert.fingerprint()
                && certctl_daemon::remind::silences(s, cert.facts.not_after, now)
        });
        let chosen = matching.first();
        let state = chosen.map_or(policy::State::Untracked, |(p, _)| p.state(cert, now));
        out.push(json!({
            "fingerprint_sha256": cert.fingerprint().to_hex(),
            "name": cert.facts.display_name(),
            "subject": cert.facts.subject,
            "role": cert.role.as_str(),
            "credential_kind": cert.credential_kind().map(|k| k.as_str()),
            "not_after": rfc3339(cert.facts.not_after),
            "days_left": cert.days_left(now),
            "when": certctl_daemon::remind::when(cert.facts.not_after, now),
            "state": state.as_str(),
            "policy": chosen.map(|(p, _)| json!({"name": p.name, "file": p.file, "line": p.line})),
            "reasons": chosen.map(|(_, why)| why.clone()).unwrap_or_default(),
            "thresholds": chosen.map(|(p, _)| thresholds_json(p)),
            "crossed": chosen.and_then(|(p, _)| p.crossed(cert, now)).map(policy::threshold_label),
            "renewal_pending": chosen.is_some_and(|(p, _)| p.renewal_pending(cert, now)),
            "renewal_stalled_days": if successor.is_none() { chosen.and_then(|(p, _)| p.renewal_stalled_days(cert, now)) } else { None },
            "superseded_by": successor.map(|fp| fp.to_hex()),
            "renewed_not_reloaded": not_reloaded,
            "stalled_renewal": stalled,
            "violations": chosen.map(|(p, _)| p.violations(cert)).unwrap_or_default(),
            "recipients": chosen.map(|(p, _)| p.recipients.clone()).unwrap_or_default(),
            "also_matched": matching.iter().skip(1).map(|(p, _)| json!({"name": p.name, "file": p.file, "line": p.line})).collect::<Vec<_>>(),
            "snoozed_until": snooze.map(|s| rfc3339(s.until)),
            "snooze_reason": snooze.map(|s| s.reason.clone()),
            "renewal": chosen.map(|(p, _)| renewals.explain(cert, p)),
        }));
    }
    print_explained(&out, a.json)
}

/// For an ephemeral agent credential: its agent's newest credential among `family` and
/// whether that agent is a stalled renewal ([`certctl_daemon::stalled`]); `null` otherwise.
fn stalled_renewal_json(
    cert: &Certificate,
    family: &[Certificate],
    set: &PolicySet,
    now: UnixTime,
) -> serde_json::Value {
    use certctl_daemon::stalled;
    if !stalled::renewal_expected(cert) {
        return serde_json::Value::Null;
    }
    let mut newest = stalled::NewestCredentials::default();
    for c in family.iter().chain([cert]) {
        newest.add(c);
    }
    let newest_fp = newest.newest_for(cert).unwrap_or(cert.fingerprint());
    let Some(newest_cert) = family
        .iter()
        .chain([cert])
        .find(|c| c.fingerprint() == newest_fp)
    else {
        return serde_json::Value::Null;
    };
    let (grace, grace_policy) = stalled::grace(newest_cert, Some(set));
    let stalled = stalled::judge(newest_cert, Some(set), now);
    json!({
        "agent": certctl_daemon::agents::agent_name(newest_cert),
        "newest": newest_fp == cert.fingerprint(),
        "newest_fingerprint": newest_fp.to_hex(),
        "not_after": rfc3339(newest_cert.facts.not_after),
        "grace": grace.to_string(),
        "grace_policy": grace_policy,
        "stalled_since": rfc3339(newest_cert.facts.not_after.saturating_add(grace.as_secs())),
        "stalled": stalled.is_some(),
        "note": stalled.map(|s| s.note()),
    })
}

fn print_explained(out: &[serde_json::Value], json_out: bool) -> Result<Exit> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(out)?);
        return Ok(Exit::Success);
    }
    for (i, v) in out.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", explain_text(v));
    }
    Ok(Exit::Success)
}

fn explain_text(v: &serde_json::Value) -> String {
    let s = |key: &str| v[key].as_str().unwrap_or("").to_string();
    let mut out = String::new();
    let mut line = |k: &str, text: String| out.push_str(&format!("{k:<14}{text}\n"));
    let artifact = v["kind"] == "artifact";
    if artifact {
        line(
            "artifact",
            format!("{} ({})", s("name"), s("fingerprint_sha256")),
        );
        line(
            "",
            format!(
                "kind {}, file {}, not after {} ({})",
                s("artifact_kind"),
                s("path"),
                s("not_after"),
                s("when")
            ),
        );
    } else {
        line(
            "certificate",
            format!("{} ({})", s("name"), s("fingerprint_sha256")),
        );
        line(
            "",
            format!(
                "role {}, not after {} ({})",
                s("role"),
                s("not_after"),
                s("when")
            ),
        );
    }
    line("state", s("state"));
    match v["policy"].as_object() {
        None => line("policy", "none matches: untracked (no reminders)".into()),
        Some(p) => {
            line(
                "policy",
                format!(
                    "{} ({}:{})",
                    p["name"].as_str().unwrap_or(""),
                    p["file"].as_str().unwrap_or(""),
                    p["line"]
                ),
            );
            for why in v["reasons"].as_array().into_iter().flatten() {
                line("why", why.as_str().unwrap_or("").to_string());
            }
            let t = &v["thresholds"];
            let labels: Vec<&str> = t["thresholds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str())
                .collect();
            line(
                "thresholds",
                format!(
                    "{} (warn {}, critical {})",
                    labels.join(" "),
                    t["warn"].as_str().unwrap_or(""),
                    t["critical"].as_str().unwrap_or("")
                ),
            );
            if let Some(c) = v["crossed"].as_str() {
                line("crossed", c.to_string());
            }
            if let Some(r) = t["renewal_expected"].as_str() {
                let state = if let Some(fp) = v["superseded_by"].as_str() {
                    format!("renewed by {fp}")
                } else if v["renewal_pending"].as_bool() == Some(true) {
                    "not due yet: reminders wait".to_string()
                } else {
                    format!("stalled for {} days", v["renewal_stalled_days"])
                };
                line("renewal", format!("expected {r} before expiry: {state}"));
            }
            if let Some(r) = v["renewal"]["text"].as_str() {
                line("renew", r.to_string());
            }
            let violations: Vec<&str> = v["violations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str())
                .collect();
            if violations.is_empty() && !artifact {
                line("key rules", "ok".into());
            }
            for x in violations {
                line("key rules", x.to_string());
            }
            line(
                "recipients",
                v["recipients"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            for other in v["also_matched"].as_array().into_iter().flatten() {
                line(
                    "conflict",
                    format!(
                        "also matched by {} ({}:{}), which has lower precedence",
                        other["name"].as_str().unwrap_or(""),
                        other["file"].as_str().unwrap_or(""),
                        other["line"]
                    ),
                );
            }
        }
    }
    if let Some(fp) = v["superseded_by"].as_str() {
        if v["thresholds"]["renewal_expected"].is_null() {
            line("renewed", format!("by {fp} (same CA key, its names, deployed where this one was, served nowhere): no reminders for this one"));
        }
    }
    if let Some(r) = v["renewed_not_reloaded"].as_object() {
        let served: Vec<&str> = r["still_served_by"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
            .unwrap_or_default();
        line(
            "renewal",
            format!(
                "{} is deployed on disk, but {} still serves this one: reload the service (reminders go on)",
                r["by"].as_str().unwrap_or(""),
                served.join(", ")
            ),
        );
    }
    if let Some(st) = v["stalled_renewal"].as_object() {
        let text = |k: &str| st[k].as_str().unwrap_or("").to_string();
        let grace_from = match st["grace_policy"].as_str() {
            Some(p) => format!("policy {p}"),
            None => "default: two credential lifetimes".to_string(),
        };
        if st["stalled"].as_bool() == Some(true) {
            line(
                "renewal",
                format!(
                    "STALLED: newest credential of agent {} expired at {}, more than the grace of {} ({grace_from}) ago (reminds, fails check)",
                    text("agent"),
                    text("not_after"),
                    text("grace")
                ),
            );
        } else if st["newest"].as_bool() == Some(true) {
            line(
                "renewal",
                format!(
                    "expected: newest credential of agent {}; stalled if not renewed by {} (grace {}, {grace_from})",
                    text("agent"),
                    text("stalled_since"),
                    text("grace")
                ),
            );
        } else {
            line(
                "renewal",
                format!(
                    "renewed: agent {} has a newer credential ({})",
                    text("agent"),
                    text("newest_fingerprint")
                ),
            );
        }
    }
    if let Some(until) = v["snoozed_until"].as_str() {
        line("snoozed", format!("until {until}: {}", s("snooze_reason")));
    }
    out
}

fn conflicts(session: &Session, set: &PolicySet, json_out: bool) -> Result<Exit> {
    let certs = session.certificates(Request::List {
        filter: ListFilter::default(),
    })?;
    // Tracked artifacts too (against the artifact policies); a certd without them: none.
    let tracked = session.tracked_artifacts().unwrap_or_default();
    // (fingerprint, name, role or artifact kind, is an artifact, the matching policies)
    let mut rows = Vec::new();
    for cert in &certs {
        let matching = set.matching(cert);
        if matching.len() > 1 {
            rows.push((
                cert.fingerprint().to_hex(),
                cert.facts.display_name().to_string(),
                cert.role.to_string(),
                false,
                matching,
            ));
        }
    }
    for a in &tracked {
        let matching = set.matching_artifact(a);
        if matching.len() > 1 {
            rows.push((
                a.id.to_hex(),
                a.name.clone(),
                a.kind.clone(),
                true,
                matching,
            ));
        }
    }
    if json_out {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(fp, name, what, artifact, m)| {
                let mut v = json!({
                    "fingerprint_sha256": fp,
                    "name": name,
                    "role": if *artifact { None } else { Some(what) },
                    "applies": m[0].0.name,
                    "policies": m.iter().map(|(p, _)| json!({"name": p.name, "file": p.file, "line": p.line})).collect::<Vec<_>>(),
                });
                if *artifact {
                    v["kind"] = json!("artifact");
                    v["artifact_kind"] = json!(what);
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Success);
    }
    if rows.is_empty() {
        println!(
            "no conflicts: each of the {} certificates{} matches at most one policy",
            certs.len(),
            if tracked.is_empty() {
                String::new()
            } else {
                format!(" and {} tracked artifacts", tracked.len())
            }
        );
        return Ok(Exit::Success);
    }
    let mut t = Table::new(&["FINGERPRINT", "NAME", "ROLE", "APPLIES", "ALSO MATCHED BY"]);
    for (fp, name, what, _, m) in &rows {
        t.row(vec![
            fp[..16].to_string(),
            name.clone(),
            what.clone(),
            format!("{} ({})", m[0].0.name, m[0].0.location()),
            m[1..]
                .iter()
                .map(|(p, _)| format!("{} ({})", p.name, p.location()))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    print!("{}", t.render());
    println!(
        "{} certificates or tracked artifacts match more than one policy; the first (most specific) applies",
        rows.len()
    );
    Ok(Exit::Success)
}

/// The tracked artifacts `id` names (an id prefix, an exact path or name; see
/// [`artifacts::matches_id`]).
fn find_artifacts(session: &Session, id: &str) -> Result<Vec<TrackedArtifact>> {
    Ok(session
        .tracked_artifacts()?
        .into_iter()
        .filter(|a| artifacts::matches_id(a, id))
        .collect())
}
