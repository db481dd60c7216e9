//! `certctl store verify|backup|restore|prune`: the store itself.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use certctl_daemon::api::{Request, Response};
use certctl_daemon::backup::{self, BackupProgress, BackupReport};
use certctl_daemon::Duration;
use certctl_store::rfc3339;
use clap::{Args, Subcommand};

use crate::exit::Exit;
use crate::output::OutputArgs;
use crate::session::{clock, unexpected, Globals, Session};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the store: every record decodes and has all its index entries, no index entry
    /// or file state leads nowhere, no file location is claimed twice. Exit 0 when
    /// consistent, 4 when not. Reads everything (minutes on millions of certificates).
    Verify(OutputArgs),
    /// Write a point-in-time copy of the whole store (records, indexes, CA folders with
    /// their keys as stored, workflows, ...) to one file (0600), through certd while it
    /// runs, or directly when it is stopped. Exit 0 written, 4 failed (nothing at FILE).
    Backup(BackupArgs),
    /// Restore a backup into an empty or absent folder (--store DIR): the manifest and every
    /// member's hash are checked before anything is written, then `store verify` runs.
    /// Exit 0 restored, 4 refused or failed (nothing left at DIR).
    Restore(RestoreArgs),
    /// Remove expired certificates that no source holds any more, once past the retention
    /// windows (certd's `[retention]`, else 7d for ephemeral credentials and 90d for other
    /// leaves). Never removed: revoked and CA certificates, managed CAs' and what they
    /// issued, certificates named by a workflow, an audit event or a snooze. What is removed
    /// of an agent's ephemeral credentials stays as a summary (`show NAME`). Through certd
    /// when it runs. Needs --yes unless --dry-run.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (replaced atomically when it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`store backup --out FILE`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove without asking (required unless --dry-run).
    #[arg(long)]
    pub yes: bool,
    /// Keep ephemeral credentials this long after expiry [default: certd's, else 7d].
    #[arg(long, value_name = "DUR")]
    pub ephemeral_after_expiry: Option<Duration>,
    /// Keep other leaves this long after expiry [default: certd's, else 90d].
    #[arg(long, value_name = "DUR")]
    pub gone_after: Option<Duration>,
    /// Certificates removed per atomic batch [default: certd's, else 5000].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `certctl store ...`.
pub fn exec(g: &Globals, a: StoreArgs) -> Result<Exit> {
    match a.command {
        StoreCommand::Verify(a) => verify_store(&g.existing()?, a),
        StoreCommand::Backup(a) => backup(g.existing()?, a),
        StoreCommand::Restore(a) => restore(g, a),
        StoreCommand::Prune(a) => prune_store(&g.existing()?, g, a),
    }
}

