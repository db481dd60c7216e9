//! The compromise-response commands: `ca init|list|export|crl`, `issue`, `revoke`,
//! `regenerate`, `workflows [resume]`, `history`. Each builds an [`api::Request`], sends it
//! (directly or through certd) and prints the answer. Passphrases and PFX passwords are
//! read from files or the environment, never from the command line, and never printed.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{anyhow, bail, Context, Result};
use certctl_daemon::api::{self, Request, Response};
use certctl_daemon::ca::{CaInfo, CaInitRequest, IssueRequest, KeyKind, Secret};
use certctl_daemon::control::Client;
use certctl_daemon::inventory::ScanProgress;
use certctl_daemon::revoke::{self, CrlCheck, RevokeReport, RevokeRequest};
use certctl_daemon::view::{CertificateView, EXPIRING_SECS};
use certctl_daemon::workflow::{self, RegenerateRequest, WorkflowReport, WorkflowSecrets};
use certctl_store::{now, rfc3339, Certificate, SourceLocation};

use crate::ca_args::*;
use crate::commands::Session;
use crate::table::Table;
use crate::Exit;

const TIMEOUT: StdDuration = StdDuration::from_secs(600);

fn call(session: &Session, request: Request) -> Result<Response> {
    let response = match session {
        Session::Direct(store) => api::execute(store, request, now(), &ScanProgress::default()),
        Session::Daemon(path) => {
            let client = Client::connect(path)
                .with_context(|| format!("certd stopped answering on {}", path.display()))?;
            client.call(&request, TIMEOUT)?
        }
    };
    if let Response::Error { message, .. } = response {
        bail!("{message}");
    }
    Ok(response)
}

fn unexpected(r: &Response) -> anyhow::Error {
    anyhow!("unexpected answer: {r:?}")
}

/// A secret from a file (trailing newline removed; refused when others can read it, see
/// [`Secret::from_private_file`]), else from an environment variable.
fn secret(file: Option<&Path>, var: &str, what: &str) -> Result<Option<Secret>> {
    if let Some(f) = file {
        let secret =
            Secret::from_private_file(f).with_context(|| format!("cannot use the {what} file"))?;
        return Ok(Some(secret));
    }
    Ok(std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret))
}

fn passphrase(a: &PassphraseArgs) -> Result<Option<Secret>> {
    secret(
        a.passphrase_file.as_deref(),
        "CERTCTL_CA_PASSPHRASE",
        "CA passphrase",
    )
}

