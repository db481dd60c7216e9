//! `certctl issue`: a certificate from a managed CA (CN.pem, CN.key, CN.chain.pem, CN.pfx).

use std::path::PathBuf;

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::ca::IssueRequest;
use certctl_daemon::Duration;
use certctl_store::{rfc3339, Role};
use clap::Args;
use serde_json::json;

use crate::exit::Exit;
use crate::output::{absolute, cert_json, key_kind, parse_role, print_json};
use crate::secrets::{passphrase, pfx_password, PassphraseArgs};
use crate::session::{unexpected, Globals};

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The managed CA that signs.
    #[arg(long, value_name = "NAME")]
    pub ca: String,
    /// Subject common name; also the file names (DIR/CN.pem, ...).
    #[arg(long, value_name = "CN")]
    pub cn: String,
    /// Subject alternative names (DNS name, IP, e-mail, URI) [default: the CN]. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,
    /// Role recorded in the inventory (iis with --pfx-password-file also writes CN.pfx).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Validity.
    #[arg(long, value_name = "DUR", default_value = "365d")]
    pub validity: Duration,
    /// Key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519.
    #[arg(long, default_value = "ec-p256", value_name = "TYPE")]
    pub key: String,
    /// Folder for the files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// File holding the PFX password [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// Write the PFX with 3DES and a SHA-1 MAC, for Windows Server 2016 and older (IIS)
    /// [default: AES-256 with PBKDF2 and a SHA-256 MAC].
    #[arg(long)]
    pub pfx_legacy: bool,
    /// Overwrite existing files.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: IssueArgs) -> Result<Exit> {
    let session = &g.open()?;
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
    let report = match session.call(Request::Issue { issue })? {
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
