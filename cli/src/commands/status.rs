//! `certctl status`: whether certd runs on this store and what it is doing (jobs, e-mail
//! delivery, backups, a restore).

use anyhow::Result;
use certctl_daemon::api::{Request, Response, StatusReport};
use certctl_daemon::view::Printable;
use certctl_store::rfc3339;

use crate::exit::Exit;
use crate::output::OutputArgs;
use crate::session::{unexpected, Globals};
use crate::table::Table;

pub fn exec(g: &Globals, a: OutputArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let status: StatusReport = match session.call(Request::Status)? {
        Response::Status { status } => status,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&status)?)?
        );
        return Ok(Exit::Success);
    }
    match &status.daemon {
        Some(d) => println!(
            "mode: daemon (certd pid {}, up {}, config {})",
            d.pid,
            human_duration(d.uptime_secs),
            Printable(&d.config.to_string_lossy())
        ),
        None => println!("mode: direct (no certd running on this store; certctl opened it itself)"),
    }
    println!(
        "store: {} ({} certificates)",
        Printable(&status.store.to_string_lossy()),
        status.certificates
    );
    print_status(&status);
    print_restored(&status);
    if let Some(d) = &status.daemon {
        for s in &d.sources {
            println!(
                "source: {} (role {}{})",
                Printable(&s.path.to_string_lossy()),
                s.role.map_or("auto", |r| r.as_str()),
                if s.watched { ", watched" } else { "" }
            );
        }
        let mut t = Table::new(&["JOB", "SCHEDULE (UTC)", "LAST RUN", "OUTCOME", "NEXT RUN"]);
        for j in &d.schedules {
            t.row(vec![
                j.job.clone(),
                j.schedule.clone(),
                j.last_run.map_or("-".into(), rfc3339),
                j.last_outcome.clone().unwrap_or_else(|| "-".into()),
                j.next_run.map_or("-".into(), rfc3339),
            ]);
        }
        print!("{}", t.render());
    }
    for e in &status.endpoints {
        let state = if e.findings.is_empty() {
            "ok".to_string()
        } else {
            e.findings
                .iter()
                .map(|f| f.kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "endpoint: tls://{} — {state} (last probe {})",
            Printable(&e.address),
            e.last_probe.map_or("never".into(), rfc3339)
        );
        for f in &e.findings {
            println!("  {}: {}", f.kind, Printable(&f.detail));
        }
    }
    Ok(Exit::Success)
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / certctl_daemon::duration::DAY_SECS),
    }
}

/// The extra lines of `certctl status` about e-mail delivery.
pub fn print_status(status: &StatusReport) {
    if let Some(e) = &status.smtp_last_error {
        let when = status
            .smtp_last_error_at
            .map_or(String::new(), |t| format!(" ({})", rfc3339(t)));
        // The SMTP server's own words: shown escaped.
        println!(
            "smtp: last error{when}: {}",
            certctl_daemon::view::Printable(e)
        );
    }
    if let Some(d) = &status.last_delivery {
        let mut text = format!(
            "reminders: last delivery {}: {}",
            d.at,
            match d.outcome.as_str() {
                "delivered" => "delivered",
                "failed" => "FAILED",
                _ => "partly FAILED",
            }
        );
        if d.recipients_delivered > 0 {
            text.push_str(&format!(
                ", {} recipients got {} reminders",
                d.recipients_delivered, d.reminders_delivered
            ));
            if d.recipients_retried > 0 {
                text.push_str(&format!(
                    " ({} after an earlier failure)",
                    d.recipients_retried
                ));
            }
        }
        if d.recipients_failed > 0 {
            text.push_str(&format!(
                ", {} recipients not reached: {}",
                d.recipients_failed,
                d.error.as_deref().unwrap_or("")
            ));
        }
        // The SMTP server's own words: shown escaped.
        println!("{}", certctl_daemon::view::Printable(&text));
    }
    for f in &status.failing_renewals {
        println!(
            "renewal: {} ({}): {}{}",
            f.fingerprint.to_hex().get(..16).unwrap_or_default(),
            f.method,
            certctl_daemon::view::Printable(&f.sentence()),
            f.workflow
                .map(|w| format!(" (workflow {w})"))
                .unwrap_or_default()
        );
    }
    for g in &status.gone_artifacts {
        println!(
            "tracked: {} is gone: no reminders (`certctl untrack PATH` forgets it)",
            certctl_daemon::view::Printable(g)
        );
    }
    if status.reminders_pending > 0 {
        println!(
            "reminders: {} pending delivery (retried with backoff)",
            status.reminders_pending
        );
    }
    for ca in &status.stale_crls {
        println!(
            "crl: the published CRL of CA `{ca}` is behind the store (a revocation is not visible yet): run `certctl ca crl {ca}`"
        );
    }
    if status.failed_files_total > 0 {
        println!(
            "files: {} could not be read at the last scan (their certificates are not seen):",
            status.failed_files_total
        );
        for f in &status.failed_files {
            println!("  {}", certctl_daemon::view::Printable(f));
        }
    }
}

/// `status`: the store was restored from a backup.
pub fn print_restored(status: &StatusReport) {
    let Some(r) = &status.restored else { return };
    println!(
        "restored: from a backup of {} (taken from {}, restored {}): revocations made after {} must be redone",
        rfc3339(r.backup_created),
        r.original_store,
        rfc3339(r.restored_at),
        rfc3339(r.backup_created)
    );
    if !r.newer_crls.is_empty() {
        println!(
            "restored: CAs whose published CRL is newer than the backup: {}",
            r.newer_crls.join(", ")
        );
    }
}
