//! `certctl probe HOST:PORT...`: fetch the chain a live TLS endpoint serves, record it and
//! report findings.

use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{bail, Result};
use certctl_daemon::api::{ProbeReport, Request, Response};
use certctl_daemon::probe::ProbeTarget;
use certctl_daemon::scan;
use certctl_daemon::view::{CertificateView, Printable};
use certctl_daemon::Duration;
use certctl_store::{now, Role};
use clap::Args;

use crate::exit::Exit;
use crate::output::{certificate_table, parse_role};
use crate::session::{unexpected, Globals};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The endpoints, `host:port` (IPv6 as `[::1]:443`).
    #[arg(value_name = "HOST:PORT", required_unless_present = "file")]
    pub address: Vec<String>,
    /// Also probe the endpoints listed in FILE (one `host:port` per line; blank lines and
    /// `#` comments are skipped).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// SNI name to send (default: the host).
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Role of the served leaf certificate [default: other; a CA certificate gets `ca`].
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Text the leaf's issuer must contain; another issuer suggests a TLS-inspecting proxy.
    #[arg(long, value_name = "TEXT")]
    pub expect_issuer: Option<String>,
    /// Give up after DUR (connect, handshake).
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub timeout: Duration,
    /// PEM bundle of trusted CAs [default: OpenSSL's default paths].
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `certctl probe A:443 [B:443 ...] [--file LIST]`: each endpoint in turn. The exit code
/// is the worst outcome: 0 no finding (or none that matters), 1 a warning finding, 2 a
/// critical one (unreachable, expired, untrusted, wrong name or issuer, not yet valid).
pub fn exec(g: &Globals, a: ProbeArgs) -> Result<Exit> {
    let session = &g.open()?;
    let mut addresses = a.address.clone();
    if let Some(list) = &a.file {
        addresses.extend(probe_list(list)?);
    }
    if addresses.is_empty() {
        bail!("no endpoint to probe: give HOST:PORT or a --file that lists some");
    }
    let mut reports = Vec::with_capacity(addresses.len());
    for address in addresses {
        let target = ProbeTarget {
            address,
            sni: a.sni.clone(),
            role: a.role,
            expect_issuer: a.expect_issuer.clone(),
            timeout: StdDuration::from_secs(a.timeout.as_secs().max(1).unsigned_abs()),
            // certd does not share our working directory.
            trust_store: a
                .trust_store
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        };
        let report: ProbeReport = match session.call(Request::Probe { target })? {
            Response::Probe { report } => report,
            other => return Err(unexpected(&other)),
        };
        if !a.json {
            print_probe(&report);
        }
        reports.push(report);
    }
    if a.json {
        // The served certificates in the same form as `list --json`; one endpoint is one
        // object (as before several could be given), several are an array of them.
        let t = now();
        let objects: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "endpoint": r.endpoint,
                    "error": r.error,
                    "chain": r.chain.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let json = match <[serde_json::Value; 1]>::try_from(objects) {
            Ok([one]) => one,
            Err(many) => serde_json::Value::Array(many),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&json)?)?
        );
    }
    let worst = reports
        .iter()
        .flat_map(|r| &r.endpoint.findings)
        .map(|f| {
            if f.kind.is_critical() {
                Exit::Critical
            } else {
                Exit::Warning
            }
        })
        .max_by_key(|e| e.code())
        .unwrap_or(Exit::Success);
    let failed = reports.iter().any(|r| r.error.is_some());
    Ok(if failed { Exit::Critical } else { worst })
}

/// The endpoints of `probe --file LIST`: one per line, `#` comments and blank lines skipped.
fn probe_list(list: &Path) -> Result<Vec<String>> {
    // Bounded and never blocking, like every file certctl reads.
    let (bytes, _) = scan::read_file_bytes(list)
        .map_err(|cause| anyhow::anyhow!("{}: {cause}", list.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", list.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn print_probe(report: &ProbeReport) {
    let t = now();
    let e = &report.endpoint;
    match &report.error {
        Some(err) => println!("tls://{}: {err}", e.address),
        None => println!(
            "tls://{}: {} certificates served",
            e.address,
            report.chain.len()
        ),
    }
    if !report.chain.is_empty() {
        print!("{}", certificate_table(&report.chain, t).render());
    }
    if e.findings.is_empty() {
        println!("no findings");
    }
    for f in &e.findings {
        println!("finding: {}: {}", f.kind, Printable(&f.detail));
    }
}
