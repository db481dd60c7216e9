//! `certctl revoke`: revoke one certificate, or every one sharing a key or issued by a CA;
//! shows what it would revoke first and asks (or `--yes`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use certctl_daemon::api::{Request, Response};
use certctl_daemon::revoke::CrlCheck;
use certctl_daemon::revoke::{self, RevokeReport, RevokeRequest};
use certctl_daemon::view::EXPIRING_SECS;
use certctl_store::{now, rfc3339, Certificate, SourceLocation};
use clap::Args;
use serde_json::{json, Value};

use crate::exit::Exit;
use crate::output::{absolute, cert_json, confirm, print_json};
use crate::secrets::{passphrase, PassphraseArgs};
use crate::session::{unexpected, Globals, Session};

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The certificate: fingerprint prefix (≥ 8 hex characters) or exact subject CN / SAN.
    pub id: Option<String>,
    /// Why (RFC 5280): key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation, certificate-hold, privilege-withdrawn, unspecified.
    #[arg(long, value_name = "REASON")]
    pub reason: String,
    /// Every certificate with this key (SPKI SHA-256, as `show` prints it).
    #[arg(long, value_name = "HASH")]
    pub spki: Option<String>,
    /// Every certificate issued by this CA certificate (ID as for `show`).
    #[arg(long, value_name = "ID")]
    pub issuer: Option<String>,
    /// Every certificate for the key in FILE (private key, public key or certificate).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Only list what would be revoked, with where each certificate is deployed.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Do not re-probe the TLS endpoints that served a revoked certificate.
    #[arg(long)]
    pub no_probe: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// List every certificate even when there are many (above 20, a summary per CA and per
    /// deployment folder is printed instead).
    #[arg(long)]
    pub verbose: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: RevokeArgs) -> Result<Exit> {
    let session = &g.existing()?;
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
    match session.call(Request::Revoke {
        revoke: request.clone(),
    })? {
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
            certctl_daemon::revoke::reason_name(r.reason)
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
        certctl_daemon::revoke::reason_name(r.reason)
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
                    certctl_daemon::revoke::reason_name(rv.reason)
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

pub fn crl_check_json(c: &CrlCheck) -> Value {
    json!({"path": c.path, "ok": c.ok, "detail": c.detail})
}

fn revoke_json(r: &RevokeReport) -> Value {
    json!({
        "dry_run": r.dry_run,
        "reason": certctl_daemon::revoke::reason_name(r.reason),
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
