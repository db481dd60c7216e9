//! `certctl ca init|list|export|crl`: the managed CAs (certctl holds their keys).

use std::path::PathBuf;

use anyhow::{Context, Result};
use certctl_daemon::api::{Request, Response};
use certctl_daemon::ca::Secret;
use certctl_daemon::ca::{CaInfo, CaInitRequest};
use certctl_daemon::Duration;
use certctl_store::rfc3339;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::exit::Exit;
use crate::output::{absolute, cert_json, key_kind, print_json};
use crate::secrets::{passphrase, PassphraseArgs};
use crate::session::{unexpected, Globals, Session};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA (a root, or an intermediate signed by --parent-cert/--parent-key).
    Init(CaInitArgs),
    /// The managed CAs.
    List(CaListArgs),
    /// Write a CA certificate (PEM) for relying parties.
    Export(CaExportArgs),
    /// Sign a fresh CRL (published to the CA's CRL paths) and write a copy.
    Crl(CaCrlArgs),
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// The CA's name in certctl (letters, digits, `.`, `_`, `-`).
    #[arg(long)]
    pub name: String,
    /// Key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519.
    #[arg(long, default_value = "ec-p256", value_name = "TYPE")]
    pub key: String,
    /// Validity [default: 3650d for a root; up to the parent's expiry for an intermediate].
    #[arg(long, value_name = "DUR")]
    pub validity: Option<Duration>,
    /// Subject CN [default: the name].
    #[arg(long, value_name = "TEXT")]
    pub cn: Option<String>,
    /// Subject O.
    #[arg(long, value_name = "TEXT")]
    pub org: Option<String>,
    /// PEM file of the parent CA certificate (its chain may follow it): makes an intermediate.
    #[arg(long, value_name = "PEM", requires = "parent_key")]
    pub parent_cert: Option<PathBuf>,
    /// PEM file of the parent CA's private key (encrypted: its passphrase from
    /// --parent-passphrase-file, else the new CA's passphrase).
    #[arg(long, value_name = "PEM", requires = "parent_cert")]
    pub parent_key: Option<PathBuf>,
    /// File holding the parent key's passphrase, when it differs from the new CA's.
    #[arg(long, value_name = "FILE", requires = "parent_key")]
    pub parent_passphrase_file: Option<PathBuf>,
    /// Also write each new CRL here (`.der`/`.crl`: DER, else PEM). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub crl_out: Vec<PathBuf>,
    /// CRL distribution point URL to put into the certificates this CA issues. Repeatable.
    #[arg(long, value_name = "URL")]
    pub crl_url: Vec<String>,
    /// nextUpdate of the CRLs, from their thisUpdate.
    #[arg(long, value_name = "DUR", default_value = "7d")]
    pub crl_validity: Duration,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CaListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CaExportArgs {
    /// The managed CA.
    pub name: String,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CaCrlArgs {
    /// The managed CA.
    pub name: String,
    /// Also write a copy here (the CRL is always published to the CA's CRL paths).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the copy as DER instead of PEM.
    #[arg(long)]
    pub der: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

/// `certctl ca ...`: `ca init` creates the store when missing.
pub fn exec(g: &Globals, a: CaArgs) -> Result<Exit> {
    let session = &match a.command {
        CaCommand::Init(_) => g.open()?,
        _ => g.existing()?,
    };
    match a.command {
        CaCommand::Init(a) => ca_init(session, a),
        CaCommand::List(a) => ca_list(session, a),
        CaCommand::Export(a) => {
            let out = absolute(&a.out)?;
            match session.call(Request::CaExport {
                name: a.name.clone(),
                out,
            })? {
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
            match session.call(request)? {
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
    let cas = match session.call(Request::CaInit { init })? {
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
    let cas = match session.call(Request::CaList)? {
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
