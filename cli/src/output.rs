//! What commands print and ask, shared: the `--json`/`--csv` flags, JSON with RFC 3339
//! siblings, the certificate table and the long form of one certificate, the `--yes`
//! question, and the small parsers of clap values.
//!
//! This module imports the engine's views and `table`, never a command or the session.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use certctl_daemon::view::{CertificateView, Printable, EXPIRING_SECS};
use certctl_store::{rfc3339, Certificate, CredentialKind, Role, UnixTime};
use clap::Args;
use serde_json::Value;

use crate::table::Table;

/// `--json`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--json` or `--csv` for commands that print a table.
#[derive(Debug, Args)]
pub struct TableOutputArgs {
    /// Print a JSON array.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

/// `--role ROLE`.
pub fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// `--kind permanent|ephemeral`.
pub fn parse_kind(s: &str) -> Result<CredentialKind, String> {
    match s {
        "permanent" => Ok(CredentialKind::Permanent),
        "ephemeral" => Ok(CredentialKind::Ephemeral),
        other => Err(format!(
            "`{other}` is not a credential kind: permanent or ephemeral"
        )),
    }
}

/// Pretty JSON on stdout; Unix times get RFC 3339 siblings (`next_update` →
/// `next_update_at`).
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer_pretty(&mut out, &certctl_daemon::view::with_rfc3339_times(value)?)?;
    writeln!(out)?;
    Ok(())
}

/// A certificate as the contract's JSON object.
pub fn cert_json(c: &Certificate) -> Value {
    serde_json::to_value(CertificateView::new(c, certctl_store::now())).unwrap_or(Value::Null)
}

/// An absolute path (certd does not share our working directory).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

/// Who runs the command (`$USER`, else `$LOGNAME`, else the uid).
pub fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Asks on the terminal; refuses when stdin is not one.
pub fn confirm(question: &str, refusal: &str) -> Result<bool> {
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

/// The long, human form of one certificate.
pub fn describe(v: &CertificateView) -> String {
    let mut s = String::new();
    // Values come from the certificate: shown escaped (view::printable).
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            s.push_str(&format!("{k:<22}{}\n", Printable(v)));
        }
    };
    line("Fingerprint (SHA-256)", &v.fingerprint_sha256);
    line("Subject", &v.subject);
    line("Issuer", &v.issuer);
    line("Serial", &v.serial);
    line("Valid from", &v.not_before);
    line(
        "Valid until",
        &format!("{} ({} days left, {})", v.not_after, v.days_left, v.status),
    );
    line("Role", v.role.unwrap_or(""));
    line("Credential", v.credential_kind.unwrap_or(""));
    line("Key", &v.key);
    line("Signature", &v.signature_algorithm);
    line("CA", if v.is_ca { "yes" } else { "no" });
    let sans: Vec<&str> = v
        .sans
        .dns
        .iter()
        .chain(&v.sans.ip)
        .chain(&v.sans.email)
        .chain(&v.sans.uri)
        .map(String::as_str)
        .collect();
    line("SANs", &sans.join(", "));
    line("SPKI SHA-256", &v.spki_sha256);
    line("Subject key id", v.subject_key_id.as_deref().unwrap_or(""));
    line(
        "Authority key id",
        v.authority_key_id.as_deref().unwrap_or(""),
    );
    line("CRL", &v.crl_distribution_points.join(", "));
    line("OCSP", &v.ocsp_urls.join(", "));
    if let Some(r) = &v.revocation {
        line(
            "Revoked",
            &format!("{} ({}, by {})", r.revoked_at, r.reason, r.revoked_by),
        );
    }
    line("First seen", v.first_seen.as_deref().unwrap_or(""));
    line("Last seen", v.last_seen.as_deref().unwrap_or(""));
    for src in &v.sources {
        let state = match &src.gone_since {
            Some(g) => format!("gone since {g}"),
            None => format!("last seen {}", src.last_seen),
        };
        line("Source", &format!("{} ({state})", src.location()));
    }
    if v.more_sources > 0 {
        line("", &format!("... and {} more sources", v.more_sources));
    }
    s
}

pub fn certificate_table(certs: &[Certificate], t: UnixTime) -> Table {
    let mut table = Table::new(&[
        "EXPIRES",
        "DAYS",
        "STATUS",
        "ROLE",
        "NAME",
        "KEY",
        "FINGERPRINT",
        "WHERE",
    ]);
    for c in certs {
        let where_ = c
            .current_sources()
            .next()
            .map(|s| {
                let more = c.current_sources().count() - 1 + c.more_sources as usize;
                if more > 0 {
                    format!("{} (+{more})", s.location)
                } else {
                    s.location.to_string()
                }
            })
            .unwrap_or_else(|| "(gone)".into());
        let role = match c.credential_kind() {
            Some(CredentialKind::Ephemeral) if c.role == Role::Agent => {
                "agent (ephemeral)".to_string()
            }
            _ => c.role.to_string(),
        };
        table.row(vec![
            rfc3339(c.facts.not_after)[..10].to_string(),
            c.days_left(t).to_string(),
            c.status(t, EXPIRING_SECS).to_string(),
            role,
            c.facts.display_name().to_string(),
            c.facts.key.to_string(),
            c.fingerprint().to_hex()[..16].to_string(),
            where_,
        ]);
    }
    table
}

pub fn print_certificates(certs: &[Certificate], t: UnixTime, json: bool, csv: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        certctl_daemon::view::write_json_list(certs, t, &mut out)?;
    } else if csv {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(CertificateView::CSV_HEADER)?;
        for c in certs {
            w.write_record(CertificateView::new(c, t).csv_row())?;
        }
        w.flush()?;
    } else {
        write!(out, "{}", certificate_table(certs, t).render())?;
        writeln!(out, "{} certificates", certs.len())?;
    }
    out_flush()
}

pub fn out_flush() -> Result<()> {
    std::io::stdout().flush()?;
    Ok(())
}

/// `--key rsa2048|rsa3072|rsa4096|p256|p384|ed25519`.
pub fn key_kind(s: &str) -> Result<certctl_daemon::ca::KeyKind> {
    Ok(s.parse::<certctl_daemon::ca::KeyKind>()?)
}
