//! `certctl workflows [resume|complete]`: the regenerate workflows.

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::workflow::WorkflowSecrets;
use certctl_store::rfc3339;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::exit::Exit;
use crate::output::{absolute, print_json};
use crate::secrets::{passphrase, pfx_password, PassphraseArgs};
use crate::session::{unexpected, Globals};
use crate::table::Table;

use super::regenerate::{finish_workflow, workflow_json};

#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    #[command(subcommand)]
    pub command: Option<WorkflowsCommand>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Finish an interrupted workflow from its last completed step.
    Resume(ResumeArgs),
    /// Give a `regenerate --csr` workflow the certificate its CA signed, and continue
    /// (deploy, reload, revoke-old).
    Complete(CompleteArgs),
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The workflow id (see `certctl workflows`).
    pub id: u64,
    /// The certificate (PEM, optionally followed by its chain, or DER).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// File holding the password of PFX files to deploy to [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The workflow id (see `certctl workflows`).
    pub id: u64,
    /// File holding the password of PFX files to deploy to [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: WorkflowsArgs) -> Result<Exit> {
    let session = &g.existing()?;
    if let Some(WorkflowsCommand::Complete(c)) = a.command {
        let secrets = WorkflowSecrets {
            passphrase: passphrase(&c.passphrase)?,
            pfx_password: pfx_password(c.pfx_password_file.as_deref())?,
        };
        let request = Request::WorkflowComplete {
            id: c.id,
            cert: absolute(&c.cert)?,
            secrets,
        };
        let report = match session.call(request)? {
            Response::Workflow { report } => report,
            other => return Err(unexpected(&other)),
        };
        return finish_workflow(&report, c.json || a.json);
    }
    if let Some(WorkflowsCommand::Resume(r)) = a.command {
        let secrets = WorkflowSecrets {
            passphrase: passphrase(&r.passphrase)?,
            pfx_password: pfx_password(r.pfx_password_file.as_deref())?,
        };
        let report = match session.call(Request::WorkflowResume { id: r.id, secrets })? {
            Response::Workflow { report } => report,
            other => return Err(unexpected(&other)),
        };
        return finish_workflow(&report, r.json || a.json);
    }
    let list = match session.call(Request::Workflows)? {
        Response::Workflows { workflows } => workflows,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v: Vec<Value> = list.iter().map(workflow_json).collect();
        return print_json(&v).map(|()| Exit::Success);
    }
    let mut t = Table::new(&[
        "ID",
        "STEP",
        "CERTIFICATE",
        "NEW",
        "CA",
        "OPTIONS",
        "UPDATED",
        "ERROR",
    ]);
    for r in &list {
        let wf = &r.workflow;
        let mut options = Vec::new();
        if wf.deploy {
            options.push("deploy");
        }
        if wf.revoke_old {
            options.push("revoke-old");
        }
        t.row(vec![
            wf.id.to_string(),
            match wf.step.number() {
                n @ 0..=5 => format!("{} ({n}/5)", wf.step),
                _ => wf.step.to_string(),
            },
            r.old
                .as_ref()
                .map(|c| c.facts.display_name().to_string())
                .unwrap_or_else(|| wf.old.to_hex()[..16].to_string()),
            wf.new
                .map(|f| f.to_hex()[..16].to_string())
                .unwrap_or_else(|| "-".into()),
            if wf.external() {
                "(external)".to_string()
            } else {
                wf.ca.clone()
            },
            options.join(","),
            rfc3339(wf.updated),
            wf.last_error.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", t.render());
    let unfinished = list
        .iter()
        .filter(|r| r.workflow.step != certctl_store::WorkflowStep::Done)
        .count();
    println!("{} workflows, {unfinished} unfinished", list.len());
    if unfinished > 0 {
        println!("finish one with: certctl workflows resume ID");
    }
    if list
        .iter()
        .any(|r| r.workflow.step == certctl_store::WorkflowStep::AwaitingCertificate)
    {
        println!("give one awaiting its certificate: certctl workflows complete ID --cert FILE");
    }
    Ok(Exit::Success)
}
