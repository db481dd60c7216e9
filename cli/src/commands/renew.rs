//! `certctl renew ID` and `certctl renew --due [--dry-run]`: renew certificates by their
//! method (managed CA, SCEP), as certd's renewal pass does ([`certctl_daemon::renewal`]).
//! Through certd when it runs (certd's configuration), else directly with `--config FILE`
//! (its `[reminders] policies`, `[workflows]` and `[renewal]`).

use std::path::Path;

use anyhow::{bail, Result};
use certctl_daemon::api::{Request, Response};
use certctl_daemon::renewal::{DueRenewal, RenewReport, RenewRequest, RenewalMethod};
use certctl_store::rfc3339;
use clap::Args;

use crate::exit::Exit;
use crate::output::absolute;
use crate::session::{unexpected, Globals, Session};

/// `certctl renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The certificate to renew now, due or not (fingerprint prefix ≥ 8 hex, or CN / SAN).
    #[arg(
        value_name = "ID",
        required_unless_present = "due",
        conflicts_with = "due"
    )]
    pub id: Option<String>,
    /// Every certificate certd would renew now (policy renew = "auto", past renew_before).
    #[arg(long)]
    pub due: bool,
    /// Say what would be renewed, with method and reason; start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The policies folder [default: the [reminders] policies of --config FILE, or certd's].
    #[arg(long, value_name = "DIR")]
    pub policies: Option<std::path::PathBuf>,
    /// Overwrite the deployed files without asking (renewing deploys the new certificate).
    #[arg(long)]
    pub yes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `certctl renew`.
pub fn exec(g: &Globals, a: RenewArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let config_file = g.config_file();
    if !a.dry_run && !a.yes {
        eprintln!(
            "refusing to renew without --yes: renewing overwrites the deployed files (see --dry-run)"
        );
        return Ok(Exit::Usage);
    }
    let request = RenewRequest {
        id: a.id.clone(),
        due: a.due,
        dry_run: a.dry_run,
        config: config_file.map(absolute).transpose()?,
        policies: a.policies.as_deref().map(absolute).transpose()?,
    };
    let report = match session.call(Request::Renew { renew: request })? {
        Response::Renew { report } => report,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let value = certctl_daemon::view::with_rfc3339_times(&report)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&report, a.dry_run);
    }
    let failed = report
        .pass
        .as_ref()
        .is_some_and(|p| p.renewals.iter().any(|r| r.outcome == "failed"));
    let manual_only = a.id.is_some()
        && !a.dry_run
        && report
            .pass
            .as_ref()
            .is_some_and(|p| p.renewals.iter().all(|r| r.outcome == "manual"));
    if manual_only {
        if let Some(RenewalMethod::Manual { why }) = report.due.first().map(|d| &d.method) {
            bail!("{}: a person must renew it: {why}", report.due[0].name);
        }
    }
    Ok(if failed { Exit::Failure } else { Exit::Success })
}

fn method_text(d: &DueRenewal) -> String {
    match &d.method {
        RenewalMethod::ManagedCa { ca } => format!("managed-ca {ca}"),
        RenewalMethod::Scep { server } => format!("scep {server}"),
        RenewalMethod::Manual { why } => format!("manual: {why}"),
    }
}

fn print_report(report: &RenewReport, dry_run: bool) {
    if report.due.is_empty() {
        println!("nothing is due for automatic renewal");
    }
    for d in &report.due {
        println!(
            "{}  {}  expires {}  {}  [{}]",
            d.fingerprint.to_hex().get(..16).unwrap_or_default(),
            d.name,
            rfc3339(d.not_after),
            method_text(d),
            d.state
        );
        println!("  reason: {}", d.reason);
        if let Some(e) = &d.last_error {
            println!("  failed {} times, last: {e}", d.failures);
        }
    }
    if dry_run {
        return;
    }
    if let Some(pass) = &report.pass {
        for r in &pass.renewals {
            println!(
                "{}: {} ({}{}): {}",
                r.name,
                r.outcome,
                r.method,
                r.workflow
                    .map(|w| format!(", workflow {w}"))
                    .unwrap_or_default(),
                r.detail
            );
        }
        for fp in &pass.revoked_superseded {
            println!("revoked as superseded: {fp}");
        }
    }
}

/// What `policy explain` needs to say how a certificate is renewed: the managed CAs and the
/// passphrase files of `--config FILE`.
pub struct RenewalContext {
    cas: Vec<certctl_daemon::ca::CaInfo>,
    passphrase_files: std::collections::BTreeMap<String, std::path::PathBuf>,
}

impl RenewalContext {
    pub fn load(session: &Session, config_file: Option<&Path>) -> Result<RenewalContext> {
        let cas = match session.call(Request::CaList)? {
            Response::Cas { cas } => cas,
            other => return Err(unexpected(&other)),
        };
        let passphrase_files = match config_file {
            Some(file) => {
                certctl_daemon::config::load(file)?
                    .workflows
                    .ca_passphrase_files
            }
            None => Default::default(),
        };
        Ok(RenewalContext {
            cas,
            passphrase_files,
        })
    }

    /// The `renewal` object of `policy explain`.
    pub fn explain(
        &self,
        cert: &certctl_store::Certificate,
        policy: &certctl_daemon::policy::Policy,
    ) -> serde_json::Value {
        let managed = self
            .cas
            .iter()
            .find(|c| {
                c.certificate
                    .as_ref()
                    .is_some_and(|ca| certctl_daemon::ca::issued_by(ca, cert))
            })
            .map(|c| &c.ca);
        let explained =
            certctl_daemon::renewal::explain(cert, policy, managed, &self.passphrase_files);
        certctl_daemon::view::with_rfc3339_times(&explained).unwrap_or_default()
    }
}
