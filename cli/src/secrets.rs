//! Secrets given to commands: never on the command line, always from a file others cannot
//! read (`--passphrase-file`, `--pfx-password-file`), else from an environment variable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use certctl_daemon::ca::Secret;
use clap::Args;

/// Secrets for a managed CA's key.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// File holding the CA key passphrase [else $CERTCTL_CA_PASSPHRASE]: needed to use an
    /// encrypted CA key; at `ca init`, the key is encrypted with it (without one, `ca init`
    /// stores the key unencrypted, 0600).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// A secret from a file (trailing newline removed; refused when others can read it, see
/// [`Secret::from_private_file`]), else from an environment variable.
pub fn secret(file: Option<&Path>, var: &str, what: &str) -> Result<Option<Secret>> {
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

pub fn passphrase(a: &PassphraseArgs) -> Result<Option<Secret>> {
    secret(
        a.passphrase_file.as_deref(),
        "CERTCTL_CA_PASSPHRASE",
        "CA passphrase",
    )
}

pub fn pfx_password(file: Option<&Path>) -> Result<Option<Secret>> {
    secret(file, "CERTCTL_PFX_PASSWORD", "PFX password")
}

/// The PKCS#12 password for reading files (`scan`, `inspect`): from the file, else
/// `$CERTCTL_PFX_PASSWORD` (never from argv). Unlike [`pfx_password`] (for files certctl
/// writes), an empty variable is a password: PFX files exported with an empty one exist.
pub fn pfx_password_text(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let secret = certctl_daemon::ca::Secret::from_private_file(f)
            .context("cannot use the PFX password file")?;
        return Ok(Some(secret.0));
    }
    Ok(std::env::var("CERTCTL_PFX_PASSWORD").ok())
}
