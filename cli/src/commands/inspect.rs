//! `certctl inspect FILE`: the certificates of one file, without a store (and `--check`
//! for monitoring one file).

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::check::Verdict;
use certctl_daemon::formats;
use certctl_daemon::scan;
use certctl_daemon::view::{CertificateView, Printable};
use certctl_daemon::Duration;
use certctl_store::{now, UnixTime};
use clap::Args;

use crate::exit::Exit;
use crate::output::{describe, OutputArgs};
use crate::secrets::pfx_password_text;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The file to read (PEM, DER or PKCS#12/PFX).
    pub file: PathBuf,
    /// File holding the PKCS#12/PFX password [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// For monitoring, like `check`: one line, exit 0 OK / 1 WARNING / 2 CRITICAL by the
    /// soonest expiry in the file (with --json the array is printed and the exit code is the
    /// same).
    #[arg(long)]
    pub check: bool,
    /// With --check: warn when a certificate expires within DUR.
    #[arg(long, value_name = "DUR", default_value = "30d", requires = "check")]
    pub warn: Duration,
    /// With --check: critical when a certificate expires within DUR (or has expired).
    #[arg(long, value_name = "DUR", default_value = "7d", requires = "check")]
    pub critical: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn exec(a: InspectArgs) -> Result<Exit> {
    certctl_daemon::formats::ensure_legacy_provider();
    let password = pfx_password_text(a.pfx_password_file.as_deref())?;
    // Like a scan: never blocks on a FIFO or device, refuses files over the size cap.
    let (bytes, _) = scan::read_file_bytes(&a.file)
        .map_err(|cause| anyhow::anyhow!("{}: {cause}", a.file.display()))?;
    certctl_daemon::x509::take_lax_date_notes();
    let certs = formats::read_certificates(&bytes, &a.file, password.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    for note in certctl_daemon::x509::take_lax_date_notes() {
        eprintln!(
            "warning: {}: {}",
            Printable(&a.file.to_string_lossy()),
            Printable(&note)
        );
    }
    let t = now();
    let views: Vec<CertificateView> = certs
        .iter()
        .map(|f| CertificateView::from_facts(f, t))
        .collect();
    if a.output.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if a.check {
        // The one line a monitoring system shows.
    } else {
        for (i, v) in views.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("# certificate {i} of {}", a.file.display());
            print!("{}", describe(v));
        }
    }
    if !a.check {
        return Ok(Exit::Success);
    }
    let (verdict, line) = inspect_verdict(&a, &certs, t);
    if !a.output.json {
        println!("{line}");
    }
    Ok(match verdict {
        Verdict::Ok => Exit::Success,
        Verdict::Warning => Exit::Warning,
        Verdict::Critical => Exit::Critical,
    })
}

/// `inspect --check`: the verdict by the certificate of the file that expires first, and
/// the line that says it.
fn inspect_verdict(
    a: &InspectArgs,
    certs: &[certctl_store::CertificateFacts],
    t: UnixTime,
) -> (Verdict, String) {
    let file = a.file.display();
    let Some(first) = certs.iter().min_by_key(|c| c.not_after) else {
        return (Verdict::Ok, format!("OK: {file}: no certificates"));
    };
    let days = certctl_daemon::duration::days_left(first.not_after, t);
    let who = first.display_name();
    let (verdict, when) = if first.not_after <= t {
        (Verdict::Critical, format!("expired {} days ago", -days))
    } else if first.not_after <= t.saturating_add(a.critical.as_secs()) {
        (
            Verdict::Critical,
            format!("expires within {} ({days} days left)", a.critical),
        )
    } else if first.not_after <= t.saturating_add(a.warn.as_secs()) {
        (
            Verdict::Warning,
            format!("expires within {} ({days} days left)", a.warn),
        )
    } else {
        (Verdict::Ok, format!("{days} days left"))
    };
    let label = verdict.label();
    let of = if certs.len() > 1 {
        format!(" (the first to expire of {} certificates)", certs.len())
    } else {
        String::new()
    };
    (verdict, format!("{label}: {file}: {who} {when}{of}"))
}
