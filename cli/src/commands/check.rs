//! `certctl check`: the monitoring check (Nagios conventions: exit 0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN, one line with perfdata).

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::check::{CheckReport, Verdict};
use certctl_daemon::view::CertificateView;
use certctl_daemon::Duration;
use certctl_store::Role;
use clap::Args;

use crate::exit::Exit;
use crate::output::parse_role;
use crate::session::{clock, unexpected, Globals, Session};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Warn when a certificate expires within DUR.
    #[arg(long, value_name = "DUR", default_value = "30d")]
    pub warn: Duration,
    /// Critical when a certificate expires within DUR (or has expired).
    #[arg(long, value_name = "DUR", default_value = "7d")]
    pub critical: Duration,
    /// Only certificates and endpoints of this role.
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Judge each certificate by the warn/critical of its policy in DIR (see `policy
    /// explain`); certificates no policy matches keep --warn/--critical.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Print the report as JSON (the exit code is the same).
    #[arg(long)]
    pub json: bool,
}

/// `certctl check`; UNKNOWN (exit 3) when the store, certd or the policies cannot be used.
pub fn exec(g: &Globals, a: CheckArgs) -> Result<Exit> {
    match g.existing().and_then(|session| check(&session, a)) {
        Ok(exit) => Ok(exit),
        Err(e) => {
            println!("UNKNOWN: {}", crate::exit::one_line(&e));
            Ok(Exit::Unknown)
        }
    }
}

fn check(session: &Session, a: CheckArgs) -> Result<Exit> {
    let t = clock()?;
    // Without --json only the summary is printed: certd sends the counts and the first
    // certificates, not every certificate that expires within the window.
    let request = Request::Check {
        warn: a.warn,
        critical: a.critical,
        brief: !a.json,
        role: a.role,
        policies: match &a.policies {
            Some(dir) => Some(std::path::absolute(dir)?),
            None => None,
        },
    };
    let report: CheckReport = match session.call(request)? {
        Response::Check { report } => report,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v = serde_json::json!({
            "verdict": report.verdict,
            "summary": report.summary(t),
            "considered": report.considered,
            "expired": report.expired.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
            "critical": report.critical.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
            "warning": report.warning.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
            "findings": report.findings,
            "not_yet_valid": report.not_yet_valid,
            "stale_crls": report.stale_crls,
            "crls_expiring": report.crls_expiring,
            "failed_files": report.failed_files,
            "failed_files_total": report.failed_files_total,
            "stalled_renewals": report.stalled_renewals.iter().map(stalled_json).collect::<Vec<_>>(),
            "stalled_renewals_total": report.stalled_renewals_total,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&v)?)?
        );
    } else {
        println!("{}", report.summary(t));
    }
    Ok(match report.verdict {
        Verdict::Ok => Exit::Success,
        Verdict::Warning => Exit::Warning,
        Verdict::Critical => Exit::Critical,
    })
}

/// A stalled renewal as `check --json` prints it (times in RFC 3339).
pub fn stalled_json(s: &certctl_daemon::stalled::StalledRenewal) -> serde_json::Value {
    serde_json::json!({
        "agent": s.agent,
        "fingerprint_sha256": s.fingerprint.to_hex(),
        "not_after": certctl_store::rfc3339(s.not_after),
        "stalled_since": certctl_store::rfc3339(s.stalled_since()),
        "grace": s.grace.to_string(),
        "grace_policy": s.grace_policy,
        "sources": s.sources,
    })
}