fn verify_store(session: &Session, a: OutputArgs) -> Result<Exit> {
    let v = match session.call(Request::VerifyStore)? {
        Response::Verification { verification } => verification,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for p in &v.problems {
            println!("problem: {p}");
        }
        println!(
            "{}: {} certificates, {} index entries, {} files, {} workflows; {} problems",
            if v.is_ok() {
                "consistent"
            } else {
                "INCONSISTENT"
            },
            v.records,
            v.postings,
            v.files,
            v.workflows,
            v.problems.len()
        );
    }
    Ok(if v.is_ok() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn prune_store(session: &Session, g: &Globals, a: PruneArgs) -> Result<Exit> {
    if !a.dry_run && !a.yes {
        bail!("refusing to remove certificates without --yes: run `certctl store prune --dry-run` to see what would be removed, then again with --yes");
    }
    let secs = |d: Option<certctl_daemon::Duration>| d.map(|d| d.as_secs());
    let request = certctl_daemon::retention::PruneRequest {
        dry_run: a.dry_run,
        ephemeral_after_expiry: secs(a.ephemeral_after_expiry),
        gone_after: secs(a.gone_after),
        batch: a.batch,
    };
    let summary = match session {
        Session::Direct(store) => {
            // `certctl --config FILE`: certd's windows, as certd would prune.
            let configured = match g.config_file() {
                Some(file) => certctl_daemon::config::load(file)?.retention.policy,
                None => Default::default(),
            };
            let t = clock()?;
            let terminal = std::io::stderr().is_terminal() && !a.output.json;
            let mut progress = |r: &certctl_store::PruneReport| {
                if terminal {
                    eprint!(
                        "\r{} {} certificates ({} examined, {} batches)",
                        if a.dry_run { "would remove" } else { "removed" },
                        r.removed,
                        r.examined,
                        r.batches
                    );
                }
            };
            let summary =
                certctl_daemon::retention::pass(store, &request, configured, t, &mut progress)?;
            if terminal {
                eprintln!();
            }
            summary
        }
        Session::Daemon(_) => match session.call(Request::Prune { prune: request })? {
            Response::Prune { summary } => summary,
            other => return Err(unexpected(&other)),
        },
    };
    if a.output.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let r = &summary.report;
        println!(
            "{} {} expired certificate{} that no source holds ({} ephemeral); {} examined, {} kept (revoked, CA, managed, or named by a workflow, audit event or snooze); {} certificates left",
            if summary.dry_run { "would remove" } else { "removed" },
            r.removed,
            if r.removed == 1 { "" } else { "s" },
            r.removed_ephemeral,
            r.examined,
            r.kept_protected,
            summary.certificates_left
        );
    }
    Ok(Exit::Success)
}

fn backup(session: Session, a: BackupArgs) -> Result<Exit> {
    let out = std::path::absolute(&a.out)
        .with_context(|| format!("cannot resolve {}", a.out.display()))?;
    let progress = BackupProgress::default();
    let done = AtomicBool::new(false);
    let show = std::io::stderr().is_terminal() && !a.json;
    let report: Result<BackupReport> = std::thread::scope(|scope| {
        let ticker = show.then(|| {
            let (progress, done) = (&progress, &done);
            let through_certd = session.through_certd();
            scope.spawn(move || progress_bar(progress, done, through_certd))
        });
        let result = match &session {
            Session::Direct(store) => {
                let t = clock()?;
                backup::backup(store, &out, t, &progress).map_err(anyhow::Error::from)
            }
            Session::Daemon(_) => match session.call(Request::Backup { out: out.clone() }) {
                Ok(Response::Backup { report }) => Ok(report),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            },
        };
        done.store(true, Relaxed);
        if let Some(t) = ticker {
            let _ = t.join();
        }
        result
    });
    let report = report.with_context(|| format!("no backup written to {}", out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "backup written to {} ({} bytes, {} members, taken {}): {}",
            report.file.display(),
            report.bytes,
            report.members,
            rfc3339(report.created),
            counts_line(&report.counts)
        );
    }
    Ok(Exit::Success)
}

fn counts_line(counts: &std::collections::BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn progress_bar(progress: &BackupProgress, done: &AtomicBool, through_certd: bool) {
    let bar = indicatif::ProgressBar::new(0);
    let template = if through_certd {
        "{spinner} certd is writing the backup [{elapsed}]"
    } else {
        "{spinner} writing the backup {bytes}/{total_bytes} [{elapsed}]"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !done.load(Relaxed) {
        bar.set_length(progress.total.load(Relaxed));
        bar.set_position(progress.done.load(Relaxed));
        bar.tick();
        std::thread::sleep(StdDuration::from_millis(100));
    }
    bar.finish_and_clear();
}

fn restore(g: &Globals, a: RestoreArgs) -> Result<Exit> {
    let dir = g.store_dir()?;
    let t = clock()?;
    let report = backup::restore(&a.file, &dir, t)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored {} into {} (backup of {}): {}; store verify: consistent ({} certificates, {} index entries, {} workflows)",
            report.backup.display(),
            report.store.display(),
            rfc3339(report.backup_created),
            counts_line(&report.counts),
            report.verification.records,
            report.verification.postings,
            report.verification.workflows
        );
        for ca in &report.newer_crls {
            println!(
                "CA `{ca}` published a CRL after the backup: its next CRL number continues above it; redo the revocations made after {}",
                rfc3339(report.backup_created)
            );
        }
    }
    Ok(Exit::Success)
}
