//! `certctl regenerate ID`: a new key and certificate in a resumable workflow (managed CA,
//! or `--csr` for a CA certctl does not hold), and how a workflow is printed.

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::workflow::{RegenerateRequest, WorkflowReport, WorkflowSecrets};
use certctl_store::rfc3339;
use clap::Args;
use serde_json::{json, Value};

use crate::exit::Exit;
use crate::output::{absolute, cert_json, confirm, key_kind, print_json};
use crate::secrets::{passphrase, pfx_password, PassphraseArgs};
use crate::session::{unexpected, Globals};

use super::revoke::crl_check_json;

#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// The certificate to replace (fingerprint prefix or exact name).
    pub id: String,
    /// Revoke the old certificate (reason superseded) once the new one is written.
    #[arg(long)]
    pub revoke_old: bool,
    /// Write the new certificate and key over the files where the old one was found
    /// (atomically; the old files are kept as FILE.bak).
    #[arg(long)]
    pub deploy: bool,
    /// Key type of the new key [default: the old one's, made stronger if the policy in
    /// --policies demands it].
    #[arg(long, value_name = "TYPE")]
    pub key: Option<String>,
    /// Policies folder whose key rules (min_rsa_bits, allowed_curves) the new key must meet.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Do not ask (required with --deploy or --revoke-old when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// File holding the password of PFX files to deploy to [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// For a certificate whose CA certctl does not hold (a public CA, AD CS): write a CSR
    /// for a new key (same subject and SANs) to OUT and wait for the certificate
    /// (`certctl workflows complete ID --cert FILE`). The key stays in the workflow,
    /// encrypted with the passphrase (--passphrase-file or $CERTCTL_CA_PASSPHRASE) when one
    /// is given, else unencrypted (0600).
    #[arg(long, value_name = "OUT")]
    pub csr: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: RegenerateArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let config_file = g.config_file();
    if (a.deploy || a.revoke_old) && !a.yes {
        let what = match (a.deploy, a.revoke_old) {
            (true, true) => "overwrite the deployed files and revoke the old certificate",
            (true, false) => "overwrite the deployed files",
            _ => "revoke the old certificate",
        };
        let refusal = format!("refusing to {what} without --yes");
        if !confirm(&format!("Regenerate {} and {what}?", a.id), &refusal)? {
            eprintln!("nothing was done");
            return Ok(Exit::Failure);
        }
    }
    let regenerate = RegenerateRequest {
        id: a.id,
        revoke_old: a.revoke_old,
        deploy: a.deploy,
        key: a.key.as_deref().map(key_kind).transpose()?,
        policies: a.policies.as_deref().map(absolute).transpose()?,
        secrets: WorkflowSecrets {
            passphrase: passphrase(&a.passphrase)?,
            pfx_password: pfx_password(a.pfx_password_file.as_deref())?,
        },
        csr: a.csr.as_deref().map(absolute).transpose()?,
        // The deploy targets' reload hooks of --config FILE (certd uses its own).
        reload: match config_file {
            Some(file) => certctl_daemon::config::load(file)?.workflows.targets,
            None => Vec::new(),
        },
    };
    let report = match session.call(Request::Regenerate { regenerate })? {
        Response::Workflow { report } => report,
        other => return Err(unexpected(&other)),
    };
    finish_workflow(&report, a.json)
}

pub fn finish_workflow(report: &WorkflowReport, json: bool) -> Result<Exit> {
    let ok = report.crl_checks.iter().all(|c| c.ok);
    if json {
        print_json(&workflow_json(report))?;
    } else {
        print_workflow(report);
    }
    Ok(if ok { Exit::Success } else { Exit::Failure })
}

fn print_workflow(r: &WorkflowReport) {
    let wf = &r.workflow;
    println!("workflow {}: {}", wf.id, wf.step);
    if let Some(old) = &r.old {
        println!(
            "  old certificate: {}  {}{}",
            old.fingerprint(),
            old.facts.display_name(),
            match &old.revocation {
                Some(rv) => format!(
                    " (revoked: {})",
                    certctl_daemon::revoke::reason_name(rv.reason)
                ),
                None => String::new(),
            }
        );
    }
    if let Some(new) = &r.new {
        println!(
            "  new certificate: {}  {}  serial {}, valid until {}",
            new.fingerprint(),
            new.facts.display_name(),
            new.facts.serial,
            rfc3339(new.facts.not_after)
        );
        println!("  fingerprint (SHA-256): {}", new.fingerprint());
    }
    for f in &r.files {
        println!("  file: {}", f.display());
    }
    for d in &wf.deployed {
        println!("  deployed: {d} (previous version kept as {d}.bak)");
    }
    for n in &wf.not_deployed {
        println!("  not deployed: {n}");
    }
    for c in &r.crl_checks {
        if c.ok {
            println!("  verified {}: {}", c.path.display(), c.detail);
        } else {
            println!("  PROBLEM with {}: {}", c.path.display(), c.detail);
        }
    }
    for h in &r.reloads {
        println!(
            "  reload {}: {}{}",
            h.target,
            h.detail,
            if h.ok { "" } else { " (FAILED)" }
        );
    }
    for e in &r.endpoints {
        println!("  endpoint {}: {} ({})", e.endpoint, e.state, e.detail);
    }
    if let Some(csr) = &wf.csr {
        if wf.step == certctl_store::WorkflowStep::AwaitingCertificate {
            println!(
                "  CSR written to {csr} (same subject and SANs, new {} key)",
                wf.key_kind
            );
            println!(
                "  new key kept in {}/new.key (0600{})",
                wf.dir,
                if wf.key_encrypted {
                    ", encrypted with the passphrase"
                } else {
                    ", unencrypted: give --passphrase-file to encrypt it"
                }
            );
            println!(
                "  next: have the CA sign it, then `certctl workflows complete {} --cert FILE`",
                wf.id
            );
        }
    }
    if let Some(e) = &wf.last_error {
        println!("  last error: {e}");
    }
}

pub fn workflow_json(r: &WorkflowReport) -> Value {
    let wf = &r.workflow;
    json!({
        "id": wf.id,
        "step": wf.step.as_str(),
        "step_number": wf.step.number(),
        "old_fingerprint": wf.old.to_hex(),
        "new_fingerprint": wf.new.map(|f| f.to_hex()),
        "ca": wf.ca,
        "deploy": wf.deploy,
        "revoke_old": wf.revoke_old,
        "key_type": wf.key_kind,
        "dir": wf.dir,
        "deployed": wf.deployed,
        "not_deployed": wf.not_deployed,
        "created": rfc3339(wf.created),
        "updated": rfc3339(wf.updated),
        "actor": wf.actor,
        "last_error": wf.last_error,
        "csr": wf.csr,
        "key_encrypted": wf.key_encrypted,
        "reload": wf.reload.iter().map(|h| json!({"target": h.target, "argv": h.argv, "timeout_secs": h.timeout_secs})).collect::<Vec<_>>(),
        "reloads": r.reloads,
        "endpoints": r.endpoints,
        "files": r.files,
        "crl_checks": r.crl_checks.iter().map(crl_check_json).collect::<Vec<_>>(),
        "old": r.old.as_ref().map(cert_json),
        "new": r.new.as_ref().map(cert_json),
        "renewal_reason": r.renewal_reason,
    })
}