fn pfx_password(file: Option<&Path>) -> Result<Option<Secret>> {
    secret(file, "CERTCTL_PFX_PASSWORD", "PFX password")
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

fn key_kind(s: &str) -> Result<KeyKind> {
    Ok(s.parse::<KeyKind>()?)
}

/// Asks on the terminal; refuses when stdin is not one.
fn confirm(question: &str, refusal: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{refusal}: stdin is not a terminal, so certctl cannot ask; run it again with --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    // Unix times get RFC 3339 siblings (`next_update` → `next_update_at`).
    let value = certctl_daemon::view::with_rfc3339_times(value)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

// ---- JSON forms: certificates as the contract's objects, fingerprints as hex ----------------

fn cert_json(c: &Certificate) -> Value {
    serde_json::to_value(CertificateView::new(c, now())).unwrap_or(Value::Null)
}

fn ca_json(info: &CaInfo) -> Value {
    let ca = &info.ca;
    json!({
        "name": ca.name,
        "fingerprint_sha256": ca.fingerprint.to_hex(),
        "key_type": ca.key_kind,
        "encrypted": ca.encrypted,
        "crl_number": ca.crl_number,
        "crl_published": ca.crl_published.map(rfc3339),
        "crl_paths": ca.crl_paths,
        "crl_urls": ca.crl_urls,
        "crl_validity_secs": ca.crl_validity_secs,
        "created": rfc3339(ca.created),
        "created_by": ca.created_by,
        "cert_path": info.cert_path,
        "key_path": info.key_path,
        "chain_path": info.chain_path,
        "crl_path": info.crl_path,
        "certificate": info.certificate.as_ref().map(cert_json),
    })
}

fn crl_check_json(c: &CrlCheck) -> Value {
    json!({"path": c.path, "ok": c.ok, "detail": c.detail})
}

fn revoke_json(r: &RevokeReport) -> Value {
    json!({
        "dry_run": r.dry_run,
        "reason": revoke::reason_name(r.reason),
        "targets": r.targets.iter().map(|t| json!({
            "certificate": cert_json(&t.certificate),
            "managed_ca": t.managed_ca,
        })).collect::<Vec<_>>(),
        "already_revoked": r.already_revoked.iter().map(cert_json).collect::<Vec<_>>(),
        "crls": r.crls.iter().map(|c| json!({
            "ca": c.ca,
            "number": c.number,
            "this_update": rfc3339(c.this_update),
            "next_update": rfc3339(c.next_update),
            "revoked": c.revoked,
            "paths": c.paths,
        })).collect::<Vec<_>>(),
        "crl_checks": r.crl_checks.iter().map(crl_check_json).collect::<Vec<_>>(),
        "tell_issuers": r.tell_issuers,
        "endpoints": r.endpoints.iter().map(|e| json!({
            "endpoint": e.endpoint,
            "fingerprint_sha256": e.fingerprint.to_hex(),
            "state": e.state,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

fn workflow_json(r: &WorkflowReport) -> Value {
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

fn where_deployed(c: &Certificate) -> Vec<String> {
    let mut out: Vec<String> = c
        .current_sources()
        .map(|s| match &s.location {
            SourceLocation::File { path, index } => format!("{path}#{index}"),
            SourceLocation::Endpoint { address, index } => format!("tls://{address}#{index}"),
        })
        .collect();
    if c.more_sources > 0 {
        out.push(format!("... and {} more", c.more_sources));
    }
    out
}

// ---- ca ------------------------------------------------------------------------------------

pub fn ca(session: &Session, a: CaArgs) -> Result<Exit> {
    match a.command {
        CaCommand::Init(a) => ca_init(session, a),
        CaCommand::List(a) => ca_list(session, a),
        CaCommand::Export(a) => {
            let out = absolute(&a.out)?;
            match call(
                session,
                Request::CaExport {
                    name: a.name.clone(),
                    out,
                },
            )? {
                Response::Written { path } => {
                    println!(
                        "wrote the certificate of CA `{}` to {}",
                        a.name,
                        path.display()
                    );
                    Ok(Exit::Success)
                }
                other => Err(unexpected(&other)),
            }
        }
        CaCommand::Crl(a) => {
            let request = Request::CaCrl {
                name: a.name.clone(),
                out: a.out.as_deref().map(absolute).transpose()?,
                der: a.der,
                passphrase: passphrase(&a.passphrase)?,
            };
            match call(session, request)? {
                Response::Crl { crl } => {
                    println!(
                        "CRL #{} of CA `{}`: {} revoked serials, this update {}, next update {}",
                        crl.number,
                        crl.ca,
                        crl.revoked,
                        rfc3339(crl.this_update),
                        rfc3339(crl.next_update)
                    );
                    for p in &crl.paths {
                        println!("  written to {}", p.display());
                    }
                    Ok(Exit::Success)
                }
                other => Err(unexpected(&other)),
            }
        }
    }
}

fn ca_init(session: &Session, a: CaInitArgs) -> Result<Exit> {
    let init = CaInitRequest {
        name: a.name,
        cn: a.cn,
        org: a.org,
        key: key_kind(&a.key)?,
        validity: a.validity,
        parent_cert: a.parent_cert.as_deref().map(absolute).transpose()?,
        parent_key: a.parent_key.as_deref().map(absolute).transpose()?,
        parent_passphrase: match a.parent_passphrase_file.as_deref() {
            Some(f) => Some(
                Secret::from_private_file(f).context("cannot use the parent CA passphrase file")?,
            ),
            None => None,
        },
        passphrase: passphrase(&a.passphrase)?,
        crl_out: a
            .crl_out
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<_>>()?,
        crl_urls: a.crl_url,
        crl_validity: Some(a.crl_validity),
    };
    let cas = match call(session, Request::CaInit { init })? {
        Response::Cas { cas } => cas,
        other => return Err(unexpected(&other)),
    };
    for note in cas.iter().flat_map(|info| &info.notes) {
        eprintln!("note: {note}");
    }
    if a.json {
        let v: Vec<Value> = cas.iter().map(ca_json).collect();
        return print_json(&v).map(|()| Exit::Success);
    }
    for info in &cas {
        println!("created CA `{}`", info.ca.name);
        print_ca(info);
    }
    Ok(Exit::Success)
}

fn print_ca(info: &CaInfo) {
    let ca = &info.ca;
    if let Some(c) = &info.certificate {
        println!("  subject      {}", c.facts.subject);
        println!("  issuer       {}", c.facts.issuer);
        println!(
            "  valid        {} .. {}",
            rfc3339(c.facts.not_before),
            rfc3339(c.facts.not_after)
        );
        println!("  key          {} ({})", c.facts.key, ca.key_kind);
    }
    println!("  fingerprint  {}", ca.fingerprint);
    println!(
        "  private key  {} ({})",
        info.key_path.display(),
        if ca.encrypted {
            "encrypted PKCS#8"
        } else {
            "unencrypted PKCS#8, mode 0600"
        }
    );
    println!("  certificate  {}", info.cert_path.display());
    println!("  chain        {}", info.chain_path.display());
    println!(
        "  CRL          {} (#{}{})",
        info.crl_path.display(),
        ca.crl_number,
        ca.crl_published
            .map(|t| format!(", published {}", rfc3339(t)))
            .unwrap_or_default()
    );
    for p in &ca.crl_paths {
        println!("               {p}");
    }
}

fn ca_list(session: &Session, a: CaListArgs) -> Result<Exit> {
    let cas = match call(session, Request::CaList)? {
        Response::Cas { cas } => cas,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v: Vec<Value> = cas.iter().map(ca_json).collect();
        return print_json(&v).map(|()| Exit::Success);
    }
    let mut t = Table::new(&[
        "NAME",
        "SUBJECT",
        "EXPIRES",
        "KEY",
        "ENCRYPTED",
        "CRL #",
        "FINGERPRINT",
    ]);
    for info in &cas {
        t.row(vec![
            info.ca.name.clone(),
            info.certificate
                .as_ref()
                .map(|c| c.facts.subject.clone())
                .unwrap_or_default(),
            info.certificate
                .as_ref()
                .map(|c| rfc3339(c.facts.not_after)[..10].to_string())
                .unwrap_or_default(),
            info.ca.key_kind.clone(),
            if info.ca.encrypted { "yes" } else { "no" }.into(),
            info.ca.crl_number.to_string(),
            info.ca.fingerprint.to_hex()[..16].to_string(),
        ]);
    }
    print!("{}", t.render());
    println!("{} managed CAs", cas.len());
    Ok(Exit::Success)
}

// ---- issue ---------------------------------------------------------------------------------

pub fn issue(session: &Session, a: IssueArgs) -> Result<Exit> {
    let issue = IssueRequest {
        ca: a.ca,
        cn: a.cn,
        sans: a.san,
        role: a.role,
        validity: Some(a.validity),
        key: key_kind(&a.key)?,
        out: absolute(&a.out)?,
        pfx_password: pfx_password(a.pfx_password_file.as_deref())?,
        pfx_format: if a.pfx_legacy {
            certctl_daemon::ca::PfxFormat::Legacy
        } else {
            certctl_daemon::ca::PfxFormat::Modern
        },
        passphrase: passphrase(&a.passphrase)?,
        overwrite: a.yes,
    };
    let report = match call(session, Request::Issue { issue })? {
        Response::Issued { report } => report,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v = json!({
            "certificate": cert_json(&report.certificate),
            "ca": report.ca,
            "files": report.files,
            "notes": report.notes,
        });
        return print_json(&v).map(|()| Exit::Success);
    }
    let f = &report.certificate.facts;
    println!(
        "issued {} (serial {}) by CA `{}`, valid until {}",
        f.display_name(),
        f.serial,
        report.ca,
        rfc3339(f.not_after)
    );
    println!("fingerprint (SHA-256): {}", f.fingerprint);
    for p in &report.files {
        println!("  wrote {}", p.display());
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    Ok(Exit::Success)
}

// ---- revoke --------------------------------------------------------------------------------

pub fn revoke(session: &Session, a: RevokeArgs) -> Result<Exit> {
    let reason = revoke::parse_reason(&a.reason)?;
    let mut request = RevokeRequest {
        ids: a.id.into_iter().collect(),
        spki: a.spki,
        issuer: a.issuer,
        key_file: a.key_file.as_deref().map(absolute).transpose()?,
        reason,
        dry_run: true,
        passphrase: passphrase(&a.passphrase)?,
        probe_endpoints: !a.no_probe,
    };
    let preview = revoke_call(session, &request)?;
    if a.dry_run {
        if a.json {
            return print_json(&revoke_json(&preview)).map(|()| Exit::Success);
        }
        print_selection(&preview, "would revoke", a.verbose);
        return Ok(Exit::Success);
    }
    // Only a revocation recorded earlier whose CRL never got published: repair it (signing
    // a current CRL destroys nothing, so no --yes).
    let repair_only = preview.targets.is_empty() && !preview.republished.is_empty();
    if preview.targets.is_empty() && !repair_only {
        if a.json {
            return print_json(&revoke_json(&preview)).map(|()| Exit::Success);
        }
        print_selection(&preview, "would revoke", a.verbose);
        println!("nothing to revoke");
        return Ok(Exit::Success);
    }
    if !a.yes && !repair_only {
        let n = preview.targets.len();
        let refusal = format!("refusing to revoke {n} certificate(s) without --yes");
        if !std::io::stdin().is_terminal() {
            print_selection(&preview, "would revoke", a.verbose);
            bail!("{refusal}: stdin is not a terminal, so certctl cannot ask; check the list above and run again with --yes");
        }
        print_selection(&preview, "will revoke", a.verbose);
        if !confirm(
            &format!("Revoke these {n} certificate(s) ({})?", a.reason),
            &refusal,
        )? {
            eprintln!("nothing was revoked");
            return Ok(Exit::Failure);
        }
    }
    request.dry_run = false;
    let report = revoke_call(session, &request)?;
    let all_ok = report.crl_checks.iter().all(|c| c.ok);
    if a.json {
        print_json(&revoke_json(&report))?;
    } else {
        print_revoked(&report, a.verbose);
    }
    Ok(if all_ok { Exit::Success } else { Exit::Failure })
}

fn revoke_call(session: &Session, request: &RevokeRequest) -> Result<RevokeReport> {
    match call(
        session,
        Request::Revoke {
            revoke: request.clone(),
        },
    )? {
        Response::Revoke { report } => Ok(report),
        other => Err(unexpected(&other)),
    }
}

/// Above this many certificates, `revoke` prints a summary unless `--verbose`.
const LIST_AT_MOST: usize = 20;

/// Counts per managed CA (or issuer) and per deployment folder, for a long selection.
fn print_summary(r: &RevokeReport) {
    use std::collections::BTreeMap;
    let mut by_ca: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_folder: BTreeMap<String, usize> = BTreeMap::new();
    let mut nowhere = 0;
    for t in &r.targets {
        let ca = match &t.managed_ca {
            Some(ca) => format!("managed CA `{ca}` (certctl publishes its CRL)"),
            None => format!(
                "{} (tracked only: that CA must be told)",
                t.certificate.facts.issuer
            ),
        };
        *by_ca.entry(ca).or_default() += 1;
        let mut folders: Vec<String> = t
            .certificate
            .current_sources()
            .map(|s| match &s.location {
                SourceLocation::File { path, .. } => std::path::Path::new(path)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                SourceLocation::Endpoint { address, .. } => format!("tls://{address}"),
            })
            .collect();
        folders.sort();
        folders.dedup();
        if folders.is_empty() {
            nowhere += 1;
        }
        for f in folders {
            *by_folder.entry(f).or_default() += 1;
        }
    }
    println!("  by CA:");
    for (ca, n) in &by_ca {
        println!("    {n:>7}  {ca}");
    }
    println!("  by deployment folder or endpoint:");
    for (folder, n) in &by_folder {
        println!("    {n:>7}  {}", certctl_daemon::view::printable(folder));
    }
    if nowhere > 0 {
        println!("    {nowhere:>7}  (deployed nowhere known)");
    }
    println!("  (the full list: --verbose or --json)");
}

fn print_selection(r: &RevokeReport, verb: &str, verbose: bool) {
    if !verbose && r.targets.len() > LIST_AT_MOST {
        println!(
            "{verb} {} certificate(s), reason {}:",
            r.targets.len(),
            revoke::reason_name(r.reason)
        );
        print_summary(r);
        if !r.already_revoked.is_empty() {
            println!(
                "  already revoked: {} certificate(s)",
                r.already_revoked.len()
            );
        }
        return;
    }
    let t = now();
    println!(
        "{verb} {} certificate(s), reason {}:",
        r.targets.len(),
        revoke::reason_name(r.reason)
    );
    for target in &r.targets {
        let c = &target.certificate;
        println!(
            "  {}  {}  serial {}  ({}, expires {})",
            c.fingerprint(),
            c.facts.display_name(),
            c.facts.serial,
            c.status(t, EXPIRING_SECS),
            &rfc3339(c.facts.not_after)[..10]
        );
        println!("      issuer: {}", c.facts.issuer);
        match &target.managed_ca {
            Some(ca) => println!("      CRL: managed CA `{ca}` (certctl publishes it)"),
            None => {
                println!("      CRL: not a managed CA: tracked only, the issuing CA must be told")
            }
        }
        let deployed = where_deployed(c);
        if deployed.is_empty() {
            println!("      deployed at: (nowhere known)");
        }
        for d in deployed {
            println!("      deployed at: {d}");
        }
    }
    for c in &r.already_revoked {
        let when = c
            .revocation
            .as_ref()
            .map(|rv| {
                format!(
                    "{} ({})",
                    rfc3339(rv.revoked_at),
                    revoke::reason_name(rv.reason)
                )
            })
            .unwrap_or_default();
        println!(
            "  already revoked: {}  {}  {when}",
            c.fingerprint(),
            c.facts.display_name()
        );
    }
}

fn print_revoked(r: &RevokeReport, verbose: bool) {
    print_selection(r, "revoked", verbose);
    for ca in &r.republished {
        println!("CRL republished: the published CRL of CA `{ca}` was behind the store");
    }
    print_crls(r);
    for issuer in &r.tell_issuers {
        let serials: Vec<&str> = r
            .targets
            .iter()
            .filter(|t| t.managed_ca.is_none() && &t.certificate.facts.issuer == issuer)
            .map(|t| t.certificate.facts.serial.as_str())
            .collect();
        println!(
            "The issuing CA must also be told: certctl does not hold the key of {issuer}, so the revocation of serial(s) {} is tracked here only. Ask that CA to revoke them; until then relying parties still accept them.",
            serials.join(", ")
        );
    }
    for e in &r.endpoints {
        println!("endpoint tls://{}: {} — {}", e.endpoint, e.state, e.detail);
    }
}

/// The CRLs a revocation published and what reading each file back showed.
fn print_crls(r: &RevokeReport) {
    for crl in &r.crls {
        println!(
            "published CRL #{} of CA `{}` ({} revoked serials, next update {}):",
            crl.number,
            crl.ca,
            crl.revoked,
            rfc3339(crl.next_update)
        );
        for p in &crl.paths {
            println!("  {}", p.display());
        }
    }
    for check in &r.crl_checks {
        if check.ok {
            println!("verified {}: {}", check.path.display(), check.detail);
        } else {
            println!("PROBLEM with {}: {}", check.path.display(), check.detail);
        }
    }
}

// ---- regenerate and workflows ----------------------------------------------------------------

pub fn regenerate(
    session: &Session,
    config_file: Option<&Path>,
    a: RegenerateArgs,
) -> Result<Exit> {
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
    let report = match call(session, Request::Regenerate { regenerate })? {
        Response::Workflow { report } => report,
        other => return Err(unexpected(&other)),
    };
    finish_workflow(&report, a.json)
}

fn finish_workflow(report: &WorkflowReport, json: bool) -> Result<Exit> {
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
                Some(rv) => format!(" (revoked: {})", revoke::reason_name(rv.reason)),
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

pub fn workflows(session: &Session, a: WorkflowsArgs) -> Result<Exit> {
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
        let report = match call(session, request)? {
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
        let report = match call(session, Request::WorkflowResume { id: r.id, secrets })? {
            Response::Workflow { report } => report,
            other => return Err(unexpected(&other)),
        };
        return finish_workflow(&report, r.json || a.json);
    }
    let list = match call(session, Request::Workflows)? {
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

// ---- history -------------------------------------------------------------------------------

pub fn history(session: &Session, a: HistoryArgs) -> Result<Exit> {
    if let Some(date) = &a.at {
        let at = workflow::parse_date(date)?;
        let (at, certificates) = match call(session, Request::HistoryAt { at })? {
            Response::ValidAt { report } => (report.at, report.certificates),
            other => return Err(unexpected(&other)),
        };
        if a.json {
            let v: Vec<Value> = certificates
                .iter()
                .map(|v| {
                    json!({
                        "certificate": cert_json(&v.certificate),
                        "deployed_at": v.deployed_at,
                        "known_then": v.known_then,
                    })
                })
                .collect();
            return print_json(&v).map(|()| Exit::Success);
        }
        println!(
            "{} certificates were valid at {} (inside their validity, not yet revoked):",
            certificates.len(),
            rfc3339(at)
        );
        let mut t = Table::new(&[
            "NAME",
            "ROLE",
            "EXPIRES",
            "REVOKED LATER",
            "FINGERPRINT",
            "DEPLOYED THEN",
        ]);
        for v in &certificates {
            let c = &v.certificate;
            t.row(vec![
                c.facts.display_name().to_string(),
                c.role.to_string(),
                rfc3339(c.facts.not_after)[..10].to_string(),
                c.revocation
                    .as_ref()
                    .map(|r| rfc3339(r.revoked_at))
                    .unwrap_or_else(|| "-".into()),
                c.fingerprint().to_hex()[..16].to_string(),
                if v.deployed_at.is_empty() {
                    if v.known_then {
                        "(nowhere known)".into()
                    } else {
                        "(not yet inventoried)".into()
                    }
                } else {
                    v.deployed_at.join(", ")
                },
            ]);
        }
        print!("{}", t.render());
        return Ok(Exit::Success);
    }
    let id = a.id.unwrap_or_default();
    let histories = match call(session, Request::History { id })? {
        Response::History { histories } => histories,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v: Vec<Value> = histories
            .iter()
            .map(|h| {
                json!({
                    "certificate": cert_json(&h.certificate),
                    "entries": h.entries.iter().map(|e| json!({
                        "at": rfc3339(e.at),
                        "action": e.action,
                        "actor": e.actor,
                        "detail": e.detail,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&v).map(|()| Exit::Success);
    }
    for (i, h) in histories.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let c = &h.certificate;
        println!(
            "{}  {}  serial {}",
            c.fingerprint(),
            c.facts.display_name(),
            c.facts.serial
        );
        let mut t = Table::new(&["WHEN", "WHAT", "WHO", "DETAIL"]);
        for e in &h.entries {
            t.row(vec![
                rfc3339(e.at),
                e.action.clone(),
                e.actor.clone(),
                e.detail.clone(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(Exit::Success)
}

// ---- crl fetch -----------------------------------------------------------------------------

/// `certctl crl fetch`; with `--config FILE` and no certd, the `[crl]` allow list and
/// deadline of that file apply (through certd, certd's own do).
pub fn crl(session: &Session, config_file: Option<&Path>, a: CrlArgs) -> Result<Exit> {
    let CrlCommand::Fetch(a) = a.command;
    let crl_config = match (session, config_file) {
        (Session::Direct(_), Some(file)) => Some(certctl_daemon::config::load(file)?.crl),
        _ => None,
    };
    let options = certctl_daemon::crlfetch::CrlFetchOptions {
        timeout_secs: a.timeout.as_secs().max(1).unsigned_abs(),
        force: a.force,
        pfx_password: pfx_password(a.pfx_password_file.as_deref())?,
        allow: crl_config.as_ref().and_then(|c| c.allow.clone()),
        deadline_secs: crl_config.map(|c| c.deadline.as_secs()),
    };
    let report = match call(session, Request::CrlFetch { options })? {
        Response::CrlFetch { report } => report,
        other => return Err(unexpected(&other)),
    };
    let failed = report.urls.iter().filter(|u| u.state == "failed").count();
    if a.json {
        print_json(&report)?;
    } else {
        for u in &report.urls {
            match &u.error {
                Some(e) => println!("error: {e}"),
                None => println!(
                    "{}: {} ({} certificates checked, {} newly revoked{})",
                    u.url,
                    u.state,
                    u.checked,
                    u.revoked.len(),
                    u.next_update
                        .map(|t| format!(", next update {}", rfc3339(t)))
                        .unwrap_or_default()
                ),
            }
            for fp in &u.revoked {
                println!("  revoked: {fp}");
            }
            for note in &u.not_applied {
                println!("  not applied: {note}");
            }
        }
        println!(
            "{} CRLs, {} failed; {} certificates newly marked revoked",
            report.urls.len(),
            failed,
            report.newly_revoked
        );
    }
    Ok(if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}
